"""Save, load and validate world-model checkpoints (safetensors + JSON + npz; never pickle).

A checkpoint is a folder of four files:

``config.json``
    What the model is and where it came from: ``format_version``, ``family``, ``model_config`` (the
    family's config dataclass as JSON), ``game``, ``obs_shape`` ``[H, W, C]``, ``num_actions``,
    ``action_meanings``, ``weights_dtype``, ``provenance`` (data, budget, hardware, wall-clock,
    versions), ``metrics``, and the integrity fields ``checksums`` and ``config_sha256``.
``weights.safetensors``
    The model's ``state_dict``; floating tensors stored as ``weights_dtype``, integer and bool
    buffers as they are.
``starts.npz``
    The start bank: ``frames`` uint8 ``[N, K, H, W, C]`` and ``actions`` int64 ``[N, K-1]`` (real
    context segments a dream can start from). Saved with ``np.savez_compressed``.
``README.md``
    The model card, in prose.

Integrity. ``checksums`` holds the SHA-256 of ``weights.safetensors`` and ``starts.npz``, so any
changed byte in those files is caught before they are parsed. ``config_sha256`` is the SHA-256 of
the *sealed* fields of ``config.json`` (:data:`SEALED_FIELDS`: everything that decides what model
is built and how it behaves, plus the checksums), serialised canonically, so a damaged or
hand-edited value is caught too. ``provenance`` and ``metrics`` are deliberately left unsealed:
they describe the model without changing it, and benchmarks may fill in metrics later. The model
card is prose and is never checked: any bytes load (invalid UTF-8 is replaced, not rejected).

Atomic saves. :func:`save_checkpoint` builds the whole folder under a hidden temporary sibling
(``.<name>.tmp-<random>``), fsyncs every file and the folder, then renames it into place. Replacing
an existing checkpoint takes two renames (old -> ``.<name>.old-<random>``, new -> ``<name>``) with a
short window in between where ``<name>`` does not exist; :func:`load_checkpoint` covers that window
(and a crash inside it) by reading the newest complete ``.<name>.old-*`` sibling when ``<name>`` is
missing. Readers open the folder once and every file relative to it, so a concurrent save can never
make one load mix files of two different checkpoints. A killed save leaves the previous checkpoint
intact; at worst it leaves a ``.<name>.tmp-*`` folder behind, which is safe to delete.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import hashlib
import io
import json
import math
import os
import platform
import shutil
import stat
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from safetensors.torch import load as safetensors_from_bytes

from neuralenvs.errors import CheckpointError
from neuralenvs.models import FAMILIES, model_class
from neuralenvs.utils.device import describe_hardware, resolve_device
from neuralenvs.utils.io import fsync_dir, temp_sibling, write_file_durably
from neuralenvs.world_model import WorldModel

__all__ = [
    "CARD_FILE",
    "CHECKPOINT_FILES",
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "SEALED_FIELDS",
    "STARTS_FILE",
    "WEIGHTS_DTYPES",
    "WEIGHTS_FILE",
    "Checkpoint",
    "build_world_model",
    "config_digest",
    "describe_hardware",
    "file_digest",
    "load_checkpoint",
    "make_model_card",
    "resolve_device",
    "save_checkpoint",
]

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
_SHA_PREFIX = "sha256:"
_STALE_TRASH_SECONDS = 60.0  # a .<name>.old-* folder older than this is a crashed save's leftover

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


# --------------------------------------------------------------------------------------------------
# Saving


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: WorldModel,
    starts_frames: np.ndarray | torch.Tensor,
    starts_actions: np.ndarray | torch.Tensor,
    game: str | None = None,
    action_meanings: list[str] | None = None,
    provenance: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    card: str | None = None,
    weights_dtype: str = "float32",
) -> Path:
    """Write ``model`` and its start bank as a checkpoint folder at ``path``, atomically.

    Args:
        path: the checkpoint folder. Parents are created. An existing checkpoint there is replaced
            atomically; any other existing file or folder is refused rather than deleted. A symlink
            to a checkpoint is replaced by the new folder; the folder it pointed at is kept as is.
        model: the world model; its ``family`` must be registered in ``neuralenvs.models.FAMILIES``
            for the checkpoint to be loadable (a warning says so otherwise).
        starts_frames: uint8 ``[N, K, H, W, C]`` real context segments, ``(H, W, C) ==
            model.obs_shape``, ``N >= 1``, ``K >= model.context_frames``.
        starts_actions: integer ``[N, K-1]``, each in ``[0, model.num_actions)``.
        game: the game's name (e.g. ``"Pong"``), or ``None`` for a custom environment.
        action_meanings: one name per action (``env.unwrapped.get_action_meanings()``); default
            ``ACTION_0 ...``.
        provenance: how the model was made; merged over defaults (``data``, ``real_steps``,
            ``training_steps``, ``hardware``, ``wall_clock_seconds``, ``created``,
            ``neuralenvs_version``, ``torch_version``, ``python_version``, ``num_parameters``,
            ``start_bank``). Defaults describe the saving machine and time; the trainer should pass
            the real values. Non-finite floats become ``null`` (JSON has no NaN).
        metrics: measured numbers (nested dicts allowed), shown in the model card.
        card: the model card's Markdown; ``None`` generates one from the config.
        weights_dtype: ``"float32"`` (exact), ``"float16"`` or ``"bfloat16"`` (half the size;
            loading casts back to the model's dtype). Integer and bool buffers are kept as they are.

    Returns:
        The checkpoint folder's path.

    Raises:
        ValueError / TypeError: an argument is wrong (nothing is written).
        FileExistsError: ``path`` exists and is not a checkpoint folder.
        OSError: writing failed; the previous checkpoint at ``path``, if any, is left intact.
    """
    path = Path(path).expanduser()
    if not isinstance(model, WorldModel):
        raise TypeError(f"model must be a neuralenvs WorldModel, got {type(model).__name__}")
    if weights_dtype not in WEIGHTS_DTYPES:
        raise ValueError(f"weights_dtype must be one of {sorted(WEIGHTS_DTYPES)}, got {weights_dtype!r}")
    family = getattr(model, "family", None)
    if not isinstance(family, str) or not family:
        raise ValueError(f"{type(model).__name__} has no family name (class attribute `family`)")
    if family not in FAMILIES:
        warnings.warn(
            f"world-model family {family!r} is not registered in neuralenvs.models.FAMILIES; the "
            "checkpoint is written but cannot be loaded until the family is registered",
            stacklevel=2,
        )
    obs_shape = [int(x) for x in model.obs_shape]
    num_actions = int(model.num_actions)
    if game is not None and not isinstance(game, str):
        raise TypeError(f"game must be a str or None, got {type(game).__name__}")

    meanings = _check_action_meanings(action_meanings, num_actions)
    frames, actions = _check_starts_argument(starts_frames, starts_actions, model)
    model_config = _model_config_dict(model)

    weights_bytes = _serialize_weights(model, WEIGHTS_DTYPES[weights_dtype])
    starts_bytes = _serialize_starts(frames, actions)

    prov: dict[str, Any] = {
        "data": None,
        "real_steps": None,
        "training_steps": None,
        "hardware": describe_hardware(),
        "wall_clock_seconds": None,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "neuralenvs_version": _package_version(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "start_bank": f"{frames.shape[0]} real segments of {frames.shape[1]} frames",
    }
    prov.update(_jsonable(dict(provenance or {}), "provenance", strict=False))

    config: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "family": family,
        "model_config": model_config,
        "game": game,
        "obs_shape": obs_shape,
        "num_actions": num_actions,
        "action_meanings": meanings,
        "weights_dtype": weights_dtype,
        "provenance": prov,
        "metrics": _jsonable(dict(metrics or {}), "metrics", strict=False),
        "checksums": {WEIGHTS_FILE: file_digest(weights_bytes), STARTS_FILE: file_digest(starts_bytes)},
    }
    config["config_sha256"] = config_digest(config)
    config_bytes = (json.dumps(config, indent=2, allow_nan=False) + "\n").encode("utf-8")
    if card is None:
        card = make_model_card(config, name=path.name)
    elif not isinstance(card, str):
        raise TypeError(f"card must be Markdown text (str) or None, got {type(card).__name__}")

    _publish_folder(
        path,
        {
            CONFIG_FILE: config_bytes,
            WEIGHTS_FILE: weights_bytes,
            STARTS_FILE: starts_bytes,
            CARD_FILE: card.encode("utf-8"),
        },
    )
    return path


def _check_action_meanings(action_meanings: list[str] | None, num_actions: int) -> list[str]:
    if action_meanings is None:
        return [f"ACTION_{i}" for i in range(num_actions)]
    meanings = list(action_meanings)
    if len(meanings) != num_actions or not all(isinstance(m, str) for m in meanings):
        raise ValueError(
            f"action_meanings must be {num_actions} strings (one per action of the model), got {meanings!r}"
        )
    return meanings


def _check_starts_argument(
    frames: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor, model: WorldModel
) -> tuple[np.ndarray, np.ndarray]:
    """The start bank as contiguous numpy arrays, or a ValueError saying what is wrong with it."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    if isinstance(actions, torch.Tensor):
        actions = actions.detach().cpu().numpy()
    frames = np.asarray(frames)
    actions = np.asarray(actions)
    obs_shape = tuple(int(x) for x in model.obs_shape)
    if frames.dtype != np.uint8:
        raise ValueError(f"starts_frames must be uint8 frames, got dtype {frames.dtype}")
    if frames.ndim != 5 or frames.shape[0] < 1 or frames.shape[1] < 1 or frames.shape[2:] != obs_shape:
        raise ValueError(
            f"starts_frames must have shape [N>=1, K>=1, {', '.join(map(str, obs_shape))}] "
            f"(N segments of K frames of the model's obs_shape), got {list(frames.shape)}"
        )
    n, k = frames.shape[:2]
    context = _context_frames(model)
    if context is not None and k < context:
        raise ValueError(f"start segments have {k} frames but the model starts dreams from {context}")
    if actions.dtype.kind not in "iu":
        raise ValueError(f"starts_actions must be integers, got dtype {actions.dtype}")
    if actions.shape != (n, k - 1):
        raise ValueError(
            f"starts_actions must have shape [{n}, {k - 1}] ([N, K-1]), got {list(actions.shape)}"
        )
    if actions.size and (actions.min() < 0 or actions.max() >= model.num_actions):
        raise ValueError(
            f"starts_actions must lie in [0, {model.num_actions}), got values in "
            f"[{actions.min()}, {actions.max()}]"
        )
    return np.ascontiguousarray(frames), np.ascontiguousarray(actions, dtype=np.int64)


def _context_frames(model: WorldModel) -> int | None:
    # A half-built family may not implement the property yet; the start bank is then not checked.
    try:
        return int(model.context_frames)
    except (NotImplementedError, AttributeError, TypeError):
        return None


def _model_config_dict(model: WorldModel) -> dict[str, Any]:
    config = model.config
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(
            f"{type(model).__name__}.config must be a dataclass instance, got {type(config).__name__}"
        )
    # strict: a config value JSON cannot hold exactly (NaN, an object) must fail here, not be
    # silently changed into a different model on load.
    return _jsonable(dataclasses.asdict(config), "model_config", strict=True)


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


def _serialize_weights(model: WorldModel, dtype: torch.dtype) -> bytes:
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach()
        if tensor.is_complex():
            raise TypeError(f"tensor {name!r} is complex; checkpoints store real tensors only")
        if tensor.is_floating_point():
            tensor = tensor.to(dtype)
        # A fresh contiguous CPU copy of each tensor: safetensors refuses tensors that share memory
        # (tied weights), and a GPU tensor must come to the host anyway.
        tensors[name] = tensor.to("cpu", copy=True).contiguous()
    metadata = {"format": "pt", "neuralenvs_format_version": str(FORMAT_VERSION)}
    return safetensors.torch.save(tensors, metadata=metadata)


def _serialize_starts(frames: np.ndarray, actions: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, frames=frames, actions=actions)
    return buffer.getvalue()


def _publish_folder(path: Path, files: Mapping[str, bytes]) -> None:
    """Write ``files`` into a temporary sibling folder, fsync everything, then move it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_replaceable(path)
    tmp = temp_sibling(path, "tmp")
    os.mkdir(tmp)
    try:
        for name, data in files.items():
            write_file_durably(tmp / name, data)
        fsync_dir(tmp)
        trash = _install(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path.parent)
    # The new checkpoint is durable; now the old one can go, and so can folders left by a save that
    # crashed mid-swap. Only old leftovers: a fresh one may be another saver's, between its renames.
    if trash is not None:
        _remove_tree(trash)
    for stale in _trash_siblings(path):
        try:
            age = time.time() - stale.lstat().st_ctime
        except OSError:
            continue
        if age > _STALE_TRASH_SECONDS:
            _remove_tree(stale)


def _remove_tree(path: Path) -> None:
    """Remove a moved-aside checkpoint; a symlink (a checkpoint path that was a link) is unlinked,
    never followed, so the folder it pointed at is left alone."""
    if path.is_symlink():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _check_replaceable(path: Path) -> None:
    """Refuse to replace anything but a checkpoint folder, so a wrong path never deletes user data."""
    if not os.path.lexists(path):
        return
    if not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a checkpoint folder; remove it or save elsewhere")
    foreign = sorted(p.name for p in path.iterdir() if p.name not in CHECKPOINT_FILES)
    if foreign:
        raise FileExistsError(
            f"{path} exists and holds files that are not part of a checkpoint ({', '.join(foreign[:5])}); "
            "save elsewhere, or move them away so the folder can be replaced"
        )


def _install(tmp: Path, path: Path) -> Path | None:
    """Rename ``tmp`` to ``path``, moving an existing ``path`` aside first; returns where it went.

    POSIX cannot atomically swap two non-empty folders with ``rename``, hence the two steps; the
    reader covers the gap (see the module docstring). The loop handles another process saving to
    the same path at the same moment: whoever renames last wins, and nobody's rename fails.
    """
    trash: Path | None = None
    for _ in range(100):
        if os.path.lexists(path):
            moved_to = temp_sibling(path, "old")
            try:
                os.rename(path, moved_to)
            except FileNotFoundError:  # another saver moved it first
                pass
            else:
                if trash is not None:
                    _remove_tree(trash)
                trash = moved_to
        try:
            os.rename(tmp, path)
            return trash
        except OSError:
            if not os.path.lexists(path):  # a real failure (permissions, disk), not a race
                if trash is not None:  # put the previous checkpoint back where it was
                    try:
                        os.rename(trash, path)
                    except OSError:
                        pass  # load_checkpoint still finds it as the .old-* sibling
                raise
    raise OSError(f"could not move the new checkpoint into {path}: another process keeps writing there")


def _trash_siblings(path: Path) -> list[Path]:
    prefix = f".{path.name}.old-"
    try:
        return [p for p in path.parent.iterdir() if p.name.startswith(prefix) and p.is_dir()]
    except OSError:
        return []


# --------------------------------------------------------------------------------------------------
# Model card


def make_model_card(config: Mapping[str, Any], *, name: str | None = None) -> str:
    """A Markdown model card generated from a checkpoint's config (what ``card=None`` writes)."""
    prov = config.get("provenance") or {}
    metrics = config.get("metrics") or {}
    family = config.get("family", "?")
    game = config.get("game")
    title = name or (f"{game}-{family}" if game else f"{family} world model")
    h, w, c = config.get("obs_shape", ["?", "?", "?"])
    meanings = config.get("action_meanings") or []

    def cell(value: Any) -> str:
        if value is None:
            return "not recorded"
        if isinstance(value, float):
            value = f"{value:.6g}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [
        f"# {title}",
        "",
        f"A **{family}** world model of **{game or 'a custom environment'}** for "
        "neuralenvs: a neural network that dreams the game frame by frame, "
        "with rewards and episode ends from learned heads.",
        "",
        "## Use",
        "",
        "```python",
        "from neuralenvs.checkpoint import load_checkpoint, build_world_model",
        "",
        f'checkpoint = load_checkpoint("{name or "path/to/checkpoint"}")',
        "model = build_world_model(checkpoint)  # on the GPU if there is one",
        "```",
        "",
        "## Model",
        "",
        "| | |",
        "|---|---|",
        f"| family | {cell(family)} |",
        f"| game | {cell(game)} |",
        f"| observation | {h}x{w}x{c} uint8 frames |",
        f"| actions | {len(meanings)}: {cell(', '.join(meanings))} |",
        f"| parameters | {cell(prov.get('num_parameters'))} |",
        f"| weights stored as | {cell(config.get('weights_dtype'))} |",
        f"| start bank | {cell(prov.get('start_bank'))} |",
        "",
        "## Training data and budget",
        "",
        "| | |",
        "|---|---|",
        f"| data | {cell(prov.get('data'))} |",
        f"| real environment steps | {cell(prov.get('real_steps'))} |",
        f"| training steps | {cell(prov.get('training_steps'))} |",
        f"| hardware | {cell(prov.get('hardware'))} |",
        f"| wall-clock seconds | {cell(prov.get('wall_clock_seconds'))} |",
        "",
        "## Metrics",
        "",
    ]
    lines += _measurement_tables(metrics)
    flat = _flatten({k: v for k, v in metrics.items() if k not in ("fidelity", "utility")})
    if flat:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {cell(key)} | {cell(value)} |" for key, value in flat]
    elif not metrics:
        lines.append("No metrics were recorded when this checkpoint was saved.")
    shown = {
        "data",
        "real_steps",
        "training_steps",
        "hardware",
        "wall_clock_seconds",
        "num_parameters",
        "start_bank",
    }
    extra = [(k, v) for k, v in _flatten(prov) if k.split(".")[0] not in shown]
    lines += ["", "## Provenance", "", "| | |", "|---|---|"]
    lines += [f"| {cell(key)} | {cell(value)} |" for key, value in extra]
    lines += [
        "",
        "## Files",
        "",
        f"`{CONFIG_FILE}` (format version {config.get('format_version')}: configuration, provenance, "
        f"metrics, checksums), `{WEIGHTS_FILE}` (weights), `{STARTS_FILE}` (real context segments "
        f"dreams start from), `{CARD_FILE}` (this card). Loading never unpickles.",
        "",
    ]
    return "\n".join(lines)


