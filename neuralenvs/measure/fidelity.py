"""Fidelity: how close a dream stays to the real game when fed the real actions.

From held-out real episodes: start the dream on ``context_frames`` real frames, feed it the real
actions that followed, and compare the dreamed frame ``s`` steps later with the real one (PSNR and
SSIM at steps 1, 5, 15 and 50), against the baseline that repeats the last real frame. For the
families that dream in a frame tokenizer's codes, the tokenizer's reconstruction PSNR of the real
frames is reported beside it (``tokenizer_psnr``): what a dream that predicts the real frame's codes
exactly would score; and how sharp those rebuilds are against the real frames
(``tokenizer_sharpness_ratio``, :func:`neuralenvs.measure.horizon.sharpness`). Along the same
rollouts, the reward and termination heads are scored by precision and recall of the steps where
the real game gave a nonzero reward (sign matched) and where a real episode ended.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from neuralenvs.data import EpisodeDataset
from neuralenvs.data.episodes import freeze_onset
from neuralenvs.measure.horizon import sharpness
from neuralenvs.measure.metrics import psnr, ssim
from neuralenvs.nn.frame_tokens import FrameTokens
from neuralenvs.world_model import WorldModel

PSNR_CAP = 60.0  # dB; an exactly repeated frame would otherwise average to +inf


def _windows(dataset: EpisodeDataset, episodes: list[int], k: int, horizon: int, n: int,
             rng: np.random.Generator) -> list[tuple[int, int]]:
    """(episode, t0) pairs: real context frames t0-k+1..t0, then up to ``horizon`` real steps."""
    candidates = []
    for e in episodes:
        length = dataset.episode_lengths[e]
        for t0 in range(k - 1, length):  # at least one real step after the context
            candidates.append((e, t0))
    if not candidates:
        raise ValueError(f"no held-out episode is longer than the {k}-frame context")
    picks = rng.choice(len(candidates), size=min(n, len(candidates)), replace=False)
    return [candidates[i] for i in sorted(picks)]


def _stderr(values: Sequence[float] | np.ndarray) -> float:
    return float(np.std(values) / math.sqrt(len(values))) if len(values) else math.nan


def _clustered_stderr(values: Sequence[float] | np.ndarray, clusters: Sequence[int] | np.ndarray) -> float:
    """The standard error of the mean of ``values`` when those of one cluster (windows of one
    episode) may be correlated: the spread of the clusters' summed deviations, not of the values
    (the cluster-robust "CR0" estimator; with independent values it is about ``_stderr``)."""
    values, clusters = np.asarray(values, float), np.asarray(clusters)
    if len(values) == 0:
        return math.nan
    deviations = values - values.mean()
    sums = [deviations[clusters == c].sum() for c in np.unique(clusters)]
    return float(math.sqrt(float(np.sum(np.square(sums)))) / len(values))


def _precision_recall(predicted: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """For sign vectors: a hit is a nonzero prediction that equals the real nonzero sign."""
    hits = float(((predicted != 0) & (predicted == real)).sum())
    n_pred, n_real = float((predicted != 0).sum()), float((real != 0).sum())
    return {
        "precision": hits / n_pred if n_pred else math.nan,
        "recall": hits / n_real if n_real else math.nan,
        "predicted": int(n_pred),
        "real": int(n_real),
    }


FIDELITY_BATCH = 32  # windows dreamed at once


@torch.no_grad()
def measure_fidelity(
    model: WorldModel,
    dataset: EpisodeDataset,
    episodes: list[int],
    steps: tuple[int, ...] = (1, 5, 15, 50),
    num_windows: int = 128,
    batch_size: int = FIDELITY_BATCH,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Fidelity of ``model`` on ``episodes`` of ``dataset`` (see the module docstring)."""
    model.eval()
    device = model.device
    k, horizon = model.context_frames, max(steps)
    rng = np.random.default_rng(seed)
    windows = _windows(dataset, episodes, k, horizon, num_windows, rng)
    sums = {s: {"psnr": [], "ssim": [], "psnr_baseline": [], "ssim_baseline": []} for s in steps}
    scored_episodes: dict[int, list[int]] = {s: [] for s in steps}  # the episode of each scored window
    reward_pred, reward_real, end_pred, end_real, round_trip = [], [], [], [], []
    round_trip_edges = np.zeros(2)  # sharpness of the rebuilt and the real frames, times their count
    tokenized = isinstance(model, FrameTokens)
    generator = torch.Generator(device=device).manual_seed(seed)
    for lo in tqdm(range(0, len(windows), batch_size), desc="fidelity", disable=not progress):
        chunk = windows[lo : lo + batch_size]
        b = len(chunk)
        h, w, c = dataset.obs_shape
        context = np.zeros((b, k, h, w, c), np.uint8)
        context_actions = np.zeros((b, k - 1), np.int64)
        real = np.zeros((b, horizon, h, w, c), np.uint8)
        actions = np.zeros((b, horizon), np.int64)
        rewards = np.zeros((b, horizon), np.float32)
        ends = np.zeros((b, horizon), bool)
        valid = np.zeros((b, horizon), bool)  # the real episode still runs at this step
        for i, (e, t0) in enumerate(chunk):
            ep = dataset.episode(e)
            context[i] = ep.frames[t0 - k + 1 : t0 + 1]
            context_actions[i] = ep.actions[t0 - k + 1 : t0]
            n = min(horizon, len(ep) - t0)
            real[i, :n] = ep.frames[t0 + 1 : t0 + 1 + n]
            actions[i, :n] = ep.actions[t0 : t0 + n]
            rewards[i, :n] = ep.rewards[t0 : t0 + n]
            ends[i, :n] = ep.terminated[t0 : t0 + n]
            valid[i, :n] = True
        if tokenized:  # every window has a real first step (see _windows)
            first = torch.from_numpy(real[:, 0]).to(device)
            before = torch.from_numpy(context[:, -1]).to(device)  # for a tokenizer that sees the frame before
            chunk_psnr, chunk_edges = tokenizer_round_trip(model, first, before)
            round_trip += chunk_psnr
            round_trip_edges += chunk_edges
        state = model.init_state(
            torch.from_numpy(context).to(device), torch.from_numpy(context_actions).to(device)
        )
        last_real = torch.from_numpy(context[:, -1]).to(device)
        alive = np.ones(b, bool)  # a dream is scored until its real episode ends
        for s in range(1, horizon + 1):
            state, frames, reward, terminated = model.step(
                state, torch.from_numpy(actions[:, s - 1]).to(device), generator
            )
            ok = valid[:, s - 1] & alive
            reward_pred.append(reward.sign().cpu().numpy()[ok])
            reward_real.append(np.sign(rewards[ok, s - 1]))
            end_pred.append(terminated.cpu().numpy()[ok].astype(np.int64))
            end_real.append(ends[ok, s - 1].astype(np.int64))
            alive &= ~ends[:, s - 1]
            if s in sums:
                target = torch.from_numpy(real[:, s - 1]).to(device)
                idx = torch.from_numpy(valid[:, s - 1]).to(device)
                if idx.any():
                    sums[s]["psnr"] += psnr(frames[idx], target[idx]).clamp(max=PSNR_CAP).tolist()
                    sums[s]["ssim"] += ssim(frames[idx], target[idx]).tolist()
                    sums[s]["psnr_baseline"] += psnr(last_real[idx], target[idx]).clamp(max=PSNR_CAP).tolist()
                    sums[s]["ssim_baseline"] += ssim(last_real[idx], target[idx]).tolist()
                    scored_episodes[s] += [e for (e, _), ok in zip(chunk, valid[:, s - 1], strict=True) if ok]
    per_step = {}
    for s, values in sums.items():
        per_step[str(s)] = {name: float(np.mean(v)) if v else math.nan for name, v in values.items()}
        per_step[str(s)]["n"] = len(values["psnr"])
        per_step[str(s)]["psnr_stderr"] = _stderr(values["psnr"])
        # the dream and repeat-last are scored on the same windows: whether the dream beats it is
        # told by the spread of the per-window difference, far smaller than either one's spread
        gain = np.subtract(values["psnr"], values["psnr_baseline"])
        per_step[str(s)]["psnr_gain_stderr"] = _stderr(gain)
        # windows of one episode overlap in time and share its course: a more honest error bar when
        # there are many windows per episode (it needs several episodes to mean anything)
        per_step[str(s)]["psnr_gain_stderr_by_episode"] = _clustered_stderr(gain, scored_episodes[s])
    result = {
        "steps": per_step,
        "reward": _precision_recall(np.concatenate(reward_pred), np.concatenate(reward_real)),
        "termination": _precision_recall(np.concatenate(end_pred), np.concatenate(end_real)),
        "windows": len(windows),
        "episodes": list(map(int, episodes)),
        "psnr_cap_db": PSNR_CAP,
    }
    if tokenized:  # the frame tokenizer's own reconstruction of the real frames
        result["tokenizer_psnr"] = float(np.mean(round_trip))
        result["tokenizer_psnr_stderr"] = float(np.std(round_trip) / math.sqrt(len(round_trip)))
        if round_trip_edges[1] > 0:
            result["tokenizer_sharpness_ratio"] = float(round_trip_edges[0] / round_trip_edges[1])
    return result


