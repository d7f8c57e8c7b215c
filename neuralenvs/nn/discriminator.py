"""An adversarial loss for a frame decoder (after VQGAN, Esser et al. 2021): a small convolutional
discriminator scores overlapping patches as real or rebuilt, and the decoder learns to fool it.

Pixel losses (L1, L2, image gradients) reward the mean of every frame the tokens could stand for,
which is a blur wherever the tokens leave the picture uncertain (a boxer's exact pose in a 16x16
patch). The discriminator rewards a frame that looks real instead, so the decoder commits to sharp
sprites. No pretrained network is involved, so nothing is downloaded.

:func:`adversarial_losses` returns the discriminator's and the decoder's losses so that their sum
trains both with one optimizer and one backward pass: the decoder's term scores the rebuilt frames
with the discriminator's weights detached, and the discriminator's term scores them detached from
the decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from neuralenvs.nn.blocks import group_norm


class PatchDiscriminator(nn.Module):
    """Frames float [B, C, H, W] in [-1, 1] -> logits [B, 1, h, w], one per overlapping patch
    (real: high). Each of ``channels`` is a 4x4 convolution, strided by 2 except the last, so three
    levels see patches of about 34x34 pixels."""

    def __init__(self, img_channels: int, channels: tuple[int, ...] = (32, 64, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = img_channels
        for i, c in enumerate(channels):
            stride = 2 if i < len(channels) - 1 else 1
            layers.append(nn.Conv2d(c_in, c, kernel_size=4, stride=stride, padding=1))
            if i > 0:  # the first level sees raw pixels: normalising them would hide their scale
                layers.append(group_norm(c))
            layers.append(nn.LeakyReLU(0.2))
            c_in = c
        layers.append(nn.Conv2d(c_in, 1, kernel_size=4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.net[0].weight.dtype))


def adversarial_losses(
    discriminator: PatchDiscriminator, rebuilt: torch.Tensor, real: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Hinge losses on frames float [B, C, H, W]: ``"fool"``, the decoder's (minus the mean score
    of ``rebuilt``, the discriminator's weights held fixed), and ``"discriminator"``, its own (real
    frames above +1, rebuilt ones below -1, ``rebuilt`` held fixed)."""
    fixed = {name: p.detach() for name, p in discriminator.named_parameters()}
    fool = -functional_call(discriminator, fixed, (rebuilt,)).float().mean()
    real_score = discriminator(real).float()
    rebuilt_score = discriminator(rebuilt.detach()).float()
    discriminator_loss = F.relu(1.0 - real_score).mean() + F.relu(1.0 + rebuilt_score).mean()
    return {"fool": fool, "discriminator": discriminator_loss}
