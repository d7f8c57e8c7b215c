"""Small helpers shared across neuralenvs (file I/O)."""

from neuralenvs.utils.io import atomic_write_bytes, atomic_write_text

__all__ = ["atomic_write_bytes", "atomic_write_text"]
