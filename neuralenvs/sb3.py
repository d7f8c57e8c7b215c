"""stable-baselines3 in the dream: a VecEnv adapter, train-in-dream and evaluate-in-real helpers.

A :class:`~neuralenvs.envs.dream.DreamVectorEnv` already steps all its dreams in one batch, so the
adapter wraps it directly (no subprocesses, no per-env copies of the model). Finished dreams carry
SB3's ``terminal_observation``, and ``TimeLimit.truncated`` where the dream was cut at its horizon
rather than ended by the termination head, so PPO and A2C bootstrap the value at the cut (as DIAMOND
does with its 15-step dreams) and DQN does not treat the cut as a real end. Each finished dream also
carries a Monitor-style ``episode`` info (its dreamed return), which SB3 logs as ``ep_rew_mean``.

    >>> from neuralenvs.sb3 import make_sb3_env, train_in_dream, evaluate
    >>> agent = train_in_dream("ppo", "neuralenvs/Pong-diffusion-v0", 100_000, horizon=15)
    >>> evaluate(agent, "neuralenvs/Pong-real-v0", n_episodes=20)["mean"]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from neuralenvs.envs.dream import DreamVectorEnv

__all__ = [
    "ALGORITHMS",
    "default_algo_kwargs",
    "DreamSB3VecEnv",
    "make_sb3_env",
    "train_in_dream",
    "evaluate",
    "evaluate_random",
]

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "dqn": DQN}

# SB3's DQN default replay buffer (1M) of 64x64x3 frames needs ~25 GB; 100k (the Atari 100k
# budget) is the largest a dream-trained agent needs. Any algo_kwargs override these.
# Dreams are short (DIAMOND cuts them at 15 steps) and many run at once: PPO collects 64 steps per
# dream between updates instead of SB3's 2048, so a CPU budget of tens of thousands of steps still
# gives dozens of updates. DQN's default 1M-frame buffer would not fit images in memory.
_DEFAULT_ALGO_KWARGS: dict[str, dict[str, Any]] = {
    "ppo": {"n_steps": 64, "batch_size": 256, "n_epochs": 4, "learning_rate": 2.5e-4, "ent_coef": 0.01},
    "dqn": {"buffer_size": 100_000},
}


def default_algo_kwargs(algo: str) -> dict[str, Any]:
    """The constructor settings neuralenvs uses for ``algo`` in a dream (a copy; see above)."""
    return dict(_DEFAULT_ALGO_KWARGS.get(algo.lower(), {}))


class DreamSB3VecEnv(VecEnv):
    """A :class:`DreamVectorEnv` as an SB3 ``VecEnv``.

    ``get_attr`` / ``set_attr`` / ``env_method`` reach the one underlying vector env: all dreams
    share its attributes, so a value set or a method called applies to every dream, and the
    returned list repeats one result per requested index. SB3 seeds (``seed``) and reset options
    (``set_options``) are taken from the first index, since the dreams share one seeded batch.
    """

    def __init__(self, venv: DreamVectorEnv) -> None:
        if not isinstance(venv, DreamVectorEnv):
            raise TypeError(f"DreamSB3VecEnv wraps a DreamVectorEnv, got {type(venv).__name__}")
        if venv.output != "numpy":
            raise ValueError("SB3 needs numpy observations: create the DreamVectorEnv with output='numpy'")
        if not venv.autoreset:
            raise ValueError(
                "SB3 expects finished episodes to restart: create the DreamVectorEnv with autoreset=True"
            )
        self.venv = venv
        self._actions: np.ndarray | None = None
        self._start_time = time.time()  # Monitor's "t": seconds since creation
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    def reset(self) -> VecEnvObs:
        options = self._options[0] or None
        obs, infos = self.venv.reset(seed=self._seeds[0], options=options)
        self.reset_infos = [{"episode_step": 0} for _ in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async(actions)")
        actions, self._actions = self._actions, None
        obs, rewards, terminated, truncated, infos = self.venv.step(actions)
        dones = terminated | truncated
        info_list: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            final_obs = infos["final_obs"]
            episode = infos["final_info"]["episode"]
            t = round(time.time() - self._start_time, 6)
            for i in np.flatnonzero(dones).tolist():  # per finished dream only
                info_list[i] = {
                    "terminal_observation": final_obs[i],
                    # a horizon cut is a time limit: bootstrap; a predicted end is a real end
                    "TimeLimit.truncated": bool(truncated[i] and not terminated[i]),
                    "episode": {"r": float(episode["r"][i]), "l": int(episode["l"][i]), "t": t},
                }
        return obs, rewards.astype(np.float32, copy=False), dones, info_list

    def close(self) -> None:
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        return list(self.venv.current_frames())

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


def _make_monitored(env_id: str, env_kwargs: dict[str, Any]) -> gym.Env:
    return Monitor(gym.make(env_id, **env_kwargs))


def make_sb3_env(env: str | DreamVectorEnv | VecEnv, n_envs: int = 1, **env_kwargs: Any) -> VecEnv:
    """An SB3 ``VecEnv`` for a gym id or a dream you already built.

    - a dreamed id (``neuralenvs/<Game>-<family>-v0``, ``neuralenvs/Dream-v0``): one batched
      :class:`DreamVectorEnv` of ``n_envs`` dreams from ``gymnasium.make_vec`` (``env_kwargs`` go
      to it, e.g. ``horizon=15``, ``frame_stack=4``, ``device="cuda"``);
    - a real id (ending in ``-real-v0``): a ``DummyVecEnv`` of ``n_envs`` Monitor-wrapped games;
    - a :class:`DreamVectorEnv` instance: wrapped as is (``n_envs`` is its ``num_envs``);
    - an SB3 ``VecEnv``: returned unchanged.
    """
    if isinstance(env, VecEnv):
        if env_kwargs:
            raise TypeError(f"env_kwargs {sorted(env_kwargs)} apply only when env is a gym id")
        return env
    if isinstance(env, DreamVectorEnv):
        if env_kwargs:
            raise TypeError(f"env_kwargs {sorted(env_kwargs)} apply only when env is a gym id")
        return DreamSB3VecEnv(env)
    if not isinstance(env, str):
        raise TypeError(f"env must be a gym id, a DreamVectorEnv or an SB3 VecEnv, got {type(env).__name__}")
    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"n_envs must be a positive integer, got {n_envs!r}")
    if env.endswith("-real-v0"):
        return DummyVecEnv([partial(_make_monitored, env, dict(env_kwargs)) for _ in range(n_envs)])
    venv = gym.make_vec(env, num_envs=n_envs, vectorization_mode="vector_entry_point", **env_kwargs)
    if not isinstance(venv, DreamVectorEnv):
        raise TypeError(
            f"{env!r} made a {type(venv).__name__}, not a DreamVectorEnv; pass a dreamed id "
            "(neuralenvs/<Game>-<family>-v0) or a real one ending in -real-v0"
        )
    return DreamSB3VecEnv(venv)


def _algorithm(algo: str | type[BaseAlgorithm]) -> tuple[str, type[BaseAlgorithm]]:
    if isinstance(algo, str):
        if algo.lower() not in ALGORITHMS:
            raise ValueError(
                f"unknown algorithm {algo!r}; choose one of {sorted(ALGORITHMS)} or pass an SB3 class"
            )
        return algo.lower(), ALGORITHMS[algo.lower()]
    if isinstance(algo, type) and issubclass(algo, BaseAlgorithm):
        return algo.__name__.lower(), algo
    raise TypeError(f"algo must be a name ({sorted(ALGORITHMS)}) or an SB3 algorithm class, got {algo!r}")


def train_in_dream(
    algo: str | type[BaseAlgorithm],
    env: str | DreamVectorEnv | VecEnv,
    total_timesteps: int,
    n_envs: int = 16,
    policy: str | type = "CnnPolicy",
    seed: int | None = None,
    algo_kwargs: dict[str, Any] | None = None,
    progress_bar: bool = False,
    *,
    env_kwargs: dict[str, Any] | None = None,
    verbose: int = 0,
) -> BaseAlgorithm:
    """Train an SB3 agent (``"ppo"``, ``"a2c"``, ``"dqn"`` or an SB3 class) only in a dream.

    ``env`` is a dreamed gym id (made with ``n_envs`` dreams and ``env_kwargs``), a
    :class:`DreamVectorEnv` or a ready ``VecEnv``. ``algo_kwargs`` go to the algorithm's
    constructor (DQN defaults to a 100k replay buffer). Returns the trained algorithm; its
    ``policy`` runs unchanged on the matching ``-real-v0`` game.
    """
    name, cls = _algorithm(algo)
    vec_env = make_sb3_env(env, n_envs, **(env_kwargs or {}))
    kwargs = {**default_algo_kwargs(name), **(algo_kwargs or {})}
    model = cls(policy, vec_env, seed=seed, verbose=verbose, **kwargs)
    model.learn(total_timesteps=int(total_timesteps), progress_bar=progress_bar)
    return model


def _summary(returns: list[float], lengths: list[int]) -> dict[str, Any]:
    values = np.asarray(returns, dtype=np.float64)
    stderr = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
    return {
        "mean": float(values.mean()),
        "stderr": stderr,
        "returns": [float(r) for r in returns],
        "lengths": [int(n) for n in lengths],
        "n_episodes": len(returns),
    }


def _to_env_action(action: Any, space: spaces.Space) -> Any:
    if isinstance(space, spaces.Discrete):
        return int(np.asarray(action).reshape(-1)[0])  # ALE wants a plain int
    return action


def _run_episodes(
    env: str | gym.Env,
    n_episodes: int,
    seed: int | None,
    env_kwargs: dict[str, Any] | None,
    act: Callable[[Any, gym.Env], Any],
    max_episode_steps: int | None,
) -> dict[str, Any]:
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes < 1:
        raise ValueError(f"n_episodes must be a positive integer, got {n_episodes!r}")
    owned = isinstance(env, str)
    game: gym.Env = gym.make(env, **(env_kwargs or {})) if owned else env
    returns: list[float] = []
    lengths: list[int] = []
    try:
        for episode in range(n_episodes):
            obs, _ = game.reset(seed=None if seed is None else seed + episode)
            total, steps, done = 0.0, 0, False
            while not done:
                action = _to_env_action(act(obs, game), game.action_space)
                obs, reward, terminated, truncated, _ = game.step(action)
                total += float(reward)  # the real, unclipped score
                steps += 1
                done = (
                    terminated or truncated or (max_episode_steps is not None and steps >= max_episode_steps)
                )
            returns.append(total)
            lengths.append(steps)
    finally:
        if owned:
            game.close()
    return _summary(returns, lengths)


def evaluate(
    model: Any,
    env: str | gym.Env,
    n_episodes: int = 20,
    seed: int | None = None,
    deterministic: bool = False,
    *,
    env_kwargs: dict[str, Any] | None = None,
    max_episode_steps: int | None = None,
) -> dict[str, Any]:
    """Mean real return of an agent (anything with SB3's ``predict``) over ``n_episodes`` of a
    gym id (typically ``neuralenvs/<Game>-real-v0``) or an env; one plain episode loop, no
    wrappers, so the score is the game's own. Episode ``i`` is reset with ``seed + i`` and, with a
    seed, the policy's own sampling is seeded too (without touching the global RNG state).

    Returns ``{"mean", "stderr", "returns", "lengths", "n_episodes"}``.
    """

    def act(obs: Any, game: gym.Env) -> Any:
        return model.predict(obs, deterministic=deterministic)[0]

    if seed is None:
        return _run_episodes(env, n_episodes, seed, env_kwargs, act, max_episode_steps)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _run_episodes(env, n_episodes, seed, env_kwargs, act, max_episode_steps)


def evaluate_random(
    env: str | gym.Env,
    n_episodes: int = 20,
    seed: int | None = None,
    *,
    env_kwargs: dict[str, Any] | None = None,
    max_episode_steps: int | None = None,
) -> dict[str, Any]:
    """The same measurement for a uniformly random policy (the baseline of human-normalized
    scores)."""
    seeded = False

    def act(obs: Any, game: gym.Env) -> Any:
        nonlocal seeded
        if not seeded:
            game.action_space.seed(seed)
            seeded = True
        return game.action_space.sample()

    return _run_episodes(env, n_episodes, seed, env_kwargs, act, max_episode_steps)
