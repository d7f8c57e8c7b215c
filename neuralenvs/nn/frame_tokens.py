"""Frames to tokens and back, for the world models that dream in a frame tokenizer's codes (the
token and genie families)."""

from __future__ import annotations

import torch

from neuralenvs.world_model import Segments, float_to_frames, frames_to_float


class FrameTokens:
    """Mixin for a :class:`~neuralenvs.world_model.WorldModel` that holds ``self.tokenizer``
    (``encode``: float frames [N, C, H, W] -> long [N, S]; ``decode``: the way back) and
    ``self.tokens_per_frame`` (S), and whose config has ``tokenizer_frames``. The tokenizer's
    ``losses(float frames)`` gives its training losses. A tokenizer whose ``sees_previous_frame``
    is true decodes a frame from its tokens and the frame before it (``decode(tokens, previous)``,
    ``losses(frames, previous)``), and its config's ``tok_previous_reconstructed`` is the share of
    training frames decoded with the tokenizer's own rebuild of the frame before."""

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames [..., H, W, C] -> tokens long [..., S]."""
        lead = frames.shape[:-3]
        x = frames_to_float(frames.reshape(-1, *self.obs_shape)).to(self.dtype)
        return self.tokenizer.encode(x).reshape(*lead, self.tokens_per_frame)

    def decode(self, tokens: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens long [..., S] -> uint8 frames [..., H, W, C]. ``previous`` (uint8 [..., H, W, C]):
        the frame before each, for a tokenizer that sees it (others ignore it)."""
        lead = tokens.shape[:-1]
        before = None
        if previous is not None and self.tokenizer.sees_previous_frame:
            before = frames_to_float(previous.reshape(-1, *self.obs_shape)).to(self.dtype)
        x = self.tokenizer.decode(tokens.reshape(-1, self.tokens_per_frame), before)
        return float_to_frames(x.float()).reshape(*lead, *self.obs_shape)

    def decode_next(
        self, tokens: torch.Tensor, last_tokens: torch.Tensor, last_frame: torch.Tensor | None, reuse: bool
    ) -> torch.Tensor:
        """A dream step's new frames: ``decode(tokens[B, S], last_frame)``, except that with ``reuse``
        a dream whose tokens are all ``last_tokens[B, S]`` keeps ``last_frame`` (uint8 [B, H, W, C],
        the frames those tokens gave) and is not decoded. With a decoder that sees the frame before,
        that decode would move a few pixels a little (Boxing's: 4% of them, by 0.1 levels on
        average) at the cost of the step's largest call. Without ``last_frame`` every dream decodes."""
        if not reuse or last_frame is None:
            return self.decode(tokens, last_frame)
        changed = (tokens != last_tokens).any(dim=1)
        if bool(changed.all()):
            return self.decode(tokens, last_frame)
        frames = last_frame.clone()
        if bool(changed.any()):
            frames[changed] = self.decode(tokens[changed], last_frame[changed])
        return frames

    def _tokenizer_losses(self, batch: Segments) -> dict[str, torch.Tensor]:
        """The tokenizer's autoencoder losses on ``config.tokenizer_frames`` frames per segment,
        real frames first (padding only where a segment has fewer real frames)."""
        mask = batch.mask
        if self.tokenizer.sees_previous_frame:  # frames whose frame before is real too
            mask = mask & torch.cat([torch.zeros_like(mask[:, :1]), mask[:, :-1]], dim=1)
        b, t = mask.shape
        n = min(self.config.tokenizer_frames, t)
        scores = mask.float() + torch.rand(mask.shape, device=mask.device)
        pos = scores.topk(n, dim=1).indices  # [B, n]
        rows = torch.arange(b, device=pos.device)[:, None]
        real = mask[rows, pos].flatten()
        keep = real if bool(real.any()) else torch.ones_like(real)
        frames = frames_to_float(batch.frames[rows, pos].flatten(0, 1)[keep]).to(self.dtype)
        if not self.tokenizer.sees_previous_frame:
            return self.tokenizer.losses(frames)
        before = batch.frames[rows, (pos - 1).clamp(min=0)].flatten(0, 1)[keep]
        share = self.config.tok_previous_reconstructed
        if share > 0:  # as a dream feeds its own frames back: the frame before as the tokenizer rebuilt it
            two_back = (pos - 2).clamp(min=0)
            deep = (batch.mask[rows, two_back] & (pos >= 2)).flatten()[keep]
            pick = deep & (torch.rand(deep.shape, device=deep.device) < share)
            if bool(pick.any()):
                earlier = batch.frames[rows, two_back].flatten(0, 1)[keep][pick]
                with torch.no_grad():
                    before = before.clone()
                    before[pick] = self.decode(self.encode(before[pick]), earlier)
        return self.tokenizer.losses(frames, frames_to_float(before).to(self.dtype))
