"""Does a dream do what the actions say? Two checks against the real game, for any family that takes
the game's actions.

``action_response``: along a random real trajectory, the emulator is saved at a state and every
action is tried from it (ALE's ``cloneState`` / ``restoreState``), which gives the real next frame of
each action. The dream, started on the same real context, dreams the next frame of each action too
(one batch, one noise seed). Reported:

- *action effect*: the mean squared pixel difference between the next frames of two different
  actions, real and dreamed. A dream whose effect is far below the real one mostly ignores the
  action: whatever the agent does, the picture moves the same way.
- *own-action hit rate*: the share of actions whose dreamed next frame is nearest (in MSE) the real
  next frame of that same action among all actions' real frames, ties counted as hits. Actions
  that the game treats alike (often several) tie, so a dream that ignores actions still scores
  the share of such ties, not ``1 / num_actions``: read it beside the action effect.

Only states where the actions make a visible difference in the real game count.

``policy_rewards``: the rewarded steps a scripted policy (a fixed cycle of actions, or random
actions) collects over an agent's dream length, played from the same real states in the real game
(the emulator restored) and in the dream (started on the same context, heads sampled as an agent
trains in them). A dream that pays for a cycle that the real game does not pay for, or does not pay
for one that it does, can be exploited by an agent, which then learns something useless in the
real game.

``agent_rewards``: the same for a trained agent, which plays its own actions on the game's frames in
the game and on the dream's frames in the dream: has it learned the dream's errors?
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from neuralenvs.world_model import WorldModel


def _next_frames_of_every_action(env: Any) -> np.ndarray:
    """The real next observation of each action from the emulator's current state, which is
    restored afterwards. ``AtariPreprocessing`` rebuilds its observation from the emulator's
    screen at each step, so restoring the emulator is enough."""
    ale = env.unwrapped.ale
    snapshot = ale.cloneState()
    frames = []
    for action in range(env.action_space.n):
        ale.restoreState(snapshot)
        obs, *_ = env.step(action)
        frames.append(obs)
    ale.restoreState(snapshot)
    return np.stack(frames).astype(np.float32)


def _pairwise_mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[i, j]``: mean squared difference between frames ``a[i]`` and ``b[j]`` (each [N, H, W, C])."""
    return ((a[:, None] - b[None]) ** 2).mean(axis=(2, 3, 4))


def _random_play(
    env: Any, k: int, every: int, rng: np.random.Generator, seed: int,
) -> Iterator[tuple[np.ndarray, list[int]]]:
    """Play random actions forever (episodes restart), pausing every ``every`` steps once ``k``
    frames are in: yields the last ``k`` frames and the ``k - 1`` actions taken at the first of
    them, with the emulator at that state (a caller may try actions from it and restore it)."""
    obs, _ = env.reset(seed=seed)
    frames, actions, step = [obs], [], 0
    while True:
        step += 1
        if len(frames) >= k and step % every == 0:
            yield np.stack(frames[-k:]), list(actions[len(actions) - (k - 1):])
        action = int(rng.integers(env.action_space.n))
        obs, _, terminated, truncated, _ = env.step(action)
        frames.append(obs)
        actions.append(action)
        if terminated or truncated:
            obs, _ = env.reset()
            frames, actions = [obs], []
        frames, actions = frames[-k:], actions[-(k - 1):] if k > 1 else []


