"""Durable, atomic file writes: a reader sees the old file or the new one, never a torn one.

A plain ``open(path, "wb").write(...)`` killed half-way (a training run stopped by the scheduler, a
full disk) leaves a truncated file where a good one used to be. Here every write goes to a temporary
file in the same folder (so the final rename never crosses file systems), is flushed to disk with
``fsync``, and is then renamed over the target with ``os.replace``, which POSIX and Windows both make
atomic. The folder is fsynced as well so the rename itself survives a power cut.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

# What the writers accept: anything with the buffer protocol. (``collections.abc.Buffer`` is
# Python 3.12+, and the package supports 3.10.)
BytesLike = bytes | bytearray | memoryview

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "temp_sibling",
    "write_file_durably",
]


def temp_sibling(path: str | os.PathLike[str], tag: str = "tmp") -> Path:
    """A fresh hidden name next to ``path`` (``.<name>.<tag>-<random>``), in the same folder so a
    rename to ``path`` stays on one file system. Nothing is created."""
    path = Path(path)
    return path.with_name(f".{path.name}.{tag}-{secrets.token_hex(6)}")


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (names created, renamed, removed) to disk.

    Windows cannot open folders for fsync and gives the same guarantee through NTFS journaling, and
    some file systems refuse it; both are ignored because there is nothing more the caller could do.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_file_durably(path: str | os.PathLike[str], data: BytesLike, *, exclusive: bool = True) -> None:
    """Write ``data`` to ``path`` and fsync it (not atomic by itself: use it for files inside a
    folder that is published atomically, or through :func:`atomic_write_bytes`).

    ``exclusive`` refuses to overwrite an existing file, which guards temporary names against
    collisions. Permissions follow the umask like any normally created file (``tempfile.mkstemp``
    would make them 0600 and hide shared checkpoints from other users).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
    if exclusive:
        flags |= os.O_EXCL
    fd = os.open(path, flags, 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike[str], data: BytesLike) -> Path:
    """Replace ``path`` with ``data`` atomically and durably; returns the path.

    ``data`` is anything with the buffer protocol (``bytes``, ``bytearray``, ``memoryview``,
    ``BytesIO.getbuffer()``). The parent folder must exist. On any failure the temporary file is
    removed and the old ``path``, if any, is left as it was.
    """
    path = Path(path)
    tmp = temp_sibling(path)
    try:
        write_file_durably(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        # BaseException too: a KeyboardInterrupt mid-write must not leave temporary files behind.
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """:func:`atomic_write_bytes` for text (UTF-8 by default, newlines written as given)."""
    return atomic_write_bytes(path, text.encode(encoding))
