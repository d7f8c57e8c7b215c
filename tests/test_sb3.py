"""stable-baselines3 on dreams: the VecEnv adapter, make_sb3_env, training and evaluation."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import FAMILY_FACTORIES
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv
from toy_world_model import ProbeModel, make_toy, synthetic_episodes

from neuralenvs.envs.dream import DreamEnv, DreamVectorEnv
from neuralenvs.envs.starts import StartBank
from neuralenvs.sb3 import (
    PPO_ROLLOUT,
    DreamSB3VecEnv,
    default_algo_kwargs,
    evaluate,
    evaluate_random,
    make_sb3_env,
    saved_agent_steps,
    train_in_dream,
)
from neuralenvs.world_model import WorldModel

pytestmark = pytest.mark.usefixtures("single_torch_thread")

DREAM_ID = "neuralenvs-test/ToyDream-v0"
REAL_ID = "neuralenvs-test/Toy-real-v0"  # a stand-in for a real game: any gymnasium.Env id works


def _toy_bank(model: WorldModel) -> StartBank:
    episodes = synthetic_episodes(2, 10, model.obs_shape, model.num_actions)
    return StartBank.cut(episodes, model.context_frames, 8, np.random.default_rng(0))


def _make_toy_dream(num_envs: int = 1, **kwargs: Any) -> DreamVectorEnv:
    model = make_toy()
    return DreamVectorEnv(model, _toy_bank(model), num_envs, device="cpu", **kwargs)


def _make_toy_game(**kwargs: Any) -> DreamEnv:
    model = make_toy()
    return DreamEnv(model, _toy_bank(model), device="cpu", sample_heads=True, **kwargs)


if DREAM_ID not in gym.registry:
    gym.register(DREAM_ID, entry_point=_make_toy_game, vector_entry_point=_make_toy_dream, nondeterministic=True)
if REAL_ID not in gym.registry:
    gym.register(REAL_ID, entry_point=_make_toy_game)

# small settings: each run is a few hundred dreamed steps on the CPU
ALGO_KWARGS: dict[str, dict[str, Any]] = {
    "ppo": {"n_steps": 32, "batch_size": 64, "n_epochs": 1},
    "a2c": {"n_steps": 8},
    "dqn": {"buffer_size": 1_000, "learning_starts": 64, "batch_size": 32, "train_freq": 4},
}
# PPO runs on every family; A2C and DQN exercise the same family-independent adapter, so they run
# on the toy model by default and on the other families with `make test-slow`
ALGO_CASES = [
    pytest.param(algo, family, marks=() if family == "toy" or algo == "ppo" else pytest.mark.slow)
    for algo in ALGO_KWARGS
    for family in sorted(FAMILY_FACTORIES)
]


def test_adapter_reports_terminal_observations_and_time_limits(probe: ProbeModel, start_bank: StartBank) -> None:
    c = probe.obs_shape[2]
    venv = DreamVectorEnv(probe, start_bank, 3, horizon=3, frame_stack=2)
    vec = make_sb3_env(venv)
    assert isinstance(vec, DreamSB3VecEnv) and vec.num_envs == 3
    assert vec.observation_space == venv.single_observation_space
    assert vec.action_space == venv.single_action_space
    probe.never_terminate = True
    vec.seed(0)
    obs = vec.reset()
    assert obs.shape == (3, *venv.single_observation_space.shape)
    for _ in range(2):
        obs, rewards, dones, infos = vec.step(np.array([0, 1, 2]))
        assert rewards.dtype == np.float32 and not dones.any() and infos == [{}, {}, {}]
    probe.terminated = np.array([True, False, False])
    new_obs, rewards, dones, infos = vec.step(np.array([3, 4, 5]))
    assert dones.tolist() == [True, True, True]
    # dream 0 ended by the termination head: a real end; 1 and 2 were cut by the horizon
    assert [info["TimeLimit.truncated"] for info in infos] == [False, True, True]
    for i, info in enumerate(infos):
        terminal = info["terminal_observation"]
        assert np.array_equal(terminal[..., :c], obs[i][..., c:])
        assert np.array_equal(terminal[..., c:], probe.last.next_frames[i].cpu().numpy())
        assert info["episode"]["l"] == 3 and isinstance(info["episode"]["r"], float)
    mask, frames, _ = probe.calls_to("reset_where")[-1]
    assert mask.tolist() == [True, True, True]
    for i in range(3):  # the returned observation is the new start's
        assert np.array_equal(new_obs[i][..., c:], frames[i, -1].cpu().numpy())


def test_adapter_vec_env_api(world_model: WorldModel, start_bank: StartBank) -> None:
    venv = DreamVectorEnv(world_model, start_bank, 2, horizon=3, render_mode="rgb_array")
    vec = DreamSB3VecEnv(venv)
    assert vec.get_attr("horizon") == [3, 3] and vec.get_attr("horizon", indices=[1]) == [3]
    vec.set_attr("horizon", 5)
    assert venv.horizon == 5
    assert vec.env_is_wrapped(Monitor) == [False, False]
    vec.seed(4)
    first = vec.reset()
    vec.seed(4)
    assert np.array_equal(first, vec.reset())  # SB3 seeding reaches the dream
    image = vec.render()
    h, w, _ = world_model.obs_shape
    assert image.dtype == np.uint8 and image.shape[-1] == 3 and image.size >= 2 * h * w * 3
    frames = vec.env_method("current_frames")
    assert len(frames) == 2 and frames[0].shape == (2, h, w, 3)
    with pytest.raises(TypeError, match="env_kwargs"):
        make_sb3_env(venv, horizon=3)
    with pytest.raises(ValueError, match="numpy"):
        DreamSB3VecEnv(DreamVectorEnv(world_model, start_bank, 1, output="torch"))
    vec.close()


@pytest.mark.parametrize(("algo", "family"), ALGO_CASES)
def test_algorithms_train_in_the_dream(algo: str, family: str) -> None:
    model = FAMILY_FACTORIES[family]()
    venv = DreamVectorEnv(model, _toy_bank(model), 4, horizon=15, frame_stack=2, sample_heads=True, device="cpu")
    agent = train_in_dream(algo, venv, 256, seed=0, algo_kwargs={**ALGO_KWARGS[algo], "device": "cpu"})
    assert isinstance(agent, BaseAlgorithm) and agent.num_timesteps >= 256
    # the policy acts on a single observation of the same layout, as it would in the real game
    action, _ = agent.predict(venv.single_observation_space.sample(), deterministic=True)
    assert 0 <= int(action) < model.num_actions


@pytest.mark.parametrize("n_envs", [4, 16, 64])
def test_ppo_collects_the_same_rollout_however_many_dreams_run(n_envs: int) -> None:
    assert default_algo_kwargs("ppo", n_envs=n_envs)["n_steps"] * n_envs == PPO_ROLLOUT
    agent = train_in_dream("ppo", _make_toy_dream(n_envs), total_timesteps=0, seed=0)  # built, not trained
    assert agent.n_steps * agent.n_envs == PPO_ROLLOUT and agent.n_envs == n_envs
    assert "n_steps" not in default_algo_kwargs("a2c")  # SB3's own for the others


def test_registered_dream_passes_check_env_with_its_spec() -> None:
    env = gym.make(DREAM_ID, horizon=6)
    assert env.spec is not None and env.spec.nondeterministic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gym_check_env(env.unwrapped)  # with a spec it also makes the env in each render mode
    env.close()


def test_make_sb3_env_from_ids() -> None:
    dream = make_sb3_env(DREAM_ID, n_envs=2, horizon=4)
    assert isinstance(dream, DreamSB3VecEnv) and dream.num_envs == 2 and dream.venv.horizon == 4
    assert dream.venv.spec is not None and dream.venv.spec.id == DREAM_ID
    dream.close()
    real = make_sb3_env(REAL_ID, n_envs=2, horizon=4)
    assert isinstance(real, DummyVecEnv) and real.env_is_wrapped(Monitor) == [True, True]
    real.close()
    with pytest.raises(TypeError, match="gym id"):
        make_sb3_env(3)  # type: ignore[arg-type]


def test_train_by_id_then_evaluate_in_the_game() -> None:
    agent = train_in_dream(
        "ppo",
        DREAM_ID,
        64,
        n_envs=2,
        seed=1,
        env_kwargs={"horizon": 8},
        algo_kwargs={"n_steps": 32, "batch_size": 32, "n_epochs": 1, "device": "cpu"},
    )
    result = evaluate(agent, REAL_ID, n_episodes=3, seed=0, env_kwargs={"horizon": 5})
    assert set(result) >= {"mean", "stderr", "returns"}
    assert len(result["returns"]) == 3 and all(1 <= n <= 5 for n in result["lengths"])
    assert result["mean"] == pytest.approx(np.mean(result["returns"]))
    assert result == evaluate(agent, REAL_ID, n_episodes=3, seed=0, env_kwargs={"horizon": 5})
    random = evaluate_random(REAL_ID, n_episodes=3, seed=0, env_kwargs={"horizon": 5})
    assert len(random["returns"]) == 3 and random["stderr"] >= 0
    assert random == evaluate_random(REAL_ID, n_episodes=3, seed=0, env_kwargs={"horizon": 5})
    with pytest.raises(ValueError, match="unknown algorithm"):
        train_in_dream("sac", DREAM_ID, 10)


_TRAIN_UNTIL_KILLED = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
torch.set_num_threads(1)
from toy_world_model import make_toy, synthetic_episodes
from neuralenvs.envs.dream import DreamVectorEnv
from neuralenvs.envs.starts import StartBank
from neuralenvs.sb3 import make_sb3_env, train_in_dream
model = make_toy()
bank = StartBank.cut(synthetic_episodes(2, 10, model.obs_shape, model.num_actions), model.context_frames, 8,
                     np.random.default_rng(0))
dream = make_sb3_env(DreamVectorEnv(model, bank, 2, horizon=8, device="cpu"))
train_in_dream("ppo", dream, 10**9, seed=0, algo_kwargs={"n_steps": 16, "batch_size": 32, "n_epochs": 1},
               save_path=sys.argv[2], save_every=32)
"""


