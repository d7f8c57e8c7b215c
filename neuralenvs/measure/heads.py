"""A pixel-space reward head read along real episodes, and its reward prior fitted on held-out ones.

For families whose reward and termination come from ``neuralenvs.nn.reward_end.RewardEndModel``
(the diffusion family). A head trained on balanced batches of a game's few rewarded steps gets a
dream-time prior correction (``RewardEndModel.correct_reward_prior``) that assumes the balanced head
is calibrated. With a few hundred rewards it is not: it learns its training rewards by heart and is
less sure of new ones, so the correction makes the dream pay too rarely, more so the longer the
head trains (KungFuMaster: docs/transfer_kungfumaster.md, section 13). :func:`calibrate_reward_prior` refits
the prior on episodes the head never saw, so that a dream that samples the head along them pays
each reward sign as often as the game did; the learned likelihood is kept.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from neuralenvs.data import EpisodeDataset
from neuralenvs.nn.reward_end import reward_to_class
from neuralenvs.world_model import WorldModel, frames_to_float

REWARD_SIGNS = {0: "-1", 2: "+1"}  # reward class -> the sign it stands for


def reward_end_model(model: WorldModel) -> torch.nn.Module:
    """The model's ``RewardEndModel``, or a clear error for families without one."""
    head = getattr(model, "reward_end", None)
    if head is None:
        raise ValueError(
            f"the {model.family} family has no pixel-space reward head (RewardEndModel) to read or calibrate"
        )
    return head


@torch.no_grad()
def episode_logits(
    model: WorldModel, frames: np.ndarray, actions: np.ndarray, chunk: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reward logits [T, 3] and termination logits [T, 2] for one real episode, teacher-forced,
    with the dream-time prior offsets applied; the LSTM's memory is carried across chunks."""
    head = reward_end_model(model)
    device = head.reward_head.weight.device
    x = frames_to_float(torch.from_numpy(frames)).to(device)  # [T + 1, C, H, W]
    a = torch.from_numpy(actions).long().to(device)
    memory = head.initial_memory(1)
    rewards, ends = [], []
    for i in range(0, len(a), chunk):
        j = min(i + chunk, len(a))
        logits, end_logits, memory = head(x[None, i:j], a[None, i:j], x[None, i + 1 : j + 1], memory)
        rewards.append(logits[0].float() + head.reward_logit_offset.float())
        ends.append(end_logits[0].float() + head.end_logit_offset.float())
    return torch.cat(rewards).cpu(), torch.cat(ends).cpu()


def _expected_count(logits: torch.Tensor, cls: int, shift: float) -> float:
    shifted = logits.clone()
    shifted[:, cls] += shift
    return float(shifted.softmax(-1)[:, cls].sum())


@torch.no_grad()
def calibrate_reward_prior(
    model: WorldModel, dataset: EpisodeDataset, episodes: list[int] | None = None, progress: bool = True
) -> dict:
    """Shift the reward head's dream-time logit offset of each nonzero reward sign so that, sampled
    along ``episodes`` (default: all of ``dataset``'s) teacher-forced, the head pays that sign as
    often in expectation as the game did. A sign the game never paid there keeps its offset.
    Changes ``model`` in place and returns what was fitted."""
    head = reward_end_model(model)
    model.eval()
    episodes = list(range(dataset.num_episodes)) if episodes is None else episodes
    logits, real = [], []
    for e in tqdm(episodes, desc="reward logits", unit="ep", disable=not progress):
        episode = dataset.episode(e)
        logits.append(episode_logits(model, episode.frames, episode.actions)[0])
        real.append(reward_to_class(torch.from_numpy(episode.rewards)))
    logits, real = torch.cat(logits), torch.cat(real)
    fitted = {}
    for cls, sign in REWARD_SIGNS.items():
        target = int((real == cls).sum())
        before = _expected_count(logits, cls, 0.0)
        if target == 0:
            fitted[sign] = {"real": 0, "expected_before": before, "shift": 0.0}
            continue
        lo, hi = -30.0, 30.0  # the expected count rises with the shift: bisect
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if _expected_count(logits, cls, mid) < target else (lo, mid)
        shift = (lo + hi) / 2
        head.reward_logit_offset[cls] += shift
        logits[:, cls] += shift
        fitted[sign] = {"real": target, "expected_before": before, "shift": shift}
    return {"episodes": len(episodes), "transitions": len(real), "signs": fitted}
