"""Episode datasets: round trip, segments with padding, and survival of SIGKILL mid-write."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from neuralenvs.data import Episode, EpisodeDataset
from neuralenvs.envs.collect import collect_atari, collect_gym


def make_episode(seed: int, length: int, shape=(8, 8, 3)) -> Episode:
    rng = np.random.default_rng(seed)
    terminated = np.zeros(length, bool)
    terminated[-1] = True
    return Episode(
        frames=rng.integers(0, 256, (length + 1, *shape), dtype=np.uint8),
        actions=rng.integers(0, 4, length),
        rewards=rng.choice([-1.0, 0.0, 1.0], length),
        terminated=terminated,
        truncated=np.zeros(length, bool),
    )


def assert_same(a: Episode, b: Episode) -> None:
    for k in ("frames", "actions", "rewards", "terminated", "truncated"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))


def test_round_trip_and_reopen(tmp_path):
    ds = EpisodeDataset(tmp_path / "d", obs_shape=(8, 8, 3), num_actions=4, action_meanings=list("abcd"))
    episodes = [make_episode(i, 5 + i) for i in range(3)]
    for ep in episodes:
        ds.append(ep)
    again = EpisodeDataset(tmp_path / "d")
    assert again.num_episodes == 3 and again.num_steps == 5 + 6 + 7
    assert again.action_meanings == list("abcd")
    for i, ep in enumerate(episodes):
        assert_same(again.episode(i), ep)
    with pytest.raises(ValueError, match="num_actions"):
        EpisodeDataset(tmp_path / "d", obs_shape=(8, 8, 3), num_actions=6)
    with pytest.raises(FileNotFoundError, match="obs_shape and num_actions"):
        EpisodeDataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="actions must lie"):
        bad = make_episode(9, 3)
        bad.actions[0] = 4
        ds.append(bad)


def test_segments_are_padded_before_episode_start(tmp_path):
    ds = EpisodeDataset(tmp_path / "d", obs_shape=(8, 8, 3), num_actions=4)
    ep = make_episode(0, 3)
    ds.append(ep)
    seg = ds.sample_segments(64, length=5, rng=np.random.default_rng(0))
    assert seg.frames.shape == (64, 6, 8, 8, 3) and seg.actions.shape == (64, 5)
    for b in range(64):
        n_real = int(seg.mask[b].sum())
        assert 2 <= n_real <= 4  # at least one real transition, at most the whole episode
        assert not seg.mask[b, : 6 - n_real].any() and seg.frames[b, : 6 - n_real].eq(0).all()
        # the episode is shorter than a segment, so every segment starts at the episode start
        np.testing.assert_array_equal(seg.frames[b, 6 - n_real :].numpy(), ep.frames[:n_real])
        np.testing.assert_array_equal(seg.actions[b, 6 - n_real :].numpy(), ep.actions[: n_real - 1])
        assert seg.actions[b, : 6 - n_real].eq(0).all()
    # every last transition is reachable
    ends = {int(seg.mask[b].sum()) for b in range(64)}
    assert ends == {2, 3, 4}


WRITER = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
from test_episodes import make_episode
from neuralenvs.data import EpisodeDataset
ds = EpisodeDataset({path!r}, obs_shape=(64, 64, 3), num_actions=4)
while True:
    n = ds.num_episodes
    ds.append(make_episode(n, 200 + n % 7, shape=(64, 64, 3)))
"""


@pytest.mark.timeout(300)
def test_sigkill_while_writing_keeps_every_completed_episode(tmp_path):
    """Kill a real writer process at random moments; the dataset stays readable each time."""
    rng = np.random.default_rng(0)
    path = tmp_path / "killed"
    script = WRITER.format(tests=os.path.dirname(__file__), path=str(path))
    kills = 6
    for _ in range(kills):
        before = EpisodeDataset(path).num_episodes if (path / "meta.json").exists() else 0
        proc = subprocess.Popen([sys.executable, "-c", script])
        # Wait until it has written at least one more episode, then kill at a random moment.
        deadline = time.time() + 120
        while time.time() < deadline:
            if (path / "index.json").exists() and EpisodeDataset(path).num_episodes > before:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ds = EpisodeDataset(path)
        assert ds.num_episodes > before
        for i in range(ds.num_episodes):
            assert_same(ds.episode(i), make_episode(i, 200 + i % 7, shape=(64, 64, 3)))
        # Leftovers of the killed write (a temporary file, or an episode file written just before
        # its index entry) are not episodes of the dataset; the next append overwrites them.
        indexed = {e["file"].split("/")[1] for e in ds._index}
        stray = {p.name for p in (path / "episodes").iterdir()} - indexed
        orphans = [n for n in stray if not n.startswith(".")]  # temporary files are hidden
        assert orphans in ([], [f"{ds.num_episodes:06d}.npz"])


