"""The check every shipped dream passes (``tests/test_horizon.py``), for any dream: how sharp and how
true in colour its frames are after long random play from its own start bank, against real frames,
and how much of them stands out from the game's still screen (its sprites).

    python benchmarks/look_check.py neuralenvs/Boxing-genie-v0 runs/genie-ada0.05-argmax --game Boxing \
        --out benchmarks/results/look_check_genie.json

The real frames are 400 steps of random play (seed 123), as in the test; 8 dreams per action seed,
scored at steps 100 and 300 (``neuralenvs.measure.horizon.look_from_start_bank``). The test holds
a shipped dream to a sharpness ratio of 0.75 to 1.33 (seed 0, step 100 for Boxing, 300 for the others).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from neuralenvs.bench.report import write_json
from neuralenvs.data import EpisodeDataset
from neuralenvs.envs.collect import collect_atari
from neuralenvs.measure.horizon import look_from_start_bank
from neuralenvs.registry import load_world_model_and_starts
from neuralenvs.utils.device import describe_hardware


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dreams", nargs="+", help="dream ids or checkpoint folders")
    parser.add_argument("--game", required=True, help="the Atari game the dreams are of (e.g. Boxing)")
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="random-action seeds")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="benchmarks/results/look_check.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        collect_atari(args.game, Path(tmp) / "real", 400, seed=123, progress=False)
        data = EpisodeDataset(Path(tmp) / "real")
        real = np.concatenate([data.episode(e).frames for e in range(data.num_episodes)])
    rows = []
    for dream in args.dreams:
        model, starts, _ = load_world_model_and_starts(dream, device="cpu")
        for seed in args.seeds:
            look = look_from_start_bank(model.eval(), starts, real, args.steps, seed=seed)
            rows.append({"dream": dream, "seed": seed, "look": look})
            print(dream, f"seed {seed}:", "  ".join(
                f"{s}: {v['sharpness_ratio']:.3f}x / {v['histogram_distance']:.3f} / foreground"
                f" {v['foreground_ratio']:.2f}x ({v['worst_band_foreground_ratio']:.2f}x)" for s, v in look.items()))
    write_json(args.out, {"game": args.game, "rows": rows, "hardware": describe_hardware()})


if __name__ == "__main__":
    main()
