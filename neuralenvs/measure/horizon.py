"""Whether a dream still looks like its game after hundreds of steps.

PSNR against the real episode stops meaning much after a few dozen steps (the dream and the game
part ways even when both are right), so the long horizon is judged by the look of the frames:

- **sharpness**: the mean absolute Laplacian of the grey frames. A dream dissolving into noise has
  more of it than real frames of the game; a dream fading to a flat or blurred frame has less.
  Reported as the ratio dream / real (1.0 is the game's own).
- **worst band's sharpness ratio**: the same ratio taken in each of ``LOOK_BANDS`` horizontal bands
  of the frame (dreamed band against the same band of real frames), the one farthest from 1 (in
  log terms) reported. A whole-frame ratio can sit at 1.0x while the band where the sprites fight
  has turned to noise and the rest of the frame has gone still; the worst band shows it.
- **colour-histogram distance**: total variation between the dream's and the real frames' joint RGB
  histograms (8 bins a channel); 0 when the colours are the game's, 1 when they share none.
- **foreground ratio**: the share of pixels that stand out from the game's still screen (the
  per-pixel median of real frames) by more than ``FOREGROUND_LEVELS`` in some channel, dream / real,
  over the whole frame and in its worst band. Sprites are what stands out: a dream whose sprites
  vanish scores well below 1 even when faint texture keeps its sharpness at the game's, and one
  filling with noise or ghosts scores above it.

They compare dreamed frames at step ``s`` with real frames of the same game (not of the same
moment), so they can be measured at any horizon.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch

from neuralenvs.envs.starts import StartBank
from neuralenvs.world_model import WorldModel

LOOK_STEPS = (50, 100, 300, 1000)
HISTOGRAM_BINS = 8
LOOK_BANDS = 8  # horizontal bands: 8 rows each of a 64-row frame, about one sprite's height


def _abs_laplacian(frames: np.ndarray) -> np.ndarray:
    """|Laplacian| of each grey frame, float32 [N, H, W], from uint8 [N, H, W, 3]."""
    grey = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    return np.stack([np.abs(cv2.Laplacian(g, cv2.CV_32F)) for g in grey])


def sharpness(frames: np.ndarray) -> float:
    """Mean |Laplacian| of the grey frames, uint8 [N, H, W, 3]."""
    return float(_abs_laplacian(frames).mean())


def band_sharpness(frames: np.ndarray, bands: int = LOOK_BANDS) -> np.ndarray:
    """Mean |Laplacian| of the grey frames in each of ``bands`` horizontal bands, top first, [bands].
    The Laplacian is taken on whole frames, so band edges are not counted as edges."""
    lap = _abs_laplacian(frames)
    return np.array([band.mean() for band in np.array_split(lap, bands, axis=1)])


def worst_band(dream_bands: np.ndarray, real_bands: np.ndarray) -> tuple[float, int]:
    """From :func:`band_sharpness` of dreamed and real frames: the band sharpness ratio (dream /
    real, band by band) farthest from 1 in log terms, and that band's index (0 at the top). A band
    that is flat in every real frame counts as ``1 + dream's sharpness`` over 1, so noise on a flat
    band still shows."""
    ratios = np.where(real_bands > 0, dream_bands / np.maximum(real_bands, 1e-12), 1.0 + dream_bands)
    worst = int(np.argmax(np.abs(np.log(np.maximum(ratios, 1e-6)))))
    return float(ratios[worst]), worst


def colour_histogram(frames: np.ndarray, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """The joint RGB histogram of uint8 [N, H, W, 3] frames, normalised to sum to 1."""
    q = (frames.reshape(-1, 3).astype(np.int64) * bins) // 256
    counts = np.bincount((q[:, 0] * bins + q[:, 1]) * bins + q[:, 2], minlength=bins**3)
    return counts / counts.sum()


def histogram_distance(frames: np.ndarray, real: np.ndarray) -> float:
    """Total variation between the colour histograms of ``frames`` and ``real`` (0 to 1)."""
    return float(0.5 * np.abs(colour_histogram(frames) - colour_histogram(real)).sum())


FOREGROUND_LEVELS = 32  # 8-bit levels from the still screen at which a pixel counts as a sprite's
FOREGROUND_FLOOR = 0.005  # added to both shares of a ratio: a band the game keeps empty still counts


def still_screen(real: np.ndarray) -> np.ndarray:
    """The game's still screen: the per-pixel median of real frames uint8 [N, H, W, 3], [H, W, 3]."""
    return np.median(real, axis=0).round().astype(np.uint8)


def band_foreground(frames: np.ndarray, screen: np.ndarray, bands: int = LOOK_BANDS) -> np.ndarray:
    """The share of pixels of uint8 frames [N, H, W, 3] that differ from ``screen`` by more than
    ``FOREGROUND_LEVELS`` in some channel, in each of ``bands`` horizontal bands, top first, [bands]."""
    stands_out = np.abs(frames.astype(np.int16) - screen.astype(np.int16)).max(axis=-1) > FOREGROUND_LEVELS
    return np.array([band.mean() for band in np.array_split(stands_out, bands, axis=1)])


