"""The diffusion (DIAMOND-style) world model: interface, EDM maths, sampler, training (its reward and
termination model, shared by the families: test_reward_end.py)."""

from __future__ import annotations

import dataclasses
import json
import math
import types

import pytest
import torch
from conftest import random_context as context
from conftest import randomize

import neuralenvs.models.diffusion.world_model as world_model
from neuralenvs.models import build_model
from neuralenvs.models.diffusion import DiffusionConfig, DiffusionState, DiffusionWorldModel
from neuralenvs.models.diffusion.denoiser import edm_preconditioning
from neuralenvs.models.diffusion.sampler import karras_sigmas, sample_next_frame
from neuralenvs.nn.blocks import UNet
from neuralenvs.world_model import Segments, float_to_frames, frames_to_float

OBS = (16, 16, 3)

def make_model(obs_shape=OBS, num_actions: int = 4, seed: int = 0, **overrides) -> DiffusionWorldModel:
    torch.manual_seed(seed)
    cfg = dataclasses.replace(DiffusionConfig.named("tiny"), **overrides)
    return DiffusionWorldModel(cfg, obs_shape, num_actions)


def segments(b: int, model: DiffusionWorldModel, seed: int = 0, pad: int = 0) -> Segments:
    """Random segments with ``pad`` padded frames before the episode start; sparse rewards/ends."""
    g = torch.Generator().manual_seed(seed)
    seq = model.config.segment_length
    frames = torch.randint(0, 256, (b, seq + 1, *model.obs_shape), generator=g, dtype=torch.uint8)
    mask = torch.ones(b, seq + 1, dtype=torch.bool)
    mask[:, :pad] = False
    frames[:, :pad] = 0
    actions = torch.randint(0, model.num_actions, (b, seq), generator=g)
    actions[:, :pad] = 0
    rewards = torch.randint(-1, 2, (b, seq), generator=g).float() * 3.0  # raw, unclipped
    terminated = torch.rand(b, seq, generator=g) < 0.3
    return Segments(frames, actions, rewards, terminated, torch.zeros_like(terminated), mask)


