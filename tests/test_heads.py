"""The head measurement where the agent looks (one dreamed step from real context): its precision
and recall are counted right, per reward sign and for episode ends."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from benchmark_scripts import load_benchmark
from toy_world_model import ToyWorldModel, make_toy

from neuralenvs.data import EpisodeDataset
from neuralenvs.data.episodes import Episode, freeze_onset
from neuralenvs.measure.fidelity import dreamed_freeze_onsets, one_step_heads
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


def _reward_head_script():
    return load_benchmark("reward_head")


def test_score_ends_counts_argmax_decisions_and_what_a_sampling_dream_expects() -> None:
    # two lives of 5 transitions, each ending on its last; p(end) 0.9 on the first end, 0.3 on the
    # two steps before the second and 0.2 on its end, 0.1 on every other step
    p_end = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.9, 0.1, 0.1, 0.3, 0.3, 0.2])
    logits = torch.stack([(1 - p_end).log(), p_end.log()], dim=1)
    terminated = np.array([0, 0, 0, 0, 1, 0, 0, 0, 0, 1])
    ends = _reward_head_script().score_ends(logits, terminated, window=3)
    assert (ends["real"], ends["argmax_predicted"], ends["argmax_hits"]) == (2, 1, 1)
    assert ends["precision"] == 1.0 and ends["recall"] == 0.5
    assert ends["sampled_expected"] == pytest.approx(2.3)
    assert ends["sampled_expected_hits"] == pytest.approx(1.1)
    assert ends["sampled_expected_in_window"] == pytest.approx(0.1 + 0.1 + 0.9 + 0.3 + 0.3 + 0.2)


def test_ends_at_freeze_onsets_end_each_frozen_life_where_its_freeze_begins(tmp_path: Path) -> None:
    data = EpisodeDataset(tmp_path / "d", obs_shape=(4, 4, 3), num_actions=2)
    frozen = np.zeros((10, 4, 4, 3), np.uint8)
    frozen[:6] = np.arange(6)[:, None, None, None] * 10
    frozen[6:] = 200  # frozen from frame 6: the life is decided by transition 5
    moving = np.arange(10)[:, None, None, None] * np.ones((10, 4, 4, 3), np.uint8)
    ended, cut_short = np.zeros(9, bool), np.zeros(9, bool)
    ended[-1], cut_short[-1] = True, True
    rewards = np.arange(9, dtype=np.float32)
    data.append(Episode(frozen, np.arange(9) % 2, rewards, ended, np.zeros(9, bool)))
    data.append(Episode(moving, np.zeros(9), rewards, ended, np.zeros(9, bool)))  # no freeze: kept
    data.append(Episode(frozen, np.zeros(9), rewards, np.zeros(9, bool), cut_short))  # truncated: kept
    view = data.ends_at_freeze_onsets()
    first = view.episode(0)
    assert len(first) == 6 and np.array_equal(first.frames, frozen[:7])
    assert first.terminated.tolist() == [False] * 5 + [True]
    assert np.array_equal(first.rewards, rewards[:6]) and np.array_equal(first.actions, np.arange(6) % 2)
    assert len(view.episode(1)) == len(view.episode(2)) == 9
    assert view.num_steps == 6 + 9 + 9 and data.num_steps == 27  # the dataset itself is untouched
    segments = view.sample_segments(8, 3, np.random.default_rng(0), end_fraction=1.0)
    assert segments.terminated.any(dim=1).all()  # the moved ends are what end_fraction samples
    later = data.ends_at_freeze_onsets(delay=2).episode(0)  # two frozen frames seen before the end
    assert len(later) == 8 and np.array_equal(later.frames, frozen[:9])
    assert later.terminated.tolist() == [False] * 7 + [True]
    assert len(data.ends_at_freeze_onsets(delay=3).episode(0)) == 9  # at the game's own end: kept as it is


def test_calibrate_makes_a_sampling_dream_pay_as_often_as_the_game_on_the_calibration_episodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from neuralenvs import cli
    from neuralenvs.checkpoint import build_world_model, load_checkpoint, save_checkpoint
    from neuralenvs.measure.heads import episode_logits
    from neuralenvs.models import build_model

    torch.manual_seed(0)
    model = build_model("diffusion", "tiny", (16, 16, 3), 3)
    save_checkpoint(tmp_path / "a", model=model, starts_frames=np.zeros((2, 2, 16, 16, 3), np.uint8),
                    starts_actions=np.zeros((2, 1), np.int64), game=None, metrics={"fidelity": {"psnr": 1.0}},
                    provenance={"real_steps": 120, "held_out_episodes": 2})  # trained on d, its last 2 held out
    data = EpisodeDataset(tmp_path / "d", obs_shape=(16, 16, 3), num_actions=3)
    rng = np.random.default_rng(0)
    for _ in range(3):
        rewards = np.zeros(40, np.float32)
        rewards[rng.choice(40, 4, replace=False)] = 100.0  # 12 rewards of +1 in all, none of -1
        frames = rng.integers(0, 256, (41, 16, 16, 3), dtype=np.uint8)
        data.append(Episode(frames, rng.integers(0, 3, 40), rewards, np.zeros(40, bool), np.zeros(40, bool)))

    def expected(checkpoint: Path) -> np.ndarray:
        calibrated = build_world_model(load_checkpoint(checkpoint), device="cpu")
        probs = [episode_logits(calibrated, ep.frames, ep.actions)[0].softmax(-1) for ep in data]
        return torch.cat(probs).sum(dim=0).numpy()  # what a sampling dream pays per class

    before = expected(tmp_path / "a")
    assert abs(before[2] - 12) > 1  # an untrained head is far from the game's count
    monkeypatch.setattr("sys.argv", ["neuralenvs", "calibrate", "--checkpoint", str(tmp_path / "a"),
                                     "--data", str(tmp_path / "d"), "--out", str(tmp_path / "b")])
    cli.main()
    after = expected(tmp_path / "b")
    assert after[2] == pytest.approx(12, abs=1e-2)
    offsets = [load_checkpoint(tmp_path / c).weights["reward_end.reward_logit_offset"] for c in "ab"]
    assert offsets[1][0] == offsets[0][0] and offsets[1][1] == offsets[0][1]  # only +1's prior moved
    saved = load_checkpoint(tmp_path / "b").config
    fit = saved["provenance"]["reward_prior_calibrated"]
    assert fit["signs"]["+1"]["real"] == 12 and fit["signs"]["-1"]["shift"] == 0.0
    assert fit["adds_real_steps"] == 120  # not just the episodes training held out: counted in full
    assert "fidelity" not in saved["metrics"]  # measured on the old model: dropped
    monkeypatch.setattr("sys.argv", ["neuralenvs", "calibrate", "--checkpoint", str(tmp_path / "a"), "--data",
                                     str(tmp_path / "d"), "--held-out", "2", "--out", str(tmp_path / "c")])
    cli.main()
    fit = load_checkpoint(tmp_path / "c").config["provenance"]["reward_prior_calibrated"]
    assert fit["first_episode"] == 1 and fit["signs"]["+1"]["real"] == 8  # the last two episodes only
    assert fit["adds_real_steps"] == 0  # the ones training held out: already in the dream's budget
    # fidelity on every episode of a separate test set; not more episodes than it has
    out = tmp_path / "fidelity.json"
    monkeypatch.setattr("sys.argv", ["neuralenvs", "fidelity", "--checkpoint", str(tmp_path / "a"), "--data",
                                     str(tmp_path / "d"), "--held-out", "3", "--windows", "4", "--json", str(out)])
    cli.main()
    assert json.loads(out.read_text())["episodes"] == [0, 1, 2]
    monkeypatch.setattr("sys.argv", ["neuralenvs", "fidelity", "--checkpoint", str(tmp_path / "a"), "--data",
                                     str(tmp_path / "d"), "--held-out", "4"])
    with pytest.raises(SystemExit, match="between 1 and the 3 episodes"):
        cli.main()