def foreground_ratios(dream_bands: np.ndarray, real_bands: np.ndarray) -> tuple[float, float, int]:
    """From :func:`band_foreground` of dreamed and real frames (equal bands): the whole frame's
    foreground ratio (dream / real), the band ratio farthest from 1 in log terms, and that band."""
    whole = (dream_bands.mean() + FOREGROUND_FLOOR) / (real_bands.mean() + FOREGROUND_FLOOR)
    ratios = (dream_bands + FOREGROUND_FLOOR) / (real_bands + FOREGROUND_FLOOR)
    worst = int(np.argmax(np.abs(np.log(ratios))))
    return float(whole), float(ratios[worst]), worst


POLICY_HISTORY = 16  # the most frames a policy is shown

Policy = Callable[[np.ndarray], np.ndarray]
"""Chooses the next actions [B] from the frames seen so far (the real context, then the dreamed
frames; at most ``POLICY_HISTORY`` of them), uint8 [B, n, H, W, C], newest last."""


@torch.no_grad()
def long_rollouts(
    model: WorldModel,
    context: np.ndarray,
    context_actions: np.ndarray,
    actions: np.ndarray | Policy,
    keep: Sequence[int],
    seed: int = 0,
    steps: int | None = None,
) -> dict[int, np.ndarray]:
    """Dream from each real context (uint8 [B, K, H, W, C], actions [B, K - 1]); the dreamed frames
    at the steps in ``keep``. ``actions``: fixed actions [B, T] (T steps), or a :data:`Policy` that
    picks them from what it sees (the context, then the dream's own frames) for ``steps`` steps:
    an agent steers a dream where neither random nor recorded actions go."""
    if callable(actions):
        if steps is None:
            raise ValueError("a policy needs steps: how long to dream")
    else:
        steps = actions.shape[1]
    device = model.device
    generator = torch.Generator(device=device).manual_seed(seed)
    state = model.init_state(torch.from_numpy(context).to(device), torch.from_numpy(context_actions).to(device))
    seen, kept = context, {}
    for s in range(1, steps + 1):
        chosen = actions(seen) if callable(actions) else actions[:, s - 1]
        state, frames, _, _ = model.step(state, torch.as_tensor(np.asarray(chosen), device=device).long(), generator)
        if callable(actions) or s in keep:
            frames = frames.cpu().numpy()
        if callable(actions):
            seen = np.concatenate([seen, frames[:, None]], axis=1)[:, -POLICY_HISTORY:]
        if s in keep:
            kept[s] = frames
    return kept


def look_over_horizon(dreamed: dict[int, np.ndarray], real: np.ndarray) -> dict[str, dict[str, float]]:
    """Sharpness ratio and foreground ratio (whole frame and worst band) and histogram distance of
    the dreamed frames at each step against ``real`` frames of the game."""
    real_sharpness, real_bands = sharpness(real), band_sharpness(real)
    screen = still_screen(real)
    real_foreground = band_foreground(real, screen)
    look = {}
    for s, frames in sorted(dreamed.items()):
        dream_sharpness = sharpness(frames)
        band_ratio, band = worst_band(band_sharpness(frames), real_bands)
        foreground, foreground_band_ratio, foreground_band = foreground_ratios(
            band_foreground(frames, screen), real_foreground
        )
        look[str(s)] = {
            "sharpness": dream_sharpness,
            "sharpness_ratio": dream_sharpness / real_sharpness,
            "worst_band_ratio": band_ratio,
            "worst_band": band,
            "histogram_distance": histogram_distance(frames, real),
            "foreground_ratio": foreground,
            "worst_band_foreground_ratio": foreground_band_ratio,
            "worst_foreground_band": foreground_band,
            "n": len(frames),
        }
    return look


def look_from_start_bank(
    model: WorldModel, starts: StartBank, real: np.ndarray, keep: Sequence[int], dreams: int = 8, seed: int = 0
) -> dict[str, dict[str, float]]:
    """:func:`look_over_horizon` of ``dreams`` dreams started from the first segments of a start
    bank (``starts.frames`` / ``starts.actions``, as a registered dream ships them) under uniformly
    random actions (seed ``seed``), at the steps in ``keep``: the check every shipped dream passes."""
    k = model.context_frames
    context = np.asarray(starts.frames[:dreams, -k:])
    context_actions = np.asarray(starts.actions[:dreams, starts.actions.shape[1] - (k - 1) :], np.int64)
    actions = np.random.default_rng(seed).integers(0, model.num_actions, (dreams, max(keep)))
    return look_over_horizon(long_rollouts(model, context, context_actions, actions, keep, seed=seed), real)
