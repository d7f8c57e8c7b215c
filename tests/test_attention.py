"""The package's attention function computes what PyTorch's fused kernel computes."""

import pytest
import torch
import torch.nn.functional as F

from neuralenvs.nn.attention import attention


def _qkv(length: int, keys: int, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 4, length, 16, generator=g)
    k, v = (torch.randn(3, 4, keys, 16, generator=g) for _ in range(2))
    return q.to(dtype), k.to(dtype), v.to(dtype)


@pytest.mark.parametrize("length,keys", [(16, 16), (1, 9), (3, 9)])
def test_attention_matches_the_fused_kernel_with_a_mask_and_causally(length, keys):
    q, k, v = _qkv(length, keys)
    mask = torch.rand(3, 1, length, keys, generator=torch.Generator().manual_seed(1)) > 0.4
    mask[..., 0] = True
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(attention(q, k, v, mask), expected, atol=1e-5, rtol=1e-5)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(attention(q, k, v, causal=True), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attention(q, k, v), F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5)


def test_attention_in_bf16_stays_close_to_fp32_and_casts_keys_to_the_queries_dtype():
    q, k, v = _qkv(16, 16)
    out = attention(q.bfloat16(), k, v)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), attention(q, k, v), atol=0.05, rtol=0.05)


def test_gradients_flow_through_a_masked_attention():
    q, k, v = _qkv(2, 5)
    q.requires_grad_(True)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 2:] = False
    attention(q, k, v, mask).sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


def test_a_mask_and_causal_together_are_refused():
    q, k, v = _qkv(2, 2)
    with pytest.raises(ValueError, match="either"):
        attention(q, k, v, torch.ones(2, 2, dtype=torch.bool), causal=True)
