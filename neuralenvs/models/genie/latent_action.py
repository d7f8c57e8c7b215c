"""The latent action model (LAM): which of ``n_latent`` actions led from the past frames to the next.

Genie learns actions from video alone with a VQ-VAE whose bottleneck is tiny: an encoder sees the
past frames and the next frame and outputs one latent action out of ``n_latent`` (8 in Genie); a
decoder sees only the past frames and that latent action and must rebuild the next frame. What the
past frames cannot predict, such as where the player moved, has to pass through the latent action,
and 3 bits can only carry the few most useful distinctions, which are the controllable ones.

Here both halves are small CNNs on pixels (Genie uses ST-transformers on pixel patches):

- encoder: ``[past frames, next frame, next - last]`` stacked on channels, residual levels with
  strided downsampling, mean- and max-pooled over space (a change reads the same wherever it
  happens), a linear map to one number per quantiser dimension;
- quantiser: finite scalar quantisation (``neuralenvs.nn.quantize.FiniteScalarQuantizer``) with
  levels whose product is ``n_latent`` (8 = 2 x 2 x 2: three bits);
- decoder: a U-Net on the past frames, given the latent action's code both as extra input channels
  and through every block's adaptive group norm, predicting the change from the last frame.

Why FSQ and not Genie's VQ codebook: with 8 codes, a VQ codebook learns the codes and the encoder
at once, and on CPU-sized budgets it kept settling on codes that said nothing about the motion (on
a toy of a square moved in 4 directions, 250 steps: VQ with dead-code revival mapped the four
directions to one or two codes; FSQ separated 3 to 4 of them, each read the same way 85-100% of the
time). FSQ's codes are fixed grid points, so the encoder only has to learn on which side of each
boundary a transition falls.

Collapse guard. An FSQ bottleneck collapses when a dimension's value stops depending on the input:
every transition then falls on the same side of its boundary, half the latent actions are never
used, and if every dimension does so, every transition reads as one action. The guard subtracts from
each dimension, before quantising, a running median of its values over training batches (a buffer
set by the first batch, then updated by exponential moving average, ``lam_center_decay``, without
gradients), so each boundary
stays where it splits the data in two and no dimension can be constant. Unlike a loss that pushes
the values apart (two variants were tried and both spoiled learning on the toy), it never fights
the reconstruction gradient. On the toy with the encoder forced into collapse (a large output bias),
the guarded LAM used several codes again within 100 steps; the unguarded one stayed on one code.
The batch's code perplexity is logged (``lam_perplexity``: 1 is collapsed, ``n_latent`` uniform).

The LAM is used only during training and to read the latent actions of real frames (the context a
dream starts from, the labelled steps that fit the real-to-latent action map, the controllability
measure); a dream never runs its decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neuralenvs.models.genie.config import GenieConfig
from neuralenvs.nn.blocks import Downsample, ResidualBlock, UNet, group_norm
from neuralenvs.nn.quantize import FiniteScalarQuantizer, fsq_levels


class LatentActionModel(nn.Module):
    def __init__(self, cfg: GenieConfig, img_channels: int, img_size: tuple[int, int]) -> None:
        super().__init__()
        self.cfg = cfg
        p, ch, c = cfg.lam_patch_size, cfg.lam_channels, cfg.lam_context
        h, w = img_size
        if h % p or w % p:
            raise ValueError(
                f"the latent action model folds {p}x{p} pixel patches (lam_patch_size), which do not tile "
                f"{h}x{w} frames: choose a lam_patch_size that divides both sides"
            )
        self.patch = p
        # encoder: (past, next, next - last) -> one vector
        layers: list[nn.Module] = [nn.Conv2d((c + 2) * img_channels * p * p, ch[0], kernel_size=3, padding=1)]
        for i, width in enumerate(ch):
            if i > 0:
                layers.append(Downsample(ch[i - 1]))
            layers += [ResidualBlock(ch[max(0, i - 1)] if j == 0 else width, width) for j in range(cfg.lam_depths[i])]
        layers += [group_norm(ch[-1]), nn.SiLU()]
        self.encoder = nn.Sequential(*layers)
        self.quantizer = FiniteScalarQuantizer(fsq_levels(cfg.n_latent))
        code_dim = self.quantizer.dim
        self.to_code = nn.Linear(2 * ch[-1], code_dim)
        # collapse guard: the running median of each dimension, subtracted before quantising
        self.register_buffer("center", torch.zeros(code_dim))
        self.register_buffer("center_initialized", torch.zeros((), dtype=torch.bool))
        # decoder: past frames + code -> next frame
        cond = 4 * ch[-1]
        self.code_to_cond = nn.Sequential(nn.Linear(code_dim, cond), nn.SiLU(), nn.Linear(cond, cond))
        # the code enters twice: broadcast as input channels, and through every block's norm
        self.dec_in = nn.Conv2d(c * img_channels * p * p + code_dim, ch[0], kernel_size=3, padding=1)
        self.dec_body = UNet(cond, ch, cfg.lam_depths, mid_attention=False)
        self.dec_out = nn.Sequential(group_norm(ch[0]), nn.SiLU(), nn.Conv2d(ch[0], img_channels * p * p, 3, padding=1))
        nn.init.zeros_(self.dec_out[-1].weight)  # starts by predicting "nothing changes"
        nn.init.zeros_(self.dec_out[-1].bias)

    def _fold(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(x, self.patch) if self.patch > 1 else x

    def encode(self, past: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        """Past frames float ``[N, lam_context, C, H, W]`` (oldest first) and the next frame
        ``[N, C, H, W]`` -> continuous latent actions ``[N, quantizer dims]`` (before quantising)."""
        x = torch.cat([past.flatten(1, 2), nxt, nxt - past[:, -1]], dim=1)
        h = self.encoder(self._fold(x))
        # pooled over space: a change reads the same wherever it happens. In float32: bf16 would
        # round many values onto the median, and the median onto a quantisation boundary
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1).float()
        with torch.autocast(pooled.device.type, enabled=False):
            z = self.to_code(pooled)
        if self.training and torch.is_grad_enabled() and z.shape[0] > 1:  # a training step: follow the median
            with torch.no_grad():
                median = z.median(dim=0).values
                if bool(self.center_initialized):
                    self.center.lerp_(median, 1.0 - self.cfg.lam_center_decay)
                else:  # the first training batch sets it
                    self.center.copy_(median)
                    self.center_initialized.fill_(True)
        return z - self.center

    def infer(self, past: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        """The latent action (long ``[N]``) that led from ``past`` to ``nxt``."""
        return self.quantizer.quantize(self.encode(past, nxt))

    def decode(self, past: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Predicted next frame ``[N, C, H, W]`` from the past frames and codes ``[N, dims]``."""
        codes = codes.to(self.dec_in.weight.dtype)
        x = self._fold(past.flatten(1, 2))
        x = torch.cat([x, codes[:, :, None, None].expand(-1, -1, *x.shape[2:])], dim=1)
        h = self.dec_body(self.dec_in(x), self.code_to_cond(codes))
        delta = self.dec_out(h)
        delta = F.pixel_shuffle(delta, self.patch) if self.patch > 1 else delta
        return past[:, -1] + delta

    def losses(self, past: torch.Tensor, nxt: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruction (MSE of the rebuilt next frame) and spread losses on N transitions; the
        weighted total is ``"latent_actions"``. Also logs the batch's code perplexity."""
        cfg = self.cfg
        z = self.encode(past, nxt)
        codes, indices = self.quantizer(z)
        recon = self.decode(past, codes).float()
        mse = (recon - nxt.float()).pow(2).mean()
        with torch.no_grad():
            usage = torch.bincount(indices.flatten(), minlength=cfg.n_latent).float()
            p = usage / usage.sum().clamp(min=1)
            perplexity = torch.exp(-(p * p.clamp(min=1e-10).log()).sum())
        return {
            "latent_actions": mse,
            "lam_recon": mse,
            "lam_perplexity": perplexity,
        }