@torch.no_grad()
def action_response(
    model: WorldModel, game: str, states: int = 100, every: int = 5, seed: int = 0, min_effect: float = 1.0,
    env: Any = None,
) -> dict[str, Any]:
    """Real against dreamed next frames of every action at ``states`` states of a random real
    trajectory (one state every ``every`` steps where the real actions differ by more than
    ``min_effect`` in mean squared pixel difference). See the module docstring. ``env``: the real
    game to use (``make_atari_env(game, train=True)`` when None)."""
    from neuralenvs.envs.atari import make_atari_env

    model.eval()
    env = make_atari_env(game, train=True) if env is None else env
    n_actions, k = env.action_space.n, model.context_frames
    if n_actions != model.num_actions:
        raise ValueError(f"{game} has {n_actions} actions, the model {model.num_actions}")
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=model.device)
    real_effect, dream_effect, hits, seen = [], [], 0, 0
    off_diagonal = ~np.eye(n_actions, dtype=bool)
    for frames, ctx_actions in _random_play(env, k, every, rng, seed):
        real = _next_frames_of_every_action(env)
        d_real = _pairwise_mse(real, real)
        if d_real[off_diagonal].max() <= min_effect:
            continue
        context = torch.from_numpy(frames)[None].to(model.device)
        state = model.init_state(context, torch.tensor([ctx_actions], dtype=torch.long, device=model.device))
        dream = []
        for action in range(n_actions):  # one at a time, all from the same noise: only the action differs
            generator.manual_seed(seed + seen)
            result = model.step(state, torch.tensor([action], device=model.device), generator)
            dream.append(result.next_frames[0].cpu().numpy().astype(np.float32))
        dream = np.stack(dream)
        cross = _pairwise_mse(dream, real)  # [dreamed action, real action]
        hits += int((np.diag(cross) <= cross.min(axis=1) + 1e-6).sum())
        real_effect.append(d_real[off_diagonal].mean())
        dream_effect.append(_pairwise_mse(dream, dream)[off_diagonal].mean())
        seen += 1
        if seen == states:
            break
    env.close()
    real_mean, dream_mean = float(np.mean(real_effect)), float(np.mean(dream_effect))
    return {
        "game": game,
        "states": seen,
        "real_action_effect": real_mean,
        "dream_action_effect": dream_mean,
        "effect_ratio": dream_mean / real_mean,
        "own_action_hit_rate": hits / (seen * n_actions),
        "chance_hit_rate": 1.0 / n_actions,  # with no ties; see the module docstring
    }


def parse_policies(specs: Sequence[str], action_names: Sequence[str]) -> dict[str, list[int] | None]:
    """``"random"`` or comma-separated action names (``"UP,UP,UP,DOWN"``) -> action cycles
    (``None`` for random)."""
    policies: dict[str, list[int] | None] = {}
    for spec in specs:
        if spec == "random":
            policies[spec] = None
            continue
        unknown = [name for name in spec.split(",") if name not in action_names]
        if unknown:
            raise ValueError(f"unknown action(s) {unknown} in {spec!r}; this game has {list(action_names)}")
        policies[spec] = [list(action_names).index(name) for name in spec.split(",")]
    return policies


def _real_states(env: Any, k: int, states: int, every: int, rng: np.random.Generator, seed: int) -> list[tuple]:
    """``states`` points of a random real trajectory (:func:`_random_play`): (emulator snapshot,
    last ``k`` frames, the ``k - 1`` actions taken at the first of them, lives)."""
    ale = env.unwrapped.ale
    # each point is stored before the walk goes on, so the snapshot is of that point
    return [(ale.cloneState(), frames, ctx_actions, ale.lives())
            for frames, ctx_actions in islice(_random_play(env, k, every, rng, seed), states)]


def _dreams_at(model: WorldModel, points: Sequence[tuple]) -> Any:
    """Dreams started on the context of each of :func:`_real_states`' ``points``."""
    frames = torch.from_numpy(np.stack([p[1] for p in points])).to(model.device)
    ctx_actions = torch.tensor([p[2] for p in points], dtype=torch.long, device=model.device)
    return model.init_state(frames, ctx_actions.reshape(len(points), -1))


def _real_rewarded_steps(env: Any, snapshot: Any, lives: int, plan: np.ndarray) -> np.ndarray:
    """Which steps of the action ``plan``, played from ``snapshot``, are rewarded (0 or 1 each;
    0 from a lost life on)."""
    ale = env.unwrapped.ale
    ale.restoreState(snapshot)
    rewarded = np.zeros(len(plan))
    for t, action in enumerate(plan):
        _, reward, terminated, truncated, _ = env.step(int(action))
        rewarded[t] = float(reward != 0)
        if terminated or truncated or ale.lives() < lives:
            break
    ale.restoreState(snapshot)
    return rewarded


