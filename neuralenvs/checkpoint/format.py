"""The checkpoint format: its files, its sealed fields, the in-memory :class:`Checkpoint`, and the
digests that guard it (the format itself is described in ``neuralenvs/checkpoint/__init__.py``)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 1

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
STARTS_FILE = "starts.npz"
CARD_FILE = "README.md"
CHECKPOINT_FILES: tuple[str, ...] = (CONFIG_FILE, WEIGHTS_FILE, STARTS_FILE, CARD_FILE)

WEIGHTS_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

# The config.json fields covered by ``config_sha256``: all that decide which model is built, what it
# means, and which bytes the other files must have. ``provenance`` and ``metrics`` stay editable.
SEALED_FIELDS: tuple[str, ...] = (
    "format_version",
    "family",
    "model_config",
    "game",
    "obs_shape",
    "num_actions",
    "action_meanings",
    "weights_dtype",
    "checksums",
)


_SHA_PREFIX = "sha256:"

_REDOWNLOAD_HINT = (
    "The file is damaged, incomplete or was edited by hand: copy or download the checkpoint again, or "
    "re-save it from its model with neuralenvs.save_checkpoint."
)


# --------------------------------------------------------------------------------------------------
# The loaded checkpoint


@dataclass
class Checkpoint:
    """A validated checkpoint held in memory (see :func:`load_checkpoint`).

    ``weights`` are CPU tensors in their stored dtype; :func:`build_world_model` casts them to the
    model's own dtypes.
    """

    path: Path
    config: dict[str, Any]
    weights: dict[str, torch.Tensor]
    starts_frames: np.ndarray  # uint8 [N, K, H, W, C]
    starts_actions: np.ndarray  # int64 [N, K-1]
    card: str

    @property
    def family(self) -> str:
        return self.config["family"]

    @property
    def game(self) -> str | None:
        return self.config["game"]

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        h, w, c = self.config["obs_shape"]
        return (h, w, c)

    @property
    def num_actions(self) -> int:
        return self.config["num_actions"]

    @property
    def action_meanings(self) -> list[str]:
        return list(self.config["action_meanings"])

    @property
    def context_frames(self) -> int:
        """K: frames per segment in the start bank."""
        return int(self.starts_frames.shape[1])


# --------------------------------------------------------------------------------------------------
# Small public helpers


def file_digest(data: bytes | bytearray | memoryview) -> str:
    """``"sha256:<hex>"`` of a file's bytes, as stored in ``config.json["checksums"]``."""
    return _SHA_PREFIX + hashlib.sha256(data).hexdigest()


def config_digest(config: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` over the :data:`SEALED_FIELDS` of a config, serialised canonically
    (sorted keys, no whitespace), so formatting changes to ``config.json`` do not matter but
    changed values do. A missing field counts as ``null``.

    Use it to re-seal a ``config.json`` edited on purpose: ``config["config_sha256"] =
    config_digest(config)``.
    """
    sealed = {key: config.get(key) for key in SEALED_FIELDS}
    text = json.dumps(sealed, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return _SHA_PREFIX + hashlib.sha256(text.encode("ascii")).hexdigest()


def _package_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("neuralenvs")
    except (ImportError, PackageNotFoundError):  # running from a source tree that is not installed
        return "unknown"



def _jsonable(value: Any, where: str, *, strict: bool) -> Any:
    """``value`` as plain JSON types (dict with str keys, list, str, int, float, bool, None).

    Converting here (instead of letting ``json.dumps`` do it) makes the written JSON read back equal
    to what was digested. Non-finite floats become None unless ``strict``.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        if strict:
            raise ValueError(f"{where} is {value}, which JSON cannot store")
        return None
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        return _jsonable(value.item(), where, strict=strict)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), where, strict=strict)
    if isinstance(value, enum.Enum):
        return _jsonable(value.value, where, strict=strict)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value), where, strict=strict)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise TypeError(f"{where} has key {key!r}; JSON object keys must be strings")
            out[str(key)] = _jsonable(item, f"{where}[{key!r}]", strict=strict)
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{where}[{i}]", strict=strict) for i, item in enumerate(value)]
    raise TypeError(f"{where} is a {type(value).__name__}, which cannot be stored in JSON")


