"""Gym ids and the command line: dream ids from checkpoints, Dream-v0, list_envs, load_world_model, and
every family's dream-time settings changed by `resample`."""

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import neuralenvs
from neuralenvs.checkpoint import resample, save_checkpoint
from neuralenvs.envs.dream import DreamEnv, DreamVectorEnv
from neuralenvs.models import build_model
from neuralenvs.registry import load_world_model, register_all


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("diffusion", "tiny", (64, 64, 3), 18)
    k = model.context_frames
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("ckpts")
    path = save_checkpoint(
        root / "boxing-diffusion",
        model=model,
        starts_frames=rng.integers(0, 256, (4, k, 64, 64, 3), dtype=np.uint8),
        starts_actions=rng.integers(0, 18, (4, k - 1)),
        game="Boxing",
        action_meanings=[f"A{i}" for i in range(18)],
    )
    return root, path


def test_dream_ids_from_checkpoint_folders(checkpoint_dir, monkeypatch):
    root, path = checkpoint_dir
    monkeypatch.setenv("NEURALENVS_CHECKPOINTS", str(root))
    register_all()
    assert "neuralenvs/Boxing-diffusion-v0" in neuralenvs.list_envs("diffusion")
    env = gym.make("neuralenvs/Boxing-diffusion-v0", horizon=5, device="cpu")
    assert isinstance(env.unwrapped, DreamEnv)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and env.action_space.n == 18
    venv = gym.make_vec("neuralenvs/Boxing-diffusion-v0", num_envs=3, horizon=5, device="cpu", frame_stack=2)
    assert isinstance(venv, DreamVectorEnv)
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (3, 64, 64, 6)
    env2 = gym.make("neuralenvs/Dream-v0", checkpoint=str(path), device="cpu")
    assert env2.observation_space == env.observation_space
    model = neuralenvs.load_world_model("neuralenvs/Boxing-diffusion-v0", device="cpu")
    assert model.family == "diffusion" and model.num_actions == 18
    # the dream and the real game share observation and action spaces
    real = gym.make("neuralenvs/Boxing-real-v0")
    assert real.observation_space == env.observation_space and real.action_space == env.action_space


def test_unknown_dream_names_the_shipped_ones():
    with pytest.raises(ValueError, match="neither a checkpoint folder nor a shipped dream id"):
        neuralenvs.load_world_model("neuralenvs/Nothing-diffusion-v0")


def test_cli_collect_and_list(tmp_path):
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "neuralenvs.cli", "collect", "--game", "Breakout", "--steps", "60",
           "--out", str(out), "--seed", "0", "--json", str(tmp_path / "s.json")]
    subprocess.run(cmd, check=True, capture_output=True)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["num_steps"] >= 60
    listed = subprocess.run([sys.executable, "-m", "neuralenvs.cli", "list", "--kind", "real"],
                            check=True, capture_output=True, text=True).stdout.split()
    assert len(listed) == 26 and "neuralenvs/Pong-real-v0" in listed
    bad = subprocess.run([sys.executable, "-m", "neuralenvs.cli", "collect", "--game", "Nope", "--steps", "1",
                          "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode == 2 and "valid names are" in bad.stderr
    assert "Traceback" not in bad.stderr and bad.stderr.startswith("neuralenvs collect: error:")


def test_utility_trains_in_the_dream_and_plays_the_real_game(checkpoint_dir):
    from neuralenvs.bench.utility import measure_utility

    _, path = checkpoint_dir
    result = measure_utility(str(path), algo="ppo", steps=64, n_envs=4, horizon=5, frame_stack=2, episodes=1,
                             device="cpu", algo_kwargs={"n_steps": 16, "batch_size": 32}, progress=False, seed=3)
    assert result["seed"] == 3  # the agent's seed, for a summary over seeds
    assert result["game"] == "Boxing" and result["agent"]["n_episodes"] == result["random"]["n_episodes"] == 1
    assert result["agent"]["lengths"][0] > 100  # a real game of Boxing, played to the end
    assert {"agent_hns", "random_hns", "train_seconds"} <= set(result)
    assert result["algo_kwargs"]["n_steps"] == 16 and result["algo_kwargs"]["batch_size"] == 32  # as run


def test_starts_from_a_dataset_adds_as_many_windows_of_its_episodes(tmp_path):
    from neuralenvs.bench.utility import with_starts_from
    from neuralenvs.data import Episode, EpisodeDataset
    from neuralenvs.envs.starts import StartBank

    rng = np.random.default_rng(0)
    bank = StartBank(np.zeros((6, 3, 8, 8, 3), np.uint8), np.zeros((6, 2), np.int64))
    data = EpisodeDataset(tmp_path / "own", obs_shape=(8, 8, 3), num_actions=4)
    frames = np.full((11, 8, 8, 3), 200, np.uint8)
    data.append(Episode(frames, rng.integers(1, 4, 10), np.zeros(10), [False] * 9 + [True], [False] * 10))
    merged, info = with_starts_from(bank, str(tmp_path / "own"), num_actions=4, seed=0)
    assert len(merged) == 12 and info == {"real_steps": 10, "episodes": 1, "windows": 6}
    assert (merged.frames[:6] == 0).all() and (merged.frames[6:] == 200).all()  # half from the dataset
    assert merged.actions[6:].min() >= 1
    with pytest.raises(ValueError, match="4 actions"):
        with_starts_from(bank, str(tmp_path / "own"), num_actions=18, seed=0)
    video_like = StartBank.from_dataset(data, 3, 4, rng, actions=False)  # NOOP between the frames
    assert (video_like.actions == 0).all() and (video_like.frames == 200).all()


@pytest.mark.parametrize("family,setting,trained", [
    ("diffusion", {"num_denoising_steps": 1, "drop_change_levels": 4}, {"channels": [4, 4]}),
    ("token", {"slide_frames": 2}, {"embed_dim": 16}),
    ("genie", {"maskgit_steps": 1, "slide_frames": 2}, {"num_layers": 1}),
])
def test_every_family_resamples_its_dream_time_settings_and_nothing_else(tmp_path, family, setting, trained):
    torch.manual_seed(0)
    model = build_model(family, "tiny", (16, 16, 3), 3)
    k = model.context_frames
    save_checkpoint(tmp_path / "a", model=model, starts_frames=np.zeros((2, k, 16, 16, 3), np.uint8),
                    starts_actions=np.zeros((2, k - 1), np.int64), game=None)
    resample(tmp_path / "a", tmp_path / "b", **setting)
    resampled = load_world_model(tmp_path / "b", device="cpu")
    assert {name: getattr(resampled.config, name) for name in setting} == setting
    state = resampled.init_state(torch.zeros(2, k, 16, 16, 3, dtype=torch.uint8), torch.zeros(2, k - 1).long())
    for _ in range(4):  # long enough for a token or genie window to slide
        state, frames, _, _ = resampled.step(state, torch.zeros(2).long(), torch.Generator().manual_seed(0))
    assert frames.shape == (2, 16, 16, 3)
    with pytest.raises(ValueError, match="cannot change after training"):
        resample(tmp_path / "a", tmp_path / "c", **trained)
