"""EDM denoiser (Karras et al. 2022) for the next frame, with DIAMOND's choices.

The network ``F`` is wrapped so that the denoised estimate is
``D(x; sigma) = c_skip(sigma) * x + c_out(sigma) * F(c_in(sigma) * x, c_noise(sigma), ...)``: the
scalings keep the network's inputs and training targets at unit variance at every noise level, which
is what lets DIAMOND dream good frames in as few as 3 denoising steps.

DIAMOND adds *offset noise* in training (a per-channel constant of std ``sigma_offset_noise`` on top
of the Gaussian noise), which teaches the model to fix global brightness/colour; the
preconditioning then uses the total noise std ``sqrt(sigma^2 + offset^2)``.

With ``predict_residual`` the diffused quantity is the change ``next - last`` from the last context
frame rather than the next frame. Most Atari pixels do not change between two steps, so an
untrained network already dreams "repeat the last frame", and a short (CPU) training budget goes
into what moves instead of into redrawing the static screen. ``sigma_data`` should then be the std
of that change, not of the frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from neuralenvs.models.diffusion.config import DiffusionConfig
from neuralenvs.models.diffusion.unet import DenoiserUNet

FRAME_STD = 0.5  # DIAMOND's sigma_data for Atari frames in [-1, 1]


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
        self,
        noisy: torch.Tensor,
        sigma: torch.Tensor,
        context: torch.Tensor,
        actions: torch.Tensor,
        context_noise_level: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Preconditioning]:
        """The raw network output ``F`` (and the scalings used), for ``noisy[B, C, H, W]`` at noise
        levels ``sigma[B]``; ``context_noise_level[B]`` tells a model trained with
        ``context_noise_levels`` how noisy its context is (``None``: clean)."""
        pc = self.preconditioning(sigma)
        # past frames at about unit variance: a frame's std is sigma_data, unless sigma_data is the
        # residual's, in which case DIAMOND's 0.5 for frames in [-1, 1]
        ctx = context.flatten(1, 2) / (FRAME_STD if self.cfg.predict_residual else self.cfg.sigma_data)
        out = self.net(
            noisy * _bcast(pc.c_in).to(noisy.dtype), pc.c_noise.to(noisy.dtype), ctx, actions, context_noise_level
        )
        return out, pc

    def base(self, context: torch.Tensor) -> torch.Tensor | float:
        """What the diffused quantity is relative to: the last context frame with
        ``predict_residual``, else nothing (0)."""
        return context[:, -1] if self.cfg.predict_residual else 0.0

    def to_frame(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """A clean sample of the diffused quantity -> the frame it stands for."""
        return (x + self.base(context)).clamp(-1, 1)

    @torch.no_grad()
    def denoise(
        self,
        noisy: torch.Tensor,
        sigma: torch.Tensor,
        context: torch.Tensor,
        actions: torch.Tensor,
        quantize: bool = True,
        context_noise_level: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``D(noisy; sigma)``: the estimate of the clean frame (or of its change from the last
        context frame, with ``predict_residual``), such that the frame is clamped to [-1, 1] and,
        with ``quantize``, snapped to the 256 levels a uint8 frame can take (as DIAMOND does: the
        sampler then only ever sees values a real frame could have)."""
        out, pc = self(noisy, sigma, context, actions, context_noise_level)
        base = self.base(context)
        d = (base + _bcast(pc.c_skip) * noisy + _bcast(pc.c_out) * out).clamp(-1, 1)
        if quantize:
            d = d.add(1).mul(127.5).round().div(127.5).sub(1)
        return (d - base).to(noisy.dtype)

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
        context_noise_level: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """EDM training loss for clean ``target[B, C, H, W]``: noise it at a random level, and regress
        ``F`` onto the target that makes ``D`` exact. With EDM's loss weighting this is a plain MSE on
        ``F``'s scale. ``weight[B]`` (e.g. a padding mask) weights the per-sample losses."""
        target = target - self.base(context)
        b, c = target.shape[:2]
        sigma = self.sample_training_sigma(b, target.device)
        offset = self.cfg.sigma_offset_noise * torch.randn(b, c, 1, 1, device=target.device)
        noisy = target + offset + _bcast(sigma) * torch.randn_like(target)
        out, pc = self(noisy.to(target.dtype), sigma, context, actions, context_noise_level)
        return self.regression_loss(out, pc, noisy, target, weight)

    @staticmethod
    def regression_loss(
        out: torch.Tensor,
        pc: Preconditioning,
        noisy: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean squared error between the network output ``out`` and the output with which ``D``
        would return ``target`` (the diffused quantity) from ``noisy``; ``weight[B]`` (e.g. a
        padding mask) weights the per-sample losses."""
        f_target = (target - _bcast(pc.c_skip) * noisy) / _bcast(pc.c_out)
        per_sample = (out.float() - f_target.float()).pow(2).flatten(1).mean(dim=1)
        if weight is None:
            return per_sample.mean()
        weight = weight.float()
        return (per_sample * weight).sum() / weight.sum().clamp(min=1.0)
