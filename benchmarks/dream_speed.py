"""How fast each dream runs, how much it computes, and where the time of the training loop goes.

    python benchmarks/dream_speed.py                                 # every shipped dream
    python benchmarks/dream_speed.py --dreams neuralenvs/Boxing-diffusion-v0 --batches 16 64
    python benchmarks/dream_speed.py --family diffusion --configs small paper  # untrained configs
    python benchmarks/dream_speed.py --loop-steps 0                  # skip the loop profile

For each dream and batch size: dreamed transitions/s over a fixed number of seconds (after a
warm-up step that is not timed), FLOPs per transition counted from the model by
``torch.utils.flop_counter`` (8 steps at batch 16, after 16 uncounted ones), and the share of the
machine's peak. The peak is a large matrix product in fp32 and in bf16, both timed in this run with
the same thread count, so the figures of one run compare like with like on a noisy shared machine;
the figure to compare *across* runs is transitions/s per GFLOP/s of fp32 matmul
(``per_fp32_gflops``). A share can pass 100%: oneDNN's direct convolutions can run faster than
its matrix product does.

The loop profile trains PPO (the package's default settings) in each dream for ``--loop-steps``
agent steps and splits the wall-clock into: each top-level module of the world model called
through its forward (hooks), the rest of the world model's calls (sampling loops, state updates),
the rest of the env's step (frame stacking, restarts, copies to numpy), the agent's forward
passes and rollout buffer, and PPO's update.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from neuralenvs.bench.report import write_json
from neuralenvs.envs.runtime import PRECISIONS, compile_for_dreaming, compile_mode, dreaming
from neuralenvs.envs.starts import DeviceStarts
from neuralenvs.utils.device import describe_hardware, resolve_device
from neuralenvs.utils.memory import reuse_freed_memory

BATCHES = (1, 16, 64, 256)


def matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 2.0) -> float:
    """FLOP/s of a large square matrix product in ``dtype`` (the better of two sizes): the practical
    peak of this device."""
    sizes = (4096, 8192) if device.type == "cuda" else (2048, 4096)
    return max(_matmul_rate(device, dtype, n, seconds / len(sizes)) for n in sizes)


def _matmul_rate(device: torch.device, dtype: torch.dtype, n: int, seconds: float) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or reps < 2:
        a @ b
        reps += 1
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _context(model, batch: int, device: torch.device, g: torch.Generator, starts=None):
    """Contexts to start ``batch`` dreams from: real ones drawn from ``starts`` (a checkpoint's
    start bank as :class:`DeviceStarts`) where given, since a token dream's speed depends on what it
    dreams (it checks guessed tokens, and most guesses of a real game's next frame come true); else
    random frames."""
    if starts is not None:
        index = torch.as_tensor(starts.sample(batch, np.random.default_rng(g.initial_seed())), device=device)
        return starts.frames[index], starts.actions[index]
    h, w, c = model.obs_shape
    k = model.context_frames
    frames = torch.randint(0, 256, (batch, k, h, w, c), dtype=torch.uint8, device=device, generator=g)
    actions = torch.randint(0, model.num_actions, (batch, k - 1), device=device, generator=g)
    return frames, actions


def _random_actions(model, batch: int, device: torch.device, g: torch.Generator) -> torch.Tensor:
    return torch.randint(0, model.num_actions, (batch,), device=device, generator=g)


def flops_per_transition(model, device: torch.device, batch: int = 16, warm_steps: int = 16,
                         counted_steps: int = 8, starts=None) -> float:
    """FLOPs of the dream's step (world model and heads) per dreamed transition, averaged over
    ``counted_steps`` steps after ``warm_steps`` uncounted ones: a steady state, in which a
    family that recomputes its context now and then (the token family's sliding window) has done so
    as often as it does in a long dream."""
    g = torch.Generator(device=device).manual_seed(0)
    state = model.init_state(*_context(model, batch, device, g, starts))
    with torch.no_grad():
        for _ in range(warm_steps):
            state = model.step(state, _random_actions(model, batch, device, g), g).state
        with FlopCounterMode(display=False) as counter:
            for _ in range(counted_steps):
                state = model.step(state, _random_actions(model, batch, device, g), g).state
    return counter.get_total_flops() / (batch * counted_steps)


def transitions_per_second(model, batch: int, device: torch.device, seconds: float, precision: str = "fp32",
                           starts=None) -> float:
    """Dreamed transitions/s at ``batch`` under random actions, timed for ``seconds`` after one
    untimed warm-up step, under the same no-grad / autocast context a dream env steps in."""
    g = torch.Generator(device=device).manual_seed(0)
    with dreaming(model, precision):
        state = model.init_state(*_context(model, batch, device, g, starts))
        state = model.step(state, _random_actions(model, batch, device, g), g).state  # warm-up
        _sync(device)
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or steps < 3:
            state = model.step(state, _random_actions(model, batch, device, g), g).state
            steps += 1
        _sync(device)
    return batch * steps / (time.perf_counter() - t0)


def profile_loop(
    checkpoint: str, steps: int, n_envs: int | None, device: torch.device, precision: str = "fp32",
    compile: bool | str = False,
) -> dict[str, Any]:
    """Train PPO in ``n_envs`` dreams of ``checkpoint`` (None: the package's number) for ``steps``
    agent steps, the dream compiled with ``compile``; seconds per part."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecEnvWrapper

    from neuralenvs.envs.dream import DreamVectorEnv
    from neuralenvs.registry import load_world_model_and_starts
    from neuralenvs.sb3 import DREAMS_PER_AGENT, default_algo_kwargs, make_sb3_env

    n_envs = n_envs or DREAMS_PER_AGENT

    seconds: dict[str, float] = defaultdict(float)
    model, starts, _ = load_world_model_and_starts(checkpoint, device=device)
    started: dict[str, float] = {}
    depth = [0]

    def timed(method):  # the world model's own calls; only the outermost is counted
        def call(*args, **kwargs):
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    seconds["world model"] += time.perf_counter() - t0
        return call

    for method in ("init_state", "step", "reset_where"):
        setattr(model, method, timed(getattr(model, method)))
    for name, child in model.named_children():
        child.register_forward_pre_hook(lambda m, a, n=name: started.__setitem__(n, time.perf_counter()))
        child.register_forward_hook(
            lambda m, a, o, n=name: seconds.__setitem__(f"dream: {n}", seconds[f"dream: {n}"]
                                                        + time.perf_counter() - started[n]))

    class TimedEnv(VecEnvWrapper):
        def reset(self):
            return self.venv.reset()

        def step_wait(self):
            t0 = time.perf_counter()
            out = self.venv.step_wait()
            seconds["env step"] += time.perf_counter() - t0
            return out

    class TimedPPO(PPO):
        def collect_rollouts(self, *args, **kwargs):
            t0 = time.perf_counter()
            out = super().collect_rollouts(*args, **kwargs)
            seconds["rollouts"] += time.perf_counter() - t0
            return out

        def train(self) -> None:
            t0 = time.perf_counter()
            super().train()
            seconds["agent: PPO update"] += time.perf_counter() - t0

    # the dream as the utility measurement trains in it (neuralenvs.bench.utility)
    dream = DreamVectorEnv(model, starts, num_envs=n_envs, horizon=15, frame_stack=4, device=device,
                           sample_heads=True, precision=precision, compile=compile)
    seconds.clear()  # compiling stepped the model once: not part of the loop
    agent = TimedPPO("CnnPolicy", TimedEnv(make_sb3_env(dream)), seed=0, device=device,
                     **default_algo_kwargs("ppo", n_envs=n_envs))
    t0 = time.perf_counter()
    agent.learn(total_timesteps=steps)
    total = time.perf_counter() - t0
    # a module a family calls through a method of its own (not forward) is not hooked: its time
    # is in "rest of the world model"
    parts = {k: v for k, v in seconds.items() if k.startswith("dream: ")}
    parts["dream: rest of the world model"] = seconds["world model"] - sum(parts.values())
    parts["dream: rest of the step (env)"] = seconds["env step"] - seconds["world model"]
    parts["agent: forward passes and rollout buffer"] = seconds["rollouts"] - seconds["env step"]
    parts["agent: PPO update"] = seconds["agent: PPO update"]
    parts["other"] = total - seconds["rollouts"] - seconds["agent: PPO update"]
    return {
        "checkpoint": checkpoint,
        "precision": precision,
        "agent_steps": int(agent.num_timesteps),
        "n_envs": n_envs,
        "seconds": total,
        "loop_transitions_per_second": agent.num_timesteps / total,
        "parts_seconds": parts,
        "parts_share": {k: v / total for k, v in parts.items()},
    }


def _models(args: argparse.Namespace, device: torch.device):
    """``(label, checkpoint or None, model, its start bank on ``device`` or None)`` for each dream or
    untrained config asked for."""
    from neuralenvs.models import build_model
    from neuralenvs.registry import load_world_model_and_starts, shipped_checkpoints

    if args.configs:
        for name in args.configs:
            torch.manual_seed(0)
            model = build_model(args.family, name, (64, 64, 3), args.num_actions)
            yield f"{args.family}/{name} (untrained)", None, model.to(device).eval(), None
        return
    for dream in args.dreams or sorted(shipped_checkpoints()):
        model, starts, _ = load_world_model_and_starts(dream, device=device)
        yield dream, dream, model.eval(), DeviceStarts(starts, model.context_frames, 1, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dreams", nargs="+", help="dream ids or checkpoint folders (default: every shipped one)")
    parser.add_argument("--family", default="diffusion", help="with --configs: the family of the untrained configs")
    parser.add_argument("--configs", nargs="+", help="time untrained named configs instead of dreams")
    parser.add_argument("--num-actions", type=int, default=18, help="with --configs")
    parser.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS[:2], default=["fp32", "bf16"],
                        help="time the dreams in each of these (bf16: autocast, as a dream env's precision='bf16')")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per measurement")
    parser.add_argument("--loop-steps", type=int, default=4096,
                        help="agent steps of the loop profile per dream (0: no profile)")
    parser.add_argument("--loop-envs", type=int, default=None,
                        help="dreams the PPO loop trains in (default: the package's, neuralenvs.sb3.DREAMS_PER_AGENT)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--fresh-pages", action="store_true",
                        help="leave glibc's malloc as it is (large tensors paged in anew each time) instead of "
                             "neuralenvs.utils.memory.reuse_freed_memory, as the CLI runs")
    parser.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE",
                        help="compile each dream for each batch before timing it (neuralenvs.envs.runtime; "
                             "optionally in a torch.compile MODE such as reduce-overhead), the loop's dream too")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default="benchmarks/results/dream_speed.json")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    reused = False if args.fresh_pages else reuse_freed_memory()
    device = resolve_device(args.device)
    peaks = {name: matmul_peak(device, dtype) for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    print(f"device {device} ({describe_hardware()}), {torch.get_num_threads()} threads, matmul peak "
          f"fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s, freed memory "
          f"{'reused' if reused else 'returned to the system'}")
    compile_mode(args.compile)  # a bad mode fails here, not after the first dream
    rows, loops = [], []
    for label, checkpoint, model, starts in _models(args, device):
        flops = flops_per_transition(model, device, starts=starts)
        for precision in args.precision:
            peak = peaks[precision]
            for batch in args.batches:
                compiled = compile_for_dreaming(model, batch, precision, args.compile)
                tps = transitions_per_second(model, batch, device, args.seconds, precision, starts)
                row = {"dream": label, "precision": precision, "batch": batch, "compiled": compiled,
                       "parameters": sum(p.numel() for p in model.parameters()),
                       "transitions_per_second": tps, "flops_per_transition": flops,
                       "per_fp32_gflops": tps / (peaks["fp32"] / 1e9),
                       "share_of_fp32_peak": flops * tps / peaks["fp32"],
                       f"share_of_{precision}_peak": flops * tps / peak}
                rows.append(row)
                print(f"{label:>36} {precision}{' compiled' if compiled else ''} batch {batch:>4}: "
                      f"{tps:8.1f} transitions/s  "
                      f"{flops / 1e6:7.1f} MFLOP/transition  {100 * flops * tps / peak:5.1f}% of {precision} peak  "
                      f"{row['per_fp32_gflops']:.3f} per fp32 GFLOP/s")
        if checkpoint is not None and args.loop_steps > 0:
            loop = profile_loop(checkpoint, args.loop_steps, args.loop_envs, device, args.precision[-1],
                                args.compile)
            loops.append(loop)
            print(f"  training loop: {loop['loop_transitions_per_second']:.1f} transitions/s; where the time goes:")
            for part, share in sorted(loop["parts_share"].items(), key=lambda kv: -kv[1]):
                print(f"    {part:<44} {100 * share:5.1f}%")
    write_json(args.out, {"device": str(device), "torch_threads": torch.get_num_threads(), "reuse_freed_memory": reused,
                          "matmul_peak_flops": peaks, "rows": rows, "loops": loops})


if __name__ == "__main__":
    main()
