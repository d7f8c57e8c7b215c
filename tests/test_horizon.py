"""The long-horizon look measures, and shipped dreams that must not fall apart: 100 steps (Boxing)
or 300 steps (the transferring dreams) under random actions from real starts (fixed seed) keep the
game's sharpness, colours and sprites, so a regression in the sampler or the context handling is
caught."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from neuralenvs.data import EpisodeDataset
from neuralenvs.envs.collect import collect_atari
from neuralenvs.measure.fidelity import measure_fidelity
from neuralenvs.measure.horizon import (
    POLICY_HISTORY,
    band_foreground,
    band_sharpness,
    foreground_ratios,
    histogram_distance,
    long_rollouts,
    look_from_start_bank,
    sharpness,
    still_screen,
    worst_band,
)
from neuralenvs.models import build_model
from neuralenvs.models.diffusion import DiffusionConfig
from neuralenvs.registry import game_of, load_world_model_and_starts

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_sharpness_tells_noise_from_flat_frames() -> None:
    rng = np.random.default_rng(0)
    flat = np.full((4, 32, 32, 3), 90, np.uint8)
    edges = flat.copy()
    edges[:, :, 16:] = 200
    noise = rng.integers(0, 256, flat.shape, dtype=np.uint8)
    assert sharpness(flat) == 0.0
    assert 0 < sharpness(edges) < sharpness(noise)


def test_the_worst_band_shows_noise_that_the_whole_frame_average_hides() -> None:
    rng = np.random.default_rng(0)
    real = rng.integers(60, 200, (4, 64, 64, 3), dtype=np.uint8)
    real[:, 24:32] = 90  # a band the game keeps flat
    dream = real.copy()
    dream[:, 24:32] = rng.integers(0, 256, (4, 8, 64, 3), dtype=np.uint8)  # turned to noise there
    assert sharpness(dream) / sharpness(real) < 1.33  # inside the goal on the whole-frame average
    ratio, band = worst_band(band_sharpness(dream), band_sharpness(real))
    assert band == 3 and ratio > 10
    assert worst_band(band_sharpness(real[::-1]), band_sharpness(real))[0] == pytest.approx(1.0, abs=0.05)


def _ring_with_boxers(n: int, rng: np.random.Generator, boxers: bool = True) -> np.ndarray:
    """A still ring (a grey floor, dark ropes) with two boxers, a white and a black one, at random
    places in rows 24 to 40."""
    frames = np.full((n, 64, 64, 3), (110, 156, 66), np.uint8)
    frames[:, 8:10] = frames[:, 54:56] = (40, 40, 40)
    if boxers:
        for f in frames:
            for colour in ((214, 214, 214), (0, 0, 0)):
                x = rng.integers(4, 52)
                f[24:40, x : x + 8] = colour
    return frames


def test_the_foreground_ratio_tells_vanished_sprites_and_noise_from_the_games_own() -> None:
    rng = np.random.default_rng(0)
    real = _ring_with_boxers(64, rng)
    screen = still_screen(real)
    assert (screen == _ring_with_boxers(1, rng, boxers=False)[0]).all()  # the boxers move: not the screen
    real_bands = band_foreground(real, screen)

    def ratios(frames: np.ndarray) -> tuple[float, float, int]:
        return foreground_ratios(band_foreground(frames, screen), real_bands)

    whole, band, _ = ratios(_ring_with_boxers(16, rng))  # the game itself
    assert 0.9 < whole < 1.1 and 0.9 < band < 1.1
    # the boxers gone, and a faint texture in their place that the Laplacian would count as sharpness
    faded = _ring_with_boxers(16, rng, boxers=False)
    faded[:, 24:40] = (faded[:, 24:40] + rng.integers(0, 12, (16, 16, 64, 3))).astype(np.uint8)
    assert sharpness(faded) > 0.5 * sharpness(real)
    whole, band, index = ratios(faded)
    assert whole < 0.2 and band < 0.2 and index in (3, 4)
    # noise where the ring should be still
    noisy = _ring_with_boxers(16, rng)
    noisy[:, 48:56] = rng.integers(0, 256, (16, 8, 64, 3), dtype=np.uint8)
    whole, band, index = ratios(noisy)
    assert whole > 1.5 and band > 10 and index == 6


def test_histogram_distance_is_zero_for_the_same_colours_and_one_for_none_shared() -> None:
    red = np.zeros((2, 8, 8, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros_like(red)
    blue[..., 2] = 255
    assert histogram_distance(red, red[::-1]) == 0.0
    assert histogram_distance(red, blue) == 1.0


@pytest.mark.parametrize(("dream", "steps", "least_foreground"), [
    # Boxing's diffusion dream at 1,000 and held to 0.8x since its context was faded in training: the
    # dream before kept 0.6x there, its white boxer faded out (docs/boxing.md)
    ("neuralenvs/Boxing-diffusion-v0", 1000, 0.8),
    ("neuralenvs/Boxing-token-v0", 100, 0.5), ("neuralenvs/Boxing-genie-v0", 100, 0.5),
    # KungFuMaster's at 1,000 since its dream was told its context's noise (the dream before: 2.8x the
    # foreground there, its fighters' band gone to noise; docs/horizon.md)
    ("neuralenvs/KungFuMaster-diffusion-v0", 1000, 0.5), ("neuralenvs/CrazyClimber-diffusion-v0", 300, 0.5),
])
def test_a_shipped_dream_keeps_the_games_look(dream: str, steps: int, least_foreground: float, tmp_path) -> None:
    collect_atari(game_of(dream), tmp_path / "real", 400, seed=123, progress=False)
    data = EpisodeDataset(tmp_path / "real")
    real = np.concatenate([data.episode(e).frames for e in range(data.num_episodes)])
    model, starts, _ = load_world_model_and_starts(dream, device="cpu")
    look = look_from_start_bank(model.eval(), starts, real, [steps])
    assert 0.75 <= look[str(steps)]["sharpness_ratio"] <= 1.33, look
    assert look[str(steps)]["histogram_distance"] < 0.3, look
    # the sprites neither vanish nor multiply (shipped: 0.94x to 1.10x; at 1,000 KungFuMaster 1.26x, Boxing
    # diffusion 1.02x)
    assert least_foreground <= look[str(steps)]["foreground_ratio"] <= 2.5, look


def test_a_dream_that_holds_every_pixel_scores_as_repeat_last_frame(tmp_path) -> None:
    collect_atari("Boxing", tmp_path / "real", 300, seed=0, progress=False)
    data = EpisodeDataset(tmp_path / "real")
    torch.manual_seed(0)
    config = dataclasses.replace(DiffusionConfig.named("tiny"), drop_change_levels=255)  # no pixel may move
    model = build_model("diffusion", dataclasses.asdict(config), data.obs_shape, data.num_actions)
    steps = measure_fidelity(model, data, list(range(data.num_episodes)), steps=(1, 5), num_windows=8)["steps"]
    for s in ("1", "5"):
        assert steps[s]["psnr"] == steps[s]["psnr_baseline"]
        assert steps[s]["psnr_gain_stderr"] == 0.0 < steps[s]["psnr_stderr"]  # paired: the same windows
        assert steps[s]["psnr_gain_stderr_by_episode"] == 0.0


def test_the_tokenizers_rebuilds_are_scored_for_sharpness() -> None:
    from neuralenvs.measure.fidelity import tokenizer_round_trip

    class Tokenizer:  # its "tokens" are the frame itself, rebuilt by ``rebuild``
        def __init__(self, rebuild):
            self.decode = lambda tokens, before: rebuild(tokens)

        def encode(self, frames):
            return frames

    def blur(frames):
        x = torch.nn.functional.avg_pool2d(frames.permute(0, 3, 1, 2).float(), 3, stride=1, padding=1)
        return x.round().to(torch.uint8).permute(0, 2, 3, 1)

    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8))
    frames = frames.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)  # 4x4 blocks: edges to blur
    values, edges = tokenizer_round_trip(Tokenizer(lambda x: x), frames, frames)
    assert len(values) == 4 and edges[0] == edges[1] > 0
    values, edges = tokenizer_round_trip(Tokenizer(blur), frames, frames)
    assert edges[0] < 0.8 * edges[1]


def test_the_error_bar_by_episode_grows_when_an_episodes_windows_agree() -> None:
    from neuralenvs.measure.fidelity import _clustered_stderr, _stderr

    rng = np.random.default_rng(0)
    independent = rng.normal(size=4000)
    clusters = np.repeat(np.arange(40), 100)
    assert _clustered_stderr(independent, clusters) == pytest.approx(_stderr(independent), rel=0.3)
    # each episode's 100 windows share one offset: 40 draws' worth of information, not 4,000
    shared = np.repeat(rng.normal(size=40), 100) + 0.01 * independent
    assert _clustered_stderr(shared, clusters) > 5 * _stderr(shared)
    assert _clustered_stderr(shared, clusters) == pytest.approx(np.std(shared[::100]) / np.sqrt(40), rel=0.1)


def test_a_policy_steers_a_long_rollout_from_what_the_dream_shows_it() -> None:
    torch.manual_seed(0)
    model = build_model("diffusion", dataclasses.asdict(DiffusionConfig.named("tiny")), (16, 16, 3), 4).eval()
    k = model.context_frames
    context = np.random.default_rng(0).integers(0, 256, (2, k, 16, 16, 3), dtype=np.uint8)
    context_actions = np.zeros((2, k - 1), np.int64)
    fixed = np.array([[1, 2, 3] * 8, [3, 0, 1] * 8])  # [B, 24]
    shown: list[np.ndarray] = []

    def replay(seen: np.ndarray) -> np.ndarray:  # the fixed actions, chosen one step at a time
        shown.append(seen)
        return fixed[:, len(shown) - 1]

    steered = long_rollouts(model, context, context_actions, replay, {1, 24}, seed=0, steps=24)
    replayed = long_rollouts(model, context, context_actions, fixed, {1, 24}, seed=0)
    assert len(shown) == 24
    np.testing.assert_array_equal(shown[0], context)  # it first sees the real context
    np.testing.assert_array_equal(shown[1][:, -1], steered[1])  # then the dream's own frames, newest last
    assert shown[-1].shape[1] == POLICY_HISTORY
    for s in (1, 24):
        np.testing.assert_array_equal(steered[s], replayed[s])
    with pytest.raises(ValueError, match="steps"):
        long_rollouts(model, context, context_actions, replay, {1}, seed=0)
