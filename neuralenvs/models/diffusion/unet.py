"""The network inside the denoiser: predicts the (preconditioned) next frame from a noisy version of
it, the K past frames and the K actions taken at them.

Past frames enter by channel-wise concatenation with the noisy frame (frame stacking, as DIAMOND
does); the noise level and the actions enter every residual block through adaptive group norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neuralenvs.models.diffusion.config import DiffusionConfig
from neuralenvs.nn.blocks import FourierFeatures, UNet, group_norm


class ActionEmbedding(nn.Module):
    """Embeds the K actions of the context into one vector: a separate embedding per (position,
    action), summed. Equivalent to a linear map of the concatenated one-hot actions, so the order of
    the actions matters and the output size does not depend on K."""

    def __init__(self, num_actions: int, num_positions: int, dim: int) -> None:
        super().__init__()
        self.num_actions = num_actions
        self.emb = nn.Embedding(num_actions * num_positions, dim)
        self.register_buffer("offsets", torch.arange(num_positions) * num_actions, persistent=False)

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        """``actions[B, K]`` -> ``[B, dim]``."""
        return self.emb(actions + self.offsets).sum(dim=1)


class DenoiserUNet(nn.Module):
    """``F_theta`` of EDM: ``(noisy[B, C, H, W], c_noise[B], context[B, K*C, H, W], actions[B, K])``
    -> ``[B, C, H, W]``, and with ``context_noise_levels`` the context's noise level (long [B];
    ``None``: clean). Inputs are already scaled by the denoiser's preconditioning."""

    def __init__(self, cfg: DiffusionConfig, img_channels: int, num_actions: int) -> None:
        super().__init__()
        k, c0, p = cfg.num_context_frames, cfg.channels[0], cfg.patch_size
        self.patch_size = p
        self.noise_emb = FourierFeatures(cfg.cond_dim)
        self.action_emb = ActionEmbedding(num_actions, k, cfg.cond_dim)
        # the context's noise level (``context_noise_levels``), starting at zero so that a model
        # fine-tuned into it from one without begins as that model
        self.context_noise_emb = None
        if cfg.context_noise_levels:
            self.context_noise_emb = nn.Embedding(cfg.context_noise_levels, cfg.cond_dim)
            nn.init.zeros_(self.context_noise_emb.weight)
        self.cond_mlp = nn.Sequential(
            nn.Linear(cfg.cond_dim, cfg.cond_dim), nn.SiLU(), nn.Linear(cfg.cond_dim, cfg.cond_dim)
        )
        self.conv_in = nn.Conv2d((k + 1) * img_channels * p * p, c0, kernel_size=3, padding=1)
        self.unet = UNet(cfg.cond_dim, cfg.channels, cfg.depths, cfg.attention, cfg.mid_attention)
        self.norm_out = group_norm(c0)
        self.conv_out = nn.Conv2d(c0, img_channels * p * p, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # start by predicting zero: the skip path alone

    def forward(
        self,
        noisy: torch.Tensor,
        c_noise: torch.Tensor,
        context: torch.Tensor,
        actions: torch.Tensor,
        context_noise_level: torch.Tensor | None = None,
    ) -> torch.Tensor:
        cond = self.noise_emb(c_noise) + self.action_emb(actions)
        if self.context_noise_emb is not None and context_noise_level is None:  # a clean context: level 0
            cond = cond + self.context_noise_emb.weight[0]
        elif self.context_noise_emb is not None:
            cond = cond + self.context_noise_emb(context_noise_level)
        cond = self.cond_mlp(cond)
        h, w = noisy.shape[-2:]
        x = torch.cat([context, noisy], dim=1)
        p = self.patch_size
        if p > 1:  # fold p x p pixel patches into channels: a lossless, p^2 times cheaper top level
            x = F.pixel_unshuffle(F.pad(x, (0, -w % p, 0, -h % p)), p)
        # channels-last activations run the convolutions markedly faster on CPUs (oneDNN) and on
        # tensor-core GPUs; the parameters keep their ordinary layout so checkpoints stay plain
        x = self.conv_in(x.contiguous(memory_format=torch.channels_last))
        x = self.unet(x, cond)
        x = self.conv_out(F.silu(self.norm_out(x)))
        if p > 1:
            x = F.pixel_shuffle(x, p)[..., :h, :w]
        return x.contiguous()
