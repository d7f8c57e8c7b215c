"""Families side by side on one game: fidelity, reward/termination heads, utility, speed, size, cost.

    python benchmarks/compare_families.py checkpoints/boxing-diffusion checkpoints/boxing-token

Fidelity and utility are read from each checkpoint's recorded metrics (``neuralenvs fidelity
--record`` and ``neuralenvs utility --record`` measure them, as DESIGN.md defines them); dreamed
transitions per second are measured here, every family in the same run, on the trained model. Prints
a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dream_speed import transitions_per_second  # noqa: E402

from neuralenvs.bench.report import write_json
from neuralenvs.checkpoint import build_world_model, load_checkpoint  # noqa: E402
from neuralenvs.envs.runtime import PRECISIONS, resolve_precision  # noqa: E402
from neuralenvs.utils.device import describe_hardware, resolve_device  # noqa: E402
from neuralenvs.utils.memory import reuse_freed_memory  # noqa: E402

FIDELITY_STEPS = ("1", "5", "15", "50")


def summarize(path: str, batches: list[int], device: torch.device, seconds: float, precision: str = "fp32") -> dict:
    checkpoint = load_checkpoint(path)
    model = build_world_model(checkpoint, device=device)
    metrics = checkpoint.config.get("metrics", {})
    provenance = checkpoint.config.get("provenance", {})
    fidelity = metrics.get("fidelity", {})
    utility = metrics.get("utility")
    row = {
        "checkpoint": str(path),
        "family": checkpoint.family,
        "game": checkpoint.game,
        "parameters": sum(p.numel() for p in model.parameters()),
        "size_mb": sum(f.stat().st_size for f in Path(checkpoint.path).iterdir()) / 1e6,
        "real_steps": provenance.get("real_steps"),
        "training_steps": provenance.get("training_steps"),
        "train_wall_clock_seconds": provenance.get("wall_clock_seconds"),
        "train_hardware": provenance.get("hardware"),
        "fidelity": {s: fidelity.get("steps", {}).get(s) for s in FIDELITY_STEPS},
        "reward": fidelity.get("reward"),
        "termination": fidelity.get("termination"),
        "utility": None
        if utility is None
        else {
            "dream_steps": utility["dream_steps"],
            "agent_mean": utility["agent"]["mean"],
            "agent_stderr": utility["agent"]["stderr"],
            "random_mean": utility["random"]["mean"],
            "random_stderr": utility["random"]["stderr"],
            "episodes": utility["agent"]["n_episodes"],
        },
        "controllability": metrics.get("controllability"),  # latent-action families only
        "speed": {},
        "precision": precision,
    }
    for batch in batches:
        row["speed"][str(batch)] = transitions_per_second(model, batch, device, seconds, precision)
    return row


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "–" if x is None else format(x, spec)


def markdown(rows: list[dict], batches: list[int]) -> str:
    head = ["", *[r["family"] for r in rows]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def add(name: str, cells: list[str]) -> None:
        lines.append("| " + " | ".join([name, *cells]) + " |")

    for s in FIDELITY_STEPS:
        add(f"PSNR step {s} (repeat-last)", [
            "–" if r["fidelity"][s] is None
            else f"{r['fidelity'][s]['psnr']:.2f} ({r['fidelity'][s]['psnr_baseline']:.2f})" for r in rows
        ])
    for head_name in ("reward", "termination"):
        add(f"{head_name} precision / recall", [
            "–" if r[head_name] is None
            else f"{_fmt(r[head_name]['precision'])} / {_fmt(r[head_name]['recall'])}"
            f" ({r[head_name]['predicted']} predicted, {r[head_name]['real']} real)" for r in rows
        ])
    add("controllability, delta-t PSNR at t=4", [
        "–" if not r["controllability"] else f"{r['controllability']['delta_psnr']:.2f} dB" for r in rows
    ])
    add("utility: agent (random), real game", [
        "–" if r["utility"] is None
        else f"{r['utility']['agent_mean']:.2f} ± {r['utility']['agent_stderr']:.2f} "
        f"({r['utility']['random_mean']:.2f} ± {r['utility']['random_stderr']:.2f}), "
        f"{r['utility']['dream_steps']} dream steps, {r['utility']['episodes']} episodes" for r in rows
    ])
    for b in batches:
        add(f"dreamed transitions/s, batch {b} ({rows[0]['precision']})", [f"{r['speed'][str(b)]:.0f}" for r in rows])
    add("parameters", [f"{r['parameters'] / 1e6:.2f}M" for r in rows])
    add("checkpoint size", [f"{r['size_mb']:.1f} MB" for r in rows])
    add("training steps / wall-clock", [
        f"{r['training_steps']} / {_fmt(r['train_wall_clock_seconds'], '.0f')} s" for r in rows
    ])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="checkpoint folders or gym ids, one per family")
    parser.add_argument("--batches", nargs="+", type=int, default=[16, 64])
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per speed measurement")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="the dreams' precision for the speed rows (auto: bf16 where native, as a dream env)")
    parser.add_argument("--out", default="benchmarks/results/compare_families.json")
    args = parser.parse_args()

    device = resolve_device(args.device)
    reuse_freed_memory()  # as the command line runs
    precision = resolve_precision(args.precision, device)
    rows = [summarize(path, args.batches, device, args.seconds, precision) for path in args.checkpoints]
    table = markdown(rows, args.batches)
    print(f"device {device} ({describe_hardware()}), {torch.get_num_threads()} torch threads, {precision}\n")
    print(table)
    result = {"device": str(device), "hardware": describe_hardware(), "torch_threads": torch.get_num_threads(),
              "precision": precision, "rows": rows, "markdown": table}
    write_json(args.out, result)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
