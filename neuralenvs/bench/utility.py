"""Utility: how well an agent trained only in a dream plays the real game.

Train an SB3 agent on the dreamed environment (horizon-cut dreams started from real contexts, as
DIAMOND trains its actor-critic), then play ``episodes`` full real games (test mode: game over, not
life loss; the real, unclipped score) with it and with a uniform random policy.

Rewards and episode ends are sampled from the heads' predicted distributions by default: a rare
reward (a punch landing) rarely is the most likely class of a single step, so the argmax dream would
hand the agent almost no reward, while sampling gives it the expected reward the model learned.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from neuralenvs.envs.atari import human_normalized_score


def score_gap(agent: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """``agent`` minus ``baseline`` (each ``{"mean", "stderr"}`` over independent episodes), the
    standard error of that difference, and their ratio: how many standard errors apart they are."""
    diff = agent["mean"] - baseline["mean"]
    stderr = math.hypot(agent["stderr"], baseline["stderr"])
    if stderr > 0:
        ratio = diff / stderr
    else:  # no spread at all (e.g. one episode each): any difference is infinitely many s.e., with its sign
        ratio = math.copysign(math.inf, diff) if diff else 0.0
    return {"gap": diff, "gap_stderr": stderr, "gap_over_stderr": ratio}


def with_starts_from(bank: Any, path: str, num_actions: int, seed: int) -> tuple[Any, dict[str, int]]:
    """``bank`` (a :class:`~neuralenvs.envs.starts.StartBank`) and as many windows again, cut from
    the episodes of the dataset at ``path``, so that half the dreams start in states those episodes
    reached. An agent trained only in dreams started from random play may never learn what to do in
    the states that it reaches itself; DIAMOND starts every dream in episodes its agent collected.
    The dream must model those states too: on Krull it did not, and this made the agent worse
    (docs/transfer_krull.md, section 10).
    Also returns the dataset's size: its real steps count towards the dream's real-step budget."""
    from neuralenvs.data import EpisodeDataset
    from neuralenvs.envs.starts import StartBank

    data = EpisodeDataset(path)
    if data.num_actions != num_actions:
        raise ValueError(f"{path} holds episodes of {data.num_actions} actions, the dream has {num_actions}")
    own = StartBank.from_dataset(data, bank.context_frames, len(bank), np.random.default_rng(seed))
    merged = StartBank(np.concatenate([bank.frames, own.frames]), np.concatenate([bank.actions, own.actions]))
    return merged, {"real_steps": data.num_steps, "episodes": data.num_episodes, "windows": len(own)}


def measure_utility(
    checkpoint: str,
    algo: str = "ppo",
    steps: int = 100_000,
    n_envs: int | None = None,
    horizon: int = 15,
    frame_stack: int = 4,
    episodes: int = 20,
    seed: int = 0,
    device: str | None = None,
    algo_kwargs: dict | None = None,
    sample_heads: bool = True,
    progress: bool = True,
    run_dir: str | None = None,
    precision: str | None = None,
    starts_from: str | None = None,
    compile: bool | str = False,
) -> dict:
    """Train ``algo`` for ``steps`` in ``n_envs`` dreams of ``checkpoint`` (None: the package's
    ``neuralenvs.sb3.DREAMS_PER_AGENT``), then score it and random play in the real game. With
    ``run_dir``, the agent is saved there as it trains and a rerun resumes it. With ``starts_from``
    (an episode dataset), half the dreams start from windows of its episodes
    (:func:`with_starts_from`). ``precision`` is the dream's (None: the dream env's default);
    ``compile`` compiles it (:class:`DreamVectorEnv`)."""
    from neuralenvs.envs.dream import DreamVectorEnv
    from neuralenvs.envs.runtime import DEFAULT_PRECISION
    from neuralenvs.registry import load_world_model_and_starts, real_env_id
    from neuralenvs.sb3 import (
        DREAMS_PER_AGENT,
        default_algo_kwargs,
        describe_algo_kwargs,
        evaluate,
        evaluate_random,
        make_sb3_env,
        saved_agent_steps,
        train_in_dream,
    )

    n_envs = n_envs or DREAMS_PER_AGENT
    model, starts, config = load_world_model_and_starts(checkpoint, device=device)
    game = config.get("game")
    if not game:
        raise ValueError(f"{checkpoint} names no game, so there is no real game to evaluate on")
    own_starts = None
    if starts_from is not None:
        starts, own_starts = with_starts_from(starts, starts_from, model.num_actions, seed)
    dream = DreamVectorEnv(
        model, starts, num_envs=n_envs, horizon=horizon, frame_stack=frame_stack, device=model.device,
        sample_heads=sample_heads, precision=precision or DEFAULT_PRECISION, compile=compile,
    )
    save_path = None if run_dir is None else Path(run_dir) / "agent.zip"
    steps_before = saved_agent_steps(save_path) if save_path is not None else 0
    t0 = time.perf_counter()
    agent = train_in_dream(
        algo, make_sb3_env(dream), total_timesteps=steps, seed=seed,
        algo_kwargs=algo_kwargs, progress_bar=progress,
        save_path=save_path,
    )
    train_seconds = time.perf_counter() - t0
    steps_now = int(agent.num_timesteps) - steps_before
    real_id = real_env_id(game)
    t0 = time.perf_counter()
    real_kwargs = {"frame_stack": frame_stack}
    trained = evaluate(agent, real_id, n_episodes=episodes, seed=seed + 1000, env_kwargs=real_kwargs)
    eval_seconds = time.perf_counter() - t0
    random = evaluate_random(real_id, n_episodes=episodes, seed=seed + 1000, env_kwargs=real_kwargs)
    return {
        "checkpoint": str(checkpoint),
        "game": game,
        "algo": algo,
        "seed": seed,
        "algo_kwargs": describe_algo_kwargs({**default_algo_kwargs(algo, n_envs=n_envs), **(algo_kwargs or {})}),
        "dream_steps": steps,
        "n_envs": n_envs,
        "horizon": horizon,
        "frame_stack": frame_stack,
        "sample_heads": sample_heads,
        "precision": dream.precision,
        "compiled": dream.compiled,
        "starts_from": None if starts_from is None else {"path": str(starts_from), **own_starts},
        "agent": trained,
        "random": random,
        "agent_vs_random": score_gap(trained, random),
        "agent_hns": human_normalized_score(game, trained["mean"]),
        "random_hns": human_normalized_score(game, random["mean"]),
        "train_seconds": train_seconds,
        # the whole loop: dream steps, heads, agent forward passes and updates
        "loop_transitions_per_second": steps_now / train_seconds if steps_now > 0 else math.nan,
        "eval_seconds": eval_seconds,
        "device": str(model.device),
    }
