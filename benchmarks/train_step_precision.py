"""Seconds per training step in fp32 and under bf16 autocast, to choose the trainer's default.

    python benchmarks/train_step_precision.py --config small --batch-size 32

Random uint8 segments stand in for data (speed does not depend on the pixels).
"""

from __future__ import annotations

import argparse
import time

import torch

from neuralenvs.bench.report import write_json
from neuralenvs.models import build_model
from neuralenvs.utils.device import describe_hardware, resolve_device
from neuralenvs.world_model import Segments


def fake_segments(batch: int, length: int, num_actions: int, device: torch.device) -> Segments:
    g = torch.Generator().manual_seed(0)
    return Segments(
        frames=torch.randint(0, 256, (batch, length + 1, 64, 64, 3), dtype=torch.uint8, generator=g),
        actions=torch.randint(0, num_actions, (batch, length), generator=g),
        rewards=torch.randint(-1, 2, (batch, length), generator=g).float(),
        terminated=torch.zeros(batch, length, dtype=torch.bool),
        truncated=torch.zeros(batch, length, dtype=torch.bool),
        mask=torch.ones(batch, length + 1, dtype=torch.bool),
    ).to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="diffusion")
    parser.add_argument("--config", default="small")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default="benchmarks/results/train_step_precision.json")
    args = parser.parse_args()

    device = resolve_device(args.device)
    model = build_model(args.family, args.config, (64, 64, 3), 18).to(device)
    batch = fake_segments(args.batch_size, model.config.segment_length, 18, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    result = {"device": str(device), "hardware": describe_hardware(), "config": args.config,
              "batch_size": args.batch_size}
    for precision in ("fp32", "bf16"):
        times = []
        for i in range(args.repeats + 1):
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model.training_losses(batch)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:  # the first step warms up
                times.append(time.perf_counter() - t0)
        result[f"{precision}_seconds_per_step"] = min(times)
        print(f"{precision}: {min(times):.3f} s/step (best of {args.repeats})")
    result["bf16_speedup"] = result["fp32_seconds_per_step"] / result["bf16_seconds_per_step"]
    print(f"bf16 autocast speed-up: {result['bf16_speedup']:.2f}x")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
