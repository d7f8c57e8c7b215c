"""A dream's transfer beside the real-game agents, written into its checkpoint's metrics and card.

    python benchmarks/transfer_report.py checkpoints/crazyclimber-diffusion \
        --utility benchmarks/results/utility_crazyclimber_dreamed.json \
        --ceiling benchmarks/results/real_agent_ceiling.json \
        --out benchmarks/results/transfer_crazyclimber.json --update
    python benchmarks/transfer_report.py checkpoints/kungfumaster-diffusion \
        --utility benchmarks/results/utility_kungfumaster_told12k_seed0.json \
        --seeds benchmarks/results/utility_kungfumaster_told12k_seed{1,2,3,4}.json --update

Reads the dream agent's real score (a ``neuralenvs utility`` JSON, or the checkpoint's own
``metrics.utility``) and the same PPO trained on the real game (``benchmarks/real_agent_ceiling.py``'s
summary), and prints the utility ratio at equal agent steps, the comparison at equal real steps, and
the whole budget: real steps, world-model steps, dreamed agent steps, wall-clock and hardware.
``--seeds`` adds the same agent's other seeds: each seed's score and the mean across seeds, whose
spread is far wider than one seed's 30 real games suggest.
``--update`` stores the record as the checkpoint's ``metrics.transfer`` (and a ``--utility`` result as its
``metrics.utility``) and regenerates its card.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from neuralenvs.bench.report import write_json
from neuralenvs.bench.transfer import across_seeds, compare_to_real_agents, dream_budget
from neuralenvs.checkpoint import load_checkpoint, update_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--utility", help="a `neuralenvs utility --json` result (default: the checkpoint's)")
    parser.add_argument("--seeds", nargs="+", metavar="JSON",
                        help="`neuralenvs utility --json` results of other agent seeds (with --utility's): "
                             "stored as metrics.utility_seeds, a table in the card")
    parser.add_argument("--ceiling", default="benchmarks/results/real_agent_ceiling.json")
    parser.add_argument("--out", help="JSON to write")
    parser.add_argument("--update", action="store_true",
                        help="store it as the checkpoint's metrics.transfer (and --utility as metrics.utility)")
    args = parser.parse_args()

    checkpoint = load_checkpoint(args.checkpoint)
    config = checkpoint.config
    stored = (config.get("metrics") or {}).get("utility")
    utility = json.loads(Path(args.utility).read_text()) if args.utility else stored
    if not utility:
        raise SystemExit(f"{args.checkpoint} holds no utility measurement; pass --utility")
    summary = json.loads(Path(args.ceiling).read_text())
    games = {g["game"]: g for g in summary["games"]}
    if utility["game"] not in games:
        raise SystemExit(f"{args.ceiling} has no real-game agent for {utility['game']}; run "
                         f"benchmarks/real_agent_ceiling.py --games {utility['game']}")
    budget = {
        **dream_budget(config.get("provenance") or {}),
        "dreamed_agent_steps": utility["dream_steps"],
        "agent_seconds": round(utility["train_seconds"], 1),
        "loop_transitions_per_second": round(utility["loop_transitions_per_second"], 1),
        "agent_hardware": (utility.get("run") or {}).get("hardware", utility.get("device")),
    }
    record = compare_to_real_agents(utility, games[utility["game"]], budget["real_steps"], budget)
    seeds = across_seeds([utility] + [json.loads(Path(f).read_text()) for f in args.seeds]) if args.seeds else None
    report = record if seeds is None else {**record, "across_seeds": seeds}
    print(json.dumps(report, indent=1))
    if args.out:
        write_json(args.out, report)
    if args.update:
        stored = {"utility": utility} if args.utility else {}
        if seeds is not None:
            stored["utility_seeds"] = seeds
        update_metrics(checkpoint.path, transfer=record, **stored)
        print(f"updated {checkpoint.path}")


if __name__ == "__main__":
    main()