def _measurement_tables(metrics: Mapping[str, Any]) -> list[str]:
    """Readable tables for the fidelity and utility results of ``neuralenvs.bench``."""
    lines: list[str] = []
    fidelity = metrics.get("fidelity")
    if isinstance(fidelity, Mapping) and isinstance(fidelity.get("steps"), Mapping):
        lines += [
            f"Fidelity on held-out real episodes ({fidelity.get('windows')} dreams fed the real actions), "
            "against repeating the last real frame:",
            "",
            "| step | PSNR dream | PSNR repeat-last | SSIM dream | SSIM repeat-last | n |",
            "|---|---|---|---|---|---|",
        ]
        for step, row in fidelity["steps"].items():
            if isinstance(row, Mapping):
                values = [row.get(k) for k in ("psnr", "psnr_baseline", "ssim", "ssim_baseline")]
                cells = " | ".join(f"{v:.3f}" if isinstance(v, (int, float)) else "?" for v in values)
                lines.append(f"| {step} | {cells} | {row.get('n')} |")
        for head in ("reward", "termination"):
            pr = fidelity.get(head)
            if isinstance(pr, Mapping):
                lines.append(
                    f"\n{head}: precision {pr.get('precision')}, recall {pr.get('recall')} "
                    f"({pr.get('predicted')} predicted, {pr.get('real')} real nonzero steps)"
                )
        lines.append("")
    utility = metrics.get("utility")
    if isinstance(utility, Mapping) and isinstance(utility.get("agent"), Mapping):
        agent, random = utility["agent"], utility.get("random") or {}
        lines += [
            f"Utility: {str(utility.get('algo')).upper()} trained only in the dream for "
            f"{utility.get('dream_steps')} dreamed steps, then {agent.get('n_episodes')} real games:",
            "",
            "| policy | real return (mean ± s.e.) | HNS |",
            "|---|---|---|",
            f"| trained in dream | {agent.get('mean'):.2f} ± {agent.get('stderr'):.2f} "
            f"| {utility.get('agent_hns'):.3f} |",
            f"| random | {random.get('mean', float('nan')):.2f} ± {random.get('stderr', float('nan')):.2f} "
            f"| {utility.get('random_hns', float('nan')):.3f} |",
            "",
        ]
    return lines


