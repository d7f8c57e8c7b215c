"""A diffusion dream told the step of its episode (``DiffusionConfig.age_steps``): where the step
comes from (segments, start banks, the measurements), how it counts on along a dream, and that a
model told it starts as the one it is fine-tuned from."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from neuralenvs.data import Episode, EpisodeDataset
from neuralenvs.envs.dream import DreamVectorEnv
from neuralenvs.envs.starts import StartBank
from neuralenvs.measure.fidelity import measure_fidelity
from neuralenvs.models.diffusion import DiffusionConfig, DiffusionWorldModel
from neuralenvs.world_model import Segments, frames_to_float

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy_world_model import ProbeModel  # noqa: E402

OBS = (16, 16, 3)


def make_model(seed: int = 0, **overrides) -> DiffusionWorldModel:
    torch.manual_seed(seed)
    cfg = dataclasses.replace(DiffusionConfig.named("tiny"), **overrides)
    return DiffusionWorldModel(cfg, OBS, 4)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random values everywhere (a fresh model zero-initialises its output and new embeddings)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def step_frame(step: int | torch.Tensor) -> torch.Tensor | int:
    """The grey level of the synthetic frame seen at an episode step (distinct for steps -10 to 41)."""
    return step * 5 + 50


def step_of(frames: torch.Tensor) -> torch.Tensor:
    """The step a synthetic uint8 frame [..., H, W, C] (or float [..., C, H, W]) stands for."""
    level = frames.flatten(-3)[..., 0]
    if level.dtype.is_floating_point:
        level = ((level + 1) * 127.5).round()
    return ((level.long() - 50) // 5)


def episode(length: int, seed: int = 0) -> Episode:
    """Frames whose grey level tells their step, so a test can read a frame's place back."""
    steps = torch.arange(length + 1)
    frames = step_frame(steps).to(torch.uint8)[:, None, None, None].expand(-1, *OBS).numpy().copy()
    rng = np.random.default_rng(seed)
    terminated = np.zeros(length, bool)
    terminated[-1] = True
    return Episode(frames=frames, actions=rng.integers(0, 4, length), rewards=np.zeros(length, np.float32),
                   terminated=terminated, truncated=np.zeros(length, bool))


def test_config_checks_the_step_settings():
    with pytest.raises(ValueError, match="age_steps"):
        DiffusionConfig(age_steps=-1)
    with pytest.raises(ValueError, match="age_unknown_fraction"):
        DiffusionConfig(age_steps=8, age_unknown_fraction=1.5)


def test_segments_say_the_step_of_every_frame(tmp_path):
    ds = EpisodeDataset(tmp_path / "d", obs_shape=OBS, num_actions=4)
    for length in (3, 30):
        ds.append(episode(length))
    seg = ds.sample_segments(64, length=6, rng=np.random.default_rng(0), end_fraction=0.5)
    real = seg.mask
    assert seg.steps.shape == seg.mask.shape and bool((seg.steps[~real] < 30).all())
    assert torch.equal(step_of(seg.frames)[real], seg.steps[real])  # each real frame is the one at its step
    assert bool((seg.steps[:, 1:] - seg.steps[:, :-1] == 1).all())  # padding included: one step apart
    assert bool((seg.steps[~real[:, 0], 0] < 0).any())  # padding before an episode's start is negative


def test_a_model_told_its_step_starts_as_the_one_it_is_fine_tuned_from_and_then_hears_it():
    base = randomize(make_model())
    told = make_model(age_steps=8)
    weights = base.state_dict()
    assert set(told.fine_tune_weight_defaults(weights)) == {"denoiser.net.age_emb.weight"}
    told.load_state_dict({**told.fine_tune_weight_defaults(weights), **weights})
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (4, told.context_frames, *OBS), generator=g, dtype=torch.uint8)
    actions = torch.randint(0, 4, (4, told.context_frames - 1), generator=g)

    def dream(model: DiffusionWorldModel, ages: list[int] | None) -> torch.Tensor:
        state = model.init_state(frames, actions, None if ages is None else torch.tensor(ages))
        return model.step(state, torch.zeros(4, dtype=torch.long), torch.Generator().manual_seed(1)).next_frames

    assert torch.equal(dream(base, None), dream(told, [0, 3, 20, -1]))  # a zero embedding: its base
    with torch.no_grad():
        told.denoiser.net.age_emb.weight.normal_()
    unknown = dream(told, None)
    assert torch.equal(unknown, dream(told, [-1, -1, -1, -1]))
    assert not torch.equal(unknown, dream(base, None))
    early, late = dream(told, [0, 1, 30, 7]), dream(told, [0, 2, 90, 7])
    assert torch.equal(early[[0, 2, 3]], late[[0, 2, 3]])  # steps past age_steps share the last row
    assert not torch.equal(early[1], late[1])


