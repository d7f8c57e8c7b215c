"""Aggregate every published Atari 100k method the project ships scores for, as rliable does.

Mean, median, IQM and optimality gap of human-normalized scores over the 26 games, each with its
95% stratified-bootstrap interval; a check that our scoring reproduces the published figures
before our own runs are put beside them.

    python benchmarks/atari100k_reference.py            # rliable's default 50,000 reps
    python benchmarks/atari100k_reference.py --reps 2000
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from neuralenvs.bench.report import write_json
from neuralenvs.bench.scores import METRICS, PUBLISHED_METHODS, aggregate, load_published, plot_iqm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=50_000, help="bootstrap replications (rliable's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/atari100k_reference.json")
    parser.add_argument("--plot", default="benchmarks/results/atari100k_reference_iqm.png")
    args = parser.parse_args()

    results, seconds = {}, {}
    for method in PUBLISHED_METHODS:
        t0 = time.perf_counter()
        results[method] = aggregate(load_published(method), reps=args.reps, seed=args.seed)
        seconds[method] = round(time.perf_counter() - t0, 2)

    header = f"{'method':<14} {'runs':>4} " + " ".join(f"{m:>26}" for m in METRICS) + f" {'>human':>6} {'s':>6}"
    print(f"Atari 100k, 26 games, human-normalized; 95% stratified-bootstrap CIs, {args.reps} reps\n")
    print(header)
    for method in sorted(results, key=lambda m: results[m]["iqm"]["value"]):
        r = results[method]
        cells = " ".join(f"{r[m]['value']:>8.3f} [{r[m]['ci'][0]:.3f}, {r[m]['ci'][1]:.3f}]" for m in METRICS)
        print(f"{method:<14} {r['n_runs']:>4} {cells} {r['superhuman_games']:>6} {seconds[method]:>6.1f}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "what": "aggregates of the published Atari 100k scores in neuralenvs/bench/reference, computed with rliable",
        "reps": args.reps,
        "seed": args.seed,
        "confidence": 0.95,
        "bootstrap_seconds": seconds,
        "machine": platform.processor() or platform.machine(),
        "methods": results,
    }
    write_json(out, record)
    plot_iqm(results, args.plot)
    print(f"\nwrote {out} and {args.plot}; bootstrap took {sum(seconds.values()):.0f} s in all")


if __name__ == "__main__":
    main()