def update_metrics(path: str | os.PathLike[str], **metrics: Any) -> Path:
    """Add measured ``metrics`` to a saved checkpoint and regenerate its model card.

    The weights, start bank and sealed fields are written back unchanged (a half-precision
    checkpoint round-trips exactly through the float32 model)."""
    checkpoint = load_checkpoint(path)
    model = build_world_model(checkpoint, device="cpu")
    config = checkpoint.config
    return save_checkpoint(
        checkpoint.path,
        model=model,
        starts_frames=checkpoint.starts_frames,
        starts_actions=checkpoint.starts_actions,
        game=config.get("game"),
        action_meanings=config.get("action_meanings"),
        provenance=config.get("provenance"),
        metrics={**(config.get("metrics") or {}), **metrics},
        weights_dtype=config.get("weights_dtype", "float32"),
    )


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in tree.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out += _flatten(value, full + ".")
        elif isinstance(value, list):
            out.append((full, ", ".join(map(str, value))))
        else:
            out.append((full, value))
    return out


# --------------------------------------------------------------------------------------------------
# Loading


class _FolderChanged(Exception):
    """The folder being read was moved away by a concurrent save; resolve the path again."""


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and validate a checkpoint folder (or its ``config.json``). Never unpickles.

    Checks that every file is there; ``config.json`` is a JSON object of this format version with
    every field present and well typed and its sealed fields unchanged; the weights and start bank
    match their checksums, parse, and agree with ``obs_shape`` / ``num_actions`` /
    ``weights_dtype``. The model itself is built by :func:`build_world_model`.

    Raises:
        CheckpointError: naming the file (``.path``) and field (``.field``) that is wrong.
    """
    requested = Path(path).expanduser()
    if requested.name == CONFIG_FILE and requested.is_file():
        requested = requested.parent
    raw, folder = _read_checkpoint_files(requested)
    config = _parse_config(folder / CONFIG_FILE, raw[CONFIG_FILE])
    weights = _parse_weights(folder / WEIGHTS_FILE, raw[WEIGHTS_FILE], config)
    frames, actions = _parse_starts(folder / STARTS_FILE, raw[STARTS_FILE], config)
    # The card is prose: damage to it must not make a good model unusable.
    card = raw[CARD_FILE].decode("utf-8", errors="replace")
    return Checkpoint(
        path=requested,
        config=config,
        weights=weights,
        starts_frames=frames,
        starts_actions=actions,
        card=card,
    )


def _read_checkpoint_files(requested: Path) -> tuple[dict[str, bytes], Path]:
    for attempt in range(50):
        try:
            folder = _resolve_folder(requested)
            return _read_folder(folder, recovering=folder != requested), folder
        except _FolderChanged:
            time.sleep(min(0.002 * (attempt + 1), 0.05))
    raise CheckpointError(
        requested,
        None,
        "the folder kept being replaced while it was read",
        "Another process is saving this checkpoint in a tight loop; load it again once it is done.",
    )


def _resolve_folder(requested: Path) -> Path:
    """The folder to read: ``requested``, or during a save's swap the previous checkpoint moved aside.

    Raises ``_FolderChanged`` when the answer changed while it was being worked out (a save
    finished meanwhile), so the caller looks again.
    """
    if requested.is_dir():
        return requested
    if os.path.lexists(requested):
        if requested.is_dir():  # installed by a save between the two checks
            return requested
        raise CheckpointError(
            requested,
            None,
            "this is a file, not a checkpoint folder",
            "Pass the folder that holds config.json.",
        )
    # Inside (or crashed inside) a save's two-rename swap, the previous checkpoint sits in a
    # .<name>.old-* sibling and is complete: read the newest such folder.
    candidates = []
    for folder in _trash_siblings(requested):
        try:
            if all((folder / name).is_file() for name in CHECKPOINT_FILES):
                candidates.append(((folder / CONFIG_FILE).stat().st_mtime, folder))
        except OSError:
            continue
    if candidates:
        return max(candidates)[1]
    if os.path.lexists(requested):  # the save finished and removed the old folder meanwhile
        raise _FolderChanged
    raise CheckpointError(
        requested,
        None,
        "no checkpoint folder exists here",
        "Check the path; neuralenvs.list_envs() lists the shipped dreamed environments.",
    )


def _read_folder(folder: Path, *, recovering: bool) -> dict[str, bytes]:
    """Every checkpoint file's bytes, all from the same folder even if it is renamed meanwhile.

    Opening the folder once and each file relative to that handle (``dir_fd``) pins the folder: a
    concurrent save that renames it away cannot make this read mix two checkpoints. A file missing
    from a folder that is no longer at its path was removed by that save's cleanup: try again.
    ``recovering``: ``folder`` is a save's ``.old-*`` sibling, which that save deletes as soon as the
    new checkpoint is in place, so a missing file there means "look again", never "damaged".
    """
    use_dir_fd = os.open in os.supports_dir_fd and hasattr(os, "O_DIRECTORY")
    dir_fd: int | None = None
    if use_dir_fd:
        try:
            dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError as exc:
            raise _FolderChanged from exc
        except OSError as exc:
            raise CheckpointError(
                folder, None, f"cannot open the folder ({exc.strerror})", "Check its permissions."
            ) from exc
    try:
        data: dict[str, bytes] = {}
        missing: list[str] = []
        for name in CHECKPOINT_FILES:
            try:
                fd = os.open(
                    name if dir_fd is not None else folder / name,
                    # O_NONBLOCK: a FIFO planted under a checkpoint name must not hang the loader.
                    os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0),
                    dir_fd=dir_fd,
                )
            except FileNotFoundError:
                missing.append(name)
                continue
            except OSError as exc:
                raise CheckpointError(
                    folder / name, None, f"cannot open it ({exc.strerror})", "Check its permissions."
                ) from exc
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise CheckpointError(folder / name, None, "not a regular file", _REDOWNLOAD_HINT)
                with os.fdopen(fd, "rb", closefd=False) as f:
                    data[name] = f.read()
            except OSError as exc:
                raise CheckpointError(
                    folder / name, None, f"cannot read it ({exc})", _REDOWNLOAD_HINT
                ) from exc
            finally:
                os.close(fd)
        if missing:
            if recovering or not _still_at(folder, dir_fd):
                raise _FolderChanged
            raise CheckpointError(
                folder / missing[0],
                None,
                f"missing file ({', '.join(missing)} not found); a checkpoint folder holds "
                f"{', '.join(CHECKPOINT_FILES)}",
                "Copy the whole checkpoint folder again, or re-save it with neuralenvs.save_checkpoint.",
            )
        return data
    finally:
        if dir_fd is not None:
            os.close(dir_fd)


def _still_at(folder: Path, dir_fd: int | None) -> bool:
    """Whether ``folder``'s path still names the folder we opened (not a newer one, not nothing)."""
    try:
        now = os.stat(folder)
    except OSError:
        return False
    if dir_fd is None:
        return True
    opened = os.fstat(dir_fd)
    return (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)


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


