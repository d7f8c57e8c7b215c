"""Dreamed transitions per second, FLOPs per transition, and the share of the machine's peak.

    python benchmarks/dream_speed.py                       # both configs, batch 1/16/64 (+256 on a GPU)
    python benchmarks/dream_speed.py --family diffusion --configs small --batches 16

The peak is a large matrix product timed in the same run (fp32 on the CPU, bf16 on a GPU), so the
share compares like with like on a noisy shared machine. Models are untrained: speed does not
depend on the weights.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from neuralenvs.bench.report import write_json
from neuralenvs.models import build_model
from neuralenvs.utils.device import describe_hardware, resolve_device


def matmul_peak(device: torch.device, seconds: float = 2.0) -> float:
    """FLOP/s of a large square matrix product: the practical peak of this device."""
    n = 4096 if device.type == "cuda" else 2048
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model, batch: int, device: torch.device, seconds: float, seed: int = 0) -> dict:
    h, w, c = model.obs_shape
    k = model.context_frames
    g = torch.Generator(device=device).manual_seed(seed)
    frames = torch.randint(0, 256, (batch, k, h, w, c), dtype=torch.uint8, device=device, generator=g)
    actions = torch.randint(0, model.num_actions, (batch, k - 1), device=device, generator=g)
    state = model.init_state(frames, actions)
    step_actions = torch.randint(0, model.num_actions, (batch,), device=device, generator=g)
    with FlopCounterMode(display=False) as counter:
        state, *_ = model.step(state, step_actions, g)
    flops_per_transition = counter.get_total_flops() / batch
    state, *_ = model.step(state, step_actions, g)  # warm-up
    _sync(device)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or steps < 3:
        state, *_ = model.step(state, step_actions, g)
        steps += 1
    _sync(device)
    elapsed = time.perf_counter() - t0
    return {
        "batch": batch,
        "transitions_per_second": batch * steps / elapsed,
        "ms_per_step": 1000 * elapsed / steps,
        "flops_per_transition": flops_per_transition,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="diffusion")
    parser.add_argument("--configs", nargs="+", default=["small", "paper"])
    parser.add_argument("--batches", nargs="+", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per measurement")
    parser.add_argument("--device", default=None)
    parser.add_argument("--num-actions", type=int, default=18)
    parser.add_argument("--out", default="benchmarks/results/dream_speed.json")
    args = parser.parse_args()

    device = resolve_device(args.device)
    batches = args.batches or ([1, 16, 64, 256] if device.type == "cuda" else [1, 16, 64])
    peak = matmul_peak(device)
    print(f"device {device} ({describe_hardware()}), matmul peak {peak / 1e9:.1f} GFLOP/s")
    rows = []
    for name in args.configs:
        torch.manual_seed(0)
        model = build_model(args.family, name, (64, 64, 3), args.num_actions).to(device).eval()
        params = sum(p.numel() for p in model.parameters())
        for batch in batches:
            row = {"family": args.family, "config": name, "parameters": params}
            row.update(measure(model, batch, device, args.seconds))
            row["share_of_peak"] = row["flops_per_transition"] * row["transitions_per_second"] / peak
            rows.append(row)
            print(
                f"{args.family:>10} {name:>6} batch {batch:>4}: {row['transitions_per_second']:8.1f} transitions/s"
                f"  {row['flops_per_transition'] / 1e6:8.1f} MFLOP/transition"
                f"  {100 * row['share_of_peak']:5.1f}% of peak"
            )
    result = {
        "device": str(device),
        "hardware": describe_hardware(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "matmul_peak_flops": peak,
        "rows": rows,
    }
    write_json(args.out, result)


if __name__ == "__main__":
    main()
