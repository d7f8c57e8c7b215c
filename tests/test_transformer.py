"""The causal transformer of ``neuralenvs.nn.transformer`` and its key/value cache with one length
per row: what the token family dreams with."""

from __future__ import annotations

import pytest
import torch

from neuralenvs.nn.transformer import Transformer

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_kv_cache_rows_are_independent():
    """The generic transformer: feeding different numbers of tokens to different rows gives each row
    what a plain causal pass over its own tokens gives."""
    torch.manual_seed(0)
    net = Transformer(dim=16, layers=2, heads=2).eval()
    x = torch.randn(2, 7, 16)
    with torch.no_grad():
        full = net(x)
        cache = net.empty_cache(2, 10)
        k, v = net.prefill(x[:1, :3])[1:]
        cache.set_rows(torch.tensor([True, False]), k, v)  # row 0 has 3 tokens cached, row 1 none
        k, v = net.prefill(x[1:, :5])[1:]
        cache.set_rows(torch.tensor([1]), k, v)  # row 1: 5 tokens
        out = net.forward_cached(torch.stack([x[0, 3:5], x[1, 5:7]]), cache)
    torch.testing.assert_close(out[0], full[0, 3:5], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[1], full[1, 5:7], rtol=1e-5, atol=1e-5)
    assert cache.lengths.tolist() == [5, 7]


def test_kv_cache_takes_tokens_at_given_slots_for_some_rows():
    """Guesses fed at explicit slots to some rows: each query sees its row's slots up to its own, the
    other rows and every length stay as they were, and a rewrite at the same slots replaces them."""
    torch.manual_seed(0)
    net = Transformer(dim=16, layers=2, heads=2).eval()
    x = torch.randn(3, 6, 16)
    with torch.no_grad():
        full = net(x)
        cache = net.empty_cache(3, 8)
        k, v = net.prefill(x[:, :2])[1:]
        cache.set_rows(torch.arange(3), k, v)  # 2 tokens cached in every row
        before = cache.clone()
        wrong = torch.randn(2, 2, 16)  # guesses for rows 0 and 2 at slots 2 and 3
        net.forward_cached(wrong, cache, torch.tensor([[2, 3], [2, 3]]), torch.tensor([0, 2]))
        assert cache.lengths.tolist() == [2, 2, 2]
        assert torch.equal(cache.k[:, 1], before.k[:, 1]) and torch.equal(cache.v[:, 1], before.v[:, 1])
        out = net.forward_cached(x[[0, 2], 2:5], cache, torch.tensor([[2, 3, 4], [2, 3, 4]]), torch.tensor([0, 2]))
    torch.testing.assert_close(out, full[[0, 2], 2:5], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="needs their slots"):
        net.forward_cached(x[:1, :1], cache, rows=torch.tensor([0]))
