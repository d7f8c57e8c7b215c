"""Convolutional building blocks shared by the world-model families.

Everything here works on images laid out ``[B, C, H, W]`` and, where a block is *conditioned*, on a
vector ``cond[B, D]`` (a noise-level embedding, an action embedding, or their sum). Conditioning is
done by adaptive group normalisation: the vector predicts a per-channel scale and shift applied after
normalising, which is how DIAMOND (and EDM/ADM before it) injects the noise level and the actions
into every residual block of its U-Net.

The blocks are deliberately small and free of family-specific assumptions so that a new family can
assemble them differently (an encoder for a reward head, a decoder for a tokenizer, a U-Net for a
denoiser).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from neuralenvs.nn.attention import attention

GROUP_SIZE = 32  # channels per normalisation group (fewer channels -> a single group)
NORM_EPS = 1e-5
ATTN_HEAD_DIM = 8


def num_groups(channels: int) -> int:
    """Groups for GroupNorm: one per ``GROUP_SIZE`` channels, at least one."""
    groups = max(1, channels // GROUP_SIZE)
    while channels % groups:  # GroupNorm needs the groups to divide the channels
        groups -= 1
    return groups


def group_norm(channels: int) -> nn.GroupNorm:
    """An ordinary (unconditioned) GroupNorm with the house grouping."""
    return nn.GroupNorm(num_groups(channels), channels, eps=NORM_EPS)


class AdaGroupNorm(nn.Module):
    """GroupNorm whose affine scale and shift are predicted from a conditioning vector.

    ``y = norm(x) * (1 + scale(cond)) + shift(cond)``: with the linear map at zero the block is an
    ordinary parameter-free GroupNorm, so conditioning starts as a no-op and is learnt.
    """

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.channels = channels
        self.groups = num_groups(channels)
        self.linear = nn.Linear(cond_dim, 2 * channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.group_norm(x, self.groups, eps=NORM_EPS)
        scale, shift = self.linear(cond)[:, :, None, None].chunk(2, dim=1)
        return torch.addcmul(shift, x, 1 + scale)  # one fused pass over x


class FourierFeatures(nn.Module):
    """Embeds a scalar per sample (e.g. EDM's ``c_noise = log(sigma) / 4``) as sines and cosines.

    The frequencies are fixed and geometric (0.25 to 16 cycles per unit), so the embedding needs no
    stored weights and is identical in every process; the MLP that follows learns what to do with it.
    """

    def __init__(self, dim: int, min_freq: float = 0.25, max_freq: float = 16.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"FourierFeatures needs an even dim, got {dim}")
        freqs = torch.logspace(math.log10(min_freq), math.log10(max_freq), dim // 2) * 2 * math.pi
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x[B]`` -> ``[B, dim]``."""
        f = x.float()[:, None] * self.freqs.float()[None, :]
        return torch.cat([f.cos(), f.sin()], dim=-1).to(self.freqs.dtype)


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, residual, zero-initialised output
    (so adding it to a trained-from-scratch network starts as the identity)."""

    def __init__(self, channels: int, head_dim: int = ATTN_HEAD_DIM) -> None:
        super().__init__()
        self.heads = max(1, channels // head_dim)
        if channels % self.heads:
            raise ValueError(f"{channels} channels do not split into {self.heads} heads")
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, kernel_size=1)
        self.out = nn.Conv2d(channels, channels, kernel_size=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)  # each [B, heads, HW, head_dim]
        y = attention(q, k, v)
        return x + self.out(y.transpose(-1, -2).reshape(b, c, h, w))


class ResBlock(nn.Module):
    """Pre-activation residual block conditioned by adaptive GroupNorm, optionally followed by
    self-attention. The second convolution starts at zero, so a fresh block is the identity (or the
    1x1 projection when the channel count changes) and a deep stack trains stably."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, attention: bool = False) -> None:
        super().__init__()
        self.norm1 = AdaGroupNorm(in_channels, cond_dim)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = AdaGroupNorm(out_channels, cond_dim)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)
        self.attn = SelfAttention2d(out_channels) if attention else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x, cond)))
        h = self.conv2(F.silu(self.norm2(h, cond)))
        return self.attn(self.skip(x) + h)


