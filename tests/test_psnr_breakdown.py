"""benchmarks/psnr_breakdown.py: the split of a dream's PSNR gain over repeat-last into still and
moving windows, and of its squared error into bands, on errors whose answers are known."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from benchmark_scripts import load_benchmark

from neuralenvs.data import Episode, EpisodeDataset
from neuralenvs.measure.fidelity import PSNR_CAP
from neuralenvs.models.diffusion import DiffusionConfig, DiffusionWorldModel


def _script():
    return load_benchmark("psnr_breakdown")


def _db(mse: float) -> float:
    return min(10 * np.log10(255.0**2 / mse), PSNR_CAP)


def test_a_dream_that_wins_on_moving_windows_and_loses_on_a_still_one():
    h = 16  # two bands of 8 rows
    dream, last = np.zeros((3, h)), np.zeros((3, h))
    last[0] = 0.0  # window 0: the real screen did not change, repeat-last is exact (capped at 60 dB)
    dream[0, 8:] = 2.0  # the dream drew something in the second band
    last[1:, :8], dream[1:, :8] = 100.0, 25.0  # windows 1-2: things moved in the first band; the dream is nearer
    frozen = np.array([False, False, True])  # window 2's target lies in the frozen end of a life
    start = np.array([3, 120, 200])  # the step of its episode at which each window starts
    rows = {"dream": dream, "repeat_last": last, "in_end_freeze": frozen, "start_step": start}
    b = _script().breakdown(rows, still_db=10.0)

    still_gain = _db(1.0) - PSNR_CAP  # the dream's mean error over the frame: 2 on half the rows
    moving_gain = _db(12.5) - _db(50.0)
    assert b["windows"] == 3 and b["still_windows"] == 1 and b["still_windows_in_end_freeze"] == 0
    assert b["psnr_gain_still"] == pytest.approx(still_gain)
    assert b["psnr_gain_moving"] == pytest.approx(moving_gain)
    assert b["psnr_gain"] == pytest.approx((still_gain + 2 * moving_gain) / 3)
    assert b["start_step_quartiles_still"] == [3, 3, 3]
    assert b["start_step_quartiles_moving"] == pytest.approx([140, 160, 180])
    assert b["windows_outside_end_freeze"] == 2
    assert b["psnr_gain_outside_end_freeze"] == pytest.approx((still_gain + moving_gain) / 2)
    # in mean squared error the dream wins: (1 + 12.5 + 12.5) / 3 against (0 + 50 + 50) / 3
    assert b["psnr_of_mean_mse"]["dream"] == pytest.approx(_db(26.0 / 3))
    assert b["psnr_of_mean_mse"]["repeat_last"] == pytest.approx(_db(100.0 / 3))
    # band 0: dream 50/3 against 200/3 (-50); band 1: dream 2/3 against 0 (+2/3); shares of the sum
    assert b["band_mse"]["dream"] == pytest.approx([50 / 3, 2 / 3])
    assert b["band_mse"]["repeat_last"] == pytest.approx([200 / 3, 0.0])
    total = -50 + 2 / 3
    assert b["band_share_of_difference"] == pytest.approx([-50 / total, (2 / 3) / total])


def test_first_change_finds_where_a_still_start_ends():
    frames = np.zeros((6, 4, 4, 3), np.uint8)
    assert _script().first_change(frames) is None  # never changes
    frames[4:, 1, 2, 0] = 1  # one pixel, one level, between steps 3 and 4
    assert _script().first_change(frames) == 3
    frames[1:] += 7
    assert _script().first_change(frames) == 0


def test_a_dream_from_each_life_start_says_when_it_first_changes_the_screen(tmp_path, single_torch_thread):
    """A residual denoiser that outputs nothing, with the shipped dreams' cut of small changes,
    dreams its last frame exactly: a still start carries on, and the first change found is the
    context's own where the context has one."""
    still = DiffusionWorldModel(
        dataclasses.replace(DiffusionConfig.named("tiny"), predict_residual=True, sigma_data=0.1, drop_change_levels=8),
        (8, 8, 3), 4,
    )
    for p in still.denoiser.parameters():
        torch.nn.init.zeros_(p)
    data = EpisodeDataset(tmp_path / "d", obs_shape=(8, 8, 3), num_actions=4)
    for change_at in (0, 30):  # frames[change_at + 1] is the first that differs from the one before
        frames = np.zeros((40, 8, 8, 3), np.uint8)
        frames[change_at + 1 :] = 90
        data.append(Episode(frames=frames, actions=np.zeros(39, np.int64), rewards=np.zeros(39, np.float32),
                            terminated=np.eye(39, dtype=bool)[-1], truncated=np.zeros(39, bool)))
    assert _script().dreamed_first_changes(still, data, steps=10) == [0, None]
    assert _script().change_quartiles([None, 3, 5]) == [3, 3.5, 4, 4.5, 5]


def test_still_contexts_and_how_often_they_change():
    """Windows of 3 identical frames, and whether the frame after each differs, early and late."""
    frames = np.zeros((12, 2, 2, 3), np.uint8)
    frames[5:, 0, 0, 0] = 9  # frames 0-4 still, then a change
    frames[11, 1, 1, 1] = 3  # frames 5-10 still, then a change
    counts = _script().still_context_changes([frames], context=3, early=6)
    # still windows end at frames 2, 3, 4 (next: 3, 4 same, 5 differs) and at 7, 8, 9, 10 (11 differs)
    assert counts["early"] == {"still_contexts": 3, "next_changed": 1, "share": pytest.approx(1 / 3)}
    assert counts["late"] == {"still_contexts": 4, "next_changed": 1, "share": pytest.approx(1 / 4)}
