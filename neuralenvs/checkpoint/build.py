"""Building the world model a checkpoint describes, checking every weight against it."""

from __future__ import annotations

import torch

from neuralenvs.checkpoint.format import CONFIG_FILE, STARTS_FILE, WEIGHTS_FILE, Checkpoint
from neuralenvs.errors import CheckpointError
from neuralenvs.models import model_class
from neuralenvs.models.presets import config_from_dict
from neuralenvs.utils.device import resolve_device
from neuralenvs.world_model import WorldModel

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
        model_config = config_from_dict(cls.config_class, config["model_config"])
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

def _context_frames(model: WorldModel) -> int | None:
    # A half-built family may not implement the property yet; the start bank is then not checked.
    try:
        return int(model.context_frames)
    except (NotImplementedError, AttributeError, TypeError):
        return None
