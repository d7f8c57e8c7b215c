"""A dream's transfer beside the real-game agents, written into its checkpoint's metrics and card.

    python benchmarks/transfer_report.py checkpoints/crazyclimber-diffusion \
        --utility benchmarks/results/utility_crazyclimber_dreamed.json \
        --ceiling benchmarks/results/real_agent_ceiling.json \
        --out benchmarks/results/transfer_crazyclimber.json --update

Reads the dream agent's real score (a ``neuralenvs utility`` JSON, or the checkpoint's own
``metrics.utility``) and the same PPO trained on the real game (``benchmarks/real_agent_ceiling.py``'s
summary), and prints the utility ratio at equal agent steps, the comparison at equal real steps, and
the whole budget: real steps, world-model steps, dreamed agent steps, wall-clock and hardware.
``--update`` stores the record as the checkpoint's ``metrics.transfer`` (and a ``--utility`` result as its
``metrics.utility``) and regenerates its card.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from neuralenvs.bench.report import write_json
from neuralenvs.bench.transfer import compare_to_real_agents, dream_budget
from neuralenvs.checkpoint import load_checkpoint, update_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--utility", help="a `neuralenvs utility --json` result (default: the checkpoint's)")
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
    print(json.dumps(record, indent=1))
    if args.out:
        write_json(args.out, record)
    if args.update:
        update_metrics(checkpoint.path, transfer=record, **({"utility": utility} if args.utility else {}))
        print(f"updated {checkpoint.path}")


if __name__ == "__main__":
    main()
