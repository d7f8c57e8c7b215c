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

The package, one responsibility per file: ``format`` (the files, sealed fields, :class:`Checkpoint`,
digests), ``save`` (validate and serialise, :func:`update_metrics`), ``publish`` (the atomic folder
swap), ``card`` (the model card), ``load`` (reading a folder safely), ``parse`` (validating each
file's bytes) and ``build`` (the model a checkpoint describes).
"""

from __future__ import annotations

from neuralenvs.checkpoint.build import build_world_model
from neuralenvs.checkpoint.card import make_model_card
from neuralenvs.checkpoint.format import (
    CARD_FILE,
    CHECKPOINT_FILES,
    CONFIG_FILE,
    FORMAT_VERSION,
    SEALED_FIELDS,
    STARTS_FILE,
    WEIGHTS_DTYPES,
    WEIGHTS_FILE,
    Checkpoint,
    config_digest,
    file_digest,
)
from neuralenvs.checkpoint.load import load_checkpoint
from neuralenvs.checkpoint.save import resample, save_changed, save_checkpoint, update_metrics
from neuralenvs.utils.device import describe_hardware, resolve_device

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
    "resample",
    "save_changed",
    "make_model_card",
    "resolve_device",
    "save_checkpoint",
    "update_metrics",
]
