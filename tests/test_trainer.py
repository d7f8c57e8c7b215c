"""The trainer: trains any family through ``training_losses``, resumes after a real kill -9 at the
step it saved, refuses to resume with other settings, and exports a loadable checkpoint."""

import dataclasses
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from neuralenvs.checkpoint import build_world_model, load_checkpoint
from neuralenvs.data import Episode, EpisodeDataset
from neuralenvs.models.diffusion import DiffusionConfig
from neuralenvs.training import TrainConfig, Trainer


def config(dataset_path, out, steps, **kw):
    return TrainConfig(family="diffusion", model_config="tiny", data=str(dataset_path), out=str(out),
                       steps=steps, batch_size=4, held_out_episodes=1, start_bank_size=16, **kw)


def test_train_resume_and_export(dataset_path, tmp_path):
    trainer = Trainer(config(dataset_path, tmp_path / "run", steps=6), device="cpu")
    trainer.train(progress=False)
    assert trainer.stage_index == 1 and (tmp_path / "run" / "latest.json").exists()
    # a second trainer on the same folder picks up the finished state instead of starting over
    again = Trainer(config(dataset_path, tmp_path / "run", steps=6), device="cpu")
    assert again.stage_index == 1
    for a, b in zip(trainer.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    # a finished run asked for more steps trains those steps, from where it stopped
    more = Trainer(config(dataset_path, tmp_path / "run", steps=8), device="cpu")
    assert (more.stage_index, more.step_in_stage) == (0, 6)
    more.train(progress=False)
    assert more.stage_index == 1
    assert json.loads((tmp_path / "run" / "latest.json").read_text())["state"] == "state-00000008"
    changed = [n for n, v in more.model.state_dict().items() if not torch.equal(v, trainer.model.state_dict()[n])]
    assert changed, "the two extra steps changed no weight"
    assert more.export(progress=False, fidelity=False) and load_checkpoint(tmp_path / "run" / "checkpoint").config[
        "provenance"]["training_steps"] == 8
    # asking for fewer steps than were trained leaves the finished run as it is
    assert Trainer(config(dataset_path, tmp_path / "run", steps=4), device="cpu").stage_index == 1
    with pytest.raises(ValueError, match="other settings"):
        Trainer(config(dataset_path, tmp_path / "run", steps=6, lr=1.0), device="cpu")
    more.config.game = "Squares"
    path = more.export(progress=False)
    checkpoint = load_checkpoint(path)
    assert checkpoint.config["game"] == "Squares"
    assert checkpoint.config["provenance"]["training_steps"] == 8
    assert "fidelity" in checkpoint.config["metrics"]
    assert checkpoint.starts_frames.shape[1:] == (more.model.context_frames, 16, 16, 3)
    model = build_world_model(checkpoint, device="cpu")
    assert model.num_actions == 3


TRAIN_FOREVER = """
import sys
from neuralenvs.training import TrainConfig, Trainer
cfg = TrainConfig(family="diffusion", model_config="tiny", data={data!r}, out={out!r}, steps=100000,
                  batch_size=4, held_out_episodes=1, start_bank_size=16, save_every_seconds=0.0)
Trainer(cfg, device="cpu").train(progress=False)
"""


@pytest.mark.timeout(300)
def test_resumes_after_kill_9_at_the_saved_step(dataset_path, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", TRAIN_FOREVER.format(data=str(dataset_path), out=str(out))])
    deadline = time.time() + 240
    while time.time() < deadline:
        latest = out / "latest.json"
        if latest.exists() and int(json.loads(latest.read_text())["state"].split("-")[1]) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = json.loads((out / "latest.json").read_text())["state"]
    saved_step = int(saved.split("-")[1])
    progress = json.loads((out / saved / "progress.json").read_text())
    resumed = Trainer(config(dataset_path, out, steps=100000, save_every_seconds=0.0), device="cpu")
    assert resumed.step_in_stage == progress["step_in_stage"] == saved_step >= 3
    # the resumed weights are exactly the saved ones
    from safetensors.torch import load_file

    stored = load_file(out / saved / "model.safetensors")
    for name, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, stored[name])
    resumed.train_step()  # and training goes on


def test_fine_tune_with_oversampled_rewards_corrects_the_prior(dataset_path, tmp_path):
    base = Trainer(config(dataset_path, tmp_path / "base", steps=2), device="cpu")
    base.train(progress=False)
    base_path = base.export(fidelity=False, progress=False)
    tuned = Trainer(config(dataset_path, tmp_path / "tuned", steps=1, reward_fraction=0.5, init_from=str(base_path)),
                    device="cpu")
    for name, w in base.model.state_dict().items():  # starts from the checkpoint's weights
        torch.testing.assert_close(tuned.model.state_dict()[name], w.half().to(w.dtype))
    trained, real = tuned._reward_class_frequencies()
    assert trained[2] / trained.sum() > real[2] / real.sum()  # rewarded steps were oversampled
    tuned.train(progress=False)
    exported = load_checkpoint(tuned.export(fidelity=False, progress=False))
    provenance = exported.config["provenance"]
    assert provenance["init_from"] == str(base_path)
    assert provenance["base"]["training_steps"] == 2  # the card states the base's budget too
    assert "base.training_steps" in (tuned.out / "checkpoint" / "README.md").read_text()
    offset = tuned.model.reward_end.reward_logit_offset
    expected = (real / real.sum()).log() - (trained / trained.sum()).log()
    torch.testing.assert_close(offset[1:].double(), expected[1:], rtol=1e-5, atol=1e-5)  # no "-1" in this data
    assert offset[2] < 0 < offset[1]  # "+1" made less likely, "0" more likely than in training
    # reinit: the named submodule starts fresh, the rest from the checkpoint; resuming the run matches
    torch.manual_seed(123)
    reinit = Trainer(config(dataset_path, tmp_path / "reinit", steps=1, init_from=str(base_path),
                            reinit=("reward_end",)), device="cpu")
    again = Trainer(config(dataset_path, tmp_path / "reinit", steps=1, init_from=str(base_path),
                           reinit=("reward_end",)), device="cpu")
    base_weights = base.model.state_dict()
    for name, w in reinit.model.state_dict().items():
        same = torch.equal(w, base_weights[name].half().to(w.dtype))
        assert same == (not name.startswith("reward_end.") or name.endswith("_logit_offset")), name  # buffers
        torch.testing.assert_close(again.model.state_dict()[name], w)  # seeded: the same fresh weights
    with pytest.raises(ValueError, match="reinit names no submodule"):
        Trainer(config(dataset_path, tmp_path / "bad", steps=1, init_from=str(base_path), reinit=("nope",)),
                device="cpu")
    # freeze: the named submodule keeps its weights through training, the others change
    frozen = Trainer(config(dataset_path, tmp_path / "frozen", steps=2, init_from=str(base_path),
                            reinit=("reward_end",), freeze=("denoiser",)), device="cpu")
    before = {n: w.clone() for n, w in frozen.model.state_dict().items()}
    frozen.train(progress=False)
    for name, w in frozen.model.state_dict().items():
        if name.startswith("denoiser."):
            torch.testing.assert_close(w, before[name], rtol=0, atol=0)
    head = {n: w for n, w in frozen.model.state_dict().items() if n.startswith("reward_end.")}
    assert not all(torch.equal(w, before[n]) for n, w in head.items())
    with pytest.raises(ValueError, match="freeze names no submodule"):
        Trainer(config(dataset_path, tmp_path / "bad2", steps=1, freeze=("nope",)), device="cpu")
    with pytest.raises(ValueError, match="leaves nothing to train"):
        Trainer(config(dataset_path, tmp_path / "bad3", steps=1, freeze=("denoiser", "reward_end")), device="cpu")
    with pytest.raises(ValueError, match="is a diffusion model, not token"):
        Trainer(TrainConfig(family="token", model_config="tiny", data=str(dataset_path), out=str(tmp_path / "t"),
                            steps=1, init_from=str(base_path)), device="cpu")


def test_a_class_balanced_reward_loss_is_prior_corrected_without_oversampling(dataset_path, tmp_path):
    from neuralenvs.models.diffusion.config import PRESETS

    tiny = {**PRESETS["tiny"], "rew_balance_classes": True}
    trainer = Trainer(TrainConfig(family="diffusion", model_config=tiny, data=str(dataset_path),
                                  out=str(tmp_path / "run"), steps=1, batch_size=4, held_out_episodes=1,
                                  start_bank_size=16), device="cpu")
    trainer.train(progress=False)
    _, real = trainer._reward_class_frequencies()
    offset = trainer.model.reward_end.reward_logit_offset.double()
    # trained as if the classes were equally frequent: the dream shifts them to the real frequencies
    expected = (real / real.sum()).clamp(min=1e-6).log() - torch.tensor(1 / 3, dtype=torch.float64).log()
    torch.testing.assert_close(offset[1:], expected[1:], rtol=1e-5, atol=1e-5)
    assert offset[2] < 0 < offset[1]


def test_end_fraction_needs_a_family_that_balances_its_end_loss(tmp_path):
    data = EpisodeDataset(tmp_path / "d", obs_shape=(16, 16, 3), num_actions=3)
    rng = np.random.default_rng(0)
    for _ in range(3):
        data.append(Episode(rng.integers(0, 256, (21, 16, 16, 3), dtype=np.uint8), rng.integers(0, 3, 20),
                            np.zeros(20, np.float32), np.eye(20, dtype=bool)[-1], np.zeros(20, bool)))
    config = dict(family="diffusion", data=str(tmp_path / "d"), steps=1, batch_size=2, held_out_episodes=1,
                  end_fraction=0.5)
    with pytest.raises(ValueError, match="rew_balance_ends"):
        Trainer(TrainConfig(model_config="tiny", out=str(tmp_path / "a"), **config))
    tiny = {**json.loads(json.dumps(dataclasses.asdict(DiffusionConfig.named("tiny")))), "rew_balance_ends": True}
    trainer = Trainer(TrainConfig(model_config=tiny, out=str(tmp_path / "b"), **config))
    trainer.train(progress=False)
    assert trainer.prepared["all"]["end_rate"] == pytest.approx(1 / 20)
