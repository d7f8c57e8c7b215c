"""How well a checkpoint's reward and termination heads find the real rewards and episode ends,
fed real frames (teacher forcing).

    python benchmarks/reward_head.py checkpoints/boxing-diffusion --data data/boxing \
        --out benchmarks/results/reward_head_boxing_diffusion.json

For families whose reward and termination come from ``neuralenvs.nn.reward_end.RewardEndModel``
(the diffusion family). The head runs its LSTM from zero memory over each held-out episode (the
dataset's last ``--held-out`` episodes, which the trainer never trains on), every transition
between two real frames, with the dream-time prior correction applied. For each reward sign it
reports:

- the argmax decision's hits, misses and false alarms (precision and recall);
- the expected number of times a dream, which samples the head, would give that sign.

This separates the head from the dream. ``neuralenvs fidelity`` scores the heads over 50-step
dreams, which drift away from the real episode. ``--dreamed`` adds the step between, for any
family (and is all there is for families without a ``RewardEndModel``): one dreamed step from real
context on every held-out transition, argmax heads, precision and recall of each reward sign and of
episode ends (``neuralenvs.measure.fidelity.one_step_heads``): where the agent looks in a dream.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from neuralenvs.bench.report import write_json
from neuralenvs.checkpoint import build_world_model, load_checkpoint
from neuralenvs.data import EpisodeDataset
from neuralenvs.measure.fidelity import dreamed_freeze_onsets, one_step_heads
from neuralenvs.measure.heads import REWARD_SIGNS, episode_logits
from neuralenvs.nn.reward_end import reward_to_class
from neuralenvs.utils.device import describe_hardware, resolve_device


def score_ends(logits: torch.Tensor, terminated: np.ndarray, window: int = 10) -> dict[str, float]:
    """Precision and recall of the argmax "episode ended" decision, and what a dream that samples
    the head would do along the same real transitions: how many ends it draws in all, on the real
    end transitions, and within the ``window`` transitions that end each real life (an end drawn a
    few steps early still ends the life where the game is about to)."""
    chosen, real = logits.argmax(-1).numpy() == 1, terminated.astype(bool)
    hits, predicted, actual = int((chosen & real).sum()), int(chosen.sum()), int(real.sum())
    p_end = logits.softmax(-1)[:, 1].numpy()
    near_end = np.zeros_like(real)
    for t in np.flatnonzero(real):
        near_end[max(0, t + 1 - window) : t + 1] = True
    return {"real": actual, "argmax_predicted": predicted, "argmax_hits": hits,
            "precision": hits / predicted if predicted else math.nan, "recall": hits / actual if actual else math.nan,
            "sampled_expected": float(p_end.sum()), "sampled_expected_hits": float(p_end[real].sum()),
            "window": window, "sampled_expected_in_window": float(p_end[near_end].sum())}


def end_context_ambiguity(data: EpisodeDataset, episodes: list[int], k: int) -> dict[str, float]:
    """How many steps of its episode show exactly the same last ``k`` frames as each real episode end.

    A head that sees only a ``k``-frame context (one dreamed step from a real start) cannot tell
    those steps apart from the end, so at full recall its precision is at most 1 / that count. In
    CrazyClimber every lost life comes after about 40 identical frames."""
    counts = []
    for e in episodes:
        episode = data.episode(e)
        frames = episode.frames.reshape(len(episode.frames), -1)
        for t in np.flatnonzero(episode.terminated):
            if t < k - 1:
                continue
            end = frames[t + 1 - k : t + 1]  # the context from which the last action ends the episode
            same = [s for s in range(k - 1, len(episode.actions)) if np.array_equal(frames[s + 1 - k : s + 1], end)]
            counts.append(len(same))
    if not counts:
        return {"ends": 0}
    return {"ends": len(counts), "median_identical_contexts": float(np.median(counts)),
            "precision_bound_at_full_recall": float(np.mean([1 / c for c in counts]))}


def score(logits: torch.Tensor, rewards: np.ndarray) -> dict[str, dict[str, float]]:
    real = reward_to_class(torch.from_numpy(rewards)).numpy()
    chosen = logits.argmax(-1).numpy()
    probs = logits.softmax(-1).numpy()
    result = {}
    for cls, sign in REWARD_SIGNS.items():
        hits = int(((chosen == cls) & (real == cls)).sum())
        predicted, actual = int((chosen == cls).sum()), int((real == cls).sum())
        result[sign] = {
            "real": actual,
            "argmax_predicted": predicted,
            "argmax_hits": hits,
            "precision": hits / predicted if predicted else math.nan,
            "recall": hits / actual if actual else math.nan,
            "sampled_expected": float(probs[:, cls].sum()),
            "sampled_expected_hits": float(probs[real == cls, cls].sum()),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True, help="the dataset the checkpoint was trained on")
    parser.add_argument("--held-out", type=int, default=5, help="its last episodes, never trained on")
    parser.add_argument("--dreamed", action="store_true", help="also score the head after one dreamed step")
    parser.add_argument("--end-at-freeze-onset", action="store_true",
                        help="score ends where a life's frozen screen begins, as a head trained with "
                             "neuralenvs train --end-at-freeze-onset learns them")
    parser.add_argument("--freeze-end-delay", type=int, default=0, metavar="N",
                        help="with --end-at-freeze-onset: N steps into the freeze, as in training")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args()

    device = resolve_device(args.device)
    model = build_world_model(load_checkpoint(args.checkpoint), device=device).eval()
    data = EpisodeDataset(args.data)
    episodes = list(range(data.num_episodes - args.held_out, data.num_episodes))
    data.load(episodes)  # read each episode once
    if args.end_at_freeze_onset:
        data = data.ends_at_freeze_onsets(args.freeze_end_delay)
    start = time.perf_counter()
    result = {"checkpoint": args.checkpoint, "data": args.data, "episodes": episodes,
              "ends_at_freeze_onsets": args.end_at_freeze_onset,
              "freeze_end_delay": args.freeze_end_delay, "hardware": describe_hardware()}
    if args.dreamed or not hasattr(model, "reward_end"):
        heads = one_step_heads(model, data, episodes)
        result["one_dreamed_step"] = heads
        for name, r in [*heads["reward_by_sign"].items(), ("any", heads["reward"]), ("end", heads["termination"])]:
            print(f"one dreamed step, {'reward ' + name if name != 'end' else 'episode end'}: {r['real']} real, "
                  f"{r['predicted']} predicted; precision {r['precision']:.2f}, recall {r['recall']:.2f}")
    ambiguity = end_context_ambiguity(data, episodes, model.context_frames)
    result["end_context_ambiguity"] = ambiguity
    if ambiguity["ends"]:
        print(f"episode ends: each shows the same {model.context_frames}-frame context as "
              f"{ambiguity['median_identical_contexts']:.0f} steps of its episode (median); a head that sees only "
              f"that context has precision <= {ambiguity['precision_bound_at_full_recall']:.2f} at full recall")
    onsets = dreamed_freeze_onsets(model, data, episodes)
    result["dreamed_freeze_onsets"] = onsets
    if onsets["onsets"]:
        print(f"freezes before a lost life: the dream draws the first frozen frame at "
              f"{onsets['dream_nearer_the_frozen_frame']:.0%} of {onsets['onsets']} onsets (mean |change| "
              f"{onsets['dreamed_change']:.2f} dreamed, {onsets['real_change']:.2f} real, 0-255)")
    if not hasattr(model, "reward_end"):
        print(f"{args.checkpoint}: no RewardEndModel, so no teacher-forced score (the diffusion family has one)")
        _write(result, args.out, start)
        return
    logits, end_logits, rewards, ends = [], [], [], []
    for i in episodes:
        episode = data.episode(i)
        rew, end = episode_logits(model, episode.frames, episode.actions)
        logits.append(rew)
        end_logits.append(end)
        rewards.append(episode.rewards)
        ends.append(episode.terminated)
    result["transitions"] = int(sum(len(r) for r in rewards))
    result["reward"] = score(torch.cat(logits), np.concatenate(rewards))
    result["termination"] = score_ends(torch.cat(end_logits), np.concatenate(ends))
    e = result["termination"]
    print(f"episode end: {e['real']} real; argmax finds {e['argmax_hits']} with "
          f"{e['argmax_predicted'] - e['argmax_hits']} false alarms (precision {e['precision']:.2f}, "
          f"recall {e['recall']:.2f}); sampling expects {e['sampled_expected']:.1f} ends, "
          f"{e['sampled_expected_hits']:.2f} on real ones, {e['sampled_expected_in_window']:.2f} within "
          f"{e['window']} steps of them")
    for sign, r in result["reward"].items():
        print(
            f"reward {sign}: {r['real']} real; argmax finds {r['argmax_hits']} with "
            f"{r['argmax_predicted'] - r['argmax_hits']} false alarms (precision {r['precision']:.2f}, "
            f"recall {r['recall']:.2f}); sampling expects {r['sampled_expected']:.1f} "
            f"({r['sampled_expected_hits']:.1f} on real ones)"
        )
    _write(result, args.out, start)


def _write(result: dict, out: str | None, start: float) -> None:
    result["seconds"] = time.perf_counter() - start
    if out:
        write_json(out, result)


if __name__ == "__main__":
    main()
