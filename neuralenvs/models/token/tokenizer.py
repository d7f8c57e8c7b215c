"""The tokenizer: a convolutional VQ autoencoder that turns a frame into a small grid of discrete
tokens and back (IRIS's discrete autoencoder, after VQGAN without its adversarial and perceptual
losses).

Encoder: optional space-to-depth on ``patch x patch`` pixel blocks, a 3x3 convolution, then one
level per entry of ``tok_channels`` (residual blocks, optional self-attention, a strided
downsampling between levels), two bottom blocks (with attention between them), and a 1x1
projection to ``code_dim``. Each spatial position of the result is quantised to one of
``vocab_size`` codes: a 64x64 frame with IRIS's 5 levels (4 halvings) gives 4 x 4 = 16 tokens. The
decoder mirrors the encoder.

With ``tok_previous_frame`` the decoder also sees the frame before the one it decodes
(``neuralenvs.nn.previous_frame``); the tokens stay those of the frame alone.

Frames are float ``[B, C, H, W]`` in ``[-1, 1]`` (``neuralenvs.world_model.frames_to_float``);
tokens are long ``[B, h * w]``, row-major over the token grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neuralenvs.models.token.config import TokenConfig
from neuralenvs.nn.blocks import Downsample, ResidualBlock, SelfAttention2d, Upsample, group_norm
from neuralenvs.nn.discriminator import PatchDiscriminator
from neuralenvs.nn.previous_frame import PreviousFrameFeatures, decode_with_features
from neuralenvs.nn.quantize import Quantized, VectorQuantizer, autoencoder_losses


def _level(in_channels: int, out_channels: int, depth: int, attention: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for j in range(depth):
        layers.append(ResidualBlock(in_channels if j == 0 else out_channels, out_channels))
        if attention:
            layers.append(SelfAttention2d(out_channels))
    return nn.Sequential(*layers)


def _mid(channels: int, attention: bool) -> nn.Sequential:
    middle = SelfAttention2d(channels) if attention else nn.Identity()
    return nn.Sequential(ResidualBlock(channels, channels), middle, ResidualBlock(channels, channels))


class Encoder(nn.Module):
    def __init__(self, cfg: TokenConfig, img_channels: int) -> None:
        super().__init__()
        ch, p = cfg.tok_channels, cfg.tok_patch_size
        self.patch = p
        self.conv_in = nn.Conv2d(img_channels * p * p, ch[0], kernel_size=3, padding=1)
        stages: list[nn.Module] = []
        for i, c in enumerate(ch):
            c_prev = ch[max(0, i - 1)]
            if i > 0:
                stages.append(Downsample(c_prev))
            stages.append(_level(c_prev, c, cfg.tok_depths[i], cfg.tok_attention[i]))
        self.stages = nn.Sequential(*stages)
        self.mid = _mid(ch[-1], cfg.tok_mid_attention)
        self.norm_out = group_norm(ch[-1])
        self.conv_out = nn.Conv2d(ch[-1], cfg.code_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.patch > 1:
            x = F.pixel_unshuffle(x, self.patch)
        x = self.mid(self.stages(self.conv_in(x.contiguous(memory_format=torch.channels_last))))
        return self.conv_out(F.silu(self.norm_out(x)))


class Decoder(nn.Module):
    def __init__(self, cfg: TokenConfig, img_channels: int) -> None:
        super().__init__()
        ch, p = cfg.tok_channels, cfg.tok_patch_size
        self.patch = p
        self.conv_in = nn.Conv2d(cfg.code_dim, ch[-1], kernel_size=3, padding=1)
        self.mid = _mid(ch[-1], cfg.tok_mid_attention)
        stages: list[nn.Module] = []
        for i in reversed(range(len(ch))):
            c_next = ch[max(0, i - 1)]
            stages.append(_level(ch[i], c_next, cfg.tok_depths[i], cfg.tok_attention[i]))
            if i > 0:
                stages.append(Upsample(c_next))
        self.stages = nn.Sequential(*stages)
        self.norm_out = group_norm(ch[0])
        self.conv_out = nn.Conv2d(ch[0], img_channels * p * p, kernel_size=3, padding=1)

    def forward(self, z: torch.Tensor, previous: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``previous``: :class:`PreviousFrameFeatures`' maps, added where each level begins."""
        x = self.mid(self.conv_in(z.contiguous(memory_format=torch.channels_last)))  # faster convolutions
        x = self.stages(x) if previous is None else decode_with_features(self.stages, x, previous)
        x = self.conv_out(F.silu(self.norm_out(x)))
        return F.pixel_shuffle(x, self.patch) if self.patch > 1 else x


