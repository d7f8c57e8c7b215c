"""How each dream holds over long horizons, and pictures of it.

    python benchmarks/horizon.py --data data/boxing-test                         # every shipped Boxing dream
    python benchmarks/horizon.py runs/cc-sigma/checkpoint --data data/crazyclimber-test --steps 300
    python benchmarks/horizon.py neuralenvs/Boxing-genie-v0 --data data/boxing-test --precision fp32 bf16
    python benchmarks/horizon.py neuralenvs/KungFuMaster-diffusion-v0 --data data/kungfumaster-test \
        --agent demo_out/ppo_in_dream.zip                                       # also steered by an agent

From real starts of the held-out episodes in ``--data``, each dream runs under random actions and
under a real episode's actions (then random once the episode is over), and, with ``--agent``, under
an agent trained in a dream (``make demo``'s ``demo_out/ppo_in_dream.zip``), which goes where
neither random nor recorded actions go (a fighter that keeps walking and kicking).
Its frames at steps 50, 100, 300 and 1,000 are scored by their look (``neuralenvs.measure.horizon``:
sharpness ratio and foreground ratio, over the whole frame and in its worst band, and
colour-histogram distance against real frames of the game). PSNR and SSIM against the real episode
at steps 1, 5, 15, 50, 100 and 300, beside repeat-last-frame, come from ``measure_fidelity``.

Also writes, beside the JSON: a contact sheet PNG (the real episode on top, one row per dream,
columns at steps 1, 5, 15, 50, 100, 300 and 1,000 from the same start and actions; a step past the
real episode's end shows grey) and a plot of PSNR against horizon for each dream and repeat-last.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from neuralenvs.bench.report import write_json
from neuralenvs.data import EpisodeDataset
from neuralenvs.envs.runtime import PRECISIONS, dreaming
from neuralenvs.envs.starts import stack_frames
from neuralenvs.measure.fidelity import measure_fidelity
from neuralenvs.measure.horizon import LOOK_STEPS, Policy, long_rollouts, look_over_horizon
from neuralenvs.registry import game_of, load_world_model, shipped_checkpoints
from neuralenvs.utils.device import describe_hardware

PSNR_STEPS = (1, 5, 15, 50, 100, 300)
SHEET_STEPS = (1, 5, 15, 50, 100, 300, 1000)


def starts_and_actions(data: EpisodeDataset, episodes: list[int], k: int, n: int, steps: int, num_actions: int,
                       rng: np.random.Generator):
    """n real contexts (from the start of the longest held-out episodes), their real actions
    (random after the episode ends) and random actions, each [n, steps]."""
    chosen = sorted(episodes, key=lambda e: -data.episode_lengths[e])[:n]
    while len(chosen) < n:
        chosen += chosen[: n - len(chosen)]
    context, context_actions, real_actions, real_frames = [], [], [], []
    for e in chosen:
        ep = data.episode(e)
        context.append(ep.frames[:k])
        context_actions.append(ep.actions[: k - 1])
        follow = ep.actions[k - 1 : k - 1 + steps]
        real_actions.append(np.concatenate([follow, rng.integers(0, num_actions, steps - len(follow))]))
        real_frames.append(ep.frames[k : k + steps])
    random_actions = rng.integers(0, num_actions, (n, steps))
    return (np.stack(context), np.stack(context_actions).astype(np.int64), np.stack(real_actions).astype(np.int64),
            random_actions.astype(np.int64), real_frames)


def agent_policy(path: str, algo: str) -> Policy:
    """A saved SB3 agent (``neuralenvs.sb3``'s ``algo``) choosing from the frames it sees, stacked as a
    dream env with its ``frame_stack`` stacks them (oldest first; the oldest repeated while there
    are fewer). It samples its actions, as in training."""
    from neuralenvs.sb3 import ALGORITHMS

    agent = ALGORITHMS[algo].load(path, device="cpu")
    shape = agent.observation_space.shape
    channels = min(shape[0], shape[-1])  # channels first (as SB3 stores image spaces) or last

    def choose(seen: np.ndarray) -> np.ndarray:
        return agent.predict(stack_frames(seen, channels // seen.shape[-1]), deterministic=False)[0]

    return choose


def _label(dream: str) -> str:
    """``neuralenvs/Boxing-token-v0`` -> ``Boxing-token-v0``; ``runs/x/checkpoint`` -> ``x``."""
    parts = Path(dream).parts
    return parts[-2] if parts[-1] == "checkpoint" and len(parts) > 1 else parts[-1]


def contact_sheet(rows: dict[str, list[np.ndarray | None]], steps: list[int], path: Path, scale: int = 2) -> None:
    h, w = next(f for r in rows.values() for f in r if f is not None).shape[:2]
    label_w, tiles = 150, []
    header = np.full((20, label_w + len(steps) * w * scale, 3), 255, np.uint8)
    for i, s in enumerate(steps):
        cv2.putText(header, f"step {s}", (label_w + i * w * scale + 4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 0, 1)
    tiles.append(header)
    for name, frames in rows.items():
        label = np.full((h * scale, label_w, 3), 255, np.uint8)
        cv2.putText(label, name[:22], (4, h * scale // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.38, 0, 1)
        cells = [cv2.resize(f if f is not None else np.full((h, w, 3), 128, np.uint8), (w * scale, h * scale),
                            interpolation=cv2.INTER_NEAREST) for f in frames]
        tiles.append(np.concatenate([label, *cells], axis=1))
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(tiles, axis=0), cv2.COLOR_RGB2BGR))


def psnr_plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    baseline = None
    for name, r in results.items():
        steps = [int(s) for s in r["psnr"]["steps"]]
        ax.plot(steps, [r["psnr"]["steps"][str(s)]["psnr"] for s in steps], marker="o", label=name)
        baseline = baseline or (steps, [r["psnr"]["steps"][str(s)]["psnr_baseline"] for s in steps])
    ax.plot(*baseline, marker="x", linestyle="--", color="grey", label="repeat last real frame")
    ax.set_xscale("log")
    ax.set_xlabel("dreamed steps (real actions)")
    ax.set_ylabel("PSNR against the real episode (dB)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dreams", nargs="*", help="checkpoints or ids (default: the game's shipped dreams)")
    parser.add_argument("--data", required=True, help="held-out real episodes of the game (neuralenvs collect)")
    parser.add_argument("--held-out", type=int, default=None, help="use only the last N episodes (default: all)")
    parser.add_argument("--rollouts", type=int, default=8, help="dreams per action mode")
    parser.add_argument("--steps", type=int, default=max(LOOK_STEPS), help="longest horizon")
    parser.add_argument("--windows", type=int, default=64, help="PSNR windows (measure_fidelity)")
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS[:2], default=["fp32"],
                        help="dream in each of these (bf16: autocast, as a dream env's precision='bf16')")
    parser.add_argument("--agent", default=None, help="also dream under this SB3 agent's actions (a .zip saved "
                        "by train_in_dream, e.g. demo_out/ppo_in_dream.zip); look only")
    parser.add_argument("--algo", default="ppo", help="the --agent's algorithm (ppo, a2c, dqn)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/horizon_<game>.json)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    data = EpisodeDataset(args.data)
    game = str(data.meta.get("source", "")).removeprefix("atari:")
    episodes = list(range(data.num_episodes))[-(args.held_out or data.num_episodes):]
    dreams = args.dreams or [i for i in sorted(shipped_checkpoints()) if game_of(i) == game]
    if not dreams:
        parser.error(f"no shipped dream of {game!r}; name the checkpoints")
    out = Path(args.out or f"benchmarks/results/horizon_{game.lower()}.json")
    look_steps = [s for s in LOOK_STEPS if s <= args.steps]
    sheet_steps = [s for s in SHEET_STEPS if s <= args.steps]
    real_pool = np.concatenate([data.episode(e).frames[:: 10] for e in episodes])  # the game's look
    results, sheet = {}, {}
    for dream, precision in itertools.product(dreams, args.precision):
        t0 = time.perf_counter()
        model = load_world_model(dream, device="cpu").eval()
        name = dream if len(args.precision) == 1 else f"{dream} ({precision})"
        ctx, ctx_actions, real_actions, random_actions, real_frames = starts_and_actions(
            data, episodes, model.context_frames, args.rollouts, args.steps, model.num_actions,
            np.random.default_rng(args.seed))
        look = {}
        with dreaming(model, precision):
            modes = [("random actions", random_actions), ("real actions", real_actions)]
            if args.agent:
                modes.append(("agent actions", agent_policy(args.agent, args.algo)))
            for mode, acts in modes:
                torch.manual_seed(args.seed)  # an agent samples from torch's global generator
                kept = long_rollouts(model, ctx, ctx_actions, acts, set(look_steps) | set(sheet_steps), args.seed,
                                     steps=args.steps)
                look[mode] = look_over_horizon({s: kept[s] for s in look_steps}, real_pool)
                if mode == "real actions":
                    if "real episode" not in sheet:
                        sheet["real episode"] = [real_frames[0][s - 1] if s <= len(real_frames[0]) else None
                                                 for s in sheet_steps]
                    sheet[_label(dream) + ("" if len(args.precision) == 1 else f" {precision}")] = [
                        kept[s][0] for s in sheet_steps]
            fidelity = measure_fidelity(model, data, episodes,
                                        steps=tuple(s for s in PSNR_STEPS if s <= args.steps),
                                        num_windows=args.windows, seed=args.seed)
        results[name] = {"look": look, "psnr": {"steps": fidelity["steps"]}, "precision": precision,
                         "seconds": time.perf_counter() - t0}
        print(f"\n{name}")
        for mode, by_step in look.items():
            cells = "  ".join(f"{s}: {v['sharpness_ratio']:.2f}x ({v['worst_band_ratio']:.2f}x) /"
                              f" {v['histogram_distance']:.3f}" for s, v in by_step.items())
            print(f"  sharpness ratio (worst band) / histogram distance, {mode:<15} {cells}")
            cells = "  ".join(f"{s}: {v['foreground_ratio']:.2f}x ({v['worst_band_foreground_ratio']:.2f}x)"
                              for s, v in by_step.items())
            print(f"  foreground ratio (worst band), {mode:<15} {cells}")
        print("  PSNR dream / repeat-last (dream's gain ± its s.e.): " + "  ".join(
            f"{s}: {v['psnr']:.1f}/{v['psnr_baseline']:.1f} ({v['psnr'] - v['psnr_baseline']:+.1f}"
            f" ± {v['psnr_gain_stderr']:.1f})" for s, v in fidelity["steps"].items()))
    sheet_path, plot_path = out.with_suffix(".png"), out.with_name(out.stem + "_psnr.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(sheet, sheet_steps, sheet_path)
    psnr_plot(results, plot_path)
    write_json(out, {"game": game, "data": args.data, "episodes": episodes, "rollouts": args.rollouts,
                     "agent": args.agent, "hardware": describe_hardware(), "dreams": results,
                     "contact_sheet": str(sheet_path), "psnr_plot": str(plot_path)})
    print(f"wrote {sheet_path} and {plot_path}")


if __name__ == "__main__":
    main()
