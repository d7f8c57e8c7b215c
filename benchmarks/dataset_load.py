"""Load a whole episode dataset into memory: seconds, resident memory, and segment sampling rate.

    python benchmarks/dataset_load.py --data data/pong --out benchmarks/results/dataset_load.json
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

from neuralenvs.bench.report import write_json
from neuralenvs.data import EpisodeDataset


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", default="benchmarks/results/dataset_load.json")
    args = parser.parse_args()

    rss_before = rss_mib()
    t0 = time.perf_counter()
    ds = EpisodeDataset(args.data).load()
    load_s = time.perf_counter() - t0
    rss_after = rss_mib()
    frame_bytes = sum(ds.episode(i).frames.nbytes for i in range(ds.num_episodes))

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    n = 50
    for _ in range(n):
        ds.sample_segments(32, 19, rng)
    sample_s = (time.perf_counter() - t0) / n

    disk = sum(p.stat().st_size for p in Path(args.data).rglob("*") if p.is_file())
    result = {
        "data": args.data,
        "episodes": ds.num_episodes,
        "steps": ds.num_steps,
        "disk_mib": disk / 2**20,
        "load_seconds": load_s,
        "frames_in_memory_mib": frame_bytes / 2**20,
        "rss_increase_mib": rss_after - rss_before,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "sample_batch32_len20_ms": sample_s * 1000,
    }
    print(json.dumps(result, indent=2))
    write_json(args.out, result)


if __name__ == "__main__":
    main()
