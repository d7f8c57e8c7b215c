"""The real Atari 100k games, exactly as the benchmark defines them.

Protocol (DIAMOND / IRIS): ALE v5 with ``frameskip=1`` and ``repeat_action_probability=0.0``,
the minimal action set, a 108k-frame cap, then gymnasium's ``AtariPreprocessing``: frame skip 4
with a max over the last two frames, up to 30 no-ops at reset, 64x64 RGB (INTER_AREA).
A lost life ends the episode only for training data (``train=True``); evaluation runs to game over
and reports the real, unclipped score.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

import gymnasium as gym
import numpy as np

OBS_SIZE = 64
MAX_EPISODE_FRAMES = 108_000


@cache
def _scores() -> dict[str, dict[str, float]]:
    text = resources.files("neuralenvs.envs").joinpath("atari100k.json").read_text()
    return json.loads(text)["games"]


ATARI100K_GAMES: tuple[str, ...] = tuple(sorted(_scores()))
"""The 26 games of the Atari 100k benchmark, in ALE's spelling."""


def random_score(game: str) -> float:
    """Published score of the uniform random policy (the 0 of human-normalized scores)."""
    return _scores()[check_game(game)]["random"]


def human_score(game: str) -> float:
    """Published human score (the 1 of human-normalized scores)."""
    return _scores()[check_game(game)]["human"]


def human_normalized_score(game: str, score: float) -> float:
    return (score - random_score(game)) / (human_score(game) - random_score(game))


def check_game(game: str) -> str:
    """Return the canonical spelling of ``game``, or raise a ValueError listing the valid names."""
    by_lower = {g.lower(): g for g in ATARI100K_GAMES}
    canonical = by_lower.get(game.lower().replace("_", "").replace("-", ""))
    if canonical is None:
        raise ValueError(
            f"unknown Atari 100k game {game!r}; valid names are: {', '.join(ATARI100K_GAMES)}"
        )
    return canonical


class ChannelFrameStack(gym.ObservationWrapper):
    """Stack the last ``k`` frames along the channel axis, oldest first: (H, W, C * k).

    Dreamed environments produce exactly this layout, so a policy trained in a dream runs on the
    real game unchanged. Right after reset the stack holds copies of the first frame, as the
    game has no earlier frames to show.
    """

    def __init__(self, env: gym.Env, k: int) -> None:
        super().__init__(env)
        if k < 1:
            raise ValueError(f"frame_stack must be >= 1, got {k}")
        self.k = k
        h, w, c = env.observation_space.shape
        self.observation_space = gym.spaces.Box(0, 255, (h, w, c * k), np.uint8)
        self._frames: list[np.ndarray] = []

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._frames = [obs] * self.k
        return np.concatenate(self._frames, axis=-1), info

    def observation(self, observation: np.ndarray) -> np.ndarray:
        self._frames = self._frames[1:] + [observation]
        return np.concatenate(self._frames, axis=-1)


def make_atari_env(
    game: str,
    *,
    train: bool = False,
    seed: int | None = None,
    frame_stack: int = 1,
    render_mode: str | None = None,
    clip_rewards: bool = False,
) -> gym.Env:
    """The real game ``game`` under the Atari 100k protocol.

    Observations are uint8 (64, 64, 3 * frame_stack); actions are the game's minimal action set.
    ``train=True`` ends an episode at every lost life (as in the training data); the default
    (``False``) plays to game over, as the benchmark's evaluation does. ``seed`` seeds the first
    reset (the no-op count and the emulator). ``clip_rewards=True`` gives each step's reward as its
    sign (-1, 0, +1), which is what a dream's reward head predicts: an agent trained on the real game
    with ``train=True, clip_rewards=True`` sees the same episodes and rewards it would in a dream.
    """
    import ale_py

    gym.register_envs(ale_py)
    name = check_game(game)
    env = gym.make(
        f"ALE/{name}-v5",
        frameskip=1,
        repeat_action_probability=0.0,
        full_action_space=False,
        max_num_frames_per_episode=MAX_EPISODE_FRAMES,
        render_mode=render_mode,
    )
    env = gym.wrappers.AtariPreprocessing(
        env,
        noop_max=30,
        frame_skip=4,
        screen_size=OBS_SIZE,
        terminal_on_life_loss=train,
        grayscale_obs=False,
        scale_obs=False,
    )
    if clip_rewards:
        env = gym.wrappers.TransformReward(env, lambda r: float(np.sign(r)))
    if frame_stack != 1:
        env = ChannelFrameStack(env, frame_stack)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def action_meanings(env: gym.Env) -> list[str]:
    return list(env.unwrapped.get_action_meanings())
