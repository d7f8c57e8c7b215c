"""Atomic publication of a checkpoint folder: build it under a hidden temporary sibling, fsync, then
rename it into place; the previous folder is put back if the swap fails."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from neuralenvs.checkpoint.format import CHECKPOINT_FILES
from neuralenvs.utils.io import fsync_dir, temp_sibling, write_file_durably

_STALE_TRASH_SECONDS = 60.0  # a .<name>.old-* folder older than this is a crashed save's leftover

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


