"""IRIS's world model: a GPT over a sequence of blocks, one block per time step.

Block ``t`` is ``[z_t,0, ..., z_t,P-1, a_t]``: the P tokens of frame t, then the action taken at it.
Outputs are read where their inputs are known:

- at ``z_t,i`` (i < P - 1): the logits of ``z_t,i+1`` (the frame's next token);
- at ``a_t``: the logits of ``z_t+1,0`` (the next frame's first token) and the reward sign (3
  classes) and termination (2 classes) of the transition (frame t, action t);
- at ``z_t,P-1``: nothing (it would predict the action, which the agent chooses).

Tokens are embedded by one table for frame tokens and one for actions (chosen by the position in
the block) plus a learned absolute position embedding over the ``context_length * (P + 1)``
positions of the window. Heads are 2-layer MLPs as in IRIS.
"""

from __future__ import annotations

import torch
from torch import nn

from neuralenvs.models.token.config import TokenConfig
from neuralenvs.nn.reward_end import NUM_END_CLASSES, NUM_REWARD_CLASSES
from neuralenvs.nn.transformer import KVCache, Transformer


def _head(dim: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, out))


class WorldModelGPT(nn.Module):
    def __init__(self, cfg: TokenConfig, tokens_per_frame: int, num_actions: int) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.tokens_per_frame = tokens_per_frame
        self.block_size = tokens_per_frame + 1
        self.max_tokens = cfg.context_length * self.block_size
        self.vocab_size, self.num_actions = cfg.vocab_size, num_actions
        self.obs_embedding = nn.Embedding(cfg.vocab_size, d)
        self.action_embedding = nn.Embedding(num_actions, d)
        self.pos_embedding = nn.Embedding(self.max_tokens, d)
        self.transformer = Transformer(d, cfg.num_layers, cfg.num_heads, cfg.dropout)
        self.head_obs = _head(d, cfg.vocab_size)
        self.head_reward = _head(d, NUM_REWARD_CLASSES)
        self.head_end = _head(d, NUM_END_CLASSES)
        for module in (self.obs_embedding, self.action_embedding, self.pos_embedding, *self.heads()):
            for sub in module.modules():
                if isinstance(sub, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(sub.weight, std=0.02)
                if isinstance(sub, nn.Linear):
                    nn.init.zeros_(sub.bias)
        # priors of an untrained model: most steps give no reward and do not end an episode (an
        # untrained dream then runs to its horizon instead of ending at random, and training starts
        # near the data's base rates)
        with torch.no_grad():
            self.head_reward[-1].bias.copy_(torch.tensor([-3.0, 0.0, -3.0]))
            self.head_end[-1].bias.copy_(torch.tensor([0.0, -4.0]))

    def heads(self) -> tuple[nn.Module, ...]:
        return (self.head_obs, self.head_reward, self.head_end)

    # ---- sequences ---------------------------------------------------------------------------

    def interleave(self, tokens: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Frame tokens ``[B, T, P]`` and the actions taken at the first ``T - 1`` frames ``[B, >= T - 1]``
        -> the sequence ``[B, T * (P + 1) - 1]`` (every block but the last has its action)."""
        b, t, _ = tokens.shape
        acts = actions[:, : t - 1]
        blocks = torch.cat([tokens[:, : t - 1], acts[..., None]], dim=2).flatten(1)
        return torch.cat([blocks, tokens[:, t - 1]], dim=1)

    def is_action(self, positions: torch.Tensor) -> torch.Tensor:
        return positions % self.block_size == self.block_size - 1

    def embed(self, seq: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Embed tokens ``seq[B, T]`` at window positions ``positions[B, T]`` (or ``[T]``)."""
        positions = positions.expand_as(seq)
        is_action = self.is_action(positions)
        obs = self.obs_embedding(seq.clamp(0, self.vocab_size - 1))
        act = self.action_embedding(seq.clamp(0, self.num_actions - 1))
        return torch.where(is_action[..., None], act, obs) + self.pos_embedding(positions)

    # ---- training ----------------------------------------------------------------------------

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Outputs ``[B, T, dim]`` of the whole causal sequence ``seq[B, T]`` (starting at position 0)."""
        if seq.shape[1] > self.max_tokens:
            raise ValueError(f"a sequence of {seq.shape[1]} tokens is longer than the window ({self.max_tokens})")
        positions = torch.arange(seq.shape[1], device=seq.device)
        return self.transformer(self.embed(seq, positions))

    # ---- dreaming ----------------------------------------------------------------------------

    def empty_cache(self, batch_size: int, device: torch.device | None = None) -> KVCache:
        return self.transformer.empty_cache(batch_size, self.max_tokens, device)

    def prefill(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``[layers, B, heads, T, head_dim]`` of the sequence ``seq[B, T]`` (from
        position 0), to start a cache with (:meth:`KVCache.set_rows`)."""
        positions = torch.arange(seq.shape[1], device=seq.device)
        _, k, v = self.transformer.prefill(self.embed(seq, positions))
        return k, v

    def feed(
        self, seq: torch.Tensor, cache: KVCache, slots: torch.Tensor | None = None, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Feed ``seq[B, T]`` after each row's cached tokens (updating ``cache`` in place) and return
        the outputs ``[B, T, dim]``; with ``slots[B, T]``, at those window positions instead, and with
        ``rows``, to those rows of the cache only, leaving the cache's lengths to the caller
        (:meth:`Transformer.forward_cached`)."""
        positions = cache.lengths[:, None] + torch.arange(seq.shape[1], device=seq.device) if slots is None else slots
        return self.transformer.forward_cached(self.embed(seq, positions), cache, slots, rows)
