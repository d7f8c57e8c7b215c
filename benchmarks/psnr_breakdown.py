"""Where a dream wins or loses against repeat-last-frame: by window and by band.

    python benchmarks/psnr_breakdown.py neuralenvs/KungFuMaster-diffusion-v0 runs/kfm-x/checkpoint \
        --data data/kungfumaster-test --windows 512 --out benchmarks/results/psnr_breakdown_kungfumaster.json

The same windows as ``neuralenvs fidelity --held-out N --windows W`` with N every episode of
``--data`` (seed 0), the dream fed the real actions. At each step in ``--steps`` it prints:

- the mean of the per-window PSNR gain over repeat-last (``neuralenvs fidelity``'s figure, each
  window's PSNR capped at 60 dB), and beside it the same gain on the windows where repeat-last is
  within ``--still-db`` of exact (the real screen barely changed since the context) and on the rest
  (a mean of decibels weighs a window whose error is tiny as much as one whose frame is wrong), and
  on the windows whose target is not in the frozen screen that ends a lost life (a dream trained with
  ``--end-at-freeze-onset`` ends the life there and never dreams that screen), and when in their
  episodes the still windows and the rest start;
- the PSNR of the mean squared error over all windows, dream and repeat-last (the figure a mean of
  errors gives, which weighs the windows by how wrong they are);
- for each band of 8 rows, the dream's and repeat-last's mean squared error (8-bit levels squared)
  and the band's share of the difference between them summed over the bands.

Once per ``--data``: the step of each episode at which its screen first changes (quartiles), i.e.
how long a life's start stands still, and how often a context of 4 identical frames is followed by
a different one (the hazard a dream would learn from the data, early in a life and later); with
``--life-starts N``, the first change for each dream too, dreamed N steps from every episode's first
frames under its recorded actions (NOOP after it ends). With no dreams it reports the data only.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from neuralenvs.bench.report import write_json
from neuralenvs.data import EpisodeDataset
from neuralenvs.data.episodes import freeze_onset
from neuralenvs.envs.runtime import dreaming
from neuralenvs.measure.fidelity import PSNR_CAP, _stderr, _windows
from neuralenvs.measure.horizon import long_rollouts
from neuralenvs.registry import load_world_model

BAND_ROWS = 8
CONTEXT = 4  # frames of the still contexts counted in the data (the shipped diffusion dreams' context)
STILL_START = 80  # a still context ending before this step of its episode is a life's still start


@torch.no_grad()
def window_errors(model, data: EpisodeDataset, steps: tuple[int, ...], num_windows: int, batch_size: int = 32,
                  seed: int = 0) -> dict[int, dict[str, np.ndarray]]:
    """For each step, the dream's and repeat-last's squared error per window and row ([windows, H]),
    whether each window's target lies in the frozen screen that ends its episode, and the step of its
    episode at which the window starts ([windows] each)."""
    k, horizon = model.context_frames, max(steps)
    episodes = list(range(data.num_episodes))
    windows = _windows(data, episodes, k, horizon, num_windows, np.random.default_rng(seed))
    rows = {s: {"dream": [], "repeat_last": [], "in_end_freeze": [], "start_step": []} for s in steps}
    generator = torch.Generator().manual_seed(seed)
    for lo in range(0, len(windows), batch_size):
        pairs = [(data.episode(e), t0) for e, t0 in windows[lo : lo + batch_size]]
        onsets = np.array([freeze_onset(ep.frames) for ep, _ in pairs])
        context = np.stack([ep.frames[t0 - k + 1 : t0 + 1] for ep, t0 in pairs])
        context_actions = np.stack([ep.actions[t0 - k + 1 : t0] for ep, t0 in pairs])
        state = model.init_state(torch.from_numpy(context), torch.from_numpy(context_actions))
        last = context[:, -1].astype(np.float64)
        for s in range(1, horizon + 1):
            alive = np.array([t0 + s <= len(ep) for ep, t0 in pairs])  # the real episode has this step
            actions = np.array([ep.actions[min(t0 + s, len(ep)) - 1] for ep, t0 in pairs])
            state, frames, _, _ = model.step(state, torch.from_numpy(actions), generator)
            if s not in rows or not alive.any():
                continue
            real = np.stack([ep.frames[min(t0 + s, len(ep))] for ep, t0 in pairs])[alive].astype(np.float64)
            for name, guess in (("dream", frames.numpy()[alive].astype(np.float64)), ("repeat_last", last[alive])):
                rows[s][name].append(((guess - real) ** 2).mean(axis=(2, 3)))
            # the target repeats the frame before it, in the still screen that ends a lost life
            rows[s]["in_end_freeze"].append((np.array([t0 + s for _, t0 in pairs]) > onsets)[alive])
            rows[s]["start_step"].append(np.array([t0 for _, t0 in pairs])[alive])  # the context's last frame
    return {s: {name: np.concatenate(v) for name, v in r.items()} for s, r in rows.items()}


def first_change(frames: np.ndarray) -> int | None:
    """The first step t of an episode (frames uint8 [T + 1, H, W, C]) whose next frame differs from
    it in any pixel; ``None`` where the screen never changes."""
    changed = (frames[1:] != frames[:-1]).reshape(len(frames) - 1, -1).any(axis=1)
    return int(np.argmax(changed)) if changed.any() else None


def dreamed_first_changes(model, data: EpisodeDataset, steps: int) -> list[int | None]:
    """For every episode longer than the context, :func:`first_change` of its first K frames followed
    by ``steps`` frames dreamed from them under its recorded actions (NOOP after it ends)."""
    k = model.context_frames
    episodes = [ep for ep in map(data.episode, range(data.num_episodes)) if len(ep.frames) > k]
    context = np.stack([ep.frames[:k] for ep in episodes])
    actions = np.zeros((len(episodes), steps), np.int64)
    for i, ep in enumerate(episodes):
        recorded = ep.actions[k - 1 : k - 1 + steps]
        actions[i, : len(recorded)] = recorded
    context_actions = np.stack([ep.actions[: k - 1] for ep in episodes]).astype(np.int64)
    kept = long_rollouts(model, context, context_actions, actions, range(1, steps + 1))
    dreamed = np.stack([kept[s] for s in range(1, steps + 1)], axis=1)
    return [first_change(np.concatenate([context[i], dreamed[i]])) for i in range(len(episodes))]


def still_context_changes(episodes: list[np.ndarray], context: int, early: int) -> dict[str, dict[str, float]]:
    """Of the windows whose ``context`` frames are all the same (episodes: uint8 frames [T + 1, H, W, C]
    each), how many have a next frame that differs: the chance per step, in the data, that a still
    screen changes. Split by whether the window ends before step ``early`` of its episode (a life's
    still start) or not."""
    counts = {"early": [0, 0], "late": [0, 0]}  # [still contexts, of which the next frame changed]
    for frames in episodes:
        same = (frames[1:] == frames[:-1]).reshape(len(frames) - 1, -1).all(axis=1)  # same[t]: t + 1 == t
        still = np.convolve(same, np.ones(context - 1, int), "valid") == context - 1  # frames t .. t + K - 1
        for t in np.flatnonzero(still[: len(same) - context + 1]):
            last = t + context - 1  # the context's last frame; same[last] says the next one repeats it
            c = counts["early" if last < early else "late"]
            c[0] += 1
            c[1] += int(not same[last])
    return {k: {"still_contexts": n, "next_changed": m, "share": m / n if n else float("nan")}
            for k, (n, m) in counts.items()}


def change_quartiles(firsts: list[int | None]) -> list[float] | None:
    """Min, quartiles and max of the steps that are not ``None``."""
    found = [t for t in firsts if t is not None]
    return np.percentile(found, [0, 25, 50, 75, 100]).tolist() if found else None


def psnr_db(mse: np.ndarray) -> np.ndarray:
    return np.minimum(10 * np.log10(255.0**2 / np.maximum(mse, 1e-12)), PSNR_CAP)


def breakdown(rows: dict[str, np.ndarray], still_db: float) -> dict:
    """The figures the module docstring lists, from one step's per-window, per-row squared errors."""
    dream, last = rows["dream"], rows["repeat_last"]
    gain = psnr_db(dream.mean(1)) - psnr_db(last.mean(1))
    still = psnr_db(last.mean(1)) >= PSNR_CAP - still_db
    frozen, start = rows["in_end_freeze"], rows["start_step"]
    h = dream.shape[1]
    bands = (h + BAND_ROWS - 1) // BAND_ROWS
    pad = ((0, 0), (0, bands * BAND_ROWS - h))
    band_dream = np.pad(dream, pad).reshape(len(dream), bands, BAND_ROWS).mean(2).mean(0)
    band_last = np.pad(last, pad).reshape(len(last), bands, BAND_ROWS).mean(2).mean(0)
    excess = band_dream - band_last
    return {
        "windows": len(gain),
        "psnr_gain": float(gain.mean()),
        "psnr_gain_stderr": _stderr(gain),
        "still_windows": int(still.sum()),
        "psnr_gain_still": float(gain[still].mean()) if still.any() else None,
        "psnr_gain_moving": float(gain[~still].mean()) if (~still).any() else None,
        "start_step_quartiles_still": np.percentile(start[still], [25, 50, 75]).tolist() if still.any() else None,
        "start_step_quartiles_moving": np.percentile(start[~still], [25, 50, 75]).tolist() if (~still).any() else None,
        "still_windows_in_end_freeze": int((still & frozen).sum()),
        "psnr_gain_outside_end_freeze": float(gain[~frozen].mean()) if (~frozen).any() else None,
        "psnr_gain_outside_end_freeze_stderr": _stderr(gain[~frozen]),
        "windows_outside_end_freeze": int((~frozen).sum()),
        "psnr_of_mean_mse": {"dream": float(psnr_db(dream.mean())), "repeat_last": float(psnr_db(last.mean()))},
        "band_mse": {"dream": band_dream.tolist(), "repeat_last": band_last.tolist()},
        "band_share_of_difference": (excess / excess.sum()).tolist() if excess.sum() else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dreams", nargs="*", help="registered dream ids or checkpoint folders (none: the data only)")
    parser.add_argument("--data", required=True, help="held-out episode dataset (every episode is used)")
    parser.add_argument("--steps", type=int, nargs="+", default=[15, 50])
    parser.add_argument("--windows", type=int, default=512)
    parser.add_argument("--still-db", type=float, default=10.0,
                        help="a window is still where repeat-last is within this of the PSNR cap")
    parser.add_argument("--life-starts", type=int, default=0, metavar="N",
                        help="also dream N steps from every episode's start: when does it first change the screen?")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="JSON file to write")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = EpisodeDataset(args.data)
    episode_frames = [data.episode(e).frames for e in range(data.num_episodes)]
    first_change_quartiles = change_quartiles([first_change(frames) for frames in episode_frames])
    print(f"{args.data}: the step at which an episode's screen first changes, min / quartiles / max over "
          f"{data.num_episodes} episodes: {first_change_quartiles}")
    still = still_context_changes(episode_frames, CONTEXT, STILL_START)
    for part, name in (("early", f"before step {STILL_START}"), ("late", "later")):
        c = still[part]
        print(f"  {c['still_contexts']} windows of {CONTEXT} identical frames ending {name} in an episode: the next "
              f"frame differs in {c['next_changed']} ({100 * c['share']:.2f}%)")
    results, life_starts = {}, {}
    for dream in args.dreams:
        model = load_world_model(dream, device="cpu")
        with dreaming(model, "fp32"):
            rows = window_errors(model, data, tuple(args.steps), args.windows)
            dreamed = dreamed_first_changes(model, data, args.life_starts) if args.life_starts else None
        results[dream] = {str(s): breakdown(r, args.still_db) for s, r in rows.items()}
        if dreamed is not None:
            found = life_starts[dream] = {"first_change_step": change_quartiles(dreamed), "steps": args.life_starts,
                                          "never_changed": dreamed.count(None), "episodes": len(dreamed)}
            print(f"{dream}, dreamed {args.life_starts} steps from each episode's start: the screen first changes "
                  f"at step {found['first_change_step']} (min / quartiles / max); in {found['never_changed']} of "
                  f"{found['episodes']} it never does")
        for s, b in results[dream].items():
            mean_mse = b["psnr_of_mean_mse"]
            print(f"{dream} step {s}, {b['windows']} windows: PSNR gain over repeat-last "
                  f"{b['psnr_gain']:+.2f} ± {b['psnr_gain_stderr']:.2f} dB")
            print(f"  still windows ({b['still_windows']}, {b['still_windows_in_end_freeze']} of them in the frozen "
                  f"end of a life): {b['psnr_gain_still']:+.2f}; the rest: {b['psnr_gain_moving']:+.2f}")
            print(f"  the step of its episode at which a window starts, quartiles: still windows "
                  f"{b['start_step_quartiles_still']}, the rest {b['start_step_quartiles_moving']}")
            print(f"  the {b['windows_outside_end_freeze']} windows outside the frozen end of a life: "
                  f"{b['psnr_gain_outside_end_freeze']:+.2f} ± {b['psnr_gain_outside_end_freeze_stderr']:.2f}")
            print(f"  PSNR of the mean squared error: {mean_mse['dream']:.2f} against repeat-last's "
                  f"{mean_mse['repeat_last']:.2f}")
            share = b["band_share_of_difference"] or [float("nan")] * len(b["band_mse"]["dream"])
            for i, (d, r) in enumerate(zip(b["band_mse"]["dream"], b["band_mse"]["repeat_last"], strict=True)):
                print(f"  rows {i * BAND_ROWS:2d}-{i * BAND_ROWS + BAND_ROWS - 1:2d}: MSE {d:7.1f} / {r:7.1f}, "
                      f"share {share[i]:+.2f}")
    if args.out:
        write_json(args.out, {"data": args.data, "windows": args.windows, "band_rows": BAND_ROWS,
                              "still_db": args.still_db, "first_change_step": first_change_quartiles,
                              "still_contexts": still,
                              "dreams": results, "dreamed_from_life_starts": life_starts})


if __name__ == "__main__":
    main()