def _summarise(real: dict[str, np.ndarray], dream: dict[str, np.ndarray], horizon: int) -> dict[str, Any]:
    """Rows of rewarded steps per step over the first ``horizon`` steps of each policy's play."""
    rows: dict[str, Any] = {}
    for name in real:
        r, d = real[name][:, :horizon].sum(1), dream[name][:, :horizon].sum(1)
        n, varied = len(r), r.std() > 0 and d.std() > 0
        rows[name] = {
            "real_rewarded_per_step": float(r.mean() / horizon),
            "real_se": float(r.std(ddof=1) / np.sqrt(n) / horizon),
            "dream_rewarded_per_step": float(d.mean() / horizon),
            "dream_se": float(d.std(ddof=1) / np.sqrt(n) / horizon),
            "correlation_across_states": float(np.corrcoef(r, d)[0, 1]) if varied else float("nan"),
        }
    real_means = np.array([row["real_rewarded_per_step"] for row in rows.values()])
    dream_means = np.array([row["dream_rewarded_per_step"] for row in rows.values()])
    order = sorted(rows, key=lambda n: rows[n]["real_rewarded_per_step"])
    return {
        "horizon": horizon, "policies": rows,
        "order_agrees": order == sorted(rows, key=lambda n: rows[n]["dream_rewarded_per_step"]),
        "rank_correlation": float(spearmanr(real_means, dream_means).statistic)
        if real_means.std() > 0 and dream_means.std() > 0 else float("nan"),
        # an agent is drawn to the policy the dream over-pays most
        "largest_overpay": float(np.max(dream_means - real_means)),
    }


def policy_rewards(
    model: WorldModel, game: str, policies: Sequence[str], states: int = 64, horizon: int = 15,
    every: int = 7, seed: int = 0, precision: str = "fp32", sample_heads: bool = True, batch: int = 64,
    shorter_horizons: Sequence[int] = (),
) -> dict[str, Any]:
    """Rewarded steps of each scripted policy over ``horizon`` steps, played from the same real
    states in the real game (emulator restored) and in the dream (started on the same context,
    heads sampled as an agent trains in them). Both stop counting at an episode end (a lost life
    in the game, a predicted end in the dream). The random policy plays the same actions in both.

    Per policy: the mean rewarded steps per step in each and the correlation across states.
    A dream that pays a cycle the game does not (or fails to pay one the game does) teaches an
    agent something useless; ``order_agrees`` says whether the dream ranks the policies as the
    game does, ``rank_correlation`` how closely, and ``largest_overpay`` how much more than the game
    the dream pays its most over-paid policy (rewarded steps per step).

    ``shorter_horizons``: the same summary over the first steps of the same plays, under
    ``by_horizon``. A dream that drifts pays right over a few steps and wrong over many, and an
    agent should be trained in dreams no longer than those it ranks right."""
    from neuralenvs.envs.atari import action_meanings, make_atari_env
    from neuralenvs.envs.runtime import dreaming

    bad = [h for h in shorter_horizons if not 0 < h <= horizon]
    if bad:
        raise ValueError(f"shorter_horizons {bad} must lie in 1..horizon ({horizon})")
    env = make_atari_env(game, train=True)
    cycles = parse_policies(policies, action_meanings(env))
    rng = np.random.default_rng(seed)
    points = _real_states(env, model.context_frames, states, every, rng, seed)
    generator = torch.Generator(device=model.device)
    real: dict[str, np.ndarray] = {}
    dream: dict[str, np.ndarray] = {}
    for name, cycle in cycles.items():
        if cycle is None:
            plans = rng.integers(env.action_space.n, size=(states, horizon))
        else:
            plans = np.tile(np.resize(np.asarray(cycle), horizon), (states, 1))
        real[name] = np.stack([
            _real_rewarded_steps(env, point[0], point[3], plan) for point, plan in zip(points, plans, strict=True)
        ])
        dream[name] = np.zeros((states, horizon))
        generator.manual_seed(seed)
        with dreaming(model, precision):
            for lo in range(0, states, batch):
                chunk = points[lo:lo + batch]
                state = _dreams_at(model, chunk)
                alive = torch.ones(len(chunk), dtype=torch.bool)
                for t in range(horizon):
                    acts = torch.from_numpy(plans[lo:lo + len(chunk), t]).to(model.device)
                    result = model.step(state, acts, generator, sample_heads=sample_heads)
                    state = result.state
                    dream[name][lo:lo + len(chunk), t] = ((result.reward.cpu() != 0) & alive).numpy()
                    alive &= ~result.terminated.cpu()
    env.close()
    summary = _summarise(real, dream, horizon)
    result = {"game": game, "states": states, "sample_heads": sample_heads, **summary}
    if shorter_horizons:
        result["by_horizon"] = {str(h): _summarise(real, dream, h) for h in sorted(set(shorter_horizons))}
    return result


