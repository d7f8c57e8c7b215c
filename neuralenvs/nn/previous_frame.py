"""A frame tokenizer's decoder that also sees the frame before the one it decodes (after Delta-IRIS,
Micheli et al. 2024).

A few coarse tokens say where things are; the frame before says what they look like and what did
not move. :class:`PreviousFrameFeatures` encodes that frame without quantisation into one feature
map per resolution level, and :func:`decode_with_features` adds each map where the decoder's level
of the same resolution begins. The projections into the decoder start at zero, so a tokenizer
fine-tuned into seeing the frame before starts as it was, and its tokens (the frame's alone) stay
those a dynamics model was trained on.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from neuralenvs.nn.blocks import Downsample, ResidualBlock


class PreviousFrameFeatures(nn.Module):
    """Frames float [B, C, H, W] -> one map per level, top first: level i has ``channels[i]``
    channels at the resolution of a decoder whose levels are ``channels`` (after folding
    ``patch x patch`` pixel blocks into channels and halving between levels). ``depths[i]`` residual
    blocks per level; 0 leaves a level its strided convolution alone (much cheaper: this encoder
    runs at every dreamed step)."""

    def __init__(self, img_channels: int, channels: tuple[int, ...], depths: tuple[int, ...], patch: int) -> None:
        super().__init__()
        self.patch = patch
        self.conv_in = nn.Conv2d(img_channels * patch * patch, channels[0], kernel_size=3, padding=1)
        self.levels = nn.ModuleList()
        self.down = nn.ModuleList()
        self.to_decoder = nn.ModuleList()
        for i, c in enumerate(channels):
            c_prev = channels[max(0, i - 1)]
            self.down.append(Downsample(c_prev) if i > 0 else nn.Identity())
            blocks: list[nn.Module] = [ResidualBlock(c_prev if j == 0 else c, c) for j in range(depths[i])]
            if not blocks and c_prev != c:  # a level without blocks still changes the width
                blocks = [nn.Conv2d(c_prev, c, kernel_size=1)]
            self.levels.append(nn.Sequential(*blocks))
            self.to_decoder.append(nn.Conv2d(c, c, kernel_size=1))
            nn.init.zeros_(self.to_decoder[-1].weight)
            nn.init.zeros_(self.to_decoder[-1].bias)

    def forward(self, x: torch.Tensor | None) -> list[torch.Tensor]:
        if x is None:
            raise ValueError("this tokenizer decodes a frame from its tokens and the frame before: give previous")
        x = x.to(self.conv_in.weight.dtype)
        if self.patch > 1:
            x = F.pixel_unshuffle(x, self.patch)
        x = self.conv_in(x.contiguous(memory_format=torch.channels_last))  # as the diffusion U-Net's
        features = []
        for down, level, proj in zip(self.down, self.levels, self.to_decoder, strict=True):
            x = level(down(x))
            features.append(proj(x))
        return features


def decode_with_features(modules: Iterable[nn.Module], x: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
    """Run a decoder's ``modules`` in order on ``x``, adding before each resolution level (an
    ``nn.Sequential`` of blocks) the next of ``features`` from the bottom level up."""
    pending = list(features)
    for module in modules:
        if isinstance(module, nn.Sequential):
            x = x + pending.pop()
        x = module(x)
    if pending:
        raise ValueError(f"{len(pending)} feature maps were left over: the decoder has fewer levels than the features")
    return x
