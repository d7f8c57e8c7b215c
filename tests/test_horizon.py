"""The long-horizon look measures, and a shipped dream that must not fall apart: 100 steps under
random actions from real starts (fixed seed) keep the game's sharpness and colours, so a
regression in the sampler or the context handling is caught."""

from __future__ import annotations

import numpy as np
import pytest

from neuralenvs.data import EpisodeDataset
from neuralenvs.envs.collect import collect_atari
from neuralenvs.measure.horizon import histogram_distance, long_rollouts, look_over_horizon, sharpness
from neuralenvs.registry import load_world_model_and_starts

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_sharpness_tells_noise_from_flat_frames() -> None:
    rng = np.random.default_rng(0)
    flat = np.full((4, 32, 32, 3), 90, np.uint8)
    edges = flat.copy()
    edges[:, :, 16:] = 200
    noise = rng.integers(0, 256, flat.shape, dtype=np.uint8)
    assert sharpness(flat) == 0.0
    assert 0 < sharpness(edges) < sharpness(noise)


def test_histogram_distance_is_zero_for_the_same_colours_and_one_for_none_shared() -> None:
    red = np.zeros((2, 8, 8, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros_like(red)
    blue[..., 2] = 255
    assert histogram_distance(red, red[::-1]) == 0.0
    assert histogram_distance(red, blue) == 1.0


@pytest.mark.parametrize("dream", ["neuralenvs/Boxing-diffusion-v0", "neuralenvs/Boxing-token-v0",
                                   "neuralenvs/Boxing-genie-v0"])
def test_a_shipped_dream_keeps_the_games_look_for_100_steps(dream: str, tmp_path) -> None:
    collect_atari("Boxing", tmp_path / "real", 400, seed=123, progress=False)
    data = EpisodeDataset(tmp_path / "real")
    real = np.concatenate([data.episode(e).frames for e in range(data.num_episodes)])
    model, starts, _ = load_world_model_and_starts(dream, device="cpu")
    k = model.context_frames
    context = np.asarray(starts.frames[:8, -k:])
    context_actions = np.asarray(starts.actions[:8, starts.actions.shape[1] - (k - 1):], np.int64)
    actions = np.random.default_rng(0).integers(0, model.num_actions, (8, 100))
    look = look_over_horizon(long_rollouts(model.eval(), context, context_actions, actions, {100}, seed=0), real)
    assert 0.75 <= look["100"]["sharpness_ratio"] <= 1.33, look
    assert look["100"]["histogram_distance"] < 0.3, look
