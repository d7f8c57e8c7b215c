"""Sampling the next frame: integrate EDM's probability-flow ODE from pure noise to a clean frame.

DIAMOND dreams with 3 Euler steps on the Karras schedule (``sigma_max=5``, ``sigma_min=2e-3``,
``rho=7``); Heun's method costs two network calls per step but is more accurate per step. The only
randomness is the starting noise, drawn from the caller's ``torch.Generator``, so the same seed gives
the same frames.
"""

from __future__ import annotations

import torch

from neuralenvs.models.diffusion.denoiser import Denoiser


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float) -> list[float]:
    """EDM's noise levels: ``num_steps`` from ``sigma_max`` down to ``sigma_min``, evenly spaced in
    ``sigma ** (1 / rho)`` (so steps are dense at low noise, where detail is decided), then 0."""
    if num_steps == 1:
        return [sigma_max, 0.0]
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return [(hi + i / (num_steps - 1) * (lo - hi)) ** rho for i in range(num_steps)] + [0.0]


def randn(
    shape: tuple[int, ...],
    device: torch.device,
    dtype: torch.dtype,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Standard normal noise from ``generator``, drawn on the generator's own device and moved to
    ``device``, so a CPU generator can drive a CUDA model reproducibly."""
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    x = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return x.to(device=device, dtype=dtype)


@torch.no_grad()
def sample_next_frame(
    denoiser: Denoiser,
    context: torch.Tensor,
    actions: torch.Tensor,
    num_steps: int,
    method: str = "euler",
    sigma_min: float = 2e-3,
    sigma_max: float = 5.0,
    rho: float = 7.0,
    generator: torch.Generator | None = None,
    context_noise_level: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dream the frame that follows ``context[B, K, C, H, W]`` under ``actions[B, K]`` (whose noise
    level, for a model told it, is ``context_noise_level[B]``).

    Returns float [B, C, H, W] in [-1, 1] (on the 256 uint8 levels). ``method`` is ``"euler"``
    (``num_steps`` network calls) or ``"heun"`` (``2 * num_steps - 1``).
    """
    if method not in ("euler", "heun"):
        raise ValueError(f"unknown sampler {method!r}; use 'euler' or 'heun'")
    b, _, c, h, w = context.shape
    sigmas = karras_sigmas(num_steps, sigma_min, sigma_max, rho)
    x = randn((b, c, h, w), context.device, context.dtype, generator) * sigmas[0]

    def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
        sigmas_b = torch.full((b,), sigma, device=x.device)
        return denoiser.denoise(x, sigmas_b, context, actions, context_noise_level=context_noise_level)

    for sigma, next_sigma in zip(sigmas[:-1], sigmas[1:], strict=True):
        denoised = denoise(x, sigma)
        if next_sigma == 0:  # an Euler step to sigma = 0 lands exactly on the denoised estimate
            return denoiser.to_frame(denoised, context)
        d = (x - denoised) / sigma
        x_next = x + (next_sigma - sigma) * d
        if method == "heun":  # trapezoidal correction with the slope at the step's end
            d_next = (x_next - denoise(x_next, next_sigma)) / next_sigma
            x_next = x + (next_sigma - sigma) * 0.5 * (d + d_next)
        x = x_next
    return denoiser.to_frame(x, context)
