"""The main job end to end, short: the demo trains PPO in the shipped dream and plays the real game,
and the dream's reward head fires at the steps where the real game pays (slow: `make test-slow`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

import neuralenvs
from neuralenvs.data import EpisodeDataset
from neuralenvs.envs.collect import collect_atari
from neuralenvs.measure.fidelity import one_step_heads

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread")]


def test_the_demo_runs_top_to_bottom(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_ppo_in_dream.py"), "--steps", "2048", "--episodes", "2",
         "--video-steps", "20", "--out", str(out)],
        capture_output=True, text=True, timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "PPO trained in dream" in done.stdout and "random" in done.stdout
    assert (out / "dream_vs_real.mp4").stat().st_size > 0 and (out / "ppo_in_dream.zip").exists()


class Bars(NamedTuple):
    """What a shipped dream's heads must reach after one dreamed step from each real context."""

    steps: int  # real random-play steps to sample
    reward_recall: float
    reward_precision: float
    end_recall: float = 0.0  # share of the lost lives the end head finds
    freeze_end_delay: int | None = None  # where the dream learned lives end (None: the game's end step)


# The bars sit below what each head measured on held-out games (docs/transfer.md), with room for the
# noise of a small sample: CrazyClimber rewards 0.99/1.00 and ends 0.99 recall; KungFuMaster rewards
# about 0.5/0.4 and ends 0.87 recall. Both lives end 2 steps into the freeze that ends each. A
# CrazyClimber life is about 500 random steps, and KungFuMaster's rewards are rare (0.2% of random
# steps), so each takes more steps to see enough of them.
DEFAULT_BARS = Bars(3000, 0.5, 0.3)
HEAD_BARS = {
    "neuralenvs/CrazyClimber-diffusion-v0": Bars(6000, 0.5, 0.3, end_recall=0.8, freeze_end_delay=2),
    "neuralenvs/KungFuMaster-diffusion-v0": Bars(12000, 0.2, 0.15, end_recall=0.6, freeze_end_delay=2),
}


@pytest.mark.parametrize("dream", [
    *HEAD_BARS,
    pytest.param("neuralenvs/Boxing-diffusion-v0", marks=pytest.mark.xfail(
        strict=True, reason="the shipped Boxing reward head finds no rewards yet (docs/transfer.md); when it "
                            "does, this turns into a failure: drop the mark")),
])
def test_the_shipped_dream_pays_where_the_real_game_pays(dream: str, tmp_path: Path) -> None:
    """Random play in the real game (seeds the dream never saw), then one dreamed step from each
    real context: the reward head must find the real rewards, and mostly only those, and the end
    head the lost lives, at the dream's bars."""
    bars = HEAD_BARS.get(dream, DEFAULT_BARS)
    collect_atari(neuralenvs.game_of(dream), tmp_path / "real", bars.steps, seed=123, progress=False)
    data = EpisodeDataset(tmp_path / "real")
    if bars.freeze_end_delay is not None:
        data = data.ends_at_freeze_onsets(bars.freeze_end_delay)
    model = neuralenvs.load_world_model(dream, device="cpu")
    heads = one_step_heads(model, data, list(range(data.num_episodes)))
    reward = heads["reward"]
    assert reward["real"] >= 5, "too few real rewards in the sample to judge the head"
    assert reward["recall"] >= bars.reward_recall and reward["precision"] >= bars.reward_precision, reward
    assert heads["termination"]["recall"] >= bars.end_recall, heads["termination"]
