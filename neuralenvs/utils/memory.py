"""Let large tensors reuse freed memory instead of faulting in fresh pages (Linux, glibc).

glibc's ``malloc`` serves a block above its mmap threshold (128 KiB, rising by itself to at most
32 MiB) with new pages from the kernel and gives them back when the block is freed, so the next
block of that size is paged in again, one page fault per 4 KiB on first touch. A dream step and a
PPO minibatch allocate and free tensors of several to tens of MB many times a second: on the 2-core
AMD EPYC this project measures on, dividing a minibatch of 256 stacked 64x64x12 observations by 255
took 36 ms with fresh pages and 7 ms with reused ones; PPO's update in a dream took half the time
and the whole imagination loop ran 1.2 to 1.3 times as fast (``benchmarks/dream_speed.py
--fresh-pages`` measures without it; docs/speed.md).

:func:`reuse_freed_memory` raises the mmap and trim thresholds, so such blocks come from and go
back to the heap. The process then keeps its peak memory instead of returning it to the system,
which a training job wants anyway. The command line and the training helpers call it; a script of
your own can too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30  # 1 GiB: no tensor of these models is larger

_applied = False


def reuse_freed_memory() -> bool:
    """Make glibc keep freed blocks for reuse (see the module docstring). Idempotent; returns
    whether the setting is in force (False off Linux, or with a C library that is not glibc)."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _applied = mallopt(_M_MMAP_THRESHOLD, _THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, _THRESHOLD) == 1
    return _applied
