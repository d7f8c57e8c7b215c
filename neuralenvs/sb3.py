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

import json
import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.torch_layers import NatureCNN
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from neuralenvs.envs.dream import DreamVectorEnv
from neuralenvs.utils.io import temp_sibling
from neuralenvs.utils.memory import reuse_freed_memory

__all__ = [
    "ALGORITHMS",
    "ChannelsLastCNN",
    "default_algo_kwargs",
    "DREAMS_PER_AGENT",
    "PPO_ROLLOUT",
    "describe_algo_kwargs",
    "DreamSB3VecEnv",
    "make_sb3_env",
    "train_in_dream",
    "evaluate",
    "evaluate_random",
    "save_agent",
    "saved_agent_steps",
]

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "dqn": DQN}


class ChannelsLastCNN(NatureCNN):
    """SB3's ``NatureCNN`` (the same layers, weights and outputs) fed its images in channels-last
    memory order, which oneDNN's CPU convolutions run about twice as fast forward and backward (a
    PPO update on 64x64x12 observations: 0.21 s instead of 0.38 s per minibatch of 256, one thread)."""

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return super().forward(observations.contiguous(memory_format=torch.channels_last))


# Dreams an agent trains in, stepped together in one batch (PPO_ROLLOUT // 32 = 32 steps each per
# rollout), measured in both transferring dreams (docs/transfer_agent.md, section 19): KungFuMaster's
# agents scored higher with 32 or 64 dreams than with 16; CrazyClimber's lower with 64 (9,066
# against 11,092, the mean of PPO seeds 0-2) and as well with 32 (11,290). 32 runs the loop 1.1x
# as fast as 16, 64 1.25x.
DREAMS_PER_AGENT = 32
# Dreams are short (DIAMOND cuts them at 15 steps) and many run at once: PPO collects 1,024 dreamed
# transitions between updates (n_steps = PPO_ROLLOUT // n_envs per dream) instead of SB3's 2,048
# per env, so a CPU budget of tens of thousands of steps still gives dozens of updates.
PPO_ROLLOUT = 1024
# SB3's DQN default replay buffer (1M) of 64x64x3 frames needs ~25 GB; 100k (the Atari 100k
# budget) is the largest a dream-trained agent needs. Any algo_kwargs override these.
_CNN = {"policy_kwargs": {"features_extractor_class": ChannelsLastCNN}}
_DEFAULT_ALGO_KWARGS: dict[str, dict[str, Any]] = {
    "ppo": {"batch_size": 256, "n_epochs": 4, "learning_rate": 2.5e-4, "ent_coef": 0.01, **_CNN},
    "a2c": {**_CNN},
    "dqn": {"buffer_size": 100_000, **_CNN},
}