def test_the_step_counts_on_along_a_dream_and_stays_unknown_where_unknown():
    model = randomize(make_model(age_steps=8))
    heard = []
    model.denoiser.net.age_emb.register_forward_hook(lambda module, args, out: heard.append(args[0].clone()))
    frames = torch.zeros(3, model.context_frames, *OBS, dtype=torch.uint8)
    actions = torch.zeros(3, model.context_frames - 1, dtype=torch.long)
    state = model.init_state(frames, actions, torch.tensor([0, 7, -1]))
    for expected in ([1, 8, 9], [2, 8, 9]):  # row 8 is the last step told, row 9 "not known"
        state = model.step(state, torch.zeros(3, dtype=torch.long)).state
        assert heard[-1].tolist() == expected
    assert state.age.tolist() == [2, 9, -1]
    restarted = model.reset_where(state, torch.tensor([False, True, True]), frames[:2], actions[:2],
                                  torch.tensor([4, -1]))
    assert restarted.age.tolist() == [2, 4, -1]
    with pytest.raises(ValueError, match="ages"):
        model.init_state(frames, actions, torch.tensor([1, 2]))


@pytest.mark.parametrize("dreamed", [0, 2])
def test_each_denoising_target_hears_its_own_step(monkeypatch, dreamed):
    model = make_model(age_steps=64, age_unknown_fraction=0.0, dreamed_context_frames=dreamed)
    seq, b = model.config.segment_length, 32
    offsets = torch.arange(b) % 20 - 3  # some segments begin before their episode's start
    steps = offsets[:, None] + torch.arange(seq + 1)
    frames = step_frame(steps).to(torch.uint8)[..., None, None, None].expand(-1, -1, *OBS).clone()
    batch = Segments(frames, torch.zeros(b, seq, dtype=torch.long), torch.zeros(b, seq),
                     torch.zeros(b, seq, dtype=torch.bool), torch.zeros(b, seq, dtype=torch.bool), steps >= 0, steps)
    seen = {}
    real_loss = model.denoiser.loss

    def loss_spy(context, actions, target, weight=None, context_noise_level=None, age=None):
        seen.update(target=target, age=age, weight=weight)
        return real_loss(context, actions, target, weight, context_noise_level, age)

    dreams = []

    def dream_spy(x, actions, generator=None, age=None):
        # dreams a frame that shows the step it was told, so the next call's last frame tells it back
        dreams.append((step_of(x[:, -1]), age))
        return frames_to_float(step_frame(age).clamp(0, 255).to(torch.uint8)[:, None, None, None]
                               .expand(-1, *OBS)).to(x.dtype)

    monkeypatch.setattr(model.denoiser, "loss", loss_spy)
    monkeypatch.setattr(model, "_dream_frame", dream_spy)
    model.training_losses(batch)
    real = seen["weight"] > 0
    assert bool(real.any()) and torch.equal(seen["age"][real], step_of(seen["target"])[real])
    assert bool((seen["age"][~real] == -1).all())
    assert (len(dreams) > 0) == (dreamed > 0)
    for last_seen, age in dreams:  # every dreamed context frame is told the step after its last frame's
        assert torch.equal(age, last_seen + 1)
    # not told where the batch does not say, nor for the share trained as not known
    seen.clear()
    model.training_losses(dataclasses.replace(batch, steps=None))
    assert bool((seen["age"] == -1).all())
    unknown = make_model(age_steps=64, age_unknown_fraction=1.0)
    monkeypatch.setattr(unknown.denoiser, "loss", loss_spy)
    unknown.training_losses(batch)
    assert bool((seen["age"] == -1).all())


