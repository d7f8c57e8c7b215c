"""Scaled dot-product attention, the one function every attention layer of the package calls.

``F.scaled_dot_product_attention`` picks a fused kernel. For the short sequences and small heads
of these world models (16 to 136 keys, head size 8 to 32) the fused CPU kernel is slower than two
matrix products and a softmax: 3 to 5 times in bf16 and 1.2 to 1.7 times in fp32, measured on a
2-core AMD EPYC with AVX-512 bf16 (``benchmarks/dream_speed.py`` gives the effect on whole dreams).
On CPUs the products are therefore written out, unless dropout is asked for; elsewhere (CUDA's
flash and memory-efficient kernels pay there) the fused kernel runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    causal: bool = False,
    dropout: float = 0.0,
) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` over ``q[..., L, d]``, ``k, v[..., S, d]``, as
    ``F.scaled_dot_product_attention`` computes it. ``mask`` is boolean, broadcastable to
    ``[..., L, S]``, True where a query may attend; ``causal`` lets query ``i`` see keys ``0 .. i``
    (top-left aligned, as PyTorch's ``is_causal``). Keys and values are cast to the queries'
    dtype. Every query must be allowed at least one key (one allowed none averages all values)."""
    if causal and mask is not None:
        raise ValueError("give either a mask or causal=True, not both")
    k, v = k.to(q.dtype), v.to(q.dtype)
    if q.device.type != "cpu" or dropout > 0:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal)
    if causal:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
    scores = ((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)).float()
    if mask is not None:  # a finite fill: no NaN, and no pass to remove them
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1)
    return weights.to(q.dtype) @ v
