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


def distillation_loss(trainer: Trainer, batches: int = 4) -> float:
    """The student's mean distillation loss on the same seeded batches every call."""
    rng = np.random.default_rng(7)
    torch.manual_seed(7)
    with torch.no_grad():
        losses = [trainer.model.distillation_losses(trainer._sample(rng), trainer.teacher)["loss"]
                  for _ in range(batches)]
    return float(torch.stack(losses).mean())


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
        rng = np.random.default_rng(7)
        torch.manual_seed(7)
        with torch.no_grad():
            return student.model.distillation_losses(student._sample(rng), student.teacher)

    alone, mixed = losses(0.0), losses(0.5)
    assert "denoising" not in alone
    # the same windows, noise and teacher labels: the teacher's part is unchanged by the weight
    torch.testing.assert_close(mixed["distillation"], alone["loss"])
    assert mixed["denoising"] > 0
    torch.testing.assert_close(mixed["loss"], mixed["distillation"] + 0.5 * mixed["denoising"])
    with pytest.raises(ValueError, match="distill_real_weight"):
        DiffusionConfig(distill_real_weight=-1.0)
