"""Vector quantisation (VQ-VAE, van den Oord et al. 2017) for discrete-token world models, and finite
scalar quantisation (FSQ, at the end) for small discrete bottlenecks such as latent actions.

A vector ``z`` is replaced by its nearest codebook entry ``e``; gradients pass straight through to
the encoder (``z + sg(e - z)``), the codebook is pulled to the encoder outputs (codebook loss
``|sg(z) - e|^2``) and the encoder to its codes (commitment loss ``|z - sg(e)|^2``, weighted by the
caller, 0.25 in VQ-VAE, VQGAN and IRIS).

With ``normalize=True`` both ``z`` and the codes are l2-normalised before the lookup, so nearest
means most similar in direction (ViT-VQGAN, Yu et al. 2022): codes cannot drift far from the
encoder's outputs and die, which keeps more of the codebook in use when no perceptual or
adversarial loss shapes the latents.

Training keeps the codebook in use (as Jukebox and most VQ implementations after it do): the first
training batch initialises the codes from encoder outputs, and a code that the training batches
have stopped choosing (an exponential moving average of how many vectors per batch it takes falls
below ``dead_threshold``) is moved onto a random encoder output of the current batch.

Distances are computed in float32 whatever autocast is active: bf16 rounding flips the nearest code
of vectors that lie between two codes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from neuralenvs.nn.discriminator import PatchDiscriminator, adversarial_losses


@dataclass
class Quantized:
    z_q: torch.Tensor  # [..., dim]: the codes, with straight-through gradients to the input
    indices: torch.Tensor  # long [...]
    codebook_loss: torch.Tensor  # scalar
    commitment_loss: torch.Tensor  # scalar
    perplexity: torch.Tensor  # scalar, detached: exp(entropy of code usage in this batch)


class VectorQuantizer(nn.Module):
    def __init__(
        self,
        num_codes: int,
        dim: int,
        normalize: bool = True,
        usage_decay: float = 0.9,
        dead_threshold: float = 0.03,
    ) -> None:
        super().__init__()
        self.num_codes, self.dim, self.normalize = num_codes, dim, normalize
        self.usage_decay, self.dead_threshold = usage_decay, dead_threshold
        # vectors per training batch each code took (moving average); starts as "once each"
        self.register_buffer("usage", torch.ones(num_codes))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.codebook = nn.Embedding(num_codes, dim)
        if normalize:
            nn.init.normal_(self.codebook.weight)
        else:
            nn.init.uniform_(self.codebook.weight, -1.0 / num_codes, 1.0 / num_codes)

    def codes(self) -> torch.Tensor:
        """The codebook ``[num_codes, dim]`` as it is looked up (normalised when ``normalize``)."""
        w = self.codebook.weight
        return F.normalize(w, dim=-1) if self.normalize else w

    def _prepare(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z, dim=-1) if self.normalize else z

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Indices ``long[...]`` of the nearest codes of ``z[..., dim]``."""
        with torch.autocast(z.device.type, enabled=False):
            flat = self._prepare(z.float()).reshape(-1, self.dim)
            codes = self.codes().float()
            # |z - e|^2 = |z|^2 - 2 z.e + |e|^2; |z|^2 does not change the argmin
            dist = codes.pow(2).sum(-1)[None, :] - 2 * flat @ codes.t()
            return dist.argmin(dim=-1).reshape(z.shape[:-1])

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes ``[..., dim]`` of ``indices[...]``."""
        return F.embedding(indices, self.codes())

    def _flat(self, z: torch.Tensor) -> torch.Tensor:
        return self._prepare(z.detach().float()).reshape(-1, self.dim)

    @torch.no_grad()
    def _replace_codes(self, which: torch.Tensor, z: torch.Tensor) -> None:
        """Move the codes ``which`` (indices) onto random rows of ``z[N, dim]`` (prepared)."""
        pick = torch.randint(z.shape[0], (len(which),), device=z.device)
        self.codebook.weight[which] = z[pick].to(self.codebook.weight.dtype)
        self.usage[which] = 1.0

    def forward(self, z: torch.Tensor) -> Quantized:
        # a training step keeps codes in use, unless the codebook is frozen (a fine-tune that keeps
        # the tokens a transformer was trained on)
        maintain = self.training and torch.is_grad_enabled() and self.codebook.weight.requires_grad
        if maintain and not bool(self.initialized):
            self._replace_codes(torch.arange(self.num_codes, device=z.device), self._flat(z))
            self.initialized.fill_(True)
        indices = self.quantize(z)
        if maintain:
            with torch.no_grad():
                counts = torch.bincount(indices.flatten(), minlength=self.num_codes).float()
                self.usage.mul_(self.usage_decay).add_(counts, alpha=1 - self.usage_decay)
                dead = (self.usage < self.dead_threshold).nonzero().flatten()
                if len(dead):
                    self._replace_codes(dead, self._flat(z))
        z = self._prepare(z.float())
        e = self.lookup(indices).float()
        codebook_loss = F.mse_loss(e, z.detach())
        commitment_loss = F.mse_loss(z, e.detach())
        with torch.no_grad():
            usage = torch.bincount(indices.flatten(), minlength=self.num_codes).float()
            p = usage / usage.sum().clamp(min=1)
            perplexity = torch.exp(-(p * p.clamp(min=1e-10).log()).sum())
        z_q = z + (e - z).detach()
        return Quantized(z_q, indices, codebook_loss, commitment_loss, perplexity)


def fsq_levels(num_codes: int) -> tuple[int, ...]:
    """Levels per dimension whose product is ``num_codes``: its prime factors, smallest first
    (8 -> (2, 2, 2), 6 -> (2, 3)), so every code is one corner or grid point of a small cube."""
    if num_codes < 1:
        raise ValueError(f"num_codes must be >= 1, got {num_codes}")
    levels, n, p = [], num_codes, 2
    while n > 1:
        while n % p == 0:
            levels.append(p)
            n //= p
        p += 1
    return tuple(levels) or (1,)


class FiniteScalarQuantizer(nn.Module):
    """Finite scalar quantisation (FSQ, Mentzer et al. 2023): each of ``len(levels)`` dimensions is
    squashed into ``(0, 1)``, scaled to ``[0, L - 1]`` and rounded, with straight-through gradients;
    the code is the grid point, mapped to ``[-1, 1]`` per dimension. There is no codebook to learn,
    so no code can drift away and die as a VQ code can; ``prod(levels)`` codes in all.

    Indices number the grid points in mixed radix, the first dimension most significant.
    """

    def __init__(self, levels: tuple[int, ...]) -> None:
        super().__init__()
        if not levels or min(levels) < 1:
            raise ValueError(f"levels must be positive integers, got {levels}")
        self.levels = tuple(int(x) for x in levels)
        self.dim = len(self.levels)
        self.num_codes = math.prod(self.levels)
        strides = [math.prod(self.levels[i + 1 :]) for i in range(self.dim)]
        self.register_buffer("_levels", torch.tensor(self.levels, dtype=torch.float32), persistent=False)
        self.register_buffer("_strides", torch.tensor(strides, dtype=torch.long), persistent=False)

    def bounded(self, z: torch.Tensor) -> torch.Tensor:
        """``z[..., dim]`` squashed to ``[0, L - 1]`` per dimension (before rounding)."""
        return torch.sigmoid(z.float()) * (self._levels - 1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes ``[..., dim]`` in ``[-1, 1]`` (straight-through gradients to ``z``) and indices."""
        b = self.bounded(z)
        q = b + (b.round() - b).detach()
        return self._to_unit(q), self._index(b.round())

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Indices ``long[...]`` of ``z[..., dim]``."""
        return self._index(self.bounded(z).round())

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes ``[..., dim]`` in ``[-1, 1]`` of ``indices[...]``."""
        digits = (indices[..., None] // self._strides) % self._levels.long()
        return self._to_unit(digits.float())

    def _to_unit(self, q: torch.Tensor) -> torch.Tensor:
        return q / (self._levels - 1).clamp(min=1) * 2 - 1

    def _index(self, q: torch.Tensor) -> torch.Tensor:
        return (q.long() * self._strides).sum(dim=-1)


def autoencoder_losses(
    recon: torch.Tensor,
    x: torch.Tensor,
    q: Quantized,
    config: Any,
    discriminator: PatchDiscriminator | None = None,
    last_layer: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The losses of a quantised frame autoencoder: L1 + L2 + image-gradient reconstruction (a cheap
    stand-in for a perceptual loss, whose network we would have to download), codebook and
    commitment, weighted by ``config``'s ``l1_weight``, ``l2_weight``, ``gradient_weight``,
    ``codebook_weight`` and ``commitment_weight``; with a ``discriminator``, also the adversarial
    losses of :mod:`neuralenvs.nn.discriminator`, the decoder's scaled so that its gradient at the
    decoder's ``last_layer`` weight is ``adversarial_weight`` times the pixel losses' (VQGAN's
    adaptive weight: a fixed weight lets a discriminator that grows confident swamp the pixel
    losses). The total is ``"tokenizer"``; the batch's codebook perplexity is logged only."""
    recon, x = recon.float(), x.float()
    l1 = (recon - x).abs().mean()
    l2 = (recon - x).pow(2).mean()
    grad = image_gradient_l1(recon, x)
    pixels = config.l1_weight * l1 + config.l2_weight * l2 + config.gradient_weight * grad
    total = pixels + config.codebook_weight * q.codebook_loss + config.commitment_weight * q.commitment_loss
    logs = {}
    if discriminator is not None:
        logs = adversarial_losses(discriminator, recon, x)
        weight = config.adversarial_weight * _gradient_ratio(pixels, logs["fool"], last_layer)
        total = total + weight * logs["fool"] + logs["discriminator"]
        logs["adversarial_scale"] = weight.detach()
    return {
        "tokenizer": total,
        "recon_l1": l1,
        "recon_l2": l2,
        "gradient": grad,
        "codebook": q.codebook_loss,
        "commitment": q.commitment_loss,
        "perplexity": q.perplexity,
        **logs,
    }


def _gradient_ratio(target: torch.Tensor, other: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """|d target / d weight| / |d other / d weight| (no gradient through it), or 1 where either
    cannot be taken (no weight given, gradients off, or ``weight`` frozen)."""
    if weight is None or not torch.is_grad_enabled() or not weight.requires_grad:
        return torch.ones((), device=target.device)
    (g_target,) = torch.autograd.grad(target, weight, retain_graph=True)
    (g_other,) = torch.autograd.grad(other, weight, retain_graph=True)
    return (g_target.norm() / (g_other.norm() + 1e-4)).clamp(max=1e4).detach()


def image_gradient_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between the horizontal and vertical pixel differences of two images: it
    rewards sharp edges over blurry averages."""
    dx = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    dy = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    return 0.5 * (dx.abs().mean() + dy.abs().mean())
