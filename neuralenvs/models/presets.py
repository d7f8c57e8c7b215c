"""What every family's config dataclass shares: JSON round-trips, named presets and the checks
several of them make."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

C = TypeVar("C")


def lists_to_tuples(config: Any) -> None:
    """Turn list fields of a frozen config dataclass into tuples: JSON gives lists back, and
    tuples keep configs comparing equal and hashable. Call it first in ``__post_init__``."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, list):
            object.__setattr__(config, f.name, tuple(value))


# Optimizer settings that family configs once held but never used: they live in TrainConfig. Older
# checkpoints still carry them in their model_config, which loads without them.
MOVED_TO_TRAIN_CONFIG = ("batch_size", "learning_rate", "weight_decay", "max_grad_norm")


def config_from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """``cls(**values)``, minus the settings that moved to ``TrainConfig`` when ``cls`` lacks them."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names or k not in MOVED_TO_TRAIN_CONFIG})


def named_preset(cls: type[C], presets: dict[str, dict[str, Any]], name: str, family: str) -> C:
    """``cls`` built from the preset called ``name``, or a clear error listing the known ones."""
    if name not in presets:
        raise ValueError(f"unknown {family} config {name!r}; known: {sorted(presets)}")
    return cls(**presets[name])


# ---- checks that several families' configs make (each raises ValueError naming the field)


def check_minimum(config: Any, minimum: float, *names: str) -> None:
    """Every field in ``names`` is at least ``minimum``."""
    for name in names:
        value = getattr(config, name)
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_levels(config: Any, what: str, *names: str) -> None:
    """The per-level tuple fields ``names`` have one entry per level, and the ``*depths`` ones at
    least one block per level."""
    lengths = {len(getattr(config, name)) for name in names}
    if len(lengths) != 1:
        raise ValueError(f"{', '.join(names)} need one entry per {what} level")
    for name in names:
        if name.endswith("depths") and min(getattr(config, name), default=0) < 1:
            raise ValueError(f"every {what} level needs at least one block, got {name} {getattr(config, name)}")


def check_transformer_window(config: Any) -> None:
    """Heads that split the width, a window of at least two frames, and dreams that start from
    1 to ``context_length - 1`` real frames."""
    if config.embed_dim % config.num_heads:
        raise ValueError(f"embed_dim {config.embed_dim} does not split into {config.num_heads} heads")
    if config.context_length < 2:
        raise ValueError(f"context_length must be >= 2 frames, got {config.context_length}")
    check_between(config, "num_context_frames", 1, config.context_length - 1, "context_length - 1")


def check_between(config: Any, name: str, low: float, high: float, high_name: str | None = None) -> None:
    """``low <= config.<name> <= high`` (``high_name`` says what ``high`` stands for)."""
    value = getattr(config, name)
    if not low <= value <= high:
        bound = f"{high_name} ({high})" if high_name else f"{high}"
        raise ValueError(f"{name} must be between {low} and {bound}, got {value}")