def test_a_start_bank_keeps_its_steps_and_the_dream_env_tells_them(tmp_path):
    episodes = [(ep.frames, ep.actions) for ep in (episode(12), episode(9, seed=1))]
    bank = StartBank.cut(episodes, 4, 16, np.random.default_rng(0))
    assert torch.equal(step_of(torch.from_numpy(bank.frames[:, -1])), torch.from_numpy(bank.steps))
    bank.save(tmp_path / "starts.npz")
    assert np.array_equal(StartBank.load(tmp_path / "starts.npz").steps, bank.steps)
    np.savez_compressed(tmp_path / "old.npz", frames=bank.frames, actions=bank.actions)  # banks saved before
    assert (StartBank.load(tmp_path / "old.npz").steps == -1).all()
    with pytest.raises(ValueError, match="steps"):
        StartBank(bank.frames, bank.actions, np.full(len(bank), -2))

    probe = ProbeModel(make_model(age_steps=8))
    env = DreamVectorEnv(probe, bank, num_envs=3, device="cpu")
    env.reset(seed=0)
    (frames, _), ages = probe.calls[-1][1], probe.ages_seen[-1]
    assert torch.equal(ages, step_of(frames[:, -1]))
    env.reset(options={"reset_mask": np.array([False, True, True])})
    (_, frames, _), ages = probe.calls[-1][1], probe.ages_seen[-1]
    assert len(ages) == 2 and torch.equal(ages, step_of(frames[:, -1]))
    env.reset(options={"prompt": bank.frames[0, -1]})
    assert (probe.ages_seen[-1] == -1).all()  # a prompt's place in a game is not known


def test_fidelity_tells_each_window_its_step(tmp_path):
    ds = EpisodeDataset(tmp_path / "d", obs_shape=OBS, num_actions=4)
    ds.append(episode(40))
    probe = ProbeModel(make_model(age_steps=8))
    measure_fidelity(probe, ds, [0], steps=(1, 5), num_windows=6, batch_size=3)
    contexts = [args[0] for name, args in probe.calls if name == "init_state"]
    assert len(contexts) == 2
    for frames, ages in zip(contexts, probe.ages_seen, strict=True):
        assert torch.equal(ages, step_of(frames[:, -1]))


def test_a_model_told_its_step_learns_when_a_still_screen_changes():
    """The screen is black for the first 10 steps of every episode, then white (KungFuMaster's still
    start in miniature): from the same black context, a model told the step dreams black before the
    change and white at it, which no model shown only the context can."""
    model = make_model(age_steps=16, age_unknown_fraction=0.0, predict_residual=True, sigma_data=0.5)
    seq, b = model.config.segment_length, 32
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        steps = torch.randint(0, 14, (b, 1), generator=g) + torch.arange(seq + 1)
        frames = torch.where(steps >= 10, 255, 0).to(torch.uint8)[..., None, None, None].expand(-1, -1, *OBS)
        batch = Segments(frames, torch.zeros(b, seq, dtype=torch.long), torch.zeros(b, seq),
                         torch.zeros(b, seq, dtype=torch.bool), torch.zeros(b, seq, dtype=torch.bool),
                         torch.ones(b, seq + 1, dtype=torch.bool), steps)
        opt.zero_grad()
        model.training_losses(batch)["loss"].backward()
        opt.step()
    model.eval()
    black = torch.zeros(2, model.context_frames, *OBS, dtype=torch.uint8)
    state = model.init_state(black, torch.zeros(2, model.context_frames - 1, dtype=torch.long), torch.tensor([8, 9]))
    dreamed = model.step(state, torch.zeros(2, dtype=torch.long), torch.Generator().manual_seed(0)).next_frames
    before, at = dreamed.float().mean(dim=(1, 2, 3)).tolist()
    assert before < 60 and at > 160, (before, at)  # measured: 13 and 207
