"""Distillation: a diffusion model learns to dream the frames a trained one (its teacher) dreams,
through the trainer's ``teacher`` option, keeping the teacher's reward and end model."""

import dataclasses

import numpy as np
import pytest
import torch

from neuralenvs.checkpoint import load_checkpoint
from neuralenvs.data import EpisodeDataset
from neuralenvs.models import build_model
from neuralenvs.models.diffusion import DiffusionConfig
from neuralenvs.training import TrainConfig, Trainer

ONE_STEP = {**dataclasses.asdict(DiffusionConfig.named("tiny")), "num_denoising_steps": 1, "dreamed_context_frames": 2}


def config(dataset_path, out, steps, model_config=ONE_STEP, **kw):
    return TrainConfig(family="diffusion", model_config=model_config, data=str(dataset_path), out=str(out),
                       steps=steps, batch_size=8, held_out_episodes=1, start_bank_size=16, lr=3e-3, **kw)


@pytest.fixture(scope="module")
def teacher(dataset_path, tmp_path_factory):
    """A one-step tiny dream trained a little on the squares: its dreams are not repeat-last."""
    trainer = Trainer(config(dataset_path, tmp_path_factory.mktemp("teacher"), steps=30), device="cpu")
    trainer.train(progress=False)
    return str(trainer.export(fidelity=False, progress=False))


NOISY = {**ONE_STEP, "context_noise_max": 0.2, "context_noise_levels": 3}


@pytest.fixture(scope="module")
def noisy_teacher(dataset_path, tmp_path_factory):
    """As ``teacher``, trained with noisy contexts and told their level."""
    trainer = Trainer(config(dataset_path, tmp_path_factory.mktemp("noisy"), steps=30, model_config=NOISY),
                      device="cpu")
    trainer.train(progress=False)
    return str(trainer.export(fidelity=False, progress=False))


def seeded_losses(trainer: Trainer, batches: int = 1) -> list[dict[str, torch.Tensor]]:
    """The student's distillation losses on the same seeded batches every call."""
    rng = np.random.default_rng(7)
    torch.manual_seed(7)
    with torch.no_grad():
        return [trainer.model.distillation_losses(trainer._sample(rng), trainer.teacher) for _ in range(batches)]


def distillation_loss(trainer: Trainer, batches: int = 4) -> float:
    """The student's mean distillation loss on the same seeded batches every call."""
    return float(torch.stack([losses["loss"] for losses in seeded_losses(trainer, batches)]).mean())


def test_a_student_with_the_teachers_weights_has_almost_nothing_to_learn(dataset_path, teacher, tmp_path):
    same = Trainer(config(dataset_path, tmp_path / "same", steps=1, init_from=teacher, teacher=teacher), device="cpu")
    fresh = Trainer(config(dataset_path, tmp_path / "fresh", steps=1, init_from=teacher, reinit=("denoiser",),
                           teacher=teacher), device="cpu")
    # the same noise and context reach both: only the teacher's clamp to a frame can differ
    assert distillation_loss(same) < 0.05 * distillation_loss(fresh)


def test_a_smaller_student_learns_its_teachers_dreams_and_keeps_its_heads(dataset_path, teacher, tmp_path):
    small = {**ONE_STEP, "channels": [4, 8], "cond_dim": 8}
    student = Trainer(config(dataset_path, tmp_path / "small", steps=60, model_config=small, init_from=teacher,
                             reinit=("denoiser",), freeze=("reward_end",), teacher=teacher), device="cpu")
    before = distillation_loss(student)
    student.train(progress=False)
    assert distillation_loss(student) < 0.5 * before
    heads = load_checkpoint(teacher).weights
    for name, w in student.model.state_dict().items():
        if name.startswith("reward_end."):
            torch.testing.assert_close(w, heads[name].to(w.dtype), rtol=0, atol=0)
    exported = load_checkpoint(student.export(fidelity=False, progress=False))
    assert exported.config["provenance"]["teacher"] == teacher
    assert exported.config["model_config"]["channels"] == [4, 8]


