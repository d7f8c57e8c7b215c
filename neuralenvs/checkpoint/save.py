"""Writing a checkpoint: validate what is given, serialise it, publish the folder atomically
(:mod:`neuralenvs.checkpoint.publish`), and rewrite a saved one with new metrics."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import json
import os
import platform
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from safetensors.torch import load as safetensors_from_bytes

from neuralenvs.checkpoint.build import _context_frames, build_world_model
from neuralenvs.checkpoint.card import make_model_card
from neuralenvs.checkpoint.format import (
    CARD_FILE,
    CONFIG_FILE,
    FORMAT_VERSION,
    STARTS_FILE,
    WEIGHTS_DTYPES,
    WEIGHTS_FILE,
    Checkpoint,
    _jsonable,
    _package_version,
    config_digest,
    file_digest,
)
from neuralenvs.checkpoint.load import load_checkpoint
from neuralenvs.checkpoint.publish import _publish_folder
from neuralenvs.models import FAMILIES
from neuralenvs.utils.device import describe_hardware
from neuralenvs.world_model import WorldModel

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
    same_weights_as: bytes | None = None,
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
        same_weights_as: the bytes of a weights file saved before; kept byte for byte when they hold
            exactly the tensors that would be written (safetensors orders its metadata at random, so
            re-saving a checkpoint's metrics would otherwise rewrite megabytes of unchanged weights).

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

    weights_bytes = _serialize_weights(model, WEIGHTS_DTYPES[weights_dtype], same_as=same_weights_as)
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




def _model_config_dict(model: WorldModel) -> dict[str, Any]:
    config = model.config
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(
            f"{type(model).__name__}.config must be a dataclass instance, got {type(config).__name__}"
        )
    # strict: a config value JSON cannot hold exactly (NaN, an object) must fail here, not be
    # silently changed into a different model on load.
    return _jsonable(dataclasses.asdict(config), "model_config", strict=True)



def _serialize_weights(model: WorldModel, dtype: torch.dtype, same_as: bytes | None = None) -> bytes:
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
    if same_as is not None and _same_tensors(safetensors_from_bytes(same_as), tensors):
        return same_as
    metadata = {"format": "pt", "neuralenvs_format_version": str(FORMAT_VERSION)}
    return safetensors.torch.save(tensors, metadata=metadata)


def _same_tensors(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def _serialize_starts(frames: np.ndarray, actions: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, frames=frames, actions=actions)
    return buffer.getvalue()


def update_metrics(path: str | os.PathLike[str], **metrics: Any) -> Path:
    """Add measured ``metrics`` to a saved checkpoint and regenerate its model card.

    The weights, start bank and sealed fields are written back unchanged (a half-precision
    checkpoint round-trips exactly through the float32 model)."""
    checkpoint = load_checkpoint(path)
    config = checkpoint.config
    return _save_again(checkpoint, build_world_model(checkpoint, device="cpu"), checkpoint.path,
                       provenance=config.get("provenance"), metrics={**(config.get("metrics") or {}), **metrics})


def resample(path: str | os.PathLike[str], out: str | os.PathLike[str], **settings: Any) -> Path:
    """Save the checkpoint at ``path`` again at ``out`` with other dream-time settings (a family
    config's ``DREAM_TIME_FIELDS``, e.g. the diffusion sampler's steps): same weights and start
    bank, and the metrics measured under the old settings dropped, since they no longer hold (the
    free-text ``notes`` stay)."""
    checkpoint = load_checkpoint(path)
    model = build_world_model(checkpoint, device="cpu")
    allowed = getattr(model.config, "DREAM_TIME_FIELDS", ())
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise ValueError(f"{unknown} cannot change after training; the {checkpoint.config['family']} family's "
                         f"dream-time settings are {list(allowed) or 'none'}")
    before = {name: getattr(model.config, name) for name in settings}
    model.config = dataclasses.replace(model.config, **settings)
    return save_changed(checkpoint, model, out, resampled={"before": before, "after": settings})


def save_changed(checkpoint: Checkpoint, model: WorldModel, out: str | os.PathLike[str], **change: Any) -> Path:
    """Save ``model``, built from ``checkpoint`` and changed since, at ``out``: the same start bank,
    game and actions, the provenance with ``change`` added (each key with ``"from"``: the old
    checkpoint's path), and the metrics dropped, since they were measured on the old model (the
    free-text ``notes`` stay)."""
    config = checkpoint.config
    provenance = dict(config.get("provenance") or {})
    for key, value in change.items():
        provenance[key] = {"from": str(checkpoint.path), **value}
    notes = {k: v for k, v in (config.get("metrics") or {}).items() if k == "notes"}
    return _save_again(checkpoint, model, out, provenance=provenance, metrics=notes)


def _save_again(
    checkpoint: Checkpoint, model: WorldModel, out: str | os.PathLike[str], *,
    provenance: Mapping[str, Any] | None, metrics: Mapping[str, Any],
) -> Path:
    """Write ``model`` at ``out`` with ``checkpoint``'s start bank, game, actions and weight dtype."""
    config = checkpoint.config
    return save_checkpoint(
        out,
        model=model,
        starts_frames=checkpoint.starts_frames,
        starts_actions=checkpoint.starts_actions,
        game=config.get("game"),
        action_meanings=config.get("action_meanings"),
        provenance=provenance,
        metrics=metrics,
        weights_dtype=config.get("weights_dtype", "float32"),
        same_weights_as=(checkpoint.path / WEIGHTS_FILE).read_bytes(),
    )
