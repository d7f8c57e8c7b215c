"""The main job end to end, short: the demo trains PPO in the shipped dream and plays the real game,
and the dream's reward head fires at the steps where the real game pays (slow: `make test-slow`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


# dream: (real steps to sample, least recall, least precision). The bars sit below what each head
# measured on held-out games (docs/transfer.md), with room for the noise of a small sample:
# CrazyClimber 0.99/1.00 after one dreamed step; KungFuMaster about 0.5/0.4, its rewards are rare
# (0.2% of random steps), so it takes more steps to see enough of them.
DEFAULT_BARS = (3000, 0.5, 0.3)
HEAD_BARS = {
    "neuralenvs/CrazyClimber-diffusion-v0": DEFAULT_BARS,
    "neuralenvs/KungFuMaster-diffusion-v0": (12000, 0.2, 0.15),
}


@pytest.mark.parametrize("dream", [
    *HEAD_BARS,
    pytest.param("neuralenvs/Boxing-diffusion-v0", marks=pytest.mark.xfail(
        strict=True, reason="the shipped Boxing reward head finds no rewards yet (docs/transfer.md); when it "
                            "does, this turns into a failure: drop the mark")),
])
def test_the_shipped_dream_pays_where_the_real_game_pays(dream: str, tmp_path: Path) -> None:
    """Random play in the real game (seeds the dream never saw), then one dreamed step from each
    real context: the reward head must find the real rewards, and mostly only those, at the dream's bars."""
    steps, least_recall, least_precision = HEAD_BARS.get(dream, DEFAULT_BARS)
    collect_atari(neuralenvs.game_of(dream), tmp_path / "real", steps, seed=123, progress=False)
    data = EpisodeDataset(tmp_path / "real")
    model = neuralenvs.load_world_model(dream, device="cpu")
    heads = one_step_heads(model, data, list(range(data.num_episodes)))
    reward = heads["reward"]
    assert reward["real"] >= 5, "too few real rewards in the sample to judge the head"
    assert reward["recall"] >= least_recall and reward["precision"] >= least_precision, reward
