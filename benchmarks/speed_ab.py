"""Two or more dreams timed in turns in one process: the fair way to compare their speed on a shared,
noisy machine, where two separate runs of ``dream_speed.py`` can differ by a quarter.

    python benchmarks/speed_ab.py checkpoints/boxing-token /tmp/token-before --batches 16 64 --rounds 3 \
        --out benchmarks/results/speed_ab_token.json

Each round times every dream once per batch size (``dream_speed.transitions_per_second``: a fixed
number of seconds after an untimed warm-up step, under the env's no-grad / autocast context, the dreams
started from their checkpoint's start bank and stepped under random actions). Prints
each dream's transitions/s per round and its median over the rounds as a ratio to the first dream's.

With ``--precision fp32 bf16`` every dream is timed in each precision in turns, and the first
dream in the first precision is the reference: one dream suffices then, to find at which batch
sizes bf16 autocast pays on this CPU (``WorldModel.cpu_bf16_min_batch``).
"""

from __future__ import annotations

import argparse
import statistics

import torch
from dream_speed import transitions_per_second

from neuralenvs.bench.report import write_json
from neuralenvs.envs.runtime import PRECISIONS
from neuralenvs.envs.starts import DeviceStarts
from neuralenvs.registry import load_world_model_and_starts
from neuralenvs.utils.device import describe_hardware, resolve_device
from neuralenvs.utils.memory import reuse_freed_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dreams", nargs="+", help="dream ids or checkpoint folders; the first is the reference")
    parser.add_argument("--batches", nargs="+", type=int, default=[16, 64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per measurement")
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS[:2], default=["bf16"],
                        help="one precision, or several to time each dream in each in turns")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default="benchmarks/results/speed_ab.json")
    args = parser.parse_args()
    contestants = [(dream, precision) for dream in args.dreams for precision in args.precision]
    if len(contestants) < 2:
        parser.error("give at least two dreams, or two precisions, to compare")

    if args.threads:
        torch.set_num_threads(args.threads)
    reuse_freed_memory()
    device = resolve_device(args.device)
    models, banks = {}, {}
    for dream in args.dreams:
        model, starts, _ = load_world_model_and_starts(dream, device=device)
        models[dream] = model.eval()
        banks[dream] = DeviceStarts(starts, model.context_frames, 1, device)
    print(f"device {device} ({describe_hardware()}), {torch.get_num_threads()} threads")
    rates: dict[int, dict[tuple[str, str], list[float]]] = {b: {c: [] for c in contestants} for b in args.batches}
    for _ in range(args.rounds):
        for batch in args.batches:
            for dream, precision in contestants:
                rates[batch][dream, precision].append(
                    transitions_per_second(models[dream], batch, device, args.seconds, precision, banks[dream])
                )

    rows = []
    for batch in args.batches:
        base = statistics.median(rates[batch][contestants[0]])
        for dream, precision in contestants:
            timed = rates[batch][dream, precision]
            median = statistics.median(timed)
            rows.append({"dream": dream, "precision": precision, "batch": batch, "transitions_per_second": timed,
                         "median": median, "ratio_to_first": median / base})
            rounds = " / ".join(f"{r:.0f}" for r in timed)
            print(f"batch {batch:>4} {dream:>40} {precision}: {rounds} transitions/s, "
                  f"median {median / base:.2f}x the first")
    write_json(args.out, {"device": describe_hardware(), "torch_threads": torch.get_num_threads(),
                          "precisions": args.precision, "seconds": args.seconds, "rounds": args.rounds, "rows": rows})


if __name__ == "__main__":
    main()
