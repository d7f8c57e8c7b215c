"""A tiny genie (latent-action) world model and the helpers its tests share."""

from __future__ import annotations

import dataclasses
import functools

import torch
from conftest import randomize, step_through

from neuralenvs.models.genie import GenieConfig, GenieWorldModel

OBS = (64, 64, 3)


def make_model(seed: int = 0, num_actions: int | None = None, obs_shape=OBS, randomized: bool = False,
               **overrides) -> GenieWorldModel:
    torch.manual_seed(seed)
    cfg = dataclasses.replace(GenieConfig.named("tiny"), **overrides)
    model = GenieWorldModel(cfg, obs_shape, num_actions).eval()
    return randomize(model, seed) if randomized else model


# steps a dream through actions; the heads sample their classes
run = functools.partial(step_through, sample_heads=True)
