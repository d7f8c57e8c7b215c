"""A spatio-temporal (ST) transformer over a video of token grids, as in Genie (Bruce et al. 2024).

Input is ``x[B, T, S, dim]``: T frames of S tokens each. Each block attends first *spatially*
(the S tokens of one frame attend to each other, bidirectionally), then *temporally* (each token
attends to the tokens at the same spatial position in other frames, through a mask the caller
gives), then applies a 4x GELU MLP; pre-LayerNorm and residual branches throughout. Factoring
attention this way makes its cost linear in T instead of quadratic in T * S, which is what lets a
CPU dream a frame of 16 tokens against a few frames of context in a few milliseconds.

Temporal attention takes an explicit boolean mask ``[B, T, Tc + T]`` (True: may attend) over the
``Tc`` frames of an optional *context* (keys and values of frames computed earlier, per layer) and
the ``T`` frames of ``x``. That one primitive covers everything a MaskGIT world model needs:

- training with a block-causal mask over several frames at once (and over copies of frames);
- a *prefill*: a causal pass over real context frames that returns every layer's temporal keys and
  values (:meth:`SpatioTemporalTransformer.forward` with ``return_kv=True``);
- repeated passes over one new frame against that context (MaskGIT's refinement steps), which
  never recompute the context.

Every query must be allowed at least one key (its own frame, typically), or its softmax is empty.
"""

from __future__ import annotations

import torch
from torch import nn

from neuralenvs.nn.attention import attention

# per layer: the temporal keys and values of the context frames, each [B * S, heads, Tc, head_dim]
LayerKV = tuple[torch.Tensor, torch.Tensor]


class _Attention(nn.Module):
    """Multi-head attention projections; the caller decides what attends to what."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} does not split into {heads} heads")
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x[N, L, dim]`` -> q, k, v, each ``[N, heads, L, head_dim]``."""
        n, length, _ = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        p = self.dropout if self.training else 0.0
        y = attention(q, k, v, mask, dropout=p)
        n, _, length, _ = y.shape
        return self.proj(y.transpose(1, 2).reshape(n, length, -1))


class SpatioTemporalBlock(nn.Module):
    """Spatial attention, temporal attention, MLP (each pre-LayerNorm, residual)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.ln_spatial = nn.LayerNorm(dim)
        self.spatial = _Attention(dim, heads, dropout)
        self.ln_temporal = nn.LayerNorm(dim)
        self.temporal = _Attention(dim, heads, dropout)
        self.ln_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, context: LayerKV | None = None
    ) -> tuple[torch.Tensor, LayerKV]:
        """``x[B, T, S, dim]``, temporal ``mask[B, T, Tc + T]``; returns the output and this layer's
        temporal keys and values of ``x``'s frames (``[B * S, heads, T, head_dim]`` each)."""
        b, t, s, d = x.shape
        # spatial: every frame on its own
        h = self.ln_spatial(x).reshape(b * t, s, d)
        q, k, v = self.spatial.qkv_heads(h)
        x = x + self.drop(self.spatial.attend(q, k, v, None).reshape(b, t, s, d))
        # temporal: every spatial position on its own, over the context's frames and x's
        h = self.ln_temporal(x).transpose(1, 2).reshape(b * s, t, d)
        q, k, v = self.temporal.qkv_heads(h)
        own = (k, v)
        if context is not None:
            k = torch.cat([context[0], k], dim=2)
            v = torch.cat([context[1], v], dim=2)
        attn_mask = mask.repeat_interleave(s, dim=0)[:, None]  # [B * S, 1, T, Tc + T]
        y = self.temporal.attend(q, k, v, attn_mask)
        x = x + self.drop(y.reshape(b, s, t, d).transpose(1, 2))
        x = x + self.drop(self.mlp(self.ln_mlp(x)))
        return x, own


class SpatioTemporalTransformer(nn.Module):
    """A stack of :class:`SpatioTemporalBlock` on already-embedded tokens (positions are the
    caller's business) and a final LayerNorm."""

    def __init__(self, dim: int, layers: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dim, self.num_layers = dim, layers
        self.blocks = nn.ModuleList([SpatioTemporalBlock(dim, heads, dropout) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(dim)
        self.apply(_init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(number of residual branches) at initialisation
        for block in self.blocks:
            for linear in (block.spatial.proj, block.temporal.proj, block.mlp[2]):
                nn.init.normal_(linear.weight, std=0.02 / (3 * layers) ** 0.5)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        context: list[LayerKV] | None = None,
        return_kv: bool = False,
    ) -> tuple[torch.Tensor, list[LayerKV] | None]:
        """``x[B, T, S, dim]`` attending temporally under ``mask[B, T, Tc + T]`` to ``context`` (one
        :data:`LayerKV` per layer, ``Tc`` frames; ``None``: ``Tc = 0``) and to itself. Returns the
        normalised outputs ``[B, T, S, dim]`` and, with ``return_kv``, every layer's keys and values
        of ``x``'s frames, to be the context of later calls."""
        tc = 0 if context is None else context[0][0].shape[2]
        if mask.shape != (x.shape[0], x.shape[1], tc + x.shape[1]):
            raise ValueError(
                f"temporal mask must be [B, T, Tc + T] = {[x.shape[0], x.shape[1], tc + x.shape[1]]}, "
                f"got {list(mask.shape)}"
            )
        kvs: list[LayerKV] = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, mask, None if context is None else context[i])
            if return_kv:
                kvs.append(kv)
        return self.ln_f(x), (kvs if return_kv else None)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