def agent_rewards(
    model: WorldModel, game: str, act: Callable[[np.ndarray], np.ndarray], frame_stack: int, states: int = 64,
    horizon: int = 15, every: int = 7, seed: int = 0, precision: str = "fp32", sample_heads: bool = True,
    batch: int = 64,
) -> dict[str, Any]:
    """Rewarded steps per step of a trained agent playing in closed loop from the same real states
    (those of :func:`policy_rewards` with the same ``seed`` and ``every``, so its random row is the
    baseline) in the real game and in the dream. ``act`` maps a batch of observations (uint8
    ``[N, H, W, C * frame_stack]``, the newest frame last) to one action each, e.g. an SB3 agent's
    ``predict``.

    The agent sees the game's frames in the game and the dream's frames in the dream, so each side
    plays its own actions. A dream-trained agent that the dream pays much more than the game has
    learned the dream's errors; one that both pay alike, and no more than random play, has learned
    little at all."""
    from neuralenvs.envs.atari import make_atari_env
    from neuralenvs.envs.runtime import dreaming

    if not 0 < frame_stack <= model.context_frames:
        raise ValueError(f"frame_stack must lie in 1..{model.context_frames} (the dream's context), got {frame_stack}")
    env = make_atari_env(game, train=True)
    ale = env.unwrapped.ale
    points = _real_states(env, model.context_frames, states, every, np.random.default_rng(seed), seed)
    real = np.zeros((states, horizon))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for i, (snapshot, frames, _, lives) in enumerate(points):
            ale.restoreState(snapshot)
            recent = list(frames[-frame_stack:])
            for t in range(horizon):
                action = act(np.concatenate(recent[-frame_stack:], axis=-1)[None])[0]
                obs, reward, terminated, truncated, _ = env.step(int(action))
                real[i, t] = float(reward != 0)
                if terminated or truncated or ale.lives() < lives:
                    break
                recent.append(obs)
            ale.restoreState(snapshot)
    env.close()
    dream = np.zeros((states, horizon))
    generator = torch.Generator(device=model.device).manual_seed(seed)
    with torch.random.fork_rng(), dreaming(model, precision):
        torch.manual_seed(seed)
        for lo in range(0, states, batch):
            chunk = points[lo:lo + batch]
            state = _dreams_at(model, chunk)
            recent = [np.stack([p[1][j] for p in chunk]) for j in range(-frame_stack, 0)]
            alive = torch.ones(len(chunk), dtype=torch.bool)
            for t in range(horizon):
                actions = np.asarray(act(np.concatenate(recent[-frame_stack:], axis=-1)))
                result = model.step(state, torch.from_numpy(actions).long().to(model.device), generator,
                                    sample_heads=sample_heads)
                state = result.state
                dream[lo:lo + len(chunk), t] = ((result.reward.cpu() != 0) & alive).numpy()
                alive &= ~result.terminated.cpu()
                recent.append(result.next_frames.cpu().numpy())
    return {"game": game, "states": states, "horizon": horizon, "sample_heads": sample_heads,
            **_summarise({"agent": real}, {"agent": dream}, horizon)["policies"]["agent"]}