def test_collect_atari_resumes_and_appends(tmp_path):
    out = tmp_path / "breakout"
    first = collect_atari("Breakout", out, steps=150, seed=0, progress=False)
    assert first["num_steps"] >= 150 and first["episodes_added"] >= 1
    second = collect_atari("Breakout", out, steps=300, seed=0, progress=False)
    assert second["num_steps"] >= 300
    assert second["num_episodes"] == first["num_episodes"] + second["episodes_added"]
    ds = EpisodeDataset(out)
    assert ds.obs_shape == (64, 64, 3) and ds.num_actions == 4
    assert ds.action_meanings == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    ep = ds.episode(0)
    assert ep.terminated[-1] or ep.truncated[-1]  # life loss ends training episodes
    assert not (ep.terminated[:-1] | ep.truncated[:-1]).any()
    # a finished collection does nothing more
    assert collect_atari("Breakout", out, steps=300, progress=False)["steps_added"] == 0


def test_collect_any_gym_image_env(tmp_path):
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    summary = collect_gym("ALE/Pong-v5", tmp_path / "pong", steps=50, seed=0, size=32, progress=False,
                          max_num_frames_per_episode=200)
    ds = EpisodeDataset(tmp_path / "pong")
    assert ds.obs_shape == (32, 32, 3) and summary["num_steps"] >= 50
    with pytest.raises(ValueError, match="only Discrete"):
        collect_gym("Pendulum-v1", tmp_path / "car", steps=10, progress=False)


def test_reward_fraction_oversamples_rewarded_transitions(tmp_path):
    ds = EpisodeDataset(tmp_path / "d", obs_shape=(8, 8, 3), num_actions=4)
    for seed in range(3):
        ep = make_episode(seed, 50)
        ep.rewards[:] = 0.0
        ep.rewards[[7, 31]] = [1.0, -2.0]  # 2 rewarded steps in 50
        ds.append(ep)
    natural = ds.sample_segments(2000, length=3, rng=np.random.default_rng(0))
    boosted = ds.sample_segments(2000, length=3, rng=np.random.default_rng(0), reward_fraction=0.5)
    share = lambda seg: float((seg.rewards != 0).any(dim=1).float().mean())  # noqa: E731
    assert share(natural) < 0.2
    assert 0.5 < share(boosted) < 0.7  # half forced, plus the natural ~12% of the rest
    assert set(boosted.rewards[boosted.rewards != 0].tolist()) == {1.0, -2.0}
    # the forced reward sits anywhere in the segment, not always last (a recurrent head would
    # otherwise learn the rhythm)
    positions = (boosted.rewards != 0).float().argmax(dim=1)[(boosted.rewards != 0).any(dim=1)]
    assert set(positions.tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="reward_fraction"):
        ds.sample_segments(4, length=3, rng=np.random.default_rng(0), reward_fraction=1.5)


def test_end_fraction_oversamples_episode_ends(tmp_path):
    ds = EpisodeDataset(tmp_path / "d", obs_shape=(8, 8, 3), num_actions=4)
    for seed in range(3):
        ep = make_episode(seed, 60)
        ep.rewards[:] = 0.0
        ep.rewards[10] = 1.0
        ep.terminated[:] = False
        ep.terminated[-1] = True  # one end in 60 steps
        ds.append(ep)
    ends = lambda seg: float(seg.terminated.any(dim=1).float().mean())  # noqa: E731
    rewarded = lambda seg: float((seg.rewards != 0).any(dim=1).float().mean())  # noqa: E731
    natural = ds.sample_segments(2000, length=3, rng=np.random.default_rng(0))
    both = ds.sample_segments(2000, length=3, rng=np.random.default_rng(0), reward_fraction=0.3, end_fraction=0.3)
    assert ends(natural) < 0.1 and 0.3 < ends(both) < 0.4
    assert 0.3 < rewarded(both) < 0.4
    # the two draws share one uniform number, so no segment is forced to hold both
    assert not bool((both.terminated.any(dim=1) & (both.rewards != 0).any(dim=1)).any())
    # an end is always its episode's last step, so a forced one ends its segment, but after a
    # uniform number of real transitions: the segment's start is cut (padded) instead
    ended = both.terminated.any(dim=1)
    assert bool(both.terminated[ended, -1].all())
    memory = both.mask[ended, :-1].sum(dim=1) - 1  # real transitions before the end
    assert set(memory.tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="at most 1"):
        ds.sample_segments(4, length=3, rng=np.random.default_rng(0), reward_fraction=0.6, end_fraction=0.6)