class Tokenizer(nn.Module):
    """Frames <-> tokens. ``encode``/``decode`` are what a dream uses; ``losses`` trains it."""

    def __init__(self, cfg: TokenConfig, img_channels: int, img_size: tuple[int, int]) -> None:
        super().__init__()
        f = cfg.downsampling
        h, w = img_size
        if h % f or w % f:
            raise ValueError(
                f"the tokenizer maps {f}x{f} pixels to one token (tok_patch_size {cfg.tok_patch_size}, "
                f"{len(cfg.tok_channels)} levels), so frames of {h}x{w} do not fit: choose a config whose "
                f"downsampling divides both sides"
            )
        self.cfg = cfg
        self.grid = (h // f, w // f)
        self.tokens_per_frame = self.grid[0] * self.grid[1]
        self.encoder = Encoder(cfg, img_channels)
        self.quantizer = VectorQuantizer(
            cfg.vocab_size, cfg.code_dim, cfg.normalize_codes, cfg.code_usage_decay, cfg.dead_code_threshold
        )
        self.decoder = Decoder(cfg, img_channels)
        self.previous = None
        if cfg.tok_previous_frame:
            self.previous = PreviousFrameFeatures(
                img_channels, cfg.tok_channels, cfg.previous_frame_depths, cfg.tok_patch_size
            )
        self.discriminator = PatchDiscriminator(img_channels) if cfg.adversarial_weight > 0 else None

    @property
    def sees_previous_frame(self) -> bool:
        return self.previous is not None

    def _latents(self, x: torch.Tensor) -> torch.Tensor:
        """float [B, C, H, W] -> encoder outputs [B, h * w, code_dim]."""
        return self.encoder(x).flatten(2).transpose(1, 2)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Frames float [B, C, H, W] -> tokens long [B, h * w]."""
        return self.quantizer.quantize(self._latents(x))

    def decode(self, tokens: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens long [B, h * w] (and, if the decoder sees it, the frame before, float [B, C, H, W])
        -> frames float [B, C, H, W] (not clamped)."""
        return self._decode_codes(self.quantizer.lookup(tokens), previous)

    def _decode_codes(self, codes: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        b = codes.shape[0]
        z = codes.transpose(1, 2).reshape(b, -1, *self.grid)
        features = None if self.previous is None else self.previous(previous)
        return self.decoder(z.to(self.decoder.conv_in.weight.dtype), features)

    def forward(self, x: torch.Tensor, previous: torch.Tensor | None = None) -> tuple[torch.Tensor, Quantized]:
        """Reconstruction of ``x`` (straight-through gradients) and the quantisation."""
        q = self.quantizer(self._latents(x))
        return self._decode_codes(q.z_q, previous), q

    def losses(self, x: torch.Tensor, previous: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Reconstruction, gradient, codebook and commitment losses on frames ``x[B, C, H, W]`` (each
        decoded with the frame before it, ``previous``, where the decoder sees it), the adversarial
        ones with ``adversarial_weight``, the weighted total under ``"tokenizer"``, and the batch's
        codebook perplexity (logged only)."""
        recon, q = self(x, previous)
        return autoencoder_losses(recon, x, q, self.cfg, self.discriminator, self.decoder.conv_out.weight)
