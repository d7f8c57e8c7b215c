"""Reading a checkpoint folder: find it (covering the instant a save swaps folders), read every file
relative to one opened folder, and hand the bytes to :mod:`neuralenvs.checkpoint.parse`."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from neuralenvs.checkpoint.format import (
    _REDOWNLOAD_HINT,
    CARD_FILE,
    CHECKPOINT_FILES,
    CONFIG_FILE,
    STARTS_FILE,
    WEIGHTS_FILE,
    Checkpoint,
)
from neuralenvs.checkpoint.parse import _parse_config, _parse_starts, _parse_weights
from neuralenvs.checkpoint.publish import _trash_siblings
from neuralenvs.errors import CheckpointError

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