def tokenizer_round_trip(
    model: FrameTokens, frames: torch.Tensor, before: torch.Tensor
) -> tuple[list[float], np.ndarray]:
    """A frame tokenizer's rebuild of real ``frames`` uint8 [B, H, W, C], each decoded with the frame
    ``before`` it where the tokenizer sees it: the PSNR of each, and the sharpness of the rebuilds
    and of the real frames, each times B (zeros for frames that are not RGB), to be summed over
    batches. A blurring tokenizer blurs every frame its dream shows."""
    rebuilt = model.decode(model.encode(frames), before)
    values = psnr(rebuilt, frames).clamp(max=PSNR_CAP).tolist()
    if frames.shape[-1] != 3:
        return values, np.zeros(2)
    return values, np.array([sharpness(rebuilt.cpu().numpy()), sharpness(frames.cpu().numpy())]) * len(frames)


@torch.no_grad()
def one_step_heads(
    model: WorldModel, dataset: EpisodeDataset, episodes: list[int], batch_size: int = 64, seed: int = 0,
) -> dict:
    """The heads where the agent looks: after one dreamed step from real context, on every
    transition of ``episodes`` (argmax heads). Precision and recall of nonzero rewards (sign
    matched) and of episode ends (a lost life ends a training episode), for any family."""
    model.eval()
    k, device = model.context_frames, model.device
    windows = [(e, t) for e in episodes for t in range(k - 1, dataset.episode_lengths[e])]
    if not windows:
        raise ValueError(f"no held-out episode is longer than the {k}-frame context")
    loaded = {e: dataset.episode(e) for e in episodes}  # each read once
    generator = torch.Generator(device=device).manual_seed(seed)
    reward_pred, reward_real, end_pred, end_real = [], [], [], []
    for lo in range(0, len(windows), batch_size):
        chunk = [(loaded[e], t) for e, t in windows[lo : lo + batch_size]]
        frames = torch.from_numpy(np.stack([ep.frames[t - k + 1 : t + 1] for ep, t in chunk]))
        actions = torch.from_numpy(np.stack([ep.actions[t - k + 1 : t] for ep, t in chunk]).astype(np.int64))
        state = model.init_state(frames.to(device), actions.to(device))
        step = torch.tensor([int(ep.actions[t]) for ep, t in chunk], device=device)
        _, _, reward, terminated = model.step(state, step, generator)
        reward_pred.append(reward.sign().cpu().numpy())
        reward_real.append(np.sign([ep.rewards[t] for ep, t in chunk]))
        end_pred.append(terminated.cpu().numpy().astype(np.int64))
        end_real.append(np.array([bool(ep.terminated[t]) for ep, t in chunk], np.int64))
    reward_pred, reward_real = np.concatenate(reward_pred), np.concatenate(reward_real)
    by_sign = {
        name: _precision_recall(np.where(reward_pred == sign, sign, 0), np.where(reward_real == sign, sign, 0))
        for name, sign in (("-1", -1), ("+1", 1))
    }
    return {
        "transitions": len(windows),
        "reward": _precision_recall(reward_pred, reward_real),
        "reward_by_sign": by_sign,
        "termination": _precision_recall(np.concatenate(end_pred), np.concatenate(end_real)),
        "episodes": list(map(int, episodes)),
    }


