"""The real games follow the Atari 100k protocol exactly."""

import gymnasium as gym
import numpy as np
import pytest

import neuralenvs
from neuralenvs.envs.atari import (
    ATARI100K_GAMES,
    check_game,
    human_normalized_score,
    make_atari_env,
    random_score,
)


def test_games_and_scores_are_package_data():
    assert len(ATARI100K_GAMES) == 26
    assert "Pong" in ATARI100K_GAMES and "KungFuMaster" in ATARI100K_GAMES
    assert random_score("KungFuMaster") == 258.5  # not Krull's 1598.0, a widely copied error
    assert human_normalized_score("Pong", random_score("Pong")) == 0.0
    assert neuralenvs.ATARI100K_GAMES == ATARI100K_GAMES


def test_unknown_game_lists_valid_names():
    with pytest.raises(ValueError, match="valid names are: .*Pong"):
        make_atari_env("Pongg")
    assert check_game("ms_pacman") == "MsPacman"


def test_protocol_settings():
    env = make_atari_env("Breakout", seed=0)
    ale_env = env.unwrapped
    assert ale_env._frameskip == 1
    assert ale_env.ale.getFloat("repeat_action_probability") == 0.0
    assert ale_env.ale.getInt("max_num_frames_per_episode") == 108_000
    assert env.action_space == gym.spaces.Discrete(4)  # minimal action set
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    pre = env
    while not isinstance(pre, gym.wrappers.AtariPreprocessing):
        pre = pre.env
    assert pre.frame_skip == 4 and pre.noop_max == 30 and not pre.grayscale_obs


def _episode_lengths(train: bool, n: int) -> list[tuple[int, int]]:
    env = make_atari_env("Breakout", train=train, seed=1)
    env.reset(seed=1)
    out = []
    for _ in range(n):
        steps, lives_start = 0, env.unwrapped.ale.lives()
        while True:
            _, _, terminated, truncated, info = env.step(env.action_space.sample())
            steps += 1
            if terminated or truncated:
                out.append((lives_start, info["lives"]))
                env.reset()
                break
    return out


def test_life_loss_ends_episode_only_in_train_mode():
    for lives_start, lives_end in _episode_lengths(train=True, n=2):
        assert lives_end == lives_start - 1
    (lives_start, lives_end), = _episode_lengths(train=False, n=1)
    assert lives_start == 5 and lives_end == 0


def test_frame_stack_channels_oldest_first():
    env = make_atari_env("Pong", frame_stack=4, seed=0)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 12)
    assert all(np.array_equal(obs[..., :3], obs[..., 3 * i : 3 * i + 3]) for i in range(4))
    new, *_ = env.step(0)
    assert np.array_equal(new[..., :9], obs[..., 3:])


def test_gym_ids_registered():
    env = gym.make("neuralenvs/Pong-real-v0")
    assert env.observation_space.shape == (64, 64, 3)
    assert len(neuralenvs.list_envs("real")) == 26


def test_clipped_rewards_are_the_signs_of_the_real_ones():
    clipped = make_atari_env("KungFuMaster", clip_rewards=True, seed=0)
    real = make_atari_env("KungFuMaster", seed=0)
    clipped.reset(seed=0)
    real.reset(seed=0)
    rng = np.random.default_rng(0)
    seen = []
    for _ in range(3000):  # random play kills an enemy every few hundred steps
        action = int(rng.integers(clipped.action_space.n))
        _, r_clipped, done, trunc, _ = clipped.step(action)
        _, r_real, *_ = real.step(action)
        seen.append((r_real, r_clipped))
        if done or trunc:
            break
    assert any(r > 1 for r, _ in seen)  # KungFuMaster pays 100s of points
    assert all(c == np.sign(r) for r, c in seen)
