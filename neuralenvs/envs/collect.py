"""Collect real episodes into an ``EpisodeDataset``, resumably.

``collect`` keeps playing until the dataset holds ``steps`` transitions, so re-running the same
command after a crash finishes the job, and raising ``steps`` appends more. Only finished episodes
are stored; the one in progress when a run stops is dropped.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from neuralenvs.data.episodes import Episode, EpisodeDataset

Policy = Callable[[np.ndarray], int]


def load_sb3_agent(path: str | Path, algo: str = "ppo") -> Any:
    """A stable-baselines3 agent from its ``.zip``, on the CPU."""
    import stable_baselines3 as sb3

    algos = {"ppo": sb3.PPO, "a2c": sb3.A2C, "dqn": sb3.DQN}
    if algo.lower() not in algos:
        raise ValueError(f"unknown SB3 algorithm {algo!r}; choose one of {sorted(algos)}")
    return algos[algo.lower()].load(str(path), device="cpu")


def load_sb3_policy(path: str | Path, algo: str = "ppo", deterministic: bool = False) -> Policy:
    """A policy from a stable-baselines3 ``.zip`` (trained on the same observation layout)."""
    agent = load_sb3_agent(path, algo)

    def act(obs: np.ndarray) -> int:
        action, _ = agent.predict(obs, deterministic=deterministic)
        return int(action)

    return act


def _frame(obs: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
    """The newest frame of an observation, as uint8 (H, W, C) of the dataset's size."""
    obs = np.asarray(obs)
    if obs.dtype != np.uint8 or obs.ndim != 3:
        raise ValueError(
            f"observations must be uint8 images (H, W, C), got {obs.dtype} {obs.shape}; "
            "wrap the environment to return images (e.g. render_mode='rgb_array' + "
            "gymnasium.wrappers.AddRenderObservation)"
        )
    frame = obs[..., -channels:]
    if frame.shape[:2] != size:
        frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        if frame.ndim == 2:
            frame = frame[..., None]
    return frame


def collect(
    env: gym.Env,
    dataset: EpisodeDataset,
    steps: int,
    policy: Policy | None = None,
    seed: int | None = None,
    progress: bool = True,
) -> dict:
    """Play ``env`` with ``policy`` (uniform random if None) until ``dataset`` holds ``steps``
    transitions. Returns a summary: steps and episodes added, wall-clock, steps per second."""
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise ValueError(f"only Discrete action spaces are supported, got {env.action_space}")
    h, w, c = dataset.obs_shape
    # Seeds differ between resumed runs, so a resumed collection does not replay old episodes.
    rng_seed = None if seed is None else seed + dataset.num_episodes
    env.action_space.seed(rng_seed)
    start_steps, start_episodes, t0 = dataset.num_steps, dataset.num_episodes, time.perf_counter()
    recent: deque[float] = deque(maxlen=20)
    bar = tqdm(
        total=steps, initial=min(start_steps, steps), disable=not progress, unit="step",
        desc=f"collecting into {dataset.path}",
    )
    obs, _ = env.reset(seed=rng_seed)
    while dataset.num_steps < steps:
        frames, actions, rewards, terms, truncs = [_frame(obs, (h, w), c)], [], [], [], []
        done = False
        while not done:
            action = env.action_space.sample() if policy is None else policy(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            frames.append(_frame(obs, (h, w), c))
            actions.append(action)
            rewards.append(reward)
            terms.append(terminated)
            truncs.append(truncated)
            done = terminated or truncated
            bar.update(1)
        dataset.append(Episode(np.stack(frames), actions, rewards, terms, truncs))
        recent.append(float(np.sum(rewards)))
        bar.set_postfix(episodes=dataset.num_episodes, ret=f"{recent[-1]:.1f}", mean20=f"{np.mean(recent):.1f}")
        obs, _ = env.reset()
    bar.close()
    elapsed = time.perf_counter() - t0
    added = dataset.num_steps - start_steps
    return {
        "steps_added": added,
        "episodes_added": dataset.num_episodes - start_episodes,
        "num_steps": dataset.num_steps,
        "num_episodes": dataset.num_episodes,
        "seconds": elapsed,
        "steps_per_second": added / elapsed if elapsed > 0 else float("nan"),
        "mean_return": float(np.mean(recent)) if recent else float("nan"),
    }


def collect_atari(
    game: str,
    out: str | Path,
    steps: int,
    policy: str | Policy | None = "random",
    seed: int | None = None,
    frame_stack: int = 1,
    algo: str = "ppo",
    progress: bool = True,
) -> dict:
    """Collect training data from the real game (life loss ends an episode, as in the protocol)."""
    from neuralenvs.envs.atari import action_meanings, check_game, make_atari_env

    env = make_atari_env(game, train=True, frame_stack=frame_stack)
    dataset = EpisodeDataset(
        out,
        obs_shape=(64, 64, 3),
        num_actions=int(env.action_space.n),
        action_meanings=action_meanings(env),
        source=f"atari:{check_game(game)}",
    )
    return collect(env, dataset, steps, _resolve_policy(policy, algo), seed=seed, progress=progress)


def collect_gym(
    env_id: str,
    out: str | Path,
    steps: int,
    policy: str | Policy | None = "random",
    seed: int | None = None,
    size: int = 64,
    algo: str = "ppo",
    progress: bool = True,
    **env_kwargs,
) -> dict:
    """Collect from any Gymnasium env with image observations; frames resized to ``size``."""
    env = gym.make(env_id, **env_kwargs)
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise ValueError(f"{env_id} has actions {env.action_space}; only Discrete actions are supported")
    shape = env.observation_space.shape
    if shape is None or len(shape) != 3:
        raise ValueError(
            f"{env_id} has observations of shape {shape}; collection needs images (H, W, C)"
        )
    channels = 3 if shape[-1] >= 3 else shape[-1]
    dataset = EpisodeDataset(
        out,
        obs_shape=(size, size, channels),
        num_actions=int(env.action_space.n),
        source=f"gym:{env_id}",
    )
    return collect(env, dataset, steps, _resolve_policy(policy, algo), seed=seed, progress=progress)


def _resolve_policy(policy: str | Policy | None, algo: str) -> Policy | None:
    if policy is None or policy == "random":
        return None
    if callable(policy):
        return policy
    return load_sb3_policy(policy, algo=algo)