# ---- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny", "small", "cpu-residual", "cpu-dreamed", "cpu-dreamed-end-path", "paper"])
def test_config_json_round_trip(name):
    cfg = DiffusionConfig.named(name)
    again = DiffusionConfig(**json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert again == cfg
    assert isinstance(again.channels, tuple)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown diffusion config"):
        DiffusionConfig.named("huge")
    with pytest.raises(ValueError, match="sampler"):
        DiffusionConfig(sampler="ddim")
    with pytest.raises(ValueError, match="segment_length"):
        DiffusionConfig(num_context_frames=4, segment_length=3)


def test_paper_sizes_match_diamond():
    model = build_model("diffusion", "paper", (64, 64, 3), 18)
    denoiser = sum(p.numel() for p in model.denoiser.parameters())
    assert 3.5e6 < denoiser < 5.5e6  # DIAMOND's Atari denoiser has about 4.4M parameters
    assert model.context_frames == 4 and model.config.num_denoising_steps == 3


def test_small_checkpoint_fits_in_half_precision_budget():
    model = build_model("diffusion", "small", (64, 64, 3), 18)
    assert sum(p.numel() for p in model.parameters()) * 2 < 20e6  # bytes at fp16, under 25 MB


# ---- EDM maths and sampler ------------------------------------------------------------------------


def test_edm_preconditioning_at_sigma_data():
    sd = 0.5
    pc = edm_preconditioning(torch.tensor([sd]), sd)
    assert pc.c_skip.item() == pytest.approx(0.5)
    assert pc.c_out.item() == pytest.approx(sd / math.sqrt(2))
    assert pc.c_in.item() == pytest.approx(1 / (sd * math.sqrt(2)))
    assert pc.c_noise.item() == pytest.approx(math.log(sd) / 4)
    # the unit-variance property behind the scalings: c_skip^2 sd^2 + c_out^2 = ... = sd^2 at any sigma
    sigma = torch.tensor([0.01, 0.3, 2.0, 20.0])
    pc = edm_preconditioning(sigma, sd)
    torch.testing.assert_close(pc.c_in**2 * (sd**2 + sigma**2), torch.ones(4))
    torch.testing.assert_close((1 - pc.c_skip) ** 2 * sd**2 + pc.c_skip**2 * sigma**2, pc.c_out**2)


def test_denoiser_offset_noise_enters_preconditioning():
    model = make_model()
    pc = model.denoiser.preconditioning(torch.tensor([0.4]))
    total = math.sqrt(0.4**2 + model.config.sigma_offset_noise**2)
    assert pc.c_skip.item() == pytest.approx(0.25 / (total**2 + 0.25))


def test_karras_sigmas():
    s = karras_sigmas(3, 2e-3, 5.0, 7.0)
    assert len(s) == 4 and s[-1] == 0.0
    assert s[0] == pytest.approx(5.0) and s[2] == pytest.approx(2e-3)
    assert all(a > b for a, b in zip(s, s[1:], strict=False))
    assert karras_sigmas(1, 2e-3, 5.0, 7.0) == [5.0, 0.0]


class OracleDenoiser:
    """Always 'knows' the clean frame: any correct ODE sampler must then land exactly on it."""

    def __init__(self, clean: torch.Tensor) -> None:
        self.clean = clean
        self.calls = 0

    def denoise(self, noisy, sigma, context, actions, context_noise_level=None):
        self.calls += 1
        return self.clean.expand_as(noisy)

    def to_frame(self, x, context):
        return x


@pytest.mark.parametrize("method, steps, calls", [("euler", 3, 3), ("heun", 3, 5), ("euler", 1, 1)])
def test_sampler_reaches_the_denoised_frame(method, steps, calls):
    clean = torch.rand(1, 3, 8, 8) * 2 - 1
    oracle = OracleDenoiser(clean)
    ctx, act = torch.zeros(2, 4, 3, 8, 8), torch.zeros(2, 4, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    out = sample_next_frame(oracle, ctx, act, num_steps=steps, method=method, generator=gen)
    torch.testing.assert_close(out, clean.expand(2, -1, -1, -1))
    assert oracle.calls == calls


# ---- the WorldModel interface ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "obs_shape, num_actions", [((32, 32, 3), 4), ((16, 16, 3), 18), ((64, 64, 3), 18), ((21, 30, 1), 6)]
)
def test_dream_shapes_and_dtypes(obs_shape, num_actions):
    model = make_model(obs_shape, num_actions)
    b, k = 3, model.context_frames
    state = model.init_state(*context(b, model))
    assert isinstance(state, DiffusionState)
    h, w, c = obs_shape
    assert state.frames.shape == (b, k, c, h, w) and state.frames.dtype == torch.float32
    assert state.actions.shape == (b, k - 1) and state.h.shape == (b, model.config.rew_lstm_dim)
    actions = torch.tensor([0, num_actions - 1, 1])
    for sample_heads in (False, True):
        state, frames, reward, terminated = model.step(
            state, actions, torch.Generator().manual_seed(0), sample_heads=sample_heads
        )
        assert frames.shape == (b, *obs_shape) and frames.dtype == torch.uint8
        assert reward.shape == (b,) and reward.dtype == torch.float32
        assert set(reward.tolist()) <= {-1.0, 0.0, 1.0}
        assert terminated.shape == (b,) and terminated.dtype == torch.bool
    assert state.actions[:, -1].tolist() == actions.tolist()


def test_same_seed_same_dream():
    model = randomize(make_model(), scale=0.2)
    start = model.init_state(*context(4, model))
    actions = torch.tensor([0, 1, 2, 3])

    def dream(seed: int) -> list[torch.Tensor]:
        gen, state, out = torch.Generator().manual_seed(seed), start, []
        for _ in range(3):
            state, frames, reward, terminated = model.step(state, actions, gen, sample_heads=True)
            out += [frames, reward, terminated]
        return out

    first, again, other = dream(7), dream(7), dream(8)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])


