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

``policy_rewards``: the reward a scripted policy (a fixed cycle of actions) collects per step, in the
real game and in the dream (15-step dreams from the checkpoint's starts, heads sampled, as an agent
trains in them). A dream that pays for a cycle that the real game does not pay for can be exploited
by an agent, which then learns to do something useless in the real game.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

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
    obs, _ = env.reset(seed=seed)
    frames, actions = [obs], []
    real_effect, dream_effect, hits, seen, step = [], [], 0, 0, 0
    off_diagonal = ~np.eye(n_actions, dtype=bool)
    while seen < states:
        step += 1
        if len(frames) >= k and step % every == 0:
            real = _next_frames_of_every_action(env)
            d_real = _pairwise_mse(real, real)
            if d_real[off_diagonal].max() > min_effect:
                context = torch.from_numpy(np.stack(frames[-k:]))[None].to(model.device)
                ctx_actions = torch.tensor(actions[len(actions) - (k - 1):], dtype=torch.long)[None]
                state = model.init_state(context, ctx_actions.to(model.device))
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
        action = int(rng.integers(n_actions))
        obs, _, terminated, truncated, _ = env.step(action)
        frames.append(obs)
        actions.append(action)
        if terminated or truncated:
            obs, _ = env.reset()
            frames, actions = [obs], []
        frames, actions = frames[-k:], actions[-(k - 1):] if k > 1 else []
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


def _cycle_action(cycle: Sequence[int] | None, t: int, rng: np.random.Generator, n_actions: int) -> int:
    return int(rng.integers(n_actions)) if cycle is None else int(cycle[t % len(cycle)])


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


def policy_rewards(
    model: WorldModel, starts: Any, game: str, policies: Sequence[str], real_steps: int = 3000,
    dreams: int = 32, dream_steps: int = 60, horizon: int = 15, seed: int = 0, precision: str = "fp32",
) -> dict[str, Any]:
    """Rewarded steps per step (by sign, as the dream's head predicts them) of each scripted policy,
    in the real game (training episodes: a lost life ends one) and in the dream."""
    from neuralenvs.envs.atari import action_meanings, make_atari_env
    from neuralenvs.envs.dream import DreamVectorEnv

    env = make_atari_env(game, train=True)
    cycles = parse_policies(policies, action_meanings(env))
    dream = DreamVectorEnv(model, starts, num_envs=dreams, horizon=horizon, sample_heads=True, precision=precision)
    rows = {}
    for name, cycle in cycles.items():
        rng = np.random.default_rng(seed)
        env.reset(seed=seed)
        real_rewarded, t_episode = 0, 0
        for _ in range(real_steps):
            _, reward, terminated, truncated, _ = env.step(_cycle_action(cycle, t_episode, rng, env.action_space.n))
            real_rewarded += reward != 0
            t_episode += 1
            if terminated or truncated:
                env.reset()
                t_episode = 0
        rng = np.random.default_rng(seed)
        dream.reset(seed=seed)
        dream_rewarded = 0
        for _ in range(dream_steps):
            steps = dream.episode_steps
            act = np.array([_cycle_action(cycle, int(s), rng, env.action_space.n) for s in steps])
            _, reward, *_ = dream.step(act)
            dream_rewarded += int((reward != 0).sum())
        rows[name] = {
            "real_rewarded_per_step": real_rewarded / real_steps,
            "dream_rewarded_per_step": dream_rewarded / (dreams * dream_steps),
        }
    env.close()
    dream.close()
    return {"game": game, "horizon": horizon, "policies": rows}