def test_distillation_refuses_what_it_cannot_copy(dataset_path, teacher, tmp_path):
    two_steps = {**ONE_STEP, "num_denoising_steps": 2}
    student = Trainer(config(dataset_path, tmp_path / "two", steps=1, model_config=two_steps, init_from=teacher,
                             teacher=teacher), device="cpu")
    with pytest.raises(ValueError, match="one-step sampler"):
        student.train(progress=False)
    other_noise = {**ONE_STEP, "sample_sigma_max": 3.0}
    student = Trainer(config(dataset_path, tmp_path / "noise", steps=1, model_config=other_noise, init_from=teacher,
                             teacher=teacher), device="cpu")
    with pytest.raises(ValueError, match="sample_sigma_max"):
        student.train(progress=False)
    with pytest.raises(ValueError, match="is a diffusion model: distill a token model"):
        Trainer(TrainConfig(family="token", model_config="tiny", data=str(dataset_path), out=str(tmp_path / "t"),
                            steps=1, teacher=teacher), device="cpu")
    dataset = EpisodeDataset(dataset_path)
    token = build_model("token", "tiny", dataset.obs_shape, dataset.num_actions)
    diffusion = build_model("diffusion", ONE_STEP, dataset.obs_shape, dataset.num_actions)
    batch = dataset.sample_segments(2, 10, np.random.default_rng(0), [0])
    with pytest.raises(NotImplementedError, match="cannot be distilled"):
        token.distillation_losses(batch, token)
    with pytest.raises(ValueError, match="from a diffusion teacher"):
        diffusion.distillation_losses(batch, token)


def test_real_frames_weigh_in_beside_the_teacher(dataset_path, teacher, tmp_path):
    def losses(weight: float) -> dict[str, torch.Tensor]:
        student = Trainer(config(dataset_path, tmp_path / f"w{weight}", steps=1, init_from=teacher,
                                 model_config={**ONE_STEP, "distill_real_weight": weight}, reinit=("denoiser",),
                                 teacher=teacher, seed=0), device="cpu")
        return seeded_losses(student)[0]

    alone, mixed = losses(0.0), losses(0.5)
    assert "denoising" not in alone
    # the same windows, noise and teacher labels: the teacher's part is unchanged by the weight
    torch.testing.assert_close(mixed["distillation"], alone["loss"])
    assert mixed["denoising"] > 0
    torch.testing.assert_close(mixed["loss"], mixed["distillation"] + 0.5 * mixed["denoising"])
    with pytest.raises(ValueError, match="distill_real_weight"):
        DiffusionConfig(distill_real_weight=-1.0)


def test_both_models_see_the_same_noisy_context(dataset_path, noisy_teacher, tmp_path):
    def seen(noisy_context: bool) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """The (context, level) the teacher's and the student's denoisers are called with."""
        cfg = {**NOISY, "distill_noisy_context": noisy_context}
        student = Trainer(config(dataset_path, tmp_path / str(noisy_context), steps=1, model_config=cfg,
                                 init_from=noisy_teacher, reinit=("denoiser",), teacher=noisy_teacher), device="cpu")
        calls = {}
        for name, model in (("teacher", student.teacher), ("student", student.model)):
            def keep(_, args, name=name) -> None:  # the last call: a student first dreams its context ends
                calls[name] = args[2:5:2]
            model.denoiser.register_forward_pre_hook(keep)
        seeded_losses(student)
        return calls["teacher"], calls["student"]

    (clean, no_level), _ = seen(False)
    (teacher_context, level), (student_context, student_level) = seen(True)
    assert no_level is None and level is not None and level.max() > 0
    torch.testing.assert_close(student_context, teacher_context, rtol=0, atol=0)
    torch.testing.assert_close(student_level, level, rtol=0, atol=0)
    # the same windows, noisy where the level is above 0
    noise = (teacher_context - clean).flatten(1).abs().amax(1)
    assert (noise[level > 0] > 0.05).all() and (noise[level == 0] == 0).all()
    # noise levels the teacher was not trained on are refused
    other = {**NOISY, "distill_noisy_context": True, "context_noise_levels": 5}
    student = Trainer(config(dataset_path, tmp_path / "other", steps=1, model_config=other, init_from=noisy_teacher,
                             reinit=("denoiser",), teacher=noisy_teacher), device="cpu")
    with pytest.raises(ValueError, match="give the student the teacher's context_noise_max"):
        student.train(progress=False)
