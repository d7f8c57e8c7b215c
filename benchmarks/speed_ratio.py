"""How much faster the dreams of one ``dream_speed.py`` run are than another's, per GFLOP/s of
each run's own fp32 matmul (the figure that compares across runs on a shared, noisy machine).

    python benchmarks/speed_ratio.py benchmarks/results/dream_speed_issue_time.json \
        benchmarks/results/dream_speed.json --after-precision bf16

Prints, for every dream in both runs and every batch size, transitions/s before and after, their
ratio as timed and the ratio of ``per_fp32_gflops``; the loop profiles likewise. Where the host's
speed drifts between runs, take several pairs back to back in turns and give each with ``--pair
BEFORE AFTER``: the medians over the pairs are printed too. Writes the tables as JSON with ``--out``.
A row without a ``precision`` (runs older than the field) was timed in fp32.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from neuralenvs.bench.report import write_json
from neuralenvs.registry import resolve_checkpoint


def _name(dream: str) -> str:
    """A dream's checkpoint folder name, so that a run that named it by its gym id
    (``neuralenvs/Boxing-genie-v0``) pairs with one that named its folder (``checkpoints/boxing-genie``,
    as a git worktree of an older commit does)."""
    try:
        return resolve_checkpoint(dream).name
    except ValueError:  # a folder that is gone since the run
        return Path(dream).name


def _rows(run: dict, precision: str) -> dict[tuple[str, int], dict]:
    return {(_name(r["dream"]), r["batch"]): r for r in run["rows"] if r.get("precision", "fp32") == precision}


def _loops(run: dict) -> dict[str, dict]:
    return {loop["checkpoint"]: loop for loop in run.get("loops", [])}


def compare(before: dict, after: dict, before_precision: str = "fp32", after_precision: str = "bf16") -> dict:
    """One pair of runs: every dream and batch in both, and every loop, with its transitions/s before
    and after, ``as_timed`` (their ratio) and ``ratio`` (the same per GFLOP/s of each run's fp32 matmul)."""
    peaks = {name: run["matmul_peak_flops"]["fp32"] / 1e9 for name, run in (("before", before), ("after", after))}
    old, new = _rows(before, before_precision), _rows(after, after_precision)
    table = []
    for key in sorted(old.keys() & new.keys()):
        o, n = old[key], new[key]
        table.append({"dream": key[0], "batch": key[1], "before": o["transitions_per_second"],
                      "after": n["transitions_per_second"], "before_flops": o["flops_per_transition"],
                      "after_flops": n["flops_per_transition"],
                      "as_timed": n["transitions_per_second"] / o["transitions_per_second"],
                      "ratio": n["per_fp32_gflops"] / o["per_fp32_gflops"]})
    loops = []
    old_loops, new_loops = _loops(before), _loops(after)
    for name in sorted(old_loops.keys() & new_loops.keys()):
        o, n = old_loops[name]["loop_transitions_per_second"], new_loops[name]["loop_transitions_per_second"]
        loops.append({"checkpoint": name, "before": o, "after": n, "as_timed": n / o,
                      "ratio": (n / peaks["after"]) / (o / peaks["before"])})
    return {"peaks_gflops": peaks, "dreams": table, "loops": loops}


def medians(pairs: list[dict]) -> dict:
    """The median over pairs of runs of each dream's, batch's and loop's ``as_timed`` and ``ratio``,
    for the keys every pair has."""
    def median_of(key_of, section: str) -> list[dict]:
        groups: dict = {}
        for pair in pairs:
            for row in pair[section]:
                groups.setdefault(key_of(row), []).append(row)
        names = ("dream", "batch") if section == "dreams" else ("checkpoint",)
        return [{**dict(zip(names, key, strict=True)),
                 "pairs": len(rows), "as_timed": statistics.median(r["as_timed"] for r in rows),
                 "ratio": statistics.median(r["ratio"] for r in rows)}
                for key, rows in sorted(groups.items()) if len(rows) == len(pairs)]
    return {"dreams": median_of(lambda r: (r["dream"], r["batch"]), "dreams"),
            "loops": median_of(lambda r: (r["checkpoint"],), "loops")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", nargs="?")
    parser.add_argument("after", nargs="?")
    parser.add_argument("--pair", nargs=2, action="append", default=[], metavar=("BEFORE", "AFTER"),
                        help="a pair of runs; repeat it for runs taken back to back in turns, and the "
                             "medians over the pairs are printed too")
    parser.add_argument("--before-precision", default="fp32")
    parser.add_argument("--after-precision", default="bf16")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    pairs = ([(args.before, args.after)] if args.before else []) + [tuple(p) for p in args.pair]
    if not pairs or (args.before and not args.after):
        parser.error("give BEFORE AFTER, or one --pair BEFORE AFTER or more")
    results = []
    for before_path, after_path in pairs:
        with open(before_path) as f:
            before = json.load(f)
        with open(after_path) as f:
            after = json.load(f)
        result = compare(before, after, args.before_precision, args.after_precision)
        results.append({"before": before_path, "after": after_path, **result})
        peaks = result["peaks_gflops"]
        print(f"{before_path} -> {after_path}")
        print(f"fp32 matmul: before {peaks['before']:.0f} GFLOP/s, after {peaks['after']:.0f} GFLOP/s")
        for row in result["dreams"]:
            print(f"{row['dream']:>34} batch {row['batch']:>4}: {row['before']:7.1f} ({args.before_precision}) -> "
                  f"{row['after']:7.1f} ({args.after_precision}) transitions/s, {row['as_timed']:.2f}x as timed, "
                  f"{row['ratio']:.2f}x per fp32 GFLOP/s")
        for loop in result["loops"]:
            print(f"{loop['checkpoint']:>34} training loop: {loop['before']:6.1f} -> {loop['after']:6.1f} "
                  f"transitions/s, {loop['as_timed']:.2f}x as timed, {loop['ratio']:.2f}x per fp32 GFLOP/s")
    summary = medians(results) if len(results) > 1 else None
    if summary:
        print(f"median over {len(results)} pairs:")
        for row in summary["dreams"]:
            print(f"{row['dream']:>34} batch {row['batch']:>4}: {row['as_timed']:.2f}x as timed, "
                  f"{row['ratio']:.2f}x per fp32 GFLOP/s")
        for loop in summary["loops"]:
            print(f"{loop['checkpoint']:>34} training loop: {loop['as_timed']:.2f}x as timed, "
                  f"{loop['ratio']:.2f}x per fp32 GFLOP/s")
    if args.out:
        write_json(args.out, {"before_precision": args.before_precision, "after_precision": args.after_precision,
                              "pairs": results, "medians": summary})


if __name__ == "__main__":
    main()
