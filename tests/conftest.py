"""Shared fixtures: every environment test runs on each world-model family in FAMILY_FACTORIES.

Adding a family to these tests is one entry: a name and a function that builds a small untrained
model with obs shape (64, 64, 3) (the smallest NatureCNN, SB3's CnnPolicy, accepts is 36 x 36).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from neuralenvs.envs.starts import StartBank
from neuralenvs.world_model import WorldModel

# the helpers next to this file import as top-level modules whether or not tests/ is a package
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy_world_model import ProbeModel, make_toy, synthetic_episodes  # noqa: E402

OBS_SHAPE = (64, 64, 3)
NUM_ACTIONS = 6


def _diffusion_factory() -> Callable[[], WorldModel] | None:
    """The diffusion family's "tiny" config, once that family exists (it is written alongside)."""
    try:
        from neuralenvs.models import build_model, model_class

        model_class("diffusion").config_class.named("tiny")
    except (ImportError, AttributeError, KeyError, ValueError):
        return None

    def make() -> WorldModel:
        torch.manual_seed(0)
        return build_model("diffusion", "tiny", OBS_SHAPE, NUM_ACTIONS)

    return make


FAMILY_FACTORIES: dict[str, Callable[[], WorldModel]] = {"toy": lambda: make_toy(OBS_SHAPE, NUM_ACTIONS)}
# families written alongside join automatically once they import and have a "tiny" config
_diffusion = _diffusion_factory()
if _diffusion is not None:
    FAMILY_FACTORIES["diffusion"] = _diffusion


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
