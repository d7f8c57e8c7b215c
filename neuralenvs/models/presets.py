"""What every family's config dataclass shares: JSON round-trips and named presets."""

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


def named_preset(cls: type[C], presets: dict[str, dict[str, Any]], name: str, family: str) -> C:
    """``cls`` built from the preset called ``name``, or a clear error listing the known ones."""
    if name not in presets:
        raise ValueError(f"unknown {family} config {name!r}; known: {sorted(presets)}")
    return cls(**presets[name])
