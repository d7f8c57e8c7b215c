"""Shared fixtures: every environment test runs on each world-model family in FAMILY_FACTORIES;
the training tests share a small episode dataset of moving squares (``dataset_path``).

Adding a family to these tests is one entry: a name and a function that builds a small untrained
model with obs shape (64, 64, 3) (the smallest NatureCNN, SB3's CnnPolicy, accepts is 36 x 36).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from neuralenvs.data import Episode, EpisodeDataset
from neuralenvs.envs.starts import StartBank
from neuralenvs.models import FAMILIES, build_model
from neuralenvs.world_model import WorldModel

# the helpers next to this file import as top-level modules whether or not tests/ is a package
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy_world_model import ProbeModel, make_toy, synthetic_episodes  # noqa: E402

OBS_SHAPE = (64, 64, 3)
NUM_ACTIONS = 6


def _family_factory(family: str) -> Callable[[], WorldModel]:
    def make() -> WorldModel:
        torch.manual_seed(0)
        return build_model(family, "tiny", OBS_SHAPE, NUM_ACTIONS)

    return make


# Every registered family, at its "tiny" config, plus a toy model: a new family is tested by adding
# it to neuralenvs.models.FAMILIES (with a "tiny" named config).
FAMILY_FACTORIES: dict[str, Callable[[], WorldModel]] = {
    "toy": lambda: make_toy(OBS_SHAPE, NUM_ACTIONS),
    **{family: _family_factory(family) for family in FAMILIES},
}


def randomize(model: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Random values in every parameter: a fresh model zero-initialises parts of itself (residual
    blocks, output layers) and starts near-uniform (heads), which would let context-dependence tests
    pass vacuously."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def random_context(b: int, model: WorldModel, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 context frames ``[b, K, H, W, C]`` and actions ``[b, K - 1]`` for ``model``."""
    g = torch.Generator().manual_seed(seed)
    k = model.context_frames
    frames = torch.randint(0, 256, (b, k, *model.obs_shape), generator=g, dtype=torch.uint8)
    actions = torch.randint(0, model.num_actions, (b, k - 1), generator=g)
    return frames, actions


def step_through(
    model: WorldModel, state, actions: list[list[int]], seed: int, sample_heads: bool
) -> tuple[object, list[tuple[torch.Tensor, ...]]]:
    """Step a token or genie dream through ``actions`` (one list of B actions a step) with a fresh
    generator; returns the last state and each step's frames, reward, termination and window tokens."""
    g = torch.Generator().manual_seed(seed)
    outputs = []
    for a in actions:
        state, frames, reward, terminated = model.step(state, torch.tensor(a), g, sample_heads=sample_heads)
        outputs.append((frames, reward, terminated, state.tokens.clone()))
    return state, outputs


def assert_same_steps(a: list[tuple[torch.Tensor, ...]], b: list[tuple[torch.Tensor, ...]], rows=slice(None)) -> None:
    """Two runs of :func:`step_through` gave, step by step, exactly the same frames, rewards,
    terminations and tokens in ``rows`` (all by default)."""
    for step_a, step_b in zip(a, b, strict=True):
        for x, y in zip(step_a, step_b, strict=True):
            assert torch.equal(x[rows], y[rows])


@pytest.fixture
def single_torch_thread() -> Iterator[None]:
    """One intra-op thread for the tiny test models: on a small shared machine more threads only
    contend (measured: ~40x slower per dreamed step under load), and the models gain nothing."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(params=sorted(FAMILY_FACTORIES))
def world_model(request: pytest.FixtureRequest) -> WorldModel:
    """A fresh small untrained model of each family (envs move models and set eval mode)."""
    return FAMILY_FACTORIES[request.param]()


@pytest.fixture
def start_bank(world_model: WorldModel) -> StartBank:
    episodes = synthetic_episodes(3, 12, world_model.obs_shape, world_model.num_actions)
    return StartBank.cut(episodes, world_model.context_frames, 16, np.random.default_rng(0))


@pytest.fixture
def probe(world_model: WorldModel) -> ProbeModel:
    return ProbeModel(world_model)


@pytest.fixture(scope="session")
def dataset_path(tmp_path_factory):
    """A small dataset of moving squares: enough structure for losses to fall."""
    path = tmp_path_factory.mktemp("data") / "squares"
    ds = EpisodeDataset(path, obs_shape=(16, 16, 3), num_actions=3, action_meanings=["NOOP", "LEFT", "RIGHT"],
                        source="synthetic:squares")
    rng = np.random.default_rng(0)
    for _ in range(6):
        t = 30
        actions = rng.integers(0, 3, t)
        x = 8
        frames = np.zeros((t + 1, 16, 16, 3), np.uint8)
        rewards = np.zeros(t, np.float32)
        for i in range(t + 1):
            frames[i, 6:10, x - 2 : x + 2] = 255
            if i < t:
                x = int(np.clip(x + (actions[i] == 2) - (actions[i] == 1), 2, 14))
                rewards[i] = 1.0 if x == 14 else 0.0
        terminated = np.zeros(t, bool)
        terminated[-1] = True
        ds.append(Episode(frames, actions, rewards, terminated, np.zeros(t, bool)))
    return path
