"""How much faster the dreams of one ``dream_speed.py`` run are than another's, per GFLOP/s of
each run's own fp32 matmul (the figure that compares across runs on a shared, noisy machine).

    python benchmarks/speed_ratio.py benchmarks/results/dream_speed_issue_time.json \
        benchmarks/results/dream_speed.json --after-precision bf16

Prints, for every dream in both runs and every batch size, transitions/s before and after and the
ratio of ``per_fp32_gflops``; the loop profiles likewise. Writes the table as JSON with ``--out``.
A row without a ``precision`` (runs older than the field) was timed in fp32.
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--before-precision", default="fp32")
    parser.add_argument("--after-precision", default="bf16")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with open(args.before) as f:
        before = json.load(f)
    with open(args.after) as f:
        after = json.load(f)
    peaks = {name: run["matmul_peak_flops"]["fp32"] / 1e9 for name, run in (("before", before), ("after", after))}
    print(f"fp32 matmul: before {peaks['before']:.0f} GFLOP/s, after {peaks['after']:.0f} GFLOP/s")
    old, new = _rows(before, args.before_precision), _rows(after, args.after_precision)
    table = []
    for key in sorted(old.keys() & new.keys()):
        o, n = old[key], new[key]
        row = {"dream": key[0], "batch": key[1], "before": o["transitions_per_second"],
               "after": n["transitions_per_second"], "before_flops": o["flops_per_transition"],
               "after_flops": n["flops_per_transition"], "ratio": n["per_fp32_gflops"] / o["per_fp32_gflops"]}
        table.append(row)
        print(f"{key[0]:>34} batch {key[1]:>4}: {row['before']:7.1f} ({args.before_precision}) -> "
              f"{row['after']:7.1f} ({args.after_precision}) transitions/s, {row['ratio']:.2f}x per fp32 GFLOP/s")
    loops = []
    old_loops, new_loops = _loops(before), _loops(after)
    for name in sorted(old_loops.keys() & new_loops.keys()):
        o, n = old_loops[name], new_loops[name]
        per_gflops = {k: run["loop_transitions_per_second"] / peaks[k] for k, run in (("before", o), ("after", n))}
        ratio = per_gflops["after"] / per_gflops["before"]
        loops.append({"checkpoint": name, "before": o["loop_transitions_per_second"],
                      "after": n["loop_transitions_per_second"], "ratio": ratio})
        print(f"{name:>34} training loop: {o['loop_transitions_per_second']:6.1f} -> "
              f"{n['loop_transitions_per_second']:6.1f} transitions/s, {ratio:.2f}x per fp32 GFLOP/s")
    if args.out:
        write_json(args.out, {"before": args.before, "after": args.after, "peaks_gflops": peaks,
                              "before_precision": args.before_precision, "after_precision": args.after_precision,
                              "dreams": table, "loops": loops})


if __name__ == "__main__":
    main()
