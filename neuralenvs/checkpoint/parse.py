"""Parsing and validating the bytes of each checkpoint file, never trusting them: JSON without NaN,
checksums before parsing, a safetensors header checked by hand, an npz without pickle."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as safetensors_from_bytes

from neuralenvs.checkpoint.format import (
    _REDOWNLOAD_HINT,
    _SHA_PREFIX,
    FORMAT_VERSION,
    SEALED_FIELDS,
    STARTS_FILE,
    WEIGHTS_DTYPES,
    WEIGHTS_FILE,
    _package_version,
    config_digest,
    file_digest,
)
from neuralenvs.errors import CheckpointError

# Bytes per element of every safetensors dtype torch can hold, for checking the header ourselves
# before safetensors parses the data (its errors on malformed headers vary by version).
_SAFETENSORS_ITEMSIZE: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "I16": 2,
    "U16": 2,
    "I32": 4,
    "U32": 4,
    "I64": 8,
    "U64": 8,
    "F16": 2,
    "BF16": 2,
    "F32": 4,
    "F64": 8,
}
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the limit safetensors itself enforces

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_config(file: Path, data: bytes) -> dict[str, Any]:
    def fail(field: str | None, problem: str, hint: str | None = None) -> CheckpointError:
        return CheckpointError(file, field, problem, hint if hint is not None else _REDOWNLOAD_HINT)

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(None, f"not UTF-8 text ({exc})") from exc
    try:
        config = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise fail(None, f"not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise fail(None, f"must hold a JSON object, holds a {type(config).__name__}")

    # The version first: a future format may differ in every other field.
    if "format_version" not in config:
        raise fail("format_version", "missing; this does not look like a neuralenvs checkpoint")
    version = config["format_version"]
    if not _is_int(version):
        raise fail("format_version", f"must be an integer, got {version!r}")
    if version != FORMAT_VERSION:
        advice = (
            "Upgrade neuralenvs (pip install -U neuralenvs) to read it."
            if version > FORMAT_VERSION
            else "Re-save it with the neuralenvs version that wrote it, or use that version."
        )
        raise fail(
            "format_version",
            f"the checkpoint has format version {version}, but this neuralenvs ({_package_version()}) "
            f"reads format version {FORMAT_VERSION} only",
            advice,
        )

    def require(field: str, kinds: tuple[type, ...], what: str) -> Any:
        if field not in config:
            raise fail(field, "missing")
        value = config[field]
        if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
            raise fail(field, f"must be {what}, got {value!r}")
        return value

    family = require("family", (str,), "a family name (string)")
    if not family:
        raise fail("family", "is empty")
    require("model_config", (dict,), "a JSON object")
    require("game", (str, type(None)), "a string or null")
    obs_shape = require("obs_shape", (list,), "a list [H, W, C]")
    if len(obs_shape) != 3 or not all(_is_int(x) and x > 0 for x in obs_shape):
        raise fail("obs_shape", f"must be 3 positive integers [H, W, C], got {obs_shape!r}")
    num_actions = require("num_actions", (int,), "a positive integer")
    if num_actions <= 0:
        raise fail("num_actions", f"must be a positive integer, got {num_actions}")
    meanings = require("action_meanings", (list,), "a list of strings")
    if not all(isinstance(m, str) for m in meanings):
        raise fail("action_meanings", f"must be a list of strings, got {meanings!r}")
    if len(meanings) != num_actions:
        raise fail("action_meanings", f"has {len(meanings)} names but num_actions is {num_actions}")
    dtype = require("weights_dtype", (str,), "a dtype name")
    if dtype not in WEIGHTS_DTYPES:
        raise fail("weights_dtype", f"must be one of {sorted(WEIGHTS_DTYPES)}, got {dtype!r}")
    require("provenance", (dict,), "a JSON object")
    require("metrics", (dict,), "a JSON object")
    checksums = require("checksums", (dict,), "a JSON object")
    for name in (WEIGHTS_FILE, STARTS_FILE):
        value = checksums.get(name)
        if not _is_sha256(value):
            raise fail("checksums", f"must map {name!r} to 'sha256:<64 hex digits>', got {value!r}")
    sealed = require("config_sha256", (str,), "'sha256:<64 hex digits>'")
    if sealed != config_digest(config):
        raise fail(
            "config_sha256",
            "does not match the file's contents: one of the sealed fields "
            f"({', '.join(SEALED_FIELDS)}) was changed after saving",
            "If the file was damaged, copy the checkpoint again. If you edited it on purpose, re-seal it: "
            "set config_sha256 to neuralenvs.checkpoint.config_digest(config).",
        )
    return config


def _is_sha256(value: Any) -> bool:
    if not isinstance(value, str) or not value.startswith(_SHA_PREFIX):
        return False
    digits = value[len(_SHA_PREFIX) :]
    return len(digits) == 64 and all(ch in "0123456789abcdef" for ch in digits)


def _verify_checksum(file: Path, data: bytes, config: Mapping[str, Any]) -> None:
    expected = config["checksums"][file.name]
    if file_digest(data) != expected:
        raise CheckpointError(
            file,
            None,
            f"its SHA-256 does not match config.json's checksums[{file.name!r}] ({len(data)} bytes read)",
            "The file is damaged or was replaced (an interrupted copy?): copy the whole checkpoint folder "
            "again, or re-save it with neuralenvs.save_checkpoint.",
        )


def _parse_weights(file: Path, data: bytes, config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    _verify_checksum(file, data, config)
    _check_safetensors_header(file, data)
    try:
        tensors = safetensors_from_bytes(data)  # safetensors parsing: no pickle involved
    except Exception as exc:  # safetensors raises several error types on malformed files
        raise CheckpointError(
            file, None, f"safetensors could not parse it ({exc})", _REDOWNLOAD_HINT
        ) from exc
    if not tensors:
        raise CheckpointError(file, None, "holds no tensors", _REDOWNLOAD_HINT)
    expected = WEIGHTS_DTYPES[config["weights_dtype"]]
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and tensor.dtype != expected:
            raise CheckpointError(
                file,
                name,
                f"floating tensor stored as {tensor.dtype}, but config.json says weights_dtype is "
                f"{config['weights_dtype']}",
                _REDOWNLOAD_HINT,
            )
    return tensors


def _check_safetensors_header(file: Path, data: bytes) -> None:
    """Validate the safetensors header ourselves so malformed files fail with a clear message.

    Layout: 8-byte little-endian header length, a JSON object ``{name: {dtype, shape,
    data_offsets: [begin, end]}, "__metadata__": {str: str}}``, then the tensor bytes.
    """

    def fail(field: str | None, problem: str) -> CheckpointError:
        return CheckpointError(file, field, problem, _REDOWNLOAD_HINT)

    if len(data) < 8:
        raise fail(None, f"too short for a safetensors file ({len(data)} bytes)")
    header_len = int.from_bytes(data[:8], "little")
    if header_len > min(len(data) - 8, _MAX_SAFETENSORS_HEADER):
        raise fail(None, f"safetensors header claims {header_len} bytes but the file has {len(data)}")
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise fail(None, f"safetensors header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise fail(None, "safetensors header is not a JSON object")
    buffer_len = len(data) - 8 - header_len
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise fail(name, "safetensors metadata must map strings to strings")
            continue
        if not isinstance(entry, dict):
            raise fail(name, "tensor entry is not a JSON object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in _SAFETENSORS_ITEMSIZE:
            raise fail(name, f"unsupported tensor dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise fail(name, f"tensor shape must be a list of non-negative integers, got {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= buffer_len
        ):
            raise fail(
                name, f"tensor data_offsets {offsets!r} lie outside the file's {buffer_len} data bytes"
            )
        if math.prod(shape) * _SAFETENSORS_ITEMSIZE[dtype] != offsets[1] - offsets[0]:
            raise fail(
                name,
                f"tensor of shape {shape} and dtype {dtype} does not fit its {offsets[1] - offsets[0]} bytes",
            )
        spans.append((offsets[0], offsets[1], name))
    spans.sort()
    position = 0
    for begin, end, name in spans:
        if begin != position:
            raise fail(name, "tensor data overlaps another tensor or leaves a gap")
        position = end
    if position != buffer_len:
        raise fail(None, f"tensor data covers {position} of the file's {buffer_len} data bytes")


def _parse_starts(file: Path, data: bytes, config: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    _verify_checksum(file, data, config)

    def fail(field: str | None, problem: str) -> CheckpointError:
        return CheckpointError(file, field, problem, _REDOWNLOAD_HINT)

    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise fail(None, "not an .npz archive")
        with loaded:
            names = set(loaded.files)
            if names != {"frames", "actions"}:
                raise fail(
                    None, f"must hold exactly the arrays 'frames' and 'actions', holds {sorted(names)}"
                )
            frames = loaded["frames"]
            actions = loaded["actions"]
    except CheckpointError:
        raise
    except Exception as exc:  # zipfile, zlib and numpy raise many error types on damaged archives
        raise fail(None, f"not a readable .npz archive ({type(exc).__name__}: {exc})") from exc

    obs_shape = tuple(config["obs_shape"])
    if frames.dtype != np.uint8:
        raise fail("frames", f"must be uint8, is {frames.dtype}")
    if frames.ndim != 5 or frames.shape[2:] != obs_shape:
        raise fail(
            "frames", f"must have shape [N, K, {', '.join(map(str, obs_shape))}], has {list(frames.shape)}"
        )
    n, k = frames.shape[:2]
    if n < 1 or k < 1:
        raise fail(
            "frames", f"must hold at least one segment of at least one frame, has shape {list(frames.shape)}"
        )
    if actions.dtype.kind != "i" or actions.dtype.itemsize != 8:
        raise fail("actions", f"must be int64, is {actions.dtype}")
    if actions.shape != (n, k - 1):
        raise fail("actions", f"must have shape [{n}, {k - 1}] ([N, K-1]), has {list(actions.shape)}")
    num_actions = config["num_actions"]
    if actions.size and (actions.min() < 0 or actions.max() >= num_actions):
        raise fail(
            "actions", f"values must lie in [0, {num_actions}), found [{actions.min()}, {actions.max()}]"
        )
    return np.ascontiguousarray(frames), np.ascontiguousarray(actions, dtype=np.int64)