def _real_prefix_play(env: Any, snapshot: Any, lives: int, plan: Sequence[int]) -> tuple[bool, float, bool]:
    """Play ``plan`` from ``snapshot``: (the last step was rewarded, mean absolute per-step pixel
    change, a life was kept to the end)."""
    ale = env.unwrapped.ale
    ale.restoreState(snapshot)
    change, rewarded, kept, previous = [], False, True, None
    for t, action in enumerate(plan):
        obs, reward, terminated, truncated, _ = env.step(int(action))
        obs = np.asarray(obs, dtype=np.float32)
        if previous is not None:
            change.append(np.abs(obs - previous).mean())
        previous = obs
        if terminated or truncated or ale.lives() < lives:
            kept = False
            break
        rewarded = t == len(plan) - 1 and reward != 0
    ale.restoreState(snapshot)
    return rewarded, float(np.mean(change)) if change else 0.0, kept


def prefix_rewards(
    model: WorldModel, game: str, prefix: str, repeats: Sequence[int], final: str, states: int = 64,
    every: int = 7, seed: int = 0, precision: str = "fp32", batch: int = 64,
) -> dict[str, Any]:
    """Does the dream carry a multi-step cause to its reward? From the same real states, the action
    cycle ``prefix`` is played ``m`` times (for each ``m`` in ``repeats``), then ``final``, in the real
    game and in the dream (heads sampled). Per ``m``: the share of states where ``final`` is rewarded
    (states where the game loses a life on the way are left out of both), and the mean absolute
    per-step pixel change along the way (0-255 units), which shows whether the dream moves what the
    game moves. A dream that pays ``final`` after one cycle but not after several has stopped
    rendering what the cycle does."""
    from neuralenvs.envs.atari import action_meanings, make_atari_env
    from neuralenvs.envs.runtime import dreaming

    env = make_atari_env(game, train=True)
    cycle = parse_policies([prefix], action_meanings(env))[prefix]
    last_action = parse_policies([final], action_meanings(env))[final]
    if cycle is None or last_action is None or len(last_action) != 1:
        raise ValueError("prefix must be an action cycle and final one action, not 'random'")
    points = _real_states(env, model.context_frames, states, every, np.random.default_rng(seed), seed)
    generator = torch.Generator(device=model.device)
    rows = {}
    for m in repeats:
        plan = cycle * m + last_action
        real = [_real_prefix_play(env, p[0], p[3], plan) for p in points]
        kept = np.array([r[2] for r in real])
        dream_rewarded, dream_change = np.zeros(states, dtype=bool), np.zeros(states)
        generator.manual_seed(seed)
        with dreaming(model, precision):
            for lo in range(0, states, batch):
                chunk = points[lo:lo + batch]
                state = _dreams_at(model, chunk)
                previous, change = None, []
                for t, action in enumerate(plan):
                    acts = torch.full((len(chunk),), action, dtype=torch.long, device=model.device)
                    result = model.step(state, acts, generator, sample_heads=True)
                    state, obs = result.state, result.next_frames.float().cpu()
                    if previous is not None:
                        change.append((obs - previous).abs().flatten(1).mean(1))
                    previous = obs
                    if t == len(plan) - 1:
                        dream_rewarded[lo:lo + len(chunk)] = (result.reward.cpu() != 0).numpy()
                dream_change[lo:lo + len(chunk)] = torch.stack(change).mean(0).numpy() if change else 0.0
        real_rewarded, real_change = np.array([r[0] for r in real]), np.array([r[1] for r in real])
        rows[str(m)] = {
            "states": int(kept.sum()),
            "real_rewarded": float(real_rewarded[kept].mean()),
            "dream_rewarded": float(dream_rewarded[kept].mean()),
            "real_change": float(real_change[kept].mean()),
            "dream_change": float(dream_change[kept].mean()),
        }
    env.close()
    return {"game": game, "prefix": prefix, "final": final, "repeats": rows}
