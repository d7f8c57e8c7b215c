"""Exceptions raised by neuralenvs.

Every error neuralenvs raises on purpose derives from :class:`NeuralEnvsError`, so callers can catch
the package's own failures without also swallowing bugs (``TypeError``, ``KeyError``, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["NeuralEnvsError", "CheckpointError"]

_DEFAULT_HINT = (
    "The checkpoint is damaged, incomplete or was edited by hand: copy or download it again, or "
    "re-save it from its model with neuralenvs.save_checkpoint."
)


class NeuralEnvsError(Exception):
    """Base class of every error neuralenvs raises on purpose."""


class CheckpointError(NeuralEnvsError):
    """A checkpoint folder cannot be read, or does not describe a model this neuralenvs can build.

    Attributes:
        path: the file that is wrong (or the checkpoint folder, when the folder itself is).
        field: the JSON field, array or tensor name inside that file, or ``None`` when the whole
            file is at fault (missing, unparsable, failed checksum).
        problem: what is wrong, in words.
        hint: what the user can do about it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        field: str | None,
        problem: str,
        hint: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.field = field
        self.problem = problem
        self.hint = hint if hint is not None else _DEFAULT_HINT
        where = f"{self.path}" if field is None else f"{self.path}, field {field!r}"
        super().__init__(f"bad checkpoint: {where}: {problem}. {self.hint}")

    def __reduce__(self) -> tuple[type[CheckpointError], tuple[Path, str | None, str, str]]:
        # Keeps the error picklable (multiprocessing, Ray workers) despite the custom __init__.
        return (type(self), (self.path, self.field, self.problem, self.hint))
