"""World-model families. A family registers itself here by name; nothing else lists them."""

from __future__ import annotations

import importlib

from neuralenvs.models.presets import config_from_dict
from neuralenvs.world_model import WorldModel

# family name -> "module:Class" of its WorldModel subclass, imported on first use
FAMILIES: dict[str, str] = {
    "diffusion": "neuralenvs.models.diffusion.world_model:DiffusionWorldModel",
    "token": "neuralenvs.models.token.world_model:TokenWorldModel",
    "genie": "neuralenvs.models.genie.world_model:GenieWorldModel",
}


def model_class(family: str) -> type[WorldModel]:
    if family not in FAMILIES:
        raise ValueError(f"unknown world-model family {family!r}; known families: {sorted(FAMILIES)}")
    module, name = FAMILIES[family].split(":")
    return getattr(importlib.import_module(module), name)


def build_model(
    family: str, config: str | dict, obs_shape: tuple[int, int, int], num_actions: int | None
) -> WorldModel:
    """Build an untrained model from a named config (``"small"``, ``"paper"``) or a config dict.

    ``num_actions=None`` lets a family that learns its own actions from video (genie) expose them;
    the other families need the game's action count."""
    cls = model_class(family)
    cfg = cls.config_class.named(config) if isinstance(config, str) else config_from_dict(cls.config_class, config)
    return cls(cfg, obs_shape, num_actions)
