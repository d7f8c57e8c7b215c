"""The allocator setting the command line and the training helpers apply."""

import sys

import pytest
import torch

from neuralenvs.utils.memory import reuse_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a glibc setting")
def test_reuse_freed_memory_takes_effect_once_and_tensors_still_work():
    assert reuse_freed_memory() is True
    assert reuse_freed_memory() is True  # idempotent
    a = torch.ones(4_000_000)  # 16 MB: above glibc's default mmap threshold
    del a
    b = torch.zeros(4_000_000)
    assert float(b.sum()) == 0.0
