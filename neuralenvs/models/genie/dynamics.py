"""The dynamics model: a spatio-temporal transformer that dreams the next frame's tokens by MaskGIT.

A window holds up to ``context_length`` frames at temporal positions ``0 .. W - 1``; the frame
being dreamed sits just after the real or dreamed frames before it: at the last position, ``W - 1``,
when the window is full, earlier while a window that slid by several frames fills up again. A dream
with fewer frames leaves the first positions empty and masked out, exactly as a training segment that
starts at an episode's beginning does. Training predicts a frame at every position from the frames
before it, so each of these is a case it learned.

Every token is embedded as ``token embedding + spatial position + temporal position + the latent
action that led into its frame`` (Genie adds action embeddings to the frame they produce). The
token of a not-yet-dreamed position is a learned ``[MASK]``; the action of a frame whose predecessor
is unknown (the oldest frame of a window, the first frame of an episode) is a learned
``[UNKNOWN]``.

Temporal attention is causal over *clean* frames. Training feeds, besides the clean frames
``0 .. W - 2``, a *masked copy* of each frame ``1 .. W - 1`` (a random share of its tokens replaced
by ``[MASK]``, the share drawn from MaskGIT's cosine schedule) which attends to the clean frames
before it and to itself. So every training prediction is made exactly as a dream makes it: from
clean past frames, never from a corrupted context, and all ``W - 1`` frames of a segment are
trained in one pass.

Dreaming a frame (``maskgit_steps`` passes): start with every token masked; each pass predicts all
masked tokens, samples them at ``temperature``, and keeps the most confident ones, so that after
pass ``n`` of ``N`` a share ``cos(pi/2 * n/N)`` of the tokens is still masked (none after the last).
The clean past frames' keys and values are computed once and reused by every pass; the last pass
over the finished frame gives its own, so a window can grow frame by frame without recomputing the
frames before (``slide_frames`` in the world model).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from neuralenvs.models.genie.config import GenieConfig
from neuralenvs.nn.reward_end import NUM_END_CLASSES, NUM_REWARD_CLASSES
from neuralenvs.nn.spatiotemporal import LayerKV, SpatioTemporalTransformer


class Dynamics(nn.Module):
    def __init__(self, cfg: GenieConfig, tokens_per_frame: int) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.vocab_size, self.n_latent = cfg.vocab_size, cfg.n_latent
        self.mask_token, self.unknown_action = cfg.vocab_size, cfg.n_latent
        self.window = cfg.context_length
        self.tokens_per_frame = tokens_per_frame
        self.token_embedding = nn.Embedding(cfg.vocab_size + 1, d)  # + [MASK]
        self.action_embedding = nn.Embedding(cfg.n_latent + 1, d)  # + [UNKNOWN]
        self.spatial_pos = nn.Parameter(torch.zeros(tokens_per_frame, d))
        self.temporal_pos = nn.Parameter(torch.zeros(cfg.context_length, d))
        for p in (self.token_embedding.weight, self.action_embedding.weight, self.spatial_pos, self.temporal_pos):
            nn.init.normal_(p, std=0.02)
        self.transformer = SpatioTemporalTransformer(d, cfg.num_layers, cfg.num_heads, cfg.dropout)
        self.head = nn.Linear(d, cfg.vocab_size)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def embed(self, tokens: torch.Tensor, actions: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, T, S]`` (``mask_token`` allowed), incoming actions ``[B, T]``
        (``unknown_action`` allowed) at temporal ``positions[T]`` -> ``[B, T, S, dim]``."""
        x = self.token_embedding(tokens) + self.spatial_pos
        return x + (self.action_embedding(actions) + self.temporal_pos[positions])[:, :, None]

    # ---- dreaming -------------------------------------------------------------------------------

    def prefill(self, tokens: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor) -> list[LayerKV]:
        """Keys and values of a window's clean past frames (``tokens[B, T, S]``, incoming
        ``actions[B, T]``, ``valid[B, T]``, ``T < W``) at positions ``0 .. T - 1``."""
        t = tokens.shape[1]
        x = self.embed(tokens, actions, torch.arange(t, device=tokens.device))
        _, kv = self.transformer(x, clean_mask(valid), return_kv=True)
        return kv

    def new_frame(
        self, tokens: torch.Tensor, action: torch.Tensor, context: list[LayerKV], valid: torch.Tensor
    ) -> torch.Tensor:
        """Features ``[B, S, dim]`` of the frame after the ``context`` of :meth:`prefill` (``tokens[B,
        S]``, masks allowed, reached by ``action[B]``; ``valid[B, T]`` marks the context's frames)."""
        return self.new_frame_and_kv(tokens, action, context, valid)[0]

    def new_frame_and_kv(
        self, tokens: torch.Tensor, action: torch.Tensor, context: list[LayerKV], valid: torch.Tensor
    ) -> tuple[torch.Tensor, list[LayerKV]]:
        """:meth:`new_frame`, and every layer's keys and values of the frame: with its finished
        tokens, what :meth:`prefill` would give it at its position (the one after the context's ``T``
        frames), to be added to the context."""
        position = valid.shape[1]
        if position >= self.window:
            raise ValueError(f"a window of {self.window} frames has no position after {position} frames")
        x = self.embed(tokens[:, None], action[:, None], torch.tensor([position], device=tokens.device))
        ones = torch.ones_like(valid[:, :1])
        mask = torch.cat([valid, ones], dim=1)[:, None]  # [B, 1, T + 1]: the valid past frames and itself
        out, kv = self.transformer(x, mask, context, return_kv=True)
        return out[:, 0], kv

    @torch.no_grad()
    def sample(
        self,
        context: list[LayerKV],
        valid: torch.Tensor,
        action: torch.Tensor,
        steps: int,
        temperature: float,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """MaskGIT: the next frame's tokens ``long [B, S]`` after ``steps`` refinement passes."""
        b, s = action.shape[0], self.tokens_per_frame
        device = action.device
        tokens = torch.full((b, s), self.mask_token, dtype=torch.long, device=device)
        known = torch.zeros(b, s, dtype=torch.bool, device=device)
        for n in range(1, steps + 1):
            logits = self.head(self.new_frame(tokens, action, context, valid)).float()
            sampled, confidence = _sample(logits, temperature, generator)
            still_masked = math.floor(s * math.cos(math.pi / 2 * n / steps)) if n < steps else 0
            confidence = confidence.masked_fill(known, math.inf)  # what is known stays
            keep = confidence.argsort(dim=1, descending=True, stable=True)[:, : s - still_masked]
            newly = torch.zeros_like(known).scatter_(1, keep, True) & ~known
            tokens = torch.where(newly, sampled, tokens)
            known |= newly
        return tokens

    # ---- training -------------------------------------------------------------------------------

    def teacher_forced(
        self, tokens: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor, masked: torch.Tensor
    ) -> torch.Tensor:
        """Logits ``[B, W - 1, S, vocab]`` of frames ``1 .. W - 1`` of a segment (``tokens[B, W, S]``,
        incoming ``actions[B, W]``, ``valid[B, W]``) whose tokens ``masked[B, W - 1, S]`` are hidden,
        each predicted from the clean frames before it (see the module docstring)."""
        b, w, s = tokens.shape
        device = tokens.device
        positions = torch.arange(w, device=device)
        clean = self.embed(tokens[:, :-1], actions[:, :-1], positions[:-1])
        hidden = torch.where(masked, torch.full_like(tokens[:, 1:], self.mask_token), tokens[:, 1:])
        noisy = self.embed(hidden, actions[:, 1:], positions[1:])
        x = torch.cat([clean, noisy], dim=1)  # [B, 2 (W - 1), S, dim]
        out, _ = self.transformer(x, teacher_forcing_mask(valid[:, :-1]))
        return self.head(out[:, w - 1 :])

    def clean_features(self, tokens: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Features ``[B, T, S, dim]`` of clean frames ``tokens[B, T, S]`` at positions ``0 .. T - 1``
        (what the reward and termination heads read)."""
        t = tokens.shape[1]
        x = self.embed(tokens, actions, torch.arange(t, device=tokens.device))
        out, _ = self.transformer(x, clean_mask(valid))
        return out


def clean_mask(valid: torch.Tensor) -> torch.Tensor:
    """Causal temporal mask ``[B, T, T]`` over frames ``valid[B, T]``: frame i sees the valid frames
    up to i, and always itself (a padded frame's output is never used, but must not be NaN)."""
    t = valid.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=valid.device).tril()
    eye = torch.eye(t, dtype=torch.bool, device=valid.device)
    return (causal & valid[:, None, :]) | eye


def teacher_forcing_mask(valid: torch.Tensor) -> torch.Tensor:
    """Temporal mask ``[B, 2 T, 2 T]`` over ``T`` clean frames (positions 0 .. T - 1, ``valid[B, T]``)
    followed by ``T`` masked copies of frames 1 .. T: the clean ones are causal as in
    :func:`clean_mask`; masked copy j (of frame j + 1) sees the valid clean frames 0 .. j and itself."""
    t = valid.shape[1]
    b = valid.shape[0]
    mask = torch.zeros(b, 2 * t, 2 * t, dtype=torch.bool, device=valid.device)
    mask[:, :t, :t] = clean_mask(valid)
    causal = torch.ones(t, t, dtype=torch.bool, device=valid.device).tril()
    mask[:, t:, :t] = causal & valid[:, None, :]
    mask[:, t:, t:] = torch.eye(t, dtype=torch.bool, device=valid.device)
    return mask


def _sample(
    logits: torch.Tensor, temperature: float, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per position of ``logits[B, S, V]`` and its log-probability (the confidence).

    Inverse-CDF sampling with exactly one uniform per position, drawn on the generator's device:
    row b always uses the same draws whatever the other rows hold, so a dream is the same alone or
    in a batch."""
    logp = logits.log_softmax(dim=-1)
    if temperature == 0:
        token = logits.argmax(dim=-1)
    else:
        probs = (logits / temperature).softmax(dim=-1)
        shape = probs.shape[:-1]
        if generator is None:
            u = torch.rand(shape, device=probs.device)
        else:
            u = torch.rand(shape, generator=generator, device=generator.device).to(probs.device)
        cdf = probs.cumsum(dim=-1)
        token = (cdf < u[..., None] * cdf[..., -1:]).sum(dim=-1).clamp(max=probs.shape[-1] - 1)
    return token, logp.gather(-1, token[..., None])[..., 0]


class RewardEndHeads(nn.Module):
    """Reward sign (3 classes) and termination (2 classes) of the transition into a frame, from the
    dynamics transformer's features of that frame (mean- and max-pooled over its tokens).

    Why on the transformer's features and not a separate network on pixels: the heads are trained
    on at most a few thousand labelled steps, too few to learn to see from scratch, while the
    dynamics has learned from all the video what moves where; its features of the new frame attend
    to the frame before it and carry the latent action that led to it. The transformer stays frozen
    while the heads train."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.LayerNorm(2 * dim), nn.Linear(2 * dim, hidden), nn.GELU())
        self.reward = nn.Linear(hidden, NUM_REWARD_CLASSES)
        self.end = nn.Linear(hidden, NUM_END_CLASSES)
        # priors of an untrained model: most steps give no reward and do not end an episode, so an
        # untrained dream runs to its horizon instead of ending at random
        with torch.no_grad():
            for layer, bias in ((self.reward, [-3.0, 0.0, -3.0]), (self.end, [0.0, -4.0])):
                nn.init.normal_(layer.weight, std=0.02)
                layer.bias.copy_(torch.tensor(bias))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``features[..., S, dim]`` -> reward logits ``[..., 3]``, termination logits ``[..., 2]``."""
        pooled = torch.cat([features.mean(dim=-2), features.amax(dim=-2)], dim=-1)
        h = self.trunk(pooled)
        return self.reward(h), self.end(h)