def test_step_follows_context_and_actions():
    model = randomize(make_model(), scale=0.2)
    frames, actions = context(2, model)
    state = model.init_state(frames, actions)
    a = model.step(state, torch.tensor([0, 0]), torch.Generator().manual_seed(0)).next_frames
    b = model.step(state, torch.tensor([3, 0]), torch.Generator().manual_seed(0)).next_frames
    assert not torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # the buffers shift: the dreamed frame becomes the newest context frame
    new = model.step(state, torch.tensor([0, 0]), torch.Generator().manual_seed(0)).state
    torch.testing.assert_close(new.frames[:, -1], frames_to_float(a))
    torch.testing.assert_close(new.frames[:, :-1], state.frames[:, 1:])


def test_reset_where_restarts_only_masked_dreams():
    model = randomize(make_model(), scale=0.2)
    state = model.init_state(*context(3, model, seed=0))
    state = model.step(state, torch.tensor([1, 2, 3]), torch.Generator().manual_seed(1)).state
    before = {f.name: getattr(state, f.name).clone() for f in dataclasses.fields(state)}
    mask = torch.tensor([False, True, False])
    new_frames, new_actions = context(1, model, seed=5)
    reset = model.reset_where(state, mask, new_frames, new_actions)

    for name, old in before.items():  # the given state is not modified ...
        assert torch.equal(getattr(state, name), old)
        assert torch.equal(getattr(reset, name)[~mask], old[~mask])  # ... nor are unmasked rows
    fresh = model.init_state(new_frames, new_actions)
    torch.testing.assert_close(reset.frames[mask], fresh.frames)
    torch.testing.assert_close(reset.h[mask], fresh.h)

    # same noise for the whole batch: unmasked dreams continue exactly as without the reset
    act = torch.tensor([0, 1, 2])
    plain = model.step(state, act, torch.Generator().manual_seed(3), sample_heads=True)
    after = model.step(reset, act, torch.Generator().manual_seed(3), sample_heads=True)
    keep = ~mask
    assert torch.equal(plain.next_frames[keep], after.next_frames[keep])
    assert torch.equal(plain.reward[keep], after.reward[keep])
    assert torch.equal(plain.terminated[keep], after.terminated[keep])
    assert not torch.equal(plain.next_frames[mask], after.next_frames[mask])

    nothing = model.reset_where(state, torch.zeros(3, dtype=torch.bool), new_frames[:0], new_actions[:0])
    assert torch.equal(nothing.frames, state.frames)