class Downsample(nn.Module):
    """Halves the resolution (rounding up) with a strided 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Doubles the resolution: nearest-neighbour then a 3x3 convolution (no checkerboard artefacts)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def downsampled_size(size: int, levels: int) -> int:
    """Spatial size after ``levels`` :class:`Downsample` (each rounds up)."""
    for _ in range(levels):
        size = (size + 1) // 2
    return size


class UNet(nn.Module):
    """A conditioned U-Net body: ``[B, channels[0], H, W] -> [B, channels[0], H, W]``.

    Level ``i`` runs ``depths[i]`` residual blocks at ``channels[i]`` channels, each level below the
    first at half the resolution of the one above. Every block output (and each level's input) is kept
    as a skip connection and concatenated back on the way up, where each level has one extra block
    that returns to the channel count of the level above (the ADM/EDM layout DIAMOND uses). Two
    residual blocks (optionally with attention) sit at the bottom.

    Any H, W works: the input is zero-padded to a multiple of ``2 ** (levels - 1)`` and the output
    cropped back.
    """

    def __init__(
        self,
        cond_dim: int,
        channels: Sequence[int],
        depths: Sequence[int],
        attention: Sequence[bool] | None = None,
        mid_attention: bool = True,
    ) -> None:
        super().__init__()
        attention = [False] * len(channels) if attention is None else list(attention)
        if not len(channels) == len(depths) == len(attention):
            raise ValueError("channels, depths and attention must have one entry per level")
        if min(depths) < 1:
            raise ValueError(f"every U-Net level needs at least one block, got depths {tuple(depths)}")
        self.levels = len(channels)

        self.down = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        for i, (c, n) in enumerate(zip(channels, depths, strict=True)):
            c_prev = channels[max(0, i - 1)]
            self.downsamples.append(Downsample(c_prev) if i > 0 else nn.Identity())
            blocks = [ResBlock(c_prev if j == 0 else c, c, cond_dim, attention[i]) for j in range(n)]
            self.down.append(nn.ModuleList(blocks))

        self.mid = nn.ModuleList([ResBlock(channels[-1], channels[-1], cond_dim, mid_attention) for _ in range(2)])

        self.up = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for i in reversed(range(self.levels)):
            c, n = channels[i], depths[i]
            c_prev = channels[max(0, i - 1)]
            # the first n blocks concatenate a block output (c channels); the last one the level's input
            blocks = [ResBlock(2 * c, c, cond_dim, attention[i]) for _ in range(n)]
            blocks.append(ResBlock(c + c_prev, c_prev, cond_dim, attention[i]))
            self.up.append(nn.ModuleList(blocks))
            self.upsamples.append(Upsample(c_prev) if i > 0 else nn.Identity())

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 2 ** (self.levels - 1)
        x = F.pad(x, (0, -w % m, 0, -h % m))

        skips: list[torch.Tensor] = []
        for downsample, blocks in zip(self.downsamples, self.down, strict=True):
            x = downsample(x)
            skips.append(x)
            for block in blocks:
                x = block(x, cond)
                skips.append(x)
        for block in self.mid:
            x = block(x, cond)
        for blocks, upsample in zip(self.up, self.upsamples, strict=True):
            for block in blocks:
                x = block(torch.cat([x, skips.pop()], dim=1), cond)
            x = upsample(x)
        return x[..., :h, :w]


class ConditionedEncoder(nn.Module):
    """A conditioned convolutional encoder: ``[B, in_channels, H, W] -> [B, channels[-1], h, w]`` with
    ``h = downsampled_size(H, len(channels) - 1)``. The down half of :class:`UNet` plus two bottom
    blocks; DIAMOND's reward/termination model encodes (frame, next frame) with it, conditioned on
    the action."""

    def __init__(
        self,
        in_channels: int,
        cond_dim: int,
        channels: Sequence[int],
        depths: Sequence[int],
        mid_attention: bool = True,
    ) -> None:
        super().__init__()
        if len(channels) != len(depths):
            raise ValueError("channels and depths must have one entry per level")
        self.conv_in = nn.Conv2d(in_channels, channels[0], kernel_size=3, padding=1)
        self.downsamples = nn.ModuleList()
        self.levels = nn.ModuleList()
        for i, (c, n) in enumerate(zip(channels, depths, strict=True)):
            c_prev = channels[max(0, i - 1)]
            self.downsamples.append(Downsample(c_prev) if i > 0 else nn.Identity())
            self.levels.append(nn.ModuleList([ResBlock(c_prev if j == 0 else c, c, cond_dim) for j in range(n)]))
        self.mid = nn.ModuleList([ResBlock(channels[-1], channels[-1], cond_dim, mid_attention) for _ in range(2)])

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for downsample, blocks in zip(self.downsamples, self.levels, strict=True):
            x = downsample(x)
            for block in blocks:
                x = block(x, cond)
        for block in self.mid:
            x = block(x, cond)
        return x


class ResidualBlock(nn.Module):
    """Unconditioned pre-activation residual block (GroupNorm, SiLU, 3x3 convolution, twice) for
    autoencoders. The second convolution starts at zero, so a fresh block is the identity (or the
    1x1 projection when the channel count changes)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h
