"""Dreamed environments: API conformance, seeding, autoreset, frame stacks, prompts, bad input.

Every test that takes ``world_model`` runs on each family in ``conftest.FAMILY_FACTORIES``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import random_context
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from toy_world_model import ProbeModel, make_toy, synthetic_episodes

from neuralenvs.envs.dream import DreamEnv, DreamVectorEnv
from neuralenvs.envs.starts import StartBank, prompt_context
from neuralenvs.world_model import Segments, WorldModel

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _stack(frames: np.ndarray, frame_stack: int) -> np.ndarray:
    """Expected first observation from one context frames[K, H, W, C]: its last ``frame_stack``
    frames (the oldest repeated when the stack is longer), concatenated along channels."""
    k = frames.shape[0]
    if frame_stack > k:
        frames = np.concatenate([np.repeat(frames[:1], frame_stack - k, axis=0), frames])
    return np.concatenate(list(frames[-frame_stack:]), axis=-1)


def _actions(env: DreamVectorEnv, seed: int, steps: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, env.single_action_space.n, size=env.num_envs) for _ in range(steps)]


def _rollout(env: DreamVectorEnv, seed: int | None, actions: list[np.ndarray]) -> list[tuple]:
    out: list[tuple] = [env.reset(seed=seed)[0]]
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(a)
        out.append((obs, reward, terminated, truncated))
    return out


def _equal(a: list[tuple], b: list[tuple]) -> bool:
    return all(
        all(np.array_equal(x, y) for x, y in zip(sa, sb, strict=True))
        if isinstance(sa, tuple)
        else np.array_equal(sa, sb)
        for sa, sb in zip(a, b, strict=True)
    )


# ------------------------------------------------------------------------------------ start bank
def test_start_bank_validates_cuts_and_round_trips(tmp_path: Path) -> None:
    episodes = synthetic_episodes(2, 5, (8, 8, 3), 4) + [synthetic_episodes(1, 1, (8, 8, 3), 4)[0]]
    bank = StartBank.cut(episodes, 4, 10, np.random.default_rng(0))
    assert bank.frames.shape == (10, 4, 8, 8, 3) and bank.actions.shape == (10, 3)
    # only full windows of real frames: every cut window appears verbatim in some episode
    for frames, actions in zip(bank.frames, bank.actions, strict=True):
        assert any(
            np.array_equal(ef[t : t + 4], frames) and np.array_equal(ea[t : t + 3], actions)
            for ef, ea in episodes
            for t in range(len(ef) - 3)
        )
    with pytest.raises(ValueError, match="no episode has 9 frames"):
        StartBank.cut(episodes, 9, 3, np.random.default_rng(0))

    path = tmp_path / "banks" / "starts.npz"
    bank.save(path)
    loaded = StartBank.load(path)
    assert np.array_equal(loaded.frames, bank.frames) and np.array_equal(loaded.actions, bank.actions)
    assert loaded.actions.dtype == np.int64
    frames, actions = loaded.sample(5, np.random.default_rng(3))
    assert frames.shape == (5, 4, 8, 8, 3) and actions.shape == (5, 3)

    np.savez(tmp_path / "bad.npz", frames=bank.frames)
    with pytest.raises(ValueError, match="lacks the array"):
        StartBank.load(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match=r"\[N, K, H, W, C\]"):
        StartBank(bank.frames[0])
    with pytest.raises(ValueError, match="uint8"):
        StartBank(bank.frames.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(N, K - 1\)"):
        StartBank(bank.frames, bank.actions[:, :2])
    with pytest.raises(ValueError, match="context frames"):
        bank.check_compatible((8, 8, 3), 4, context_frames=5)
    with pytest.raises(ValueError, match="actions"):
        bank.check_compatible((8, 8, 3), 2, context_frames=4)


def test_prompt_context_reads_and_resizes_files(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 256, size=(100, 80, 3), dtype=np.uint8)
    path = tmp_path / "prompt.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    frames, actions = prompt_context(path, 3, (64, 64, 3))
    expected = cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA)
    assert frames.shape == (1, 3, 64, 64, 3) and np.array_equal(actions, np.zeros((1, 2), dtype=np.int64))
    assert all(np.array_equal(f, expected) for f in frames[0])
    with pytest.raises(FileNotFoundError):
        prompt_context(tmp_path / "missing.png", 3, (64, 64, 3))


# ------------------------------------------------------------------------------- API conformance
def test_dream_env_passes_gymnasium_and_sb3_checkers(world_model: WorldModel, start_bank: StartBank) -> None:
    env = DreamEnv(world_model, start_bank, horizon=20, frame_stack=2, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no spec to test other render modes": made directly
        gym_check_env(env)
        sb3_check_env(env, warn=True, skip_render_check=False)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (*world_model.obs_shape[:2], 2 * world_model.obs_shape[2])
    frame = env.render()
    assert frame.shape == (*world_model.obs_shape[:2], 3) and frame.dtype == np.uint8
    assert np.array_equal(frame, obs[..., -world_model.obs_shape[2] :])
    env.close()


def test_vector_env_spaces_and_metadata(world_model: WorldModel, start_bank: StartBank) -> None:
    env = DreamVectorEnv(world_model, start_bank, 3, frame_stack=4, render_mode="rgb_array")
    h, w, c = world_model.obs_shape
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert env.single_observation_space == gym.spaces.Box(0, 255, (h, w, 4 * c), np.uint8)
    assert env.observation_space.shape == (3, h, w, 4 * c)
    assert env.single_action_space == gym.spaces.Discrete(world_model.num_actions)
    assert env.action_space == gym.spaces.MultiDiscrete([world_model.num_actions] * 3)
    obs, infos = env.reset(seed=0)
    assert obs in env.observation_space and np.array_equal(infos["episode_step"], [0, 0, 0])
    obs, reward, terminated, truncated, infos = env.step(env.action_space.sample())
    assert obs in env.observation_space
    assert reward.dtype == np.float32 and terminated.dtype == bool and truncated.dtype == bool
    frames = env.render()
    assert isinstance(frames, tuple) and len(frames) == 3
    assert all(np.array_equal(f, o[..., -c:]) for f, o in zip(frames, obs, strict=True))
    env.close()


# ------------------------------------------------------------------------------------- seeding
def test_same_seed_same_dream_different_seed_different(
    world_model: WorldModel, start_bank: StartBank
) -> None:
    env = DreamVectorEnv(world_model, start_bank, 3, horizon=4, sample_heads=True)
    actions = _actions(env, 0, 6)
    first = _rollout(env, 7, actions)
    assert _equal(first, _rollout(env, 7, actions))  # reseeding replays the same dream
    other = DreamVectorEnv(world_model, start_bank, 3, horizon=4, sample_heads=True)
    assert _equal(first, _rollout(other, 7, actions))  # and so does a fresh env
    different = _rollout(env, 8, actions)
    assert not np.array_equal(first[-1][0], different[-1][0])


def test_unseeded_reset_continues_the_streams(world_model: WorldModel, start_bank: StartBank) -> None:
    env = DreamVectorEnv(world_model, start_bank, 2, sample_heads=True)
    actions = _actions(env, 1, 2)
    env.reset(seed=3)
    a = _rollout(env, None, actions)
    env.reset(seed=3)
    assert _equal(a, _rollout(env, None, actions))


# ------------------------------------------------------------------------------------ autoreset
def test_same_step_autoreset_on_termination(probe: ProbeModel, start_bank: StartBank) -> None:
    c = probe.obs_shape[2]
    env = DreamVectorEnv(probe, start_bank, 3, horizon=None, frame_stack=2)
    probe.never_terminate = True
    previous, _ = env.reset(seed=0)
    dreamed_return = 0.0
    for _ in range(2):
        previous, reward, *_ = env.step(np.array([0, 1, 2]))
        dreamed_return += float(reward[1])
    probe.terminated = np.array([False, True, False])
    reset_calls = len(probe.calls_to("reset_where"))
    obs, reward, terminated, truncated, infos = env.step(np.array([3, 4, 5]))

    assert terminated.tolist() == [False, True, False] and not truncated.any()
    assert infos["_final_obs"].tolist() == [False, True, False]
    assert infos["_final_info"].tolist() == [False, True, False]
    assert infos["final_obs"][0] is None and infos["final_obs"][2] is None
    final = infos["final_obs"][1]
    # the final observation is exactly the last dreamed stack: the previous newest frame, then the
    # frame the model dreamed in this step
    assert np.array_equal(final[..., :c], previous[1][..., c:])
    assert np.array_equal(final[..., c:], probe.last.next_frames[1].cpu().numpy())
    # the others continue; the finished dream restarted from a real start within the step
    for i in (0, 2):
        assert np.array_equal(obs[i][..., c:], probe.last.next_frames[i].cpu().numpy())
    new_calls = probe.calls_to("reset_where")[reset_calls:]
    assert len(new_calls) == 1  # one reset_where for every finished dream, others untouched
    mask, frames, _ = new_calls[0]
    assert mask.tolist() == [False, True, False]
    assert np.array_equal(obs[1], _stack(frames[0].cpu().numpy(), 2))
    assert infos["episode_step"].tolist() == [3, 0, 3]
    assert infos["final_info"]["episode"]["l"][1] == 3
    assert infos["final_info"]["episode"]["r"][1] == dreamed_return + float(reward[1])

    # the infos follow gymnasium's own SAME_STEP layout (what SyncVectorEnv would build)
    expected: dict = {}
    for i in range(3):
        if i == 1:
            step_info = {
                "episode_step": 3,
                "episode": {"r": float(infos["final_info"]["episode"]["r"][1]), "l": 3},
            }
            expected = env._add_info(expected, {"final_obs": final, "final_info": step_info}, i)
        expected = env._add_info(expected, {"episode_step": int(infos["episode_step"][i])}, i)
    assert sorted(expected) == sorted(infos)
    assert sorted(expected["final_info"]) == sorted(infos["final_info"])
    assert sorted(expected["final_info"]["episode"]) == sorted(infos["final_info"]["episode"])
    for key in ("_final_obs", "_final_info", "episode_step", "_episode_step"):
        assert np.array_equal(expected[key], infos[key]) and expected[key].dtype == infos[key].dtype


def test_horizon_truncates_and_restarts(probe: ProbeModel, start_bank: StartBank) -> None:
    probe.never_terminate = True
    env = DreamVectorEnv(probe, start_bank, 2, horizon=3)
    env.reset(seed=0)
    for step in range(1, 7):
        obs, _, terminated, truncated, infos = env.step(np.array([1, 2]))
        assert not terminated.any()
        assert truncated.tolist() == [step % 3 == 0] * 2
        assert ("final_obs" in infos) == (step % 3 == 0)
        assert infos["episode_step"].tolist() == [step % 3] * 2
    assert len(probe.calls_to("reset_where")) == 2
    assert infos["final_info"]["episode"]["l"].tolist() == [3, 3]


def test_terminated_wins_over_truncated_at_the_horizon(probe: ProbeModel, start_bank: StartBank) -> None:
    probe.never_terminate = True
    env = DreamVectorEnv(probe, start_bank, 2, horizon=2)
    env.reset(seed=0)
    env.step(np.array([0, 0]))
    probe.terminated = np.array([True, False])
    _, _, terminated, truncated, _ = env.step(np.array([0, 0]))
    assert terminated.tolist() == [True, False] and truncated.tolist() == [False, True]


def test_dream_env_waits_for_reset(probe: ProbeModel, start_bank: StartBank) -> None:
    probe.never_terminate = True
    env = DreamEnv(probe, start_bank, horizon=2)
    env.reset(seed=0)
    assert env.step(0)[3] is False
    obs, _, terminated, truncated, info = env.step(np.int64(1))
    assert truncated and not terminated and info["episode"]["l"] == 2
    assert np.array_equal(obs[..., -probe.obs_shape[2] :], probe.last.next_frames[0].cpu().numpy())
    assert not probe.calls_to("reset_where")  # no autoreset in the single-env view
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset()
    env.step(0)


def test_reset_mask_restarts_only_those_dreams(probe: ProbeModel, start_bank: StartBank) -> None:
    env = DreamVectorEnv(probe, start_bank, 3)
    env.reset(seed=0)
    before, *_ = env.step(np.array([1, 1, 1]))
    obs, infos = env.reset(options={"reset_mask": np.array([False, True, False])})
    assert np.array_equal(obs[[0, 2]], before[[0, 2]]) and infos["episode_step"].tolist() == [1, 0, 1]
    mask, frames, _ = probe.calls_to("reset_where")[-1]
    assert mask.tolist() == [False, True, False]
    assert np.array_equal(obs[1], _stack(frames[0].cpu().numpy(), 1))


# ---------------------------------------------------------------------------------- frame stack
@pytest.mark.parametrize("extra", [-1, 0, 2])
def test_frame_stack_starts_with_the_real_context(
    probe: ProbeModel, start_bank: StartBank, extra: int
) -> None:
    frame_stack = max(1, probe.context_frames + extra)
    c = probe.obs_shape[2]
    env = DreamVectorEnv(probe, start_bank, 2, frame_stack=frame_stack)
    obs, _ = env.reset(seed=0)
    (frames, actions) = probe.calls_to("init_state")[-1]
    assert frames.shape[1] == probe.context_frames and actions.shape[1] == probe.context_frames - 1
    for i in range(2):
        assert np.array_equal(obs[i], _stack(frames[i].cpu().numpy(), frame_stack))
        # and the start is a real segment of the bank
        assert any(np.array_equal(frames[i].cpu().numpy(), f) for f in start_bank.frames)
    nxt, *_ = env.step(np.array([0, 1]))
    assert np.array_equal(nxt[..., :-c], obs[..., c:])
    assert np.array_equal(nxt[..., -c:], probe.last.next_frames.cpu().numpy())


def test_bank_longer_than_the_context(world_model: WorldModel) -> None:
    k = world_model.context_frames
    episodes = synthetic_episodes(2, 10, world_model.obs_shape, world_model.num_actions)
    bank = StartBank.cut(episodes, k + 2, 1, np.random.default_rng(0))
    probe = ProbeModel(world_model)
    env = DreamVectorEnv(probe, bank, 1, frame_stack=k + 2)
    obs, _ = env.reset(seed=0)
    frames, actions = probe.calls_to("init_state")[-1]
    assert np.array_equal(frames[0].cpu().numpy(), bank.frames[0, 2:])  # the newest K
    assert np.array_equal(actions[0].cpu().numpy(), bank.actions[0, 2:])
    assert np.array_equal(obs[0], _stack(bank.frames[0], k + 2))  # the stack shows all K + 2


# --------------------------------------------------------------------------------------- prompt
def test_prompt_starts_every_dream_from_the_image(
    probe: ProbeModel, start_bank: StartBank, tmp_path: Path
) -> None:
    h, w, c = probe.obs_shape
    image = np.random.default_rng(1).integers(0, 256, size=(h, w, c), dtype=np.uint8)
    env = DreamVectorEnv(probe, start_bank, 2, frame_stack=3, horizon=2)
    obs, _ = env.reset(seed=0, options={"prompt": image})
    assert all(np.array_equal(o, np.concatenate([image] * 3, axis=-1)) for o in obs)
    frames, actions = probe.calls_to("init_state")[-1]
    assert (frames.cpu().numpy() == image).all() and not actions.any()
    env.step(np.array([0, 0]))
    obs, *_ = env.step(np.array([0, 0]))  # the horizon restarts the dreams from the prompt again
    assert all(np.array_equal(o, np.concatenate([image] * 3, axis=-1)) for o in obs)

    if c == 3:
        path = tmp_path / "prompt.png"
        big = cv2.resize(image, (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(path), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
        obs, _ = env.reset(options={"prompt": str(path)})
        expected = cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA)
        assert np.array_equal(obs[0][..., -c:], expected)

    obs, _ = env.reset(seed=0)  # a reset without a prompt goes back to the bank
    frames, _ = probe.calls_to("init_state")[-1]
    assert any(np.array_equal(frames[0].cpu().numpy(), f) for f in start_bank.frames)


def test_bad_prompt_raises_and_changes_nothing(world_model: WorldModel, start_bank: StartBank) -> None:
    env = DreamVectorEnv(world_model, start_bank, 2)
    obs, _ = env.reset(seed=0)
    state, rng_state = env.state, env.np_random.bit_generator.state
    h, w, c = world_model.obs_shape
    with pytest.raises(ValueError, match=rf"expected \({h}, {w}, {c}\)"):
        env.reset(options={"prompt": np.zeros((h + 1, w, c), dtype=np.uint8)})
    with pytest.raises(ValueError, match="uint8"):
        env.reset(options={"prompt": np.zeros((h, w, c), dtype=np.float32)})
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"promt": obs[0]})
    assert env.state is state and env.np_random.bit_generator.state == rng_state
    env_without_bank = DreamVectorEnv(world_model, None, 1)
    with pytest.raises(ValueError, match="prompt"):
        env_without_bank.reset()


# -------------------------------------------------------------------------------------- outputs
def test_numpy_and_torch_outputs_agree(world_model: WorldModel, start_bank: StartBank) -> None:
    as_numpy = DreamVectorEnv(world_model, start_bank, 3, horizon=2, sample_heads=True, device="cpu")
    as_torch = DreamVectorEnv(
        world_model, start_bank, 3, horizon=2, sample_heads=True, output="torch", device="cpu"
    )
    obs_n, _ = as_numpy.reset(seed=5)
    obs_t, _ = as_torch.reset(seed=5)
    assert isinstance(obs_t, torch.Tensor) and obs_t.dtype == torch.uint8 and obs_t.device == as_torch.device
    assert np.array_equal(obs_n, obs_t.numpy())
    for a in _actions(as_numpy, 2, 3):
        n = as_numpy.step(a)
        t = as_torch.step(torch.as_tensor(a))
        assert all(isinstance(x, torch.Tensor) for x in t[:4])
        assert t[1].dtype == torch.float32 and t[2].dtype == torch.bool and t[3].dtype == torch.bool
        for x, y in zip(n[:4], t[:4], strict=True):
            assert np.array_equal(x, y.cpu().numpy())
        if "final_obs" in n[4]:
            for x, y in zip(n[4]["final_obs"], t[4]["final_obs"], strict=True):
                assert (x is None and y is None) or np.array_equal(x, y.cpu().numpy())


def test_returned_observations_are_never_written_to(world_model: WorldModel, start_bank: StartBank) -> None:
    env = DreamVectorEnv(world_model, start_bank, 2, horizon=1, frame_stack=2, output="torch", device="cpu")
    obs, _ = env.reset(seed=0)
    kept = obs.clone()
    nxt, *_ = env.step(torch.tensor([0, 1]))
    env.reset(options={"reset_mask": np.array([True, False])})
    assert torch.equal(obs, kept)
    obs_np_env = DreamVectorEnv(world_model, start_bank, 2, frame_stack=2, device="cpu")
    obs_np, _ = obs_np_env.reset(seed=0)
    obs_np[:] = 0  # a caller scribbling on its observation must not change the dream
    assert obs_np_env.step(np.array([0, 0]))[0][..., : world_model.obs_shape[2]].any()


# ------------------------------------------------------------------------------------ bad input
BAD_ACTIONS = {
    "too many": lambda n, a: np.zeros(n + 1, dtype=np.int64),
    "scalar": lambda n, a: 0,
    "2-d": lambda n, a: np.zeros((n, 1), dtype=np.int64),
    "float": lambda n, a: np.zeros(n, dtype=np.float32),
    "bool": lambda n, a: np.zeros(n, dtype=bool),
    "too large": lambda n, a: np.full(n, a, dtype=np.int64),
    "negative": lambda n, a: np.full(n, -1, dtype=np.int64),
    "float tensor": lambda n, a: torch.zeros(n),
    "out-of-range tensor": lambda n, a: torch.full((n,), a),
    "strings": lambda n, a: np.array(["0"] * n),
}


def test_bad_actions_raise_and_advance_nothing(world_model: WorldModel, start_bank: StartBank) -> None:
    n, a = 3, world_model.num_actions
    env = DreamVectorEnv(world_model, start_bank, n, horizon=2, sample_heads=True)
    reference = DreamVectorEnv(world_model, start_bank, n, horizon=2, sample_heads=True)
    actions = _actions(env, 4, 3)
    env.reset(seed=11)
    reference.reset(seed=11)
    env.step(actions[0])
    reference.step(actions[0])
    for name, make in BAD_ACTIONS.items():
        state, steps = env.state, env.episode_steps
        generator, rng = env._generator.get_state(), env.np_random.bit_generator.state
        with pytest.raises(ValueError, match=r"integer array of shape \(3,\)") as error:
            env.step(make(n, a))
        assert "[0, " in str(error.value), name
        assert env.state is state and np.array_equal(env.episode_steps, steps), name
        assert torch.equal(env._generator.get_state(), generator) and env.np_random.bit_generator.state == rng
    # the dreams continue exactly as if the bad calls never happened
    for act in actions[1:]:
        for x, y in zip(env.step(act)[:4], reference.step(act)[:4], strict=True):
            assert np.array_equal(x, y)


def test_a_restart_checks_its_new_context(world_model: WorldModel) -> None:
    """``reset_where`` is given real context as ``init_state`` is, and checks it as strictly."""
    frames, actions = random_context(2, world_model)
    state = world_model.init_state(frames, actions)
    mask = torch.tensor([False, True])
    with pytest.raises(TypeError, match="uint8"):
        world_model.reset_where(state, mask, frames[:1].float(), actions[:1])
    with pytest.raises(ValueError, match="context frames must have shape"):
        world_model.reset_where(state, mask, frames[:1, :, :8], actions[:1])
    with pytest.raises(ValueError, match=r"actions must be in \[0, "):
        world_model.reset_where(state, mask, frames[:1], actions[:1] + world_model.num_actions)


def test_step_before_reset_and_bad_construction(world_model: WorldModel, start_bank: StartBank) -> None:
    env = DreamVectorEnv(world_model, start_bank, 2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2, dtype=np.int64))
    for kwargs, match in [
        ({"num_envs": 0}, "num_envs"),
        ({"horizon": 0}, "horizon"),
        ({"frame_stack": 0}, "frame_stack"),
        ({"output": "jax"}, "output"),
        ({"render_mode": "human"}, "render_mode"),
    ]:
        with pytest.raises(ValueError, match=match):
            DreamVectorEnv(world_model, start_bank, **kwargs)
    wrong = StartBank(np.zeros((2, world_model.context_frames, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="start bank frames"):
        DreamVectorEnv(world_model, wrong, 1)
    single = DreamEnv(world_model, start_bank)
    single.reset(seed=0)
    for bad in (0.5, True, np.array([0, 1]), "1"):
        with pytest.raises(ValueError, match="action must be one integer"):
            single.step(bad)
    with pytest.raises(ValueError, match=r"values in \[0, "):
        single.step(world_model.num_actions)


def test_dreams_in_eval_mode_and_restores_the_mode(world_model: WorldModel, start_bank: StartBank) -> None:
    seen: list[bool] = []
    world_model.register_forward_pre_hook(lambda module, args: seen.append(module.training))
    for submodule in world_model.modules():
        submodule.register_forward_pre_hook(lambda module, args: seen.append(module.training))
    world_model.train()
    env = DreamVectorEnv(world_model, start_bank, 2)
    env.reset(seed=0)
    env.step(np.array([0, 1]))
    assert seen and not any(seen)  # no dropout or batch statistics while dreaming
    assert world_model.training  # a trainer sharing the model finds it as it left it


def test_bank_path_and_max_episode_steps_alias(
    world_model: WorldModel, start_bank: StartBank, tmp_path: Path
) -> None:
    start_bank.save(tmp_path / "starts.npz")
    env = DreamVectorEnv(world_model, tmp_path / "starts.npz", 1, max_episode_steps=7)
    assert env.horizon == 7 and len(env.starts) == len(start_bank)


# -------------------------------------------------------------------------------------- toy model
def test_toy_training_losses_are_finite_and_train() -> None:
    model = make_toy((16, 16, 3), 4)
    rng = np.random.default_rng(0)
    b, length = 3, 6
    mask = torch.ones(b, length + 1, dtype=torch.bool)
    mask[0, :2] = False  # padding before an episode's start
    batch = Segments(
        frames=torch.from_numpy(rng.integers(0, 256, (b, length + 1, 16, 16, 3), dtype=np.uint8)),
        actions=torch.from_numpy(rng.integers(0, 4, (b, length))),
        rewards=torch.from_numpy(rng.choice([-2.0, 0.0, 1.0], (b, length)).astype(np.float32)),
        terminated=torch.zeros(b, length, dtype=torch.bool),
        truncated=torch.zeros(b, length, dtype=torch.bool),
        mask=mask,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(5):
        losses = model.training_losses(batch)
        assert set(losses) >= {"loss", "frame", "reward", "termination"}
        assert all(torch.isfinite(v) for v in losses.values())
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        first = first if first is not None else losses["loss"].item()
    with torch.no_grad():
        assert model.training_losses(batch)["loss"].item() < first


@pytest.mark.parametrize("family", ["diffusion", "token", "genie"])
def test_bf16_precision_runs_the_model_under_autocast(family: str) -> None:
    from neuralenvs.models import build_model

    torch.manual_seed(0)
    model = build_model(family, "tiny", (16, 16, 3), 3)
    seen: list[torch.dtype] = []
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            module.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    bank = StartBank(np.zeros((4, model.context_frames, 16, 16, 3), np.uint8),
                     np.zeros((4, model.context_frames - 1), np.int64))
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        seen.clear()
        env = DreamVectorEnv(model, bank, 2, precision=precision)
        env.reset(seed=0)
        obs, reward, *_ = env.step(np.array([0, 1]))
        assert obs.dtype == np.uint8 and obs.shape == (2, 16, 16, 3) and reward.dtype == np.float32
        # most layers follow the precision (a family may keep a few in fp32, e.g. its quantizer)
        assert seen and max(set(seen), key=seen.count) == dtype
    with pytest.raises(ValueError, match="precision"):
        DreamVectorEnv(model, bank, 1, precision="fp16")


def test_auto_precision_is_the_default_and_follows_the_hardware(monkeypatch: pytest.MonkeyPatch,
                                                                world_model: WorldModel,
                                                                start_bank: StartBank) -> None:
    import neuralenvs.envs.dream as dream_module
    import neuralenvs.envs.runtime as runtime

    monkeypatch.setattr(type(world_model), "cpu_bf16_min_batch", 1)
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(runtime, "has_fast_bf16", lambda device, native=native: native)
        assert DreamVectorEnv(world_model, start_bank, 1, precision="auto").precision == expected
        assert DreamVectorEnv(world_model, start_bank, 1).precision == expected
        assert dream_module.DreamEnv(world_model, start_bank).vector_env.precision == expected
    # a family that gains from bf16 only with several dreams: one dream on a CPU stays fp32
    monkeypatch.setattr(runtime, "has_fast_bf16", lambda device: True)
    monkeypatch.setattr(type(world_model), "cpu_bf16_min_batch", 2)
    assert DreamVectorEnv(world_model, start_bank, 1).precision == "fp32"
    assert DreamVectorEnv(world_model, start_bank, 2).precision == "bf16"
    assert DreamVectorEnv(world_model, start_bank, 1, precision="bf16").precision == "bf16"  # asked for
    assert runtime.resolve_precision("auto", torch.device("cuda"), 1, 2) == "bf16"  # GPUs: the batch is moot
