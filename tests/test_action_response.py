"""The action-response check tells a dream that follows the actions from one that ignores them."""

import dataclasses

import numpy as np
import pytest
import torch

from neuralenvs.bench.action_response import _next_frames_of_every_action, action_response, parse_policies
from neuralenvs.envs.atari import make_atari_env
from neuralenvs.models.diffusion import DiffusionConfig, DiffusionWorldModel
from neuralenvs.world_model import StepResult


class Oracle:
    """Dreams the real game's next frame of each row's action, read from the emulator."""

    context_frames, device = 2, torch.device("cpu")

    def __init__(self, env):
        self.env, self.num_actions = env, env.action_space.n

    def eval(self):
        return self

    def init_state(self, frames, actions):
        return None

    def step(self, state, actions, generator=None):
        real = _next_frames_of_every_action(self.env).astype(np.uint8)
        n = len(actions)
        frames = torch.from_numpy(real[actions.numpy()])
        return StepResult(None, frames, torch.zeros(n), torch.zeros(n, dtype=torch.bool))


def test_a_dream_that_is_the_game_follows_every_action():
    env = make_atari_env("Pong", train=True)
    result = action_response(Oracle(env), "Pong", states=3, env=env)
    assert result["own_action_hit_rate"] == 1.0
    assert result["effect_ratio"] == pytest.approx(1.0)
    assert result["real_action_effect"] > 1.0


def test_a_dream_that_repeats_the_last_frame_ignores_the_actions():
    env = make_atari_env("Pong", train=True)
    cfg = dataclasses.replace(DiffusionConfig.named("tiny"), predict_residual=True, sigma_data=0.1)
    model = DiffusionWorldModel(cfg, (64, 64, 3), env.action_space.n)
    for p in model.denoiser.parameters():
        torch.nn.init.zeros_(p)
    result = action_response(model, "Pong", states=3, env=env)
    assert result["effect_ratio"] < 0.01  # every action dreamed from the same noise: nothing differs
    assert result["own_action_hit_rate"] < 1.0


def test_scripted_policies_are_named_by_the_games_actions():
    names = ["NOOP", "FIRE", "UP", "DOWN"]
    assert parse_policies(["random", "UP,UP,DOWN"], names) == {"random": None, "UP,UP,DOWN": [2, 2, 3]}
    with pytest.raises(ValueError, match="unknown action"):
        parse_policies(["JUMP"], names)


class PaysForUp:
    """A dream whose head pays every step on which the action is RIGHT (2 in Pong), and never ends."""

    context_frames, device, num_actions = 2, torch.device("cpu"), 6

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    training = False

    def init_state(self, frames, actions):
        return frames

    def step(self, state, actions, generator=None, sample_heads=False):
        n = len(actions)
        return StepResult(state, state[:, -1], (actions == 2).float(), torch.zeros(n, dtype=torch.bool))


def test_policy_rewards_plays_each_policy_from_the_same_real_states_in_both():
    from neuralenvs.bench.action_response import policy_rewards

    first = policy_rewards(PaysForUp(), "Pong", ["RIGHT", "NOOP", "random"], states=6, horizon=5, batch=4)
    again = policy_rewards(PaysForUp(), "Pong", ["RIGHT", "NOOP", "random"], states=6, horizon=5, batch=4)
    rows = first["policies"]
    assert rows["RIGHT"]["dream_rewarded_per_step"] == 1.0
    assert rows["NOOP"]["dream_rewarded_per_step"] == 0.0
    assert 0.0 < rows["random"]["dream_rewarded_per_step"] < 1.0  # the same random actions, some RIGHT
    # the real game is restored to each state before each policy: the same figures every time
    assert all(rows[n]["real_rewarded_per_step"] == again["policies"][n]["real_rewarded_per_step"] for n in rows)
    assert first["states"] == 6 and first["horizon"] == 5


class PaysOnlyTheFirstStep(PaysForUp):
    """A dream that pays every policy on the first step of each dream and never again: right over one
    step, wrong over many."""

    def init_state(self, frames, actions):
        self.t = 0
        return frames

    def step(self, state, actions, generator=None, sample_heads=False):
        n, paid = len(actions), float(self.t == 0)
        self.t += 1
        return StepResult(state, state[:, -1], torch.full((n,), paid), torch.zeros(n, dtype=torch.bool))


def test_shorter_horizons_score_the_first_steps_of_the_same_plays():
    from neuralenvs.bench.action_response import policy_rewards

    result = policy_rewards(PaysOnlyTheFirstStep(), "Pong", ["RIGHT", "NOOP"], states=4, horizon=4, batch=4,
                            shorter_horizons=[1, 2])
    assert result["horizon"] == 4 and set(result["by_horizon"]) == {"1", "2"}
    for horizon, paid in [(1, 1.0), (2, 0.5)]:
        rows = result["by_horizon"][str(horizon)]["policies"]
        assert all(row["dream_rewarded_per_step"] == paid for row in rows.values())
    assert result["policies"]["RIGHT"]["dream_rewarded_per_step"] == 0.25
    # Pong pays nothing in a few steps, so the dream over-pays by what it pays
    assert result["by_horizon"]["1"]["largest_overpay"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shorter_horizons"):
        policy_rewards(PaysOnlyTheFirstStep(), "Pong", ["RIGHT"], states=2, horizon=4, shorter_horizons=[5])


def test_agent_rewards_plays_the_agent_on_each_sides_own_frames():
    from neuralenvs.bench.action_response import agent_rewards

    seen = []

    def presses(action):
        def act(obs):
            seen.append(obs.shape)
            return np.full(len(obs), action)
        return act

    paid = agent_rewards(PaysForUp(), "Pong", presses(2), frame_stack=2, states=3, horizon=4, batch=2)
    assert paid["dream_rewarded_per_step"] == 1.0 and paid["states"] == 3 and paid["horizon"] == 4
    assert {shape[1:] for shape in seen} == {(64, 64, 6)}  # two stacked RGB frames, game and dream alike
    assert {shape[0] for shape in seen} == {1, 2}  # one game at a time, dreams in batches
    unpaid = agent_rewards(PaysForUp(), "Pong", presses(0), frame_stack=2, states=3, horizon=4)
    assert unpaid["dream_rewarded_per_step"] == 0
    with pytest.raises(ValueError, match="frame_stack"):
        agent_rewards(PaysForUp(), "Pong", presses(0), frame_stack=3, states=1, horizon=1)


def test_prefix_rewards_scores_the_final_action_after_each_number_of_cycles():
    from neuralenvs.bench.action_response import prefix_rewards

    result = prefix_rewards(PaysForUp(), "Pong", "NOOP", [1, 3], "RIGHT", states=4, batch=3)
    assert set(result["repeats"]) == {"1", "3"}
    for row in result["repeats"].values():
        assert row["dream_rewarded"] == 1.0  # the fake dream pays RIGHT, whatever came before
        assert row["dream_change"] == 0.0  # and never moves
        assert 0.0 <= row["real_rewarded"] <= 1.0 and row["states"] <= 4
    never = prefix_rewards(PaysForUp(), "Pong", "RIGHT", [2], "NOOP", states=4, batch=3)
    assert never["repeats"]["2"]["dream_rewarded"] == 0.0
    with pytest.raises(ValueError, match="prefix must be"):
        prefix_rewards(PaysForUp(), "Pong", "random", [1], "RIGHT", states=2)
