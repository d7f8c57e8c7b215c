"""The head measurement where the agent looks (one dreamed step from real context): its precision
and recall are counted right, per reward sign and for episode ends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from toy_world_model import ToyWorldModel, make_toy

from neuralenvs.data import EpisodeDataset
from neuralenvs.data.episodes import Episode
from neuralenvs.measure.fidelity import dreamed_freeze_onsets, freeze_onset, one_step_heads
from neuralenvs.world_model import StepResult


class ActionOracle(ToyWorldModel):
    """Heads that read the action: action 1 -> reward +1, action 2 -> reward -1, action 3 -> end."""

    def step(self, state, actions, generator=None, sample_heads=False) -> StepResult:
        result = super().step(state, actions, generator, sample_heads)
        reward = (actions == 1).float() - (actions == 2).float()
        return StepResult(result.state, result.next_frames, reward, actions == 3)


def test_one_step_heads_counts_hits_misses_and_false_alarms(tmp_path: Path) -> None:
    toy = make_toy(obs_shape=(8, 8, 3), num_actions=4)
    oracle = ActionOracle(toy.config, toy.obs_shape, toy.num_actions)
    data = EpisodeDataset(tmp_path / "d", obs_shape=(8, 8, 3), num_actions=4)
    # the context is 2 frames, so step t = 0 is never scored; from t = 1 on:
    actions = np.array([0, 1, 1, 2, 0, 1, 3])  # predicted: +1 +1 -1 0 +1 end
    rewards = np.array([0, 1, 0, -1, 1, 1, 0])  # real:      +1  0 -1 +1 +1 0
    ends = np.array([0, 0, 0, 0, 0, 0, 1], bool)
    frames = np.zeros((8, 8, 8, 3), np.uint8)
    data.append(Episode(frames, actions, rewards, ends, np.zeros(7, bool)))
    result = one_step_heads(oracle, data, [0], batch_size=4)
    assert result["transitions"] == 6
    plus, minus = result["reward_by_sign"]["+1"], result["reward_by_sign"]["-1"]
    assert (plus["predicted"], plus["real"]) == (3, 3) and plus["precision"] == plus["recall"] == 2 / 3
    assert (minus["predicted"], minus["real"], minus["precision"], minus["recall"]) == (1, 1, 1.0, 1.0)
    assert result["reward"]["recall"] == 3 / 4 and result["reward"]["precision"] == 3 / 4
    assert result["termination"] == {"precision": 1.0, "recall": 1.0, "predicted": 1, "real": 1}


class DreamsConstant:
    """Dreams every next frame as one grey level: a stand-in that draws (or misses) a freeze."""

    context_frames, device = 2, torch.device("cpu")

    def __init__(self, level: int) -> None:
        self.level = level

    def eval(self):
        return self

    def init_state(self, frames, actions):
        return frames

    def step(self, state, actions, generator=None) -> StepResult:
        n = len(actions)
        frames = torch.full((n, *state.shape[2:]), self.level, dtype=torch.uint8)
        return StepResult(state, frames, torch.zeros(n), torch.zeros(n, dtype=torch.bool))


def test_freeze_onsets_find_where_the_last_identical_frames_begin_and_whether_the_dream_draws_them(
    tmp_path: Path,
) -> None:
    frames = np.zeros((10, 4, 4, 3), np.uint8)
    frames[:6] = np.arange(6)[:, None, None, None] * 10  # moving: 0, 10, ..., 50
    frames[6:] = 200  # the game freezes at frame 6 until the life is lost
    assert freeze_onset(frames) == 6 and freeze_onset(frames[:6]) == 5
    data = EpisodeDataset(tmp_path / "d", obs_shape=(4, 4, 3), num_actions=2)
    ended = np.zeros(9, bool)
    ended[-1] = True
    data.append(Episode(frames, np.zeros(9), np.zeros(9), ended, np.zeros(9, bool)))
    draws = dreamed_freeze_onsets(DreamsConstant(200), data, [0])
    assert draws["onsets"] == 1 and draws["dream_nearer_the_frozen_frame"] == 1.0
    assert draws["real_change"] == 150.0  # from frame 5 (50) to the frozen 200
    misses = dreamed_freeze_onsets(DreamsConstant(50), data, [0])  # the dream repeats the frame before
    assert misses["dream_nearer_the_frozen_frame"] == 0.0 and misses["dreamed_change"] == 0.0