def default_algo_kwargs(
    algo: str, policy: str | type = "CnnPolicy", n_envs: int = DREAMS_PER_AGENT
) -> dict[str, Any]:
    """The constructor settings neuralenvs uses for ``algo`` in ``n_envs`` dreams (a copy; see
    above). The channels-last image encoder applies only to ``CnnPolicy``."""
    kwargs = {k: (dict(v) if isinstance(v, dict) else v) for k, v in _DEFAULT_ALGO_KWARGS.get(algo.lower(), {}).items()}
    if algo.lower() == "ppo":
        kwargs["n_steps"] = max(1, PPO_ROLLOUT // n_envs)
    if policy != "CnnPolicy":
        kwargs.pop("policy_kwargs", None)
    return kwargs


def describe_algo_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` as JSON can hold them: classes by their name."""
    return json.loads(json.dumps(kwargs, default=lambda o: getattr(o, "__name__", repr(o))))


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
    n_envs: int = DREAMS_PER_AGENT,
    policy: str | type = "CnnPolicy",
    seed: int | None = None,
    algo_kwargs: dict[str, Any] | None = None,
    progress_bar: bool = False,
    *,
    env_kwargs: dict[str, Any] | None = None,
    verbose: int = 0,
    save_path: str | os.PathLike[str] | None = None,
    save_every: int = 20_000,
) -> BaseAlgorithm:
    """Train an SB3 agent (``"ppo"``, ``"a2c"``, ``"dqn"`` or an SB3 class) only in a dream.

    ``env`` is a dreamed gym id (made with ``n_envs`` dreams and ``env_kwargs``), a
    :class:`DreamVectorEnv` or a ready ``VecEnv``. ``algo_kwargs`` go to the algorithm's
    constructor (DQN defaults to a 100k replay buffer). Returns the trained algorithm; its
    ``policy`` runs unchanged on the matching ``-real-v0`` game.

    With ``save_path`` (a ``.zip``), the agent is saved there atomically about every
    ``save_every`` steps and at the end, and a call that finds it resumes that agent and trains
    only the steps still missing to ``total_timesteps`` (a killed run loses at most
    ``save_every`` steps; a finished one asked for more trains the difference).

    Large freed tensors are kept for reuse from here on (:func:`neuralenvs.utils.memory.reuse_freed_memory`).
    """
    reuse_freed_memory()
    name, cls = _algorithm(algo)
    vec_env = make_sb3_env(env, n_envs, **(env_kwargs or {}))
    if save_path is not None and Path(save_path).exists():
        model = cls.load(str(save_path), env=vec_env, device=(algo_kwargs or {}).get("device", "auto"))
    else:
        kwargs = {**default_algo_kwargs(name, policy, vec_env.num_envs), **(algo_kwargs or {})}
        model = cls(policy, vec_env, seed=seed, verbose=verbose, **kwargs)
    remaining = int(total_timesteps) - int(model.num_timesteps)
    if remaining > 0:
        callback = None if save_path is None else _SaveEvery(save_path, save_every)
        model.learn(total_timesteps=remaining, progress_bar=progress_bar, reset_num_timesteps=False,
                    callback=callback)
        if save_path is not None:
            save_agent(model, save_path)
    return model


class _SaveEvery(BaseCallback):
    """Save the agent every ``every`` steps, at the start of a rollout: right after an update,
    so the saved weights and step count agree and a resumed run repeats no update."""

    def __init__(self, path: str | os.PathLike[str], every: int) -> None:
        super().__init__()
        self.path, self.every, self.saved_at = Path(path), int(every), None

    def _on_rollout_start(self) -> None:
        if self.saved_at is None:
            self.saved_at = self.num_timesteps
        elif self.num_timesteps - self.saved_at >= self.every:
            save_agent(self.model, self.path)
            self.saved_at = self.num_timesteps

    def _on_step(self) -> bool:
        return True


def save_agent(agent: BaseAlgorithm, path: str | os.PathLike[str]) -> None:
    """Save an SB3 agent to ``path`` (a ``.zip``) atomically: a run killed mid-save keeps the last
    good agent, which is what a resumed run loads."""
    path = Path(path)
    tmp = Path(f"{temp_sibling(path.with_suffix(''))}.zip")  # SB3 appends .zip to any other name
    agent.save(str(tmp))
    os.replace(tmp, path)


def saved_agent_steps(path: str | os.PathLike[str]) -> int:
    """The steps an agent saved by :func:`save_agent` has trained (0 when there is none)."""
    if not Path(path).exists():
        return 0
    data, _, _ = load_from_zip_file(path, load_data=True, device="cpu")
    return int(data["num_timesteps"])


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


def _random_action(space: spaces.Space, rng: np.random.Generator) -> Any:
    if isinstance(space, spaces.Discrete):
        return int(space.start + rng.integers(space.n))
    space.seed(int(rng.integers(2**31)))
    return space.sample()


def _to_env_action(action: Any, space: spaces.Space) -> Any:
    if isinstance(space, spaces.Discrete):
        return int(np.asarray(action).reshape(-1)[0])  # ALE wants a plain int
    return action


# Test games run side by side so the policy sees them as one batch: one forward pass per step for
# up to this many games instead of one per game (the policy, not the emulator, dominates at batch 1).
MAX_PARALLEL_GAMES = 32


def _run_episodes(
    env: str | gym.Env,
    n_episodes: int,
    seed: int | None,
    env_kwargs: dict[str, Any] | None,
    act: Callable[[np.ndarray, list[gym.Env]], np.ndarray],
    max_episode_steps: int | None,
) -> dict[str, Any]:
    """Play ``n_episodes`` games, episode ``i`` reset with ``seed + i``, up to
    :data:`MAX_PARALLEL_GAMES` at once (one game at a time when ``env`` is an instance). ``act``
    maps the stacked observations of the running games to one action each."""
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes < 1:
        raise ValueError(f"n_episodes must be a positive integer, got {n_episodes!r}")
    owned = isinstance(env, str)
    games: list[gym.Env] = (
        [gym.make(env, **(env_kwargs or {})) for _ in range(min(n_episodes, MAX_PARALLEL_GAMES))]
        if owned else [env]
    )
    returns = [0.0] * n_episodes
    lengths = [0] * n_episodes
    try:
        running: dict[int, tuple[int, Any]] = {}  # game slot -> (episode, its newest observation)
        next_episode = 0

        def start(slot: int) -> None:
            nonlocal next_episode
            obs, _ = games[slot].reset(seed=None if seed is None else seed + next_episode)
            running[slot] = (next_episode, obs)
            next_episode += 1

        for slot in range(len(games)):
            start(slot)
        while running:
            slots = sorted(running)
            actions = act(np.stack([running[s][1] for s in slots]), [games[s] for s in slots])
            for slot, action in zip(slots, actions, strict=True):
                episode, game = running[slot][0], games[slot]
                obs, reward, terminated, truncated, _ = game.step(_to_env_action(action, game.action_space))
                returns[episode] += float(reward)  # the real, unclipped score
                lengths[episode] += 1
                capped = max_episode_steps is not None and lengths[episode] >= max_episode_steps
                if terminated or truncated or capped:
                    del running[slot]
                    if next_episode < n_episodes:
                        start(slot)
                else:
                    running[slot] = (episode, obs)
    finally:
        if owned:
            for game in games:
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
    gym id (typically ``neuralenvs/<Game>-real-v0``) or an env; plain episode loops, no
    wrappers, so the score is the game's own. Episode ``i`` is reset with ``seed + i`` and, with a
    seed, the policy's own sampling is seeded too (without touching the global RNG state). For a
    gym id, up to ``MAX_PARALLEL_GAMES`` games run side by side and ``predict`` gets their
    observations as one batch.

    Returns ``{"mean", "stderr", "returns", "lengths", "n_episodes"}``.
    """

    def act(obs: np.ndarray, games: list[gym.Env]) -> np.ndarray:
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
    rng = np.random.default_rng(seed)

    def act(obs: np.ndarray, games: list[gym.Env]) -> np.ndarray:
        return np.array([_random_action(game.action_space, rng) for game in games])

    return _run_episodes(env, n_episodes, seed, env_kwargs, act, max_episode_steps)
