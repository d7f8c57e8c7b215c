"""A tiny token (IRIS-style) world model and the helpers its tests share."""

from __future__ import annotations

import dataclasses
import functools

import torch
from conftest import randomize, step_through

from neuralenvs.models.token import TokenConfig, TokenWorldModel
from neuralenvs.world_model import Segments

OBS = (64, 64, 3)
NUM_ACTIONS = 6


def make_model(seed: int = 0, obs_shape=OBS, randomized: bool = False, **overrides) -> TokenWorldModel:
    torch.manual_seed(seed)
    cfg = dataclasses.replace(TokenConfig.named("tiny"), **overrides)
    model = TokenWorldModel(cfg, obs_shape, NUM_ACTIONS).eval()
    if randomized:
        randomize(model, seed)
    return model


def segments(b: int, model: TokenWorldModel, length: int | None = None, pad: int = 0, seed: int = 0) -> Segments:
    """Segments of smooth random frames (so the tokenizer can learn them) with ``pad`` padded frames
    before the episode start, sparse rewards and ends."""
    g = torch.Generator().manual_seed(seed)
    seq = model.config.segment_length if length is None else length
    h, w, c = model.obs_shape
    coarse = torch.rand(b, seq + 1, c, h // 16, w // 16, generator=g)
    smooth = torch.nn.functional.interpolate(coarse.flatten(0, 1), size=(h, w), mode="bilinear")
    frames = (smooth.reshape(b, seq + 1, c, h, w).movedim(2, -1) * 255).round().to(torch.uint8)
    mask = torch.ones(b, seq + 1, dtype=torch.bool)
    mask[:, :pad] = False
    frames[:, :pad] = 0
    actions = torch.randint(0, model.num_actions, (b, seq), generator=g)
    actions[:, :pad] = 0
    rewards = torch.randint(-1, 2, (b, seq), generator=g).float() * 2.0
    terminated = torch.rand(b, seq, generator=g) < 0.2
    return Segments(frames, actions, rewards, terminated, torch.zeros_like(terminated), mask)


# steps a dream through actions; the heads take their most likely class
run = functools.partial(step_through, sample_heads=False)
