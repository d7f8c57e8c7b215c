"""The adversarial loss of the frame tokenizers (neuralenvs.nn.discriminator): each term trains only
its own side, a trained discriminator tells sharp frames from blurred ones, and fooling it sharpens."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from neuralenvs.models import build_model
from neuralenvs.models.genie.config import GenieConfig
from neuralenvs.models.token.config import TokenConfig
from neuralenvs.nn.discriminator import PatchDiscriminator, adversarial_losses


def blocky_frames(n: int, seed: int) -> torch.Tensor:
    """Frames of flat-coloured 4x4 blocks with hard edges, float [n, 3, 32, 32] in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1
    return F.interpolate(coarse, scale_factor=4, mode="nearest")


def blur(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def test_each_term_trains_only_its_own_side() -> None:
    torch.manual_seed(0)
    disc = PatchDiscriminator(3)
    real = blocky_frames(4, 0)
    rebuilt = blur(blocky_frames(4, 1)).requires_grad_()
    losses = adversarial_losses(disc, rebuilt, real)
    losses["fool"].backward(retain_graph=True)
    assert rebuilt.grad is not None and rebuilt.grad.abs().sum() > 0
    assert all(p.grad is None for p in disc.parameters())  # the decoder's term leaves the discriminator
    rebuilt.grad = None
    losses["discriminator"].backward()
    assert rebuilt.grad is None  # and the discriminator's term leaves the decoder
    assert all(p.grad is not None for p in disc.parameters())


def test_the_discriminator_learns_blur_and_fooling_it_sharpens() -> None:
    torch.manual_seed(0)
    disc = PatchDiscriminator(3)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3)
    for step in range(150):
        real = blocky_frames(16, step)
        loss = adversarial_losses(disc, blur(blocky_frames(16, 10_000 + step)), real)["discriminator"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        sharp, blurred = blocky_frames(32, -1), blur(blocky_frames(32, -2))
        assert disc(sharp).mean() > disc(blurred).mean() + 1.0

    # a "decoder" with one weight, how sharp its frames are, started at the blurred end: fooling the
    # discriminator alone moves it towards the sharp end
    sharpness = torch.zeros((), requires_grad=True)
    sharp = blocky_frames(8, -3)
    weight_opt = torch.optim.Adam([sharpness], lr=5e-2)
    for _ in range(20):
        frames = sharpness * sharp + (1 - sharpness) * blur(sharp)
        fool = adversarial_losses(disc, frames, blocky_frames(8, -4))["fool"]
        weight_opt.zero_grad()
        fool.backward()
        weight_opt.step()
    assert float(sharpness.detach()) > 0.5


@pytest.mark.parametrize(("family", "config"), [
    ("genie", dataclasses.replace(GenieConfig.named("tiny"), adversarial_weight=0.1, tokenizer_frames=1)),
    ("token", dataclasses.replace(TokenConfig.named("tiny"), adversarial_weight=0.1, tokenizer_frames=1)),
])
def test_a_tokenizer_with_an_adversarial_weight_trains_a_discriminator(family, config) -> None:
    torch.manual_seed(0)
    model = build_model(family, dataclasses.asdict(config), (32, 32, 3), 4)
    losses = model.tokenizer.losses(blocky_frames(2, 0))
    assert {"fool", "discriminator"} <= set(losses)
    losses["tokenizer"].backward()
    assert all(p.grad is not None for p in model.tokenizer.discriminator.parameters())
    assert any(name.startswith("tokenizer.discriminator.") for name in model.state_dict())
    plain = build_model(family, dataclasses.asdict(dataclasses.replace(config, adversarial_weight=0.0)), (32, 32, 3), 4)
    assert plain.tokenizer.discriminator is None and "fool" not in plain.tokenizer.losses(blocky_frames(2, 0))


@pytest.mark.parametrize("config_class", [GenieConfig, TokenConfig])
def test_a_negative_adversarial_weight_is_refused(config_class) -> None:
    with pytest.raises(ValueError, match="adversarial_weight"):
        dataclasses.replace(config_class.named("tiny"), adversarial_weight=-0.1)


@pytest.mark.parametrize(("family", "config_class"), [("genie", GenieConfig), ("token", TokenConfig)])
def test_the_decoders_adversarial_gradient_is_the_weight_times_the_pixel_losses(family, config_class) -> None:
    torch.manual_seed(0)
    config = dataclasses.replace(config_class.named("tiny"), adversarial_weight=0.3)
    tokenizer = build_model(family, dataclasses.asdict(config), (32, 32, 3), 4).tokenizer
    losses = tokenizer.losses(blocky_frames(2, 0))
    pixels = config.l1_weight * losses["recon_l1"] + config.l2_weight * losses["recon_l2"]
    pixels = pixels + config.gradient_weight * losses["gradient"]
    last = tokenizer.decoder[-1].weight if family == "genie" else tokenizer.decoder.conv_out.weight
    (g_pixels,) = torch.autograd.grad(pixels, last, retain_graph=True)
    (g_adversarial,) = torch.autograd.grad(losses["adversarial_scale"] * losses["fool"], last)
    assert float(g_adversarial.norm()) == pytest.approx(0.3 * float(g_pixels.norm()), rel=1e-3)
