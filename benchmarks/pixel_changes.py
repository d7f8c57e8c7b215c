"""How many pixels a dream moves each step, and by how much, beside the real game.

    python benchmarks/pixel_changes.py checkpoints/kungfumaster-diffusion --data data/kungfumaster-test \
        --out benchmarks/results/pixel_changes_kungfumaster.json

A pixel's change is the largest of its three channels' changes from the frame before, in 8-bit
levels. Each dream runs ``--steps`` steps from the first frames of the longest episodes of
``--data`` under their real actions, beside the real frames of the same steps (and of every step of
``--data``). An Atari screen is still almost everywhere, so a dream that moves many pixels by a
level or two is drifting, not playing: the reason for the diffusion family's ``drop_change_levels``
(docs/horizon.md). A dream that moves far fewer pixels than the game has stopped.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from neuralenvs.bench.report import write_json
from neuralenvs.data import EpisodeDataset
from neuralenvs.registry import load_world_model
from neuralenvs.utils.device import describe_hardware
from neuralenvs.world_model import WorldModel

BINS = ((1, 1), (2, 4), (5, 8), (9, 16), (17, 255))  # change magnitudes, in levels, both ends included


def change_shares(changes: np.ndarray) -> dict[str, float]:
    """``changes``: per-pixel change magnitudes (levels). The share of pixels that moved at all, and
    the share of the moved ones in each magnitude bin."""
    moved = changes[changes > 0]
    shares = {"moved": float((changes > 0).mean()), "moved_over_8": float((changes > 8).mean())}
    for lo, hi in BINS:
        shares[f"{lo}-{hi}"] = float(((moved >= lo) & (moved <= hi)).mean()) if moved.size else 0.0
    return shares


def pixel_change(frames: np.ndarray) -> np.ndarray:
    """uint8 [..., T, H, W, C] -> the per-pixel change magnitude of each step, [..., T - 1, H, W]."""
    return np.abs(np.diff(frames.astype(np.int16), axis=-4)).max(axis=-1)


@torch.no_grad()
def dreamed_changes(model: WorldModel, data: EpisodeDataset, episodes: list[int], steps: int) -> np.ndarray:
    k = model.context_frames
    context = np.stack([data.episode(e).frames[:k] for e in episodes])
    actions = np.stack([data.episode(e).actions[: k - 1 + steps] for e in episodes]).astype(np.int64)
    state = model.init_state(torch.from_numpy(context), torch.from_numpy(actions[:, : k - 1]))
    generator = torch.Generator().manual_seed(0)
    frames = [context[:, -1]]
    for t in range(steps):
        state, next_frames, _, _ = model.step(state, torch.from_numpy(actions[:, k - 1 + t]), generator)
        frames.append(next_frames.numpy())
    return pixel_change(np.stack(frames, axis=1))  # [B, T, H, W]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dreams", nargs="+", help="checkpoint folders or registered dream ids")
    parser.add_argument("--data", required=True, help="held-out episodes of the dreams' game")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rollouts", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="JSON to write")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = EpisodeDataset(args.data)
    longest = sorted(range(data.num_episodes), key=lambda e: -data.episode_lengths[e])
    episodes = [e for e in longest if data.episode_lengths[e] > args.steps + 8][: args.rollouts]
    if not episodes:
        raise SystemExit(f"no episode of {args.data} is longer than {args.steps + 8} steps; ask for fewer --steps")
    models = {dream: load_world_model(dream).eval() for dream in args.dreams}
    k = next(iter(models.values())).context_frames
    same_steps = np.stack([pixel_change(data.episode(e).frames[k - 1 : k + args.steps]) for e in episodes])
    every_step = np.concatenate([pixel_change(data.episode(e).frames) for e in range(data.num_episodes)])
    rows = {"real, the dreams' episodes and steps": change_shares(same_steps),
            "real, every step of --data": change_shares(every_step)}
    for dream, model in models.items():
        rows[dream] = change_shares(dreamed_changes(model, data, episodes, args.steps))
    print(f"{'':<40} {'moved %':>8} {'>8 lv %':>8}  " + " ".join(f"{f'{lo}-{hi}':>7}" for lo, hi in BINS)
          + "  (% of pixels moved per step, by more than 8 levels, then the moved ones' shares by levels)")
    for name, shares in rows.items():
        print(f"{name[-40:]:<40} {100 * shares['moved']:8.3f} {100 * shares['moved_over_8']:8.3f} "
              + " ".join(f"{shares[f'{lo}-{hi}']:7.3f}" for lo, hi in BINS))
    if args.out:
        write_json(args.out, {"data": args.data, "episodes": episodes, "steps": args.steps, "rows": rows,
                              "hardware": describe_hardware()})


if __name__ == "__main__":
    main()
