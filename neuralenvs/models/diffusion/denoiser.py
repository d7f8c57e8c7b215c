"""EDM denoiser (Karras et al. 2022) for the next frame, with DIAMOND's choices.

The network ``F`` is wrapped so that the denoised estimate is
``D(x; sigma) = c_skip(sigma) * x + c_out(sigma) * F(c_in(sigma) * x, c_noise(sigma), ...)``: the
scalings keep the network's inputs and training targets at unit variance at every noise level, which
is what lets DIAMOND dream good frames in as few as 3 denoising steps.

DIAMOND adds *offset noise* in training (a per-channel constant of std ``sigma_offset_noise`` on top
of the Gaussian noise), which teaches the model to fix global brightness/colour; the
preconditioning then uses the total noise std ``sqrt(sigma^2 + offset^2)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from neuralenvs.models.diffusion.config import DiffusionConfig
from neuralenvs.models.diffusion.unet import DenoiserUNet


@dataclass
class Preconditioning:
    """EDM's scalings, each [B]."""

    c_skip: torch.Tensor
    c_out: torch.Tensor
    c_in: torch.Tensor
    c_noise: torch.Tensor


def edm_preconditioning(sigma: torch.Tensor, sigma_data: float) -> Preconditioning:
    """EDM's preconditioning at noise level ``sigma`` (Table 1 of Karras et al. 2022)."""
    var = sigma**2 + sigma_data**2
    return Preconditioning(
        c_skip=sigma_data**2 / var,
        c_out=sigma * sigma_data / var.sqrt(),
        c_in=1 / var.sqrt(),
        c_noise=sigma.log() / 4,
    )


def _bcast(x: torch.Tensor) -> torch.Tensor:
    return x[:, None, None, None]


class Denoiser(nn.Module):
    """Next-frame denoiser. Frames are float [-1, 1]; ``context`` is [B, K, C, H, W] (the past K
    frames), ``actions`` [B, K] (the actions taken at them, the last one leading to the frame being
    denoised)."""

    def __init__(self, cfg: DiffusionConfig, img_channels: int, num_actions: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = DenoiserUNet(cfg, img_channels, num_actions)

    def preconditioning(self, sigma: torch.Tensor) -> Preconditioning:
        total = (sigma**2 + self.cfg.sigma_offset_noise**2).sqrt()
        return edm_preconditioning(total, self.cfg.sigma_data)

    def forward(
        self, noisy: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, Preconditioning]:
        """The raw network output ``F`` (and the scalings used), for ``noisy[B, C, H, W]`` at noise
        levels ``sigma[B]``."""
        pc = self.preconditioning(sigma)
        ctx = context.flatten(1, 2) / self.cfg.sigma_data  # past frames, scaled like clean data
        out = self.net(noisy * _bcast(pc.c_in).to(noisy.dtype), pc.c_noise.to(noisy.dtype), ctx, actions)
        return out, pc

    @torch.no_grad()
    def denoise(
        self,
        noisy: torch.Tensor,
        sigma: torch.Tensor,
        context: torch.Tensor,
        actions: torch.Tensor,
        quantize: bool = True,
    ) -> torch.Tensor:
        """``D(noisy; sigma)``: the estimate of the clean frame, clamped to [-1, 1] and, with
        ``quantize``, snapped to the 256 levels a uint8 frame can take (as DIAMOND does: the
        sampler then only ever sees values a real frame could have)."""
        out, pc = self(noisy, sigma, context, actions)
        d = (_bcast(pc.c_skip) * noisy + _bcast(pc.c_out) * out).clamp(-1, 1)
        if quantize:
            d = d.add(1).mul(127.5).round().div(127.5).sub(1)
        return d.to(noisy.dtype)

    def sample_training_sigma(self, n: int, device: torch.device) -> torch.Tensor:
        """Log-normal noise levels, clipped to ``[train_sigma_min, train_sigma_max]``."""
        cfg = self.cfg
        log_sigma = torch.randn(n, device=device) * cfg.train_sigma_scale + cfg.train_sigma_loc
        return log_sigma.exp().clamp(cfg.train_sigma_min, cfg.train_sigma_max)

    def loss(
        self,
        context: torch.Tensor,
        actions: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """EDM training loss for clean ``target[B, C, H, W]``: noise it at a random level, and regress
        ``F`` onto the target that makes ``D`` exact. With EDM's loss weighting this is a plain MSE on
        ``F``'s scale. ``weight[B]`` (e.g. a padding mask) weights the per-sample losses."""
        b, c = target.shape[:2]
        sigma = self.sample_training_sigma(b, target.device)
        offset = self.cfg.sigma_offset_noise * torch.randn(b, c, 1, 1, device=target.device)
        noisy = target + offset + _bcast(sigma) * torch.randn_like(target)
        out, pc = self(noisy.to(target.dtype), sigma, context, actions)
        f_target = (target - _bcast(pc.c_skip) * noisy) / _bcast(pc.c_out)
        per_sample = (out.float() - f_target.float()).pow(2).flatten(1).mean(dim=1)
        if weight is None:
            return per_sample.mean()
        weight = weight.float()
        return (per_sample * weight).sum() / weight.sum().clamp(min=1.0)