def test_a_killed_dream_training_resumes_from_its_last_saved_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal
    import subprocess
    import sys
    import time

    from stable_baselines3 import PPO

    save_path = tmp_path / "agent.zip"
    tests_dir = str(Path(__file__).parent)
    proc = subprocess.Popen([sys.executable, "-c", _TRAIN_UNTIL_KILLED, tests_dir, str(save_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:  # kill -9 once the agent has been saved twice
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if save_path.exists() and PPO.load(str(save_path)).num_timesteps >= 64:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    saved = PPO.load(str(save_path))
    at_kill = saved.num_timesteps
    assert at_kill >= 64 and at_kill % 32 == 0  # saved right after an update: 2 dreams x 16 steps each
    assert saved_agent_steps(save_path) == at_kill and saved_agent_steps(tmp_path / "none.zip") == 0
    asked: list[int] = []
    weights_at_start: list[dict] = []
    learn = PPO.learn

    def spy(self, total_timesteps, **kwargs):
        asked.append(total_timesteps)
        weights_at_start.append({k: v.clone() for k, v in self.policy.state_dict().items()})
        return learn(self, total_timesteps, **kwargs)

    monkeypatch.setattr(PPO, "learn", spy)
    dream = _make_toy_dream(2, horizon=8)
    small = {"n_steps": 16, "batch_size": 32, "n_epochs": 1}
    agent = train_in_dream("ppo", dream, at_kill + 32, algo_kwargs=small, save_path=save_path)
    assert asked == [32] and agent.num_timesteps == at_kill + 32  # resumed: only the missing steps
    for name, value in saved.policy.state_dict().items():  # ... from the saved agent's weights
        assert torch.equal(value, weights_at_start[0][name])
    assert PPO.load(str(save_path)).num_timesteps == at_kill + 32  # saved at the end
    agent = train_in_dream("ppo", _make_toy_dream(2, horizon=8), at_kill + 64, algo_kwargs=small, save_path=save_path)
    assert asked == [32, 32] and agent.num_timesteps == at_kill + 64  # a finished run asked for more trains more
    train_in_dream("ppo", _make_toy_dream(2, horizon=8), at_kill + 64, algo_kwargs=small, save_path=save_path)
    assert asked == [32, 32]  # and one asked for what it has trains nothing


def test_evaluation_gives_each_episode_the_same_game_however_many_run_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import neuralenvs.sb3 as sb3

    class FirstAction:  # deterministic: each episode's return depends only on its seed
        def predict(self, obs: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, None]:
            assert obs.ndim == 4  # one batch of the running games' observations
            return np.zeros(len(obs), dtype=np.int64), None

    runs = {}
    for parallel in (1, 2, 32):
        monkeypatch.setattr(sb3, "MAX_PARALLEL_GAMES", parallel)
        runs[parallel] = evaluate(FirstAction(), REAL_ID, n_episodes=5, seed=3, env_kwargs={"horizon": 6})
    assert runs[1] == runs[2] == runs[32]
    assert len(set(runs[1]["returns"])) > 1  # the episodes differ, so a mixed-up seed would show
