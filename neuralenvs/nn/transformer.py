"""A causal (GPT-style) transformer with a key/value cache that keeps one length per batch row.

A batch of dreams is a batch of sequences that advance together but start, restart and slide their
windows independently. The cache therefore stores, for every row, its own keys and values in fixed
slots ``[0, capacity)`` and its own length: feeding new tokens writes row ``b``'s keys at slots
``lengths[b], lengths[b] + 1, ...`` and lets them attend to slots ``[0, lengths[b] + i]`` only. A row
never reads another row's slots, so restarting or rebuilding some rows leaves the others exactly as
they were.

Attention always spans the whole capacity (masked), never ``max(lengths)``: a row's result then
depends only on its own slots and the (fixed) shapes, so what one dream dreams does not change by a
rounding error when another dream in the batch restarts.

Layout: pre-LayerNorm blocks (attention, then a 4x GELU MLP), a final LayerNorm, dropout on the
residual branches and attention weights (training only), as in GPT-2 and IRIS.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from neuralenvs.nn.attention import attention


@dataclass
class KVCache:
    """Keys and values of every layer for B rows, and each row's length (slots in use)."""

    k: torch.Tensor  # [layers, B, heads, capacity, head_dim]
    v: torch.Tensor  # [layers, B, heads, capacity, head_dim]
    lengths: torch.Tensor  # long [B]: row b uses slots [0, lengths[b])

    @classmethod
    def empty(
        cls,
        layers: int,
        batch_size: int,
        heads: int,
        capacity: int,
        head_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        shape = (layers, batch_size, heads, capacity, head_dim)
        return cls(
            k=torch.zeros(shape, device=device, dtype=dtype),
            v=torch.zeros(shape, device=device, dtype=dtype),
            lengths=torch.zeros(batch_size, dtype=torch.long, device=device),
        )

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def clone(self) -> KVCache:
        return KVCache(self.k.clone(), self.v.clone(), self.lengths.clone())

    def set_rows(self, rows: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Overwrite rows ``rows`` (a bool mask [B] or indices) in place with the prefix keys and values
        ``k``, ``v`` [layers, M, heads, T, head_dim] (from :meth:`Transformer.prefill`): slots ``[0, T)``
        hold them, the rows' lengths become ``T``, and their later slots are zeroed."""
        t = k.shape[3]
        if t > self.capacity:
            raise ValueError(f"a prefix of {t} tokens does not fit in a cache of {self.capacity}")
        idx = rows.nonzero().flatten() if rows.dtype == torch.bool else rows
        new_k = torch.zeros_like(self.k[:, idx])
        new_v = torch.zeros_like(self.v[:, idx])
        new_k[:, :, :, :t] = k
        new_v[:, :, :, :t] = v
        self.k[:, idx] = new_k
        self.v[:, idx] = new_v
        self.lengths[idx] = t


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} does not split into {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.resid_dropout = nn.Dropout(dropout)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v  # each [B, heads, T, head_dim]

    def _out(self, y: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = y.shape
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(b, t, -1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Full causal attention over ``x[B, T, dim]``; also returns this layer's keys and values."""
        q, k, v = self._qkv(x)
        p = self.dropout if self.training else 0.0
        y = attention(q, k, v, causal=True, dropout=p)
        return self._out(y), k, v

    def forward_cached(
        self,
        x: torch.Tensor,
        cache_k: torch.Tensor,
        cache_v: torch.Tensor,
        slots: torch.Tensor,
        mask: torch.Tensor,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """New tokens ``x[B, T, dim]`` whose keys/values go to ``slots[B, T]`` of this layer's cache
        ``[B, heads, capacity, head_dim]`` (written in place); ``mask[B, 1, T, capacity]`` says which
        slots each query sees. With ``rows`` (indices [B] into the cache's rows), x is for those rows."""
        q, k, v = self._qkv(x)
        index = torch.arange(x.shape[0], device=x.device) if rows is None else rows
        cache_k[index[:, None], :, slots] = k.transpose(1, 2).to(cache_k.dtype)  # [B, T, heads, head_dim]
        cache_v[index[:, None], :, slots] = v.transpose(1, 2).to(cache_v.dtype)
        if rows is not None:
            cache_k, cache_v = cache_k[rows], cache_v[rows]
        y = attention(q, cache_k, cache_v, mask)
        return self._out(y)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y, k, v = self.attn(self.ln1(x))
        x = x + y
        return x + self.mlp(self.ln2(x)), k, v

    def forward_cached(
        self,
        x: torch.Tensor,
        cache_k: torch.Tensor,
        cache_v: torch.Tensor,
        slots: torch.Tensor,
        mask: torch.Tensor,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn.forward_cached(self.ln1(x), cache_k, cache_v, slots, mask, rows)
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    """A stack of causal blocks on already-embedded tokens ``[B, T, dim]`` (positions are the
    caller's business), with three ways in: :meth:`forward` (training, no cache), :meth:`prefill`
    (a whole prefix, returning its keys and values for a cache) and :meth:`forward_cached` (a few new
    tokens per row on top of a :class:`KVCache`)."""

    def __init__(self, dim: int, layers: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dim, self.num_layers, self.heads = dim, layers, heads
        self.head_dim = dim // heads
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([TransformerBlock(dim, heads, dropout) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(dim)
        self.apply(_init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * layers) so the residual stream's
        # variance does not grow with depth at initialisation
        for block in self.blocks:
            for linear in (block.attn.proj, block.mlp[2]):
                nn.init.normal_(linear.weight, std=0.02 / (2 * layers) ** 0.5)

    def empty_cache(
        self, batch_size: int, capacity: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> KVCache:
        """An empty cache; its ``dtype`` defaults to the one keys are computed in (autocast's, when
        autocast is on): a cache in another dtype is cast at every attention call."""
        p = self.ln_f.weight
        if dtype is None:
            dtype = torch.get_autocast_dtype(p.device.type) if torch.is_autocast_enabled(p.device.type) else p.dtype
        return KVCache.empty(
            self.num_layers, batch_size, self.heads, capacity, self.head_dim, device or p.device, dtype
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(x)
        for block in self.blocks:
            x, _, _ = block(x)
        return self.ln_f(x)

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Causal pass over ``x[B, T, dim]``; returns the outputs and every layer's keys and values,
        each ``[layers, B, heads, T, head_dim]`` (see :meth:`KVCache.set_rows`)."""
        x = self.drop(x)
        ks, vs = [], []
        for block in self.blocks:
            x, k, v = block(x)
            ks.append(k)
            vs.append(v)
        return self.ln_f(x), torch.stack(ks), torch.stack(vs)

    def forward_cached(
        self, x: torch.Tensor, cache: KVCache, slots: torch.Tensor | None = None, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Feed ``x[B, T, dim]``: row b's tokens take slots ``cache.lengths[b] + [0, T)`` and see the
        row's earlier slots and themselves (causally). Updates ``cache`` in place (its tensors and
        lengths): clone it first to keep the old one.

        For a caller that feeds guesses and keeps only what proves right (speculative decoding):
        ``slots[B, T]`` puts the tokens there instead (each query sees the slots up to its own) and
        leaves ``cache.lengths`` for the caller to set; ``rows`` (indices [B]) feeds only those rows
        of the cache, ``x`` and ``slots`` then being theirs."""
        b, t, _ = x.shape
        if b != (cache.batch_size if rows is None else len(rows)):
            raise ValueError(f"{b} rows of tokens for a cache of {cache.batch_size} rows")
        advance = slots is None
        if rows is not None and advance:
            raise ValueError("feeding some rows of a cache needs their slots")
        if slots is None:
            slots = cache.lengths[:, None] + torch.arange(t, device=x.device)  # [B, T]
        if int(slots.max()) >= cache.capacity:
            raise ValueError(f"the cache is full: {cache.capacity} slots")
        mask = torch.arange(cache.capacity, device=x.device) <= slots[:, :, None]  # [B, T, capacity]
        mask = mask[:, None]
        x = self.drop(x)
        for layer, block in enumerate(self.blocks):
            x = block.forward_cached(x, cache.k[layer], cache.v[layer], slots, mask, rows)
        if advance:
            cache.lengths += t
        return self.ln_f(x)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