def test_bad_inputs_raise_clear_errors():
    model = make_model()
    frames, actions = context(2, model)
    with pytest.raises(ValueError, match="shape"):
        model.init_state(frames[:, 1:], actions)
    with pytest.raises(TypeError, match="uint8"):
        model.init_state(frames.float(), actions)
    state = model.init_state(frames, actions)
    with pytest.raises(ValueError, match="one action per dream"):
        model.step(state, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        model.step(state, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="selects 1 dreams"):
        model.reset_where(state, torch.tensor([True, False]), frames, actions)


# ---- training -------------------------------------------------------------------------------------


def test_training_losses_are_finite_with_padding():
    model = make_model()
    k = model.context_frames
    for pad in (0, k, model.config.segment_length + 1):  # none, context only, the whole segment
        losses = model.training_losses(segments(4, model, pad=pad))
        assert set(losses) == {"loss", "denoising", "reward", "termination"}
        assert all(torch.isfinite(v) for v in losses.values())
        losses["loss"].backward()


def test_a_frozen_denoiser_skips_its_loss_and_the_heads_still_train():
    model = make_model()
    batch = segments(4, model, seed=1)
    torch.manual_seed(0)
    full = model.training_losses(batch)
    model.denoiser.requires_grad_(False)
    heads_only = model.training_losses(batch)
    assert full["denoising"] > 0 and heads_only["denoising"] == 0
    torch.testing.assert_close(heads_only["loss"], full["loss"] - full["denoising"])
    heads_only["loss"].backward()
    assert all(p.grad is None for p in model.denoiser.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.reward_end.parameters())


def test_training_losses_decrease():
    model = make_model()
    batch = segments(4, model, seed=3, pad=1)
    batch.frames[:, 2:] = batch.frames[:, 1:2]  # static scenes: learnable by copying the context
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def evaluate() -> dict[str, float]:
        torch.manual_seed(123)  # the same noise levels and noise both times
        with torch.no_grad():
            return {k: v.item() for k, v in model.training_losses(batch).items()}

    start = evaluate()
    for _ in range(30):
        opt.zero_grad()
        model.training_losses(batch)["loss"].backward()
        opt.step()
    end = evaluate()
    for key in ("denoising", "reward", "termination"):
        assert end[key] < 0.8 * start[key], (key, start[key], end[key])


def test_dreamed_context_replaces_only_the_last_real_frames_before_a_target():
    model = randomize(make_model(dreamed_context_frames=2, denoising_targets=3), scale=0.2)
    k, seq = model.context_frames, model.config.segment_length
    batch = segments(64, model, seed=5)
    batch.mask[32:, seq - 1] = False  # the frame just before the last target is padding in half the rows
    frames = frames_to_float(batch.frames)
    pos = torch.tensor([[k, seq - 1, seq]]).expand(64, 3)  # no room, room for 1, room for 2 dreamed frames
    rows = torch.arange(64)[:, None]
    real = frames[rows[..., None], pos[..., None] + torch.arange(-k, 0)]
    torch.manual_seed(0)
    dreamed = model._dream_context_ends(frames, batch.actions.long(), batch.mask, pos, real)
    changed = (dreamed != real).flatten(3).any(dim=3)  # [B, n, K]: which context frames were dreamed
    assert not changed[:, 0].any()  # the target right after the context start cannot have any
    assert changed[:, 1, :-1].sum() == 0 and changed[:, 1, -1].any()
    assert not changed[32:, 2].any()  # never where a frame to replace is padding
    depth = changed[:32, 2].sum(dim=1)
    assert set(depth.tolist()) == {0, 1, 2}  # 0 to dreamed_context_frames, drawn per target
    assert torch.equal(changed[:32, 2, -1], depth > 0)  # always the last frames
    losses = model.training_losses(batch)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()


def test_context_noise_reaches_the_denoiser_at_a_level_drawn_per_target(monkeypatch):
    def contexts_seen(model: DiffusionWorldModel) -> tuple[torch.Tensor, torch.Tensor]:
        """(the context the denoiser was trained on, the real frames it stands for)."""
        seen = {}
        real_loss = model.denoiser.loss

        def spy(context, actions, target, weight=None, context_noise_level=None):
            seen["context"], seen["level"] = context, context_noise_level
            return real_loss(context, actions, target, weight, context_noise_level)

        monkeypatch.setattr(model.denoiser, "loss", spy)
        batch = segments(128, model, seed=7)
        torch.manual_seed(0)
        model.training_losses(batch)
        # the targets are drawn at random: find each one's real context among the segment's windows
        frames = frames_to_float(batch.frames)
        k = model.context_frames
        windows = frames.unfold(1, k, 1).permute(0, 1, 5, 2, 3, 4)  # [B, L+2-k, K, C, H, W]
        ctx = seen["context"].unflatten(0, (128, -1))  # [B, n, K, C, H, W]
        dist = (ctx[:, :, None] - windows[:, None]).abs().flatten(3).mean(dim=3)  # [B, n, windows]
        real = windows[torch.arange(128)[:, None], dist.argmin(dim=2)]
        return ctx, real, seen["level"]

    def noise_std(ctx: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        inside = (real.abs() < 0.9).float()  # away from the clamp at +-1
        noise = ((ctx - real) * inside).pow(2).flatten(3).sum(dim=3) / inside.flatten(3).sum(dim=3)  # [B, n, K]
        std = noise.mean(dim=2).sqrt().flatten()  # one level per target, the same for its K frames
        assert (noise.sqrt() - std.view(128, -1, 1)).abs().max() < 0.02
        return std

    ctx, real, level = contexts_seen(make_model())
    assert torch.equal(ctx, real) and level is None  # off by default
    ctx, real, level = contexts_seen(make_model(context_noise_max=0.2))
    std = noise_std(ctx, real)
    assert std.max() < 0.2 * 1.05 and std.min() < 0.03 and std.max() > 0.15 and level is None
    # told: each target's std is its level's (0, 0.05, ..., 0.2), and the denoiser hears that level
    ctx, real, level = contexts_seen(make_model(context_noise_max=0.2, context_noise_levels=5))
    std = noise_std(ctx, real)
    assert level.shape == std.shape and set(level.tolist()) == {0, 1, 2, 3, 4}
    assert (std - 0.05 * level).abs().max() < 0.02  # nearer its own level than any other (0.05 apart)


def test_a_model_told_its_context_noise_dreams_as_its_base_until_trained_and_hears_the_dream_level(monkeypatch):
    base = randomize(make_model(), scale=0.2)
    told = make_model(context_noise_max=0.2, context_noise_levels=5)
    weights = base.state_dict()
    assert set(told.fine_tune_weight_defaults(weights)) == {"denoiser.net.context_noise_emb.weight"}
    told.load_state_dict({**told.fine_tune_weight_defaults(weights), **weights})
    assert told.fine_tune_weight_defaults(told.state_dict()) == {}
    frames, actions = context(3, base)
    step = torch.randint(0, 4, (3,), generator=torch.Generator().manual_seed(1))

    def dream(model: DiffusionWorldModel) -> torch.Tensor:
        state = model.init_state(frames, actions)
        return model.step(state, step, torch.Generator().manual_seed(2)).state.frames[:, -1]

    assert torch.equal(dream(base), dream(told))  # a zero embedding: the model it came from
    with torch.no_grad():
        told.denoiser.net.context_noise_emb.weight.normal_()
    assert torch.equal(dream(base), dream(told)) is False  # now it hears level 0
    # dreaming at a level: noise of that level's std on the context, and the level told
    noisy = DiffusionWorldModel(
        dataclasses.replace(told.config, dream_context_noise_level=3), told.obs_shape, told.num_actions
    )
    noisy.load_state_dict(told.state_dict())
    heard = []
    noisy.denoiser.net.context_noise_emb.register_forward_hook(lambda module, args, out: heard.append(args[0]))
    contexts = []

    def spy(denoiser, context, *args, **kwargs):
        contexts.append(context)
        return sample_next_frame(denoiser, context, *args, **kwargs)

    monkeypatch.setattr(world_model, "sample_next_frame", spy)
    first = dream(noisy)
    assert heard[-1].tolist() == [3, 3, 3] and torch.equal(first, dream(noisy))  # seeded
    assert torch.equal(first, dream(told)) is False
    clean = frames_to_float(frames)
    inside = clean.abs() < 0.6  # away from the clamp at +-1
    std = (contexts[0] - clean)[inside].std()
    assert abs(std - 0.15) < 0.01  # level 3 of 0, 0.05, ..., 0.2
    assert torch.equal(contexts[-1], clean)  # level 0: the clean context


def test_context_noise_levels_are_checked():
    with pytest.raises(ValueError, match="context_noise_levels"):
        DiffusionConfig(context_noise_max=0.2, context_noise_levels=1)
    with pytest.raises(ValueError, match="context_noise_max"):
        DiffusionConfig(context_noise_levels=4)
    with pytest.raises(ValueError, match="dream_context_noise_level"):
        DiffusionConfig(context_noise_max=0.2, context_noise_levels=4, dream_context_noise_level=4)
    assert "dream_context_noise_level" in DiffusionConfig.DREAM_TIME_FIELDS  # `neuralenvs resample` sets it


def test_dreamed_context_frames_must_fit_the_segment():
    with pytest.raises(ValueError, match="dreamed_context_frames"):
        DiffusionConfig(num_context_frames=4, segment_length=6, dreamed_context_frames=3)
    DiffusionConfig(num_context_frames=4, segment_length=10, dreamed_context_frames=6)  # longer than K


def test_a_dream_longer_than_the_context_replaces_all_of_it_with_its_last_frames(monkeypatch):
    model = randomize(make_model(dreamed_context_frames=4, denoising_targets=1, segment_length=6), scale=0.2)
    k, seq = model.context_frames, model.config.segment_length
    batch = segments(64, model, seed=5)
    frames = frames_to_float(batch.frames)
    pos = torch.full((64, 1), seq)  # room for every depth up to 4
    real = frames[torch.arange(64)[:, None, None], pos[..., None] + torch.arange(-k, 0)]
    steps = []  # (rows, how many frames of the window were real) per dreamed step
    dream_frame = model._dream_frame

    def counting(x, actions, generator=None):
        steps.append(len(x))
        return dream_frame(x, actions, generator)

    monkeypatch.setattr(model, "_dream_frame", counting)
    torch.manual_seed(0)
    dreamed = model._dream_context_ends(frames, batch.actions.long(), batch.mask, pos, real)[:, 0]
    changed = (dreamed != real[:, 0]).flatten(2).any(dim=2)  # [B, K]
    assert set(changed.sum(dim=1).tolist()) == {0, 1, 2}  # K = 2: depths 2, 3 and 4 replace all of it
    assert torch.equal(changed[:, 0], changed[:, 1] & changed[:, 0])  # always the last frames
    assert len(steps) == 1 + 2 + 3 + 4  # depth m dreams m steps, past the context's length


# ---- reward / termination model -------------------------------------------------------------------


def test_an_end_path_of_its_own_starts_as_a_copy_of_the_shared_one_it_is_fine_tuned_from():
    shared = make_model(seed=1)
    weights = shared.state_dict()
    own = make_model(seed=2, rew_end_lstm_dim=shared.config.rew_lstm_dim)
    own.load_state_dict({**own.fine_tune_weight_defaults(weights), **weights})
    frames = torch.rand(2, 4, 3, *OBS[:2]) * 2 - 1
    actions = torch.randint(0, 4, (2, 3))
    _, end_shared, _ = shared.reward_end(frames[:, :-1], actions, frames[:, 1:])
    _, end_own, _ = own.reward_end(frames[:, :-1], actions, frames[:, 1:])
    torch.testing.assert_close(end_own, end_shared)
    # another size cannot be copied, and a checkpoint that has its own end path is not overwritten
    assert make_model(rew_end_lstm_dim=3).fine_tune_weight_defaults(weights) == {}
    assert own.fine_tune_weight_defaults(own.state_dict()) == {}


def test_init_state_burns_in_reward_memory():
    model = randomize(make_model(num_context_frames=3, segment_length=4), scale=0.2)
    frames, actions = context(2, model)
    state = model.init_state(frames, actions)
    x = frames_to_float(frames)
    _, _, (h, c) = model.reward_end(x[:, :-1], actions, x[:, 1:])
    torch.testing.assert_close(state.h, h)
    torch.testing.assert_close(state.c, c)


def test_unet_handles_any_size():
    net = UNet(cond_dim=8, channels=(4, 8, 8), depths=(1, 1, 1), attention=(False, True, False))
    for hw in ((16, 16), (13, 7)):
        x = torch.randn(2, 4, *hw)
        assert net(x, torch.randn(2, 8)).shape == x.shape


def test_heun_and_patch_configs_dream():
    for overrides in ({"sampler": "heun"}, {"patch_size": 2}):
        model = make_model((15, 17, 3), **overrides)
        state = model.init_state(*context(2, model))
        assert model.step(state, torch.tensor([0, 1])).next_frames.shape == (2, 15, 17, 3)
        assert torch.isfinite(model.training_losses(segments(2, model))["loss"])


def test_diffusion_world_model_sets_its_end_prior_from_the_data():
    model = make_model(rew_balance_ends=True)

    class Data:  # two episodes, 10 steps, one end
        def episode(self, i):
            return types.SimpleNamespace(terminated=torch.tensor([False] * 4 + [i == 1]).numpy())

    report = model.prepare_stage("all", Data(), [0, 1])
    assert report == {"end_rate": 0.1}
    torch.testing.assert_close(model.reward_end.end_logit_offset, torch.tensor([math.log(1.8), math.log(0.2)]))
    assert make_model().prepare_stage("all", Data(), [0, 1]) is None


def test_residual_denoiser_dreams_the_last_frame_when_untrained():
    """With predict_residual, a network that outputs nothing dreams "repeat the last frame"; the
    training target is the change, so a perfect residual makes the loss's target exact."""
    model = make_model(predict_residual=True, sigma_data=0.1)
    for p in model.denoiser.parameters():
        torch.nn.init.zeros_(p)
    frames, actions = context(3, model)
    state = model.init_state(frames, actions)
    next_frames = model.step(state, torch.tensor([0, 1, 2]), generator=torch.Generator().manual_seed(0)).next_frames
    # zero output: D = c_skip * noisy, which shrinks the noise to ~0 at the last step
    assert (next_frames.int() - frames[:, -1].int()).abs().max() <= 2
    plain = make_model()
    for p in plain.denoiser.parameters():
        torch.nn.init.zeros_(p)
    plain_frames = plain.step(plain.init_state(frames, actions), torch.tensor([0, 1, 2])).next_frames
    assert (plain_frames.int() - frames[:, -1].int()).abs().float().mean() > 20
    assert torch.isfinite(model.training_losses(segments(2, model, pad=1))["loss"])


def test_a_config_from_before_the_optimizer_settings_moved_to_train_config_still_builds():
    from neuralenvs.models.presets import config_from_dict

    old = {**dataclasses.asdict(DiffusionConfig.named("tiny")), "batch_size": 4, "learning_rate": 1e-4,
           "weight_decay": 0.01, "max_grad_norm": 1.0}
    assert config_from_dict(DiffusionConfig, old) == DiffusionConfig.named("tiny")
    with pytest.raises(TypeError):
        config_from_dict(DiffusionConfig, {**old, "no_such_setting": 1})


def test_requantized_frames_sit_on_the_8_bit_grid():
    torch.manual_seed(0)
    config = dataclasses.replace(DiffusionConfig.named("tiny"), requantize_frames=True)
    model = build_model("diffusion", dataclasses.asdict(config), (16, 16, 3), 3)
    state = model.init_state(torch.randint(0, 256, (2, 2, 16, 16, 3), dtype=torch.uint8), torch.zeros(2, 1).long())
    result = model.step(state, torch.zeros(2).long(), torch.Generator().manual_seed(0))
    levels = (result.state.frames[:, -1] + 1) * 127.5
    assert torch.equal(levels, levels.round())
    assert torch.equal(frames_to_float(result.next_frames), result.state.frames[:, -1])  # what is shown is fed back


def test_drop_change_levels_keeps_pixels_that_barely_moved_and_lets_real_changes_through():
    from neuralenvs.models.diffusion.world_model import keep_still_pixels

    last = frames_to_float(torch.full((1, 4, 4, 3), 100, dtype=torch.uint8))
    moved = torch.full((1, 4, 4, 3), 100, dtype=torch.uint8)
    moved[0, 0, 0, 1] = 101  # one level in one channel: sampler noise
    moved[0, 0, 1] = 102  # two levels in every channel
    moved[0, 0, 2, 0] = 140  # a sprite: one channel far off
    kept = float_to_frames(keep_still_pixels(frames_to_float(moved), last, levels=1))
    assert kept[0, 0, 0].tolist() == [100, 100, 100]
    assert kept[0, 0, 1].tolist() == [102, 102, 102]
    assert kept[0, 0, 2].tolist() == [140, 100, 100]  # a pixel that moved keeps all its channels' change
    assert torch.equal(float_to_frames(keep_still_pixels(frames_to_float(moved), last, levels=2))[0, 0, 1],
                       torch.tensor([100, 100, 100], dtype=torch.uint8))


def test_a_dream_with_drop_change_levels_holds_a_still_screen_exactly():
    torch.manual_seed(0)
    config = dataclasses.replace(DiffusionConfig.named("tiny"), drop_change_levels=255)
    model = build_model("diffusion", dataclasses.asdict(config), (16, 16, 3), 3)
    start = torch.randint(0, 256, (2, 2, 16, 16, 3), dtype=torch.uint8)
    state = model.init_state(start, torch.zeros(2, 1).long())
    for _ in range(3):
        state, frames, _, _ = model.step(state, torch.zeros(2).long(), torch.Generator().manual_seed(0))
    assert torch.equal(frames, start[:, -1])  # nothing may move by more than 255 levels


def test_resample_changes_only_how_the_model_dreams(tmp_path):
    import numpy as np

    from neuralenvs.checkpoint import load_checkpoint, resample, save_checkpoint

    torch.manual_seed(0)
    model = build_model("diffusion", "tiny", (16, 16, 3), 3)
    starts = np.zeros((2, 2, 16, 16, 3), np.uint8), np.zeros((2, 1), np.int64)
    save_checkpoint(tmp_path / "a", model=model, starts_frames=starts[0], starts_actions=starts[1], game=None,
                    metrics={"fidelity": {"psnr": 1.0}, "notes": "kept"})
    resample(tmp_path / "a", tmp_path / "b", num_denoising_steps=1, sample_sigma_max=1.5)
    before, after = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert after.config["model_config"]["num_denoising_steps"] == 1
    assert after.config["model_config"]["sample_sigma_max"] == 1.5
    assert all(torch.equal(before.weights[k], after.weights[k]) for k in before.weights)
    assert after.config["metrics"] == {"notes": "kept"}  # measured under the old settings: dropped
    assert after.config["provenance"]["resampled"]["before"] == {"num_denoising_steps": 2, "sample_sigma_max": 5.0}
    with pytest.raises(ValueError, match="cannot change after training"):
        resample(tmp_path / "a", tmp_path / "c", channels=[4, 4])


def test_context_fading_pulls_each_window_toward_the_batch_background_and_reaches_the_denoiser(monkeypatch):
    g = torch.Generator().manual_seed(0)
    background = torch.rand(3, 8, 8, generator=g) * 2 - 1
    context = background.expand(64, 4, 3, 8, 8).clone()
    for n in range(64):  # one bright sprite per window, somewhere else in each: the median is the background
        y, x = divmod(n, 8)
        context[n, :, :, y, x] = 1.0
    model = make_model(context_fade_max=0.6)
    assert torch.equal(make_model()._faded_context(context), context)  # off by default
    faded = model._faded_context(context)
    sprite = context != background
    keep = (faded - background) / (context - background).where(sprite, torch.tensor(1.0))
    per_window = torch.stack([keep[n][sprite[n]].mean() for n in range(64)])
    for n in range(64):  # one factor per window, the same in all its frames and channels
        assert torch.allclose(keep[n][sprite[n]], per_window[n].expand(int(sprite[n].sum())), atol=1e-5)
    assert torch.allclose(faded[~sprite], context[~sprite])  # the background stays
    assert per_window.min() >= 0.4 - 1e-5 and per_window.max() <= 1.0 + 1e-5
    assert per_window.min() < 0.5 and per_window.max() > 0.9  # drawn from the whole range
    # training goes through it: the denoiser learns from the faded context
    calls, seen = [], []
    fade = model._faded_context
    monkeypatch.setattr(model, "_faded_context", lambda ctx: calls.append(fade(ctx)) or calls[-1])
    real_loss = model.denoiser.loss

    def spy(context, *args, **kwargs):
        seen.append(context)
        return real_loss(context, *args, **kwargs)

    monkeypatch.setattr(model.denoiser, "loss", spy)
    model.training_losses(segments(8, model, seed=1))
    assert len(calls) == 1 and seen[0] is calls[0]
    with pytest.raises(ValueError, match="context_fade_max"):
        DiffusionConfig(context_fade_max=1.5)
