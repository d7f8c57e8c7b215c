"""Frames to tokens and back, for the world models that dream in a frame tokenizer's codes (the
token and genie families)."""

from __future__ import annotations

import torch

from neuralenvs.world_model import Segments, float_to_frames, frames_to_float


class FrameTokens:
    """Mixin for a :class:`~neuralenvs.world_model.WorldModel` that holds ``self.tokenizer``
    (``encode``: float frames [N, C, H, W] -> long [N, S]; ``decode``: the way back) and
    ``self.tokens_per_frame`` (S), and whose config has ``tokenizer_frames``. The tokenizer's
    ``losses(float frames)`` gives its training losses."""

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames [..., H, W, C] -> tokens long [..., S]."""
        lead = frames.shape[:-3]
        x = frames_to_float(frames.reshape(-1, *self.obs_shape)).to(self.dtype)
        return self.tokenizer.encode(x).reshape(*lead, self.tokens_per_frame)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens long [..., S] -> uint8 frames [..., H, W, C]."""
        lead = tokens.shape[:-1]
        x = self.tokenizer.decode(tokens.reshape(-1, self.tokens_per_frame))
        return float_to_frames(x.float()).reshape(*lead, *self.obs_shape)

    def _tokenizer_losses(self, batch: Segments) -> dict[str, torch.Tensor]:
        """The tokenizer's autoencoder losses on ``config.tokenizer_frames`` frames per segment,
        real frames first (padding only where a segment has fewer real frames)."""
        b, t = batch.mask.shape
        n = min(self.config.tokenizer_frames, t)
        scores = batch.mask.float() + torch.rand(batch.mask.shape, device=batch.mask.device)
        pos = scores.topk(n, dim=1).indices  # [B, n]
        rows = torch.arange(b, device=pos.device)[:, None]
        frames, real = batch.frames[rows, pos].flatten(0, 1), batch.mask[rows, pos].flatten()
        if bool(real.any()):
            frames = frames[real]
        return self.tokenizer.losses(frames_to_float(frames).to(self.dtype))