@torch.no_grad()
def dreamed_freeze_onsets(model: WorldModel, dataset: EpisodeDataset, episodes: list[int], seed: int = 0) -> dict:
    """Does the dream draw the frame where a lost life's freeze begins? For each episode that ends
    in at least ``k`` identical frames (CrazyClimber: the game freezes about 40 frames before a lost
    life), one step is dreamed into the freeze's first frame from the real frames and actions
    before it. A head that judges from the frames can only end a dream there if the dream draws it."""
    model.eval()
    k, device = model.context_frames, model.device
    generator = torch.Generator(device=device).manual_seed(seed)
    nearer, dream_change, real_change = [], [], []
    for e in episodes:
        episode = dataset.episode(e)
        onset = freeze_onset(episode.frames)
        if not episode.terminated[-1] or len(episode.frames) - onset < k or onset < k:
            continue
        t = onset - 1  # the last frame before the freeze
        frames = torch.from_numpy(episode.frames[None, t - k + 1 : t + 1]).to(device)
        actions = torch.from_numpy(episode.actions[None, t - k + 1 : t].astype(np.int64)).to(device)
        state = model.init_state(frames, actions)
        _, dreamed, _, _ = model.step(state, torch.tensor([int(episode.actions[t])], device=device), generator)
        dreamed = dreamed[0].cpu().numpy().astype(np.float64)
        before, frozen = episode.frames[t].astype(np.float64), episode.frames[onset].astype(np.float64)
        nearer.append(np.abs(dreamed - frozen).mean() < np.abs(dreamed - before).mean())
        dream_change.append(np.abs(dreamed - before).mean())
        real_change.append(np.abs(frozen - before).mean())
    if not nearer:
        return {"onsets": 0}
    return {"onsets": len(nearer), "dream_nearer_the_frozen_frame": float(np.mean(nearer)),
            "dreamed_change": float(np.mean(dream_change)), "real_change": float(np.mean(real_change))}
