"""The CUDA path: every family dreams on the GPU in fp32 and bf16, a dream env keeps its tensors
there, and one training step runs. Skipped without CUDA; `benchmarks/gpu_check.sh` runs it on a GPU
machine. What does not need a GPU (device selection, dtype handling) is tested in the other files."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
from conftest import FAMILY_FACTORIES
from toy_world_model import synthetic_episodes

from neuralenvs.envs.dream import DreamVectorEnv
from neuralenvs.envs.starts import StartBank
from neuralenvs.models import build_model

# NEURALENVS_CUDA_TEST_DEVICE=cpu runs these checks on the CPU, to check the tests themselves
DEVICE = os.environ.get("NEURALENVS_CUDA_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("family", sorted(FAMILY_FACTORIES))
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_family_dreams_on_the_gpu(family: str, precision: str) -> None:
    model = FAMILY_FACTORIES[family]()
    episodes = synthetic_episodes(2, 12, model.obs_shape, model.num_actions)
    bank = StartBank.cut(episodes, model.context_frames, 8, np.random.default_rng(0))
    env = DreamVectorEnv(model, bank, num_envs=64, horizon=15, device=DEVICE, output="torch", precision=precision)
    obs, _ = env.reset(seed=0)
    assert obs.device.type == DEVICE and obs.dtype == torch.uint8
    for _ in range(3):
        obs, reward, terminated, truncated, _ = env.step(torch.zeros(64, dtype=torch.long, device=DEVICE))
    assert reward.device.type == DEVICE and torch.isfinite(reward).all()
    assert next(model.parameters()).dtype == torch.float32  # bf16 is autocast, the weights stay fp32


def test_a_genie_window_that_slides_by_two_keeps_its_keys_on_the_gpu() -> None:
    """The shipped genie dream's setting: cached keys grow, slide and restart row by row on the GPU."""
    model = build_model("genie", "tiny", (64, 64, 3), 6)
    model.config = dataclasses.replace(model.config, slide_frames=2)
    episodes = synthetic_episodes(2, 12, model.obs_shape, model.num_actions)
    bank = StartBank.cut(episodes, model.context_frames, 8, np.random.default_rng(0))
    env = DreamVectorEnv(model, bank, num_envs=16, horizon=3, device=DEVICE, output="torch", precision="bf16")
    env.reset(seed=0)
    cached = 0
    for _ in range(7):  # restarts every third step, slides every second
        obs, reward, *_ = env.step(torch.ones(16, dtype=torch.long, device=DEVICE))
        assert obs.device.type == DEVICE and torch.isfinite(reward).all()
        if env.state.context is not None:
            assert env.state.context[0][0].device.type == DEVICE
            cached += 1
    assert cached >= 3


@pytest.mark.parametrize("family", ["diffusion", "token", "genie"])
def test_a_training_step_on_the_gpu(family: str, tmp_path) -> None:
    from neuralenvs.data import Episode, EpisodeDataset
    from neuralenvs.training import TrainConfig, Trainer

    data = EpisodeDataset(tmp_path / "data", obs_shape=(64, 64, 3), num_actions=6, source="synthetic:gpu")
    for frames, actions in synthetic_episodes(4, 30, (64, 64, 3), 6):
        ended = np.zeros(len(actions), bool)
        ended[-1] = True
        data.append(Episode(frames, actions, np.zeros(len(actions), np.float32), ended, np.zeros(len(actions), bool)))
    config = TrainConfig(family=family, model_config="tiny", data=str(data.path), out=str(tmp_path / "run"),
                         steps=2, batch_size=4, held_out_episodes=1, start_bank_size=8, precision="bf16")
    trainer = Trainer(config, device=DEVICE)
    trainer.train(progress=False)
    assert all(p.device.type == DEVICE for p in trainer.model.parameters())


def test_a_diffusion_dream_dreams_compiled_with_cuda_graphs() -> None:
    model = FAMILY_FACTORIES["diffusion"]()
    episodes = synthetic_episodes(2, 12, model.obs_shape, model.num_actions)
    bank = StartBank.cut(episodes, model.context_frames, 8, np.random.default_rng(0))
    mode = "reduce-overhead" if DEVICE == "cuda" else "default"
    env = DreamVectorEnv(model, bank, num_envs=64, horizon=15, device=DEVICE, output="torch", precision="bf16",
                         compile=mode)
    assert env.compiled  # compiled, not fallen back to eager
    env.reset(seed=0)
    for _ in range(20):  # past a restart at the horizon
        obs, reward, _, _, _ = env.step(torch.zeros(64, dtype=torch.long, device=DEVICE))
    assert obs.device.type == DEVICE and torch.isfinite(reward).all()
