"""The settings a resumable run was started with, kept in its folder: a resume must ask for the
same ones, except those that change neither the model nor the data it sees."""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import Any

from neuralenvs.utils.io import atomic_write_text


def _as_stored(value: Any) -> Any:
    return json.loads(json.dumps(value))  # tuples become lists, as they are read back


def record_run_settings(path: Path, config: Any, free: tuple[str, ...] = ("out",), what: str = "run") -> None:
    """Compare the dataclass ``config`` with the settings stored at ``path`` (when there are any)
    and write it there. Raises ``ValueError`` naming each setting that differs, outside ``free``.
    A setting added to the dataclass after the run started counts as its default."""
    asked = _as_stored({k: v for k, v in asdict(config).items() if k not in free})
    if path.exists():
        stored = json.loads(path.read_text())
        defaults = _as_stored({f.name: f.default for f in fields(config) if f.default is not MISSING})
        before = {k: stored.get(k, defaults.get(k)) for k in asked}
        diff = {k: (before[k], asked[k]) for k in asked if before[k] != asked[k]}
        if diff:
            raise ValueError(
                f"{path.parent} holds a {what} with other settings {diff} (stored, asked); "
                "resume with the same settings or choose another --out"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(asdict(config), indent=1))
