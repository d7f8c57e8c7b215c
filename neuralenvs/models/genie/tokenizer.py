"""The video tokenizer: a per-frame convolutional VQ autoencoder over pixel patches.

Encoder: ``patch x patch`` pixel blocks folded into channels (space-to-depth), a 3x3 convolution,
one level of residual blocks per entry of ``tok_channels`` with a strided downsampling between
levels, and a 1x1 projection to ``code_dim``; every position of the resulting grid is one token,
quantised to one of ``vocab_size`` codes. With the ``small`` preset a 64x64 frame becomes 4x4 = 16
tokens, one per 16x16-pixel patch. The decoder mirrors the encoder.

Genie tokenizes video with an ST-ViViT so that tokens can carry temporal information; here the
dynamics transformer attends across time itself, and a per-frame tokenizer keeps a dream step to
one small decoder call per frame. With ``tok_previous_frame`` the decoder also sees the frame before
(``neuralenvs.nn.previous_frame``); the tokens stay those of the frame alone.

Frames are float ``[B, C, H, W]`` in ``[-1, 1]``; tokens are long ``[B, h * w]``, row-major.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neuralenvs.models.genie.config import GenieConfig
from neuralenvs.nn.blocks import Downsample, ResidualBlock, Upsample, group_norm
from neuralenvs.nn.discriminator import PatchDiscriminator
from neuralenvs.nn.previous_frame import PreviousFrameFeatures, decode_with_features
from neuralenvs.nn.quantize import Quantized, VectorQuantizer, autoencoder_losses


def _level(in_channels: int, out_channels: int, depth: int) -> nn.Sequential:
    return nn.Sequential(*[ResidualBlock(in_channels if j == 0 else out_channels, out_channels) for j in range(depth)])


class Tokenizer(nn.Module):
    """Frames <-> tokens. ``encode`` / ``decode`` are what a dream uses; ``losses`` trains it."""

    def __init__(self, cfg: GenieConfig, img_channels: int, img_size: tuple[int, int]) -> None:
        super().__init__()
        f, (h, w) = cfg.downsampling, img_size
        if h % f or w % f:
            raise ValueError(
                f"the genie tokenizer maps {f}x{f} pixels to one token (tok_patch_size {cfg.tok_patch_size}, "
                f"{len(cfg.tok_channels)} levels), so frames of {h}x{w} do not fit: choose a config whose "
                "downsampling divides both sides"
            )
        self.cfg = cfg
        self.grid = (h // f, w // f)
        self.tokens_per_frame = self.grid[0] * self.grid[1]
        ch, p = cfg.tok_channels, cfg.tok_patch_size
        self.patch = p

        enc: list[nn.Module] = [nn.Conv2d(img_channels * p * p, ch[0], kernel_size=3, padding=1)]
        for i, c in enumerate(ch):
            if i > 0:
                enc.append(Downsample(ch[i - 1]))
            enc.append(_level(ch[max(0, i - 1)], c, cfg.tok_depths[i]))
        enc += [group_norm(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], cfg.code_dim, kernel_size=1)]
        self.encoder = nn.Sequential(*enc)
        self.quantizer = VectorQuantizer(
            cfg.vocab_size, cfg.code_dim, cfg.normalize_codes, cfg.code_usage_decay, cfg.dead_code_threshold
        )
        dec: list[nn.Module] = [nn.Conv2d(cfg.code_dim, ch[-1], kernel_size=3, padding=1)]
        for i in reversed(range(len(ch))):
            dec.append(_level(ch[i], ch[max(0, i - 1)], cfg.tok_depths[i]))
            if i > 0:
                dec.append(Upsample(ch[i - 1]))
        dec += [group_norm(ch[0]), nn.SiLU(), nn.Conv2d(ch[0], img_channels * p * p, kernel_size=3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        self.previous = PreviousFrameFeatures(img_channels, ch, cfg.tok_depths, p) if cfg.tok_previous_frame else None
        self.discriminator = PatchDiscriminator(img_channels) if cfg.adversarial_weight > 0 else None

    @property
    def sees_previous_frame(self) -> bool:
        return self.previous is not None

    def _latents(self, x: torch.Tensor) -> torch.Tensor:
        """float [B, C, H, W] -> encoder outputs [B, h * w, code_dim]."""
        if self.patch > 1:
            x = F.pixel_unshuffle(x, self.patch)
        return self.encoder(x.contiguous(memory_format=torch.channels_last)).flatten(2).transpose(1, 2)

    def _decode_codes(self, codes: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        z = codes.transpose(1, 2).reshape(codes.shape[0], -1, *self.grid).to(self.decoder[0].weight.dtype)
        z = z.contiguous(memory_format=torch.channels_last)  # faster convolutions, as the diffusion U-Net's
        if self.previous is None:
            x = self.decoder(z)
        else:
            x = decode_with_features(self.decoder, z, self.previous(previous))
        return F.pixel_shuffle(x, self.patch) if self.patch > 1 else x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Frames float [B, C, H, W] -> tokens long [B, h * w]."""
        return self.quantizer.quantize(self._latents(x))

    def decode(self, tokens: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens long [B, h * w] (and, if the decoder sees it, the frame before, float [B, C, H, W])
        -> frames float [B, C, H, W] (not clamped)."""
        return self._decode_codes(self.quantizer.lookup(tokens), previous)

    def forward(self, x: torch.Tensor, previous: torch.Tensor | None = None) -> tuple[torch.Tensor, Quantized]:
        """Reconstruction of ``x`` (straight-through gradients) and the quantisation."""
        q = self.quantizer(self._latents(x))
        return self._decode_codes(q.z_q, previous), q

    def losses(self, x: torch.Tensor, previous: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """L1 + L2 + image-gradient reconstruction losses (a cheap stand-in for the perceptual loss
        Genie's tokenizer would use, whose network we would have to download), codebook and
        commitment losses, and the adversarial ones with ``adversarial_weight``, each frame of ``x``
        decoded with the frame before it (``previous``) where the decoder sees it; the weighted total
        is ``"tokenizer"``."""
        recon, q = self(x, previous)
        return autoencoder_losses(recon, x, q, self.cfg, self.discriminator, self.decoder[-1].weight)