# --------------------------------------------------------------------------------------------------
# Building the model


def build_world_model(checkpoint: Checkpoint, device: str | torch.device | None = None) -> WorldModel:
    """Build the checkpoint's model, load its weights, move it to ``device``, and set ``eval()``.

    ``device=None`` picks the first CUDA GPU if there is one, else the CPU. Every weight's name and
    shape is checked against the model built from ``config.json`` before loading; stored
    half-precision weights are cast back to the model's own dtypes.

    Raises:
        CheckpointError: the family is unknown here, the config does not build a model, or the
            weights or start bank do not fit the model (naming the tensor and both shapes).
    """
    config = checkpoint.config
    config_file = checkpoint.path / CONFIG_FILE
    weights_file = checkpoint.path / WEIGHTS_FILE
    family = config["family"]
    try:
        cls = model_class(family)
    except ValueError as exc:
        raise CheckpointError(
            config_file,
            "family",
            str(exc),
            f"This neuralenvs cannot build {family!r} models: upgrade neuralenvs, or import the package "
            "that registers this family in neuralenvs.models.FAMILIES before loading.",
        ) from exc
    try:
        model_config = cls.config_class(**config["model_config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            config_file,
            "model_config",
            f"{cls.config_class.__name__} rejects it ({exc})",
            "The checkpoint was probably written by a different neuralenvs version: use that version, or "
            "re-train with this one.",
        ) from exc
    try:
        model = cls(model_config, tuple(config["obs_shape"]), config["num_actions"])
    except Exception as exc:  # a family may reject a config in any way; the cause stays chained
        raise CheckpointError(
            config_file,
            "model_config",
            f"{cls.__name__} cannot be built from it with obs_shape {config['obs_shape']} and "
            f"{config['num_actions']} actions ({type(exc).__name__}: {exc})",
            "The checkpoint was probably written by a different neuralenvs version: use that version.",
        ) from exc

    expected = model.state_dict()
    # tensors the family added after this checkpoint was written load with their neutral value
    stored = {**model.legacy_weight_defaults(), **checkpoint.weights}
    missing = [name for name in expected if name not in stored]
    unexpected = [name for name in stored if name not in expected]
    mismatch_hint = (
        "The weights do not belong to the model config.json describes (different family config or "
        "neuralenvs version): re-save the checkpoint from the trained model."
    )
    if missing:
        raise CheckpointError(
            weights_file,
            missing[0],
            f"tensor missing; the {family} model needs shape {list(expected[missing[0]].shape)} "
            f"({len(missing)} missing in all: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''})",
            mismatch_hint,
        )
    if unexpected:
        raise CheckpointError(
            weights_file,
            unexpected[0],
            f"tensor of shape {list(stored[unexpected[0]].shape)} is not part of the {family} model "
            f"({len(unexpected)} unexpected in all: {', '.join(unexpected[:5])}"
            f"{' ...' if len(unexpected) > 5 else ''})",
            mismatch_hint,
        )
    state: dict[str, torch.Tensor] = {}
    for name, target in expected.items():
        tensor = stored[name]
        if tensor.shape != target.shape:
            raise CheckpointError(
                weights_file,
                name,
                f"tensor has shape {list(tensor.shape)} in the checkpoint but the model needs "
                f"{list(target.shape)}",
                mismatch_hint,
            )
        if tensor.is_floating_point() != target.is_floating_point() or (tensor.dtype == torch.bool) != (
            target.dtype == torch.bool
        ):
            raise CheckpointError(
                weights_file,
                name,
                f"tensor is stored as {tensor.dtype} but the model holds {target.dtype}",
                mismatch_hint,
            )
        state[name] = tensor.to(target.dtype)
    model.load_state_dict(state, strict=True)

    context = _context_frames(model)
    if context is not None and checkpoint.context_frames < context:
        raise CheckpointError(
            checkpoint.path / STARTS_FILE,
            "frames",
            f"start segments have {checkpoint.context_frames} frames but the model starts dreams "
            f"from {context}",
            "Re-save the checkpoint with a start bank of longer segments.",
        )
    return model.to(resolve_device(device)).eval()
