"""One resumable trainer for every family: it knows only ``WorldModel.training_losses``.

A run lives in a folder::

    runs/pong/
      run.json            what was asked for (family, config, data, budget): a resume must match
      latest.json         names the newest complete training state (replaced atomically)
      state-000123/       model.safetensors, optimizer.safetensors, progress.json
      checkpoint/         the finished world model (neuralenvs checkpoint format)

A state folder is written under a temporary name and renamed into place before ``latest.json``
points at it, so ``kill -9`` at any moment leaves the previous state intact, and the next run
continues from the step where that state was saved.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

from neuralenvs.data import EpisodeDataset
from neuralenvs.models import build_model
from neuralenvs.nn.reward_end import NUM_REWARD_CLASSES, reward_to_class
from neuralenvs.utils.device import describe_hardware, resolve_device
from neuralenvs.utils.io import atomic_write_text, fsync_dir, temp_sibling, write_file_durably
from neuralenvs.world_model import Segments, WorldModel


@dataclass
class TrainConfig:
    family: str
    model_config: str | dict  # a named config ("small", "paper") or a full config dict
    data: str
    out: str
    steps: int  # optimizer steps per training stage
    batch_size: int = 32
    segment_length: int | None = None  # None: the model config's own segment_length
    lr: float = 1e-4
    weight_decay: float = 1e-2
    grad_clip: float = 10.0
    seed: int = 0
    held_out_episodes: int = 5  # the last episodes of the dataset: never trained on
    save_every_seconds: float = 300.0
    precision: str = "auto"  # "fp32", "bf16" (autocast), or "auto": bf16 where the hardware has it
    start_bank_size: int = 512
    game: str | None = None
    reward_fraction: float = 0.0  # share of segments ending at a rewarded step (then prior-corrected)
    init_from: str | None = None  # a checkpoint of the same family whose weights start the run
    reinit: tuple[str, ...] = ()  # with init_from: submodules (e.g. "reward_end") that start fresh instead
    extra: dict[str, Any] = field(default_factory=dict)


def has_fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast speeds training up here: CUDA GPUs with bf16, and CPUs with native bf16
    instructions (measured on a 2-core AMD EPYC with avx512_bf16: 1.84x per step for the diffusion
    "small" config, ``benchmarks/train_step_precision.py``)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class Trainer:
    """Train a world model on an episode dataset, resumably. See the module docstring."""

    def __init__(self, config: TrainConfig, device: str | torch.device | None = None) -> None:
        self.config = config
        self.out = Path(config.out)
        self.device = resolve_device(device)
        self.dataset = EpisodeDataset(config.data)
        if config.game is None and str(self.dataset.meta.get("source", "")).startswith("atari:"):
            config.game = self.dataset.meta["source"].split(":", 1)[1]
        self._check_run_matches()
        torch.manual_seed(config.seed)  # the same config gives the same initial weights
        self.model: WorldModel = build_model(
            config.family, config.model_config, self.dataset.obs_shape, self.dataset.num_actions
        ).to(self.device)
        self.segment_length = config.segment_length or int(self.model.config.segment_length)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.train_episodes, self.test_episodes = self.dataset.split(
            min(config.held_out_episodes, self.dataset.num_episodes - 1)
        )
        self.stage_index, self.step_in_stage, self.wall_seconds = 0, 0, 0.0
        self.rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)
        if config.init_from is not None:
            self._init_weights(config.init_from)
        self._resume()

    def _init_weights(self, path: str) -> None:
        """Start from a trained checkpoint's weights (fine-tuning). Tensors the checkpoint lacks
        keep their fresh values only if they are buffers; any other difference is an error."""
        from neuralenvs.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(path)
        if checkpoint.family != self.config.family:
            raise ValueError(f"--init-from {path} is a {checkpoint.family} model, not {self.config.family}")
        own = self.model.state_dict()
        fresh = tuple(f"{prefix}." for prefix in self.config.reinit)
        unknown = [prefix for prefix in fresh if not any(name.startswith(prefix) for name in own)]
        if unknown:
            raise ValueError(f"reinit names no submodule of this model: {[u.rstrip('.') for u in unknown]}")
        weights = {n: w for n, w in checkpoint.weights.items() if not n.startswith(fresh)}
        params = {name for name, _ in self.model.named_parameters() if not name.startswith(fresh)}
        missing = [n for n in own if n not in weights and n in params]
        unexpected = [n for n in weights if n not in own]
        wrong = [n for n, w in weights.items() if n in own and w.shape != own[n].shape]
        if missing or unexpected or wrong:
            raise ValueError(
                f"the weights in {path} do not fit this model config (missing {missing[:3]}, unexpected "
                f"{unexpected[:3]}, wrong shape {wrong[:3]}): fine-tune with the checkpoint's own config"
            )
        self.model.load_state_dict({n: w.to(own[n].dtype) for n, w in weights.items()}, strict=False)

    # -- run folder ------------------------------------------------------------------------------
    def _check_run_matches(self) -> None:
        run_file = self.out / "run.json"
        # settings that change neither the model nor the data it sees may differ on resume
        free = ("steps", "out", "save_every_seconds", "precision")
        asked = json.loads(json.dumps({k: v for k, v in asdict(self.config).items() if k not in free}))  # as stored
        if run_file.exists():
            before = json.loads(run_file.read_text())
            before = {k: v for k, v in before.items() if k in asked}
            if before != asked:
                diff = {k: (before.get(k), asked[k]) for k in asked if before.get(k) != asked[k]}
                raise ValueError(
                    f"{self.out} holds a run with other settings {diff} (stored, asked); "
                    "resume with the same settings or choose another --out"
                )
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_file, json.dumps(asdict(self.config), indent=1))

    def _resume(self) -> None:
        latest = self.out / "latest.json"
        if not latest.exists():
            return
        state_dir = self.out / json.loads(latest.read_text())["state"]
        self.model.load_state_dict(load_file(state_dir / "model.safetensors", device=str(self.device)))
        flat = load_file(state_dir / "optimizer.safetensors", device=str(self.device))
        progress = json.loads((state_dir / "progress.json").read_text())
        self.optimizer.load_state_dict(_unflatten_optimizer(flat, progress["optimizer"]))
        self.stage_index = progress["stage_index"]
        self.step_in_stage = progress["step_in_stage"]
        self.wall_seconds = progress["wall_seconds"]
        self.rng.bit_generator.state = progress["numpy_rng"]
        torch.set_rng_state(load_file(state_dir / "torch_rng.safetensors")["cpu"])

    def save_state(self) -> Path:
        """Write the full training state atomically and point ``latest.json`` at it."""
        stage_steps = self.stage_index * self.config.steps + self.step_in_stage
        final = self.out / f"state-{stage_steps:08d}"
        tmp = temp_sibling(final)
        tmp.mkdir()
        flat, meta = _flatten_optimizer(self.optimizer.state_dict())
        progress = {
            "stage_index": self.stage_index,
            "step_in_stage": self.step_in_stage,
            "wall_seconds": self.wall_seconds,
            "numpy_rng": self.rng.bit_generator.state,
            "optimizer": meta,
        }
        files = {
            "model.safetensors": save({k: v.detach().contiguous() for k, v in self.model.state_dict().items()}),
            "optimizer.safetensors": save(flat),
            "torch_rng.safetensors": save({"cpu": torch.get_rng_state()}),
            "progress.json": json.dumps(progress).encode(),
        }
        for name, data in files.items():
            write_file_durably(tmp / name, data)
        fsync_dir(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        fsync_dir(self.out)
        atomic_write_text(self.out / "latest.json", json.dumps({"state": final.name}))
        for old in self.out.glob("state-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        return final

    # -- training ----------------------------------------------------------------------------------
    def _autocast(self):
        precision = self.config.precision
        if precision == "auto":
            precision = "bf16" if has_fast_bf16(self.device) else "fp32"
        if precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        if precision != "fp32":
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
        return torch.autocast(self.device.type, enabled=False)

    def train(self, progress: bool = True) -> WorldModel:
        """Run (or finish) every stage, saving a state every ``save_every_seconds``."""
        self.dataset.load(self.train_episodes, progress=progress)
        if self.config.reward_fraction > 0:
            self.model.correct_reward_prior(*self._reward_class_frequencies())
        stages = self.model.training_stages()
        self.model.train()
        while self.stage_index < len(stages):
            stage = stages[self.stage_index]
            self.model.set_training_stage(stage)
            bar = tqdm(total=self.config.steps, initial=self.step_in_stage, disable=not progress,
                       desc=f"training {self.config.family} [{stage}]", unit="step")
            last_save = time.perf_counter()
            while self.step_in_stage < self.config.steps:
                t0 = time.perf_counter()
                logs = self.train_step()
                self.step_in_stage += 1
                self.wall_seconds += time.perf_counter() - t0
                bar.update(1)
                bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()})
                if time.perf_counter() - last_save > self.config.save_every_seconds:
                    self.save_state()
                    last_save = time.perf_counter()
            bar.close()
            self.stage_index += 1
            self.step_in_stage = 0
            self.save_state()
        self.model.eval()
        return self.model

    def refresh_data(self, progress: bool = False) -> None:
        """Take in episodes appended to the dataset since the trainer was built (the imagination
        loop grows it between training phases); the held-out episodes stay the newest ones."""
        held_out = min(self.config.held_out_episodes, self.dataset.num_episodes - 1)
        self.train_episodes, self.test_episodes = self.dataset.split(held_out)
        self.dataset.load(self.train_episodes, progress=progress)
        if self.config.reward_fraction > 0:
            self.model.correct_reward_prior(*self._reward_class_frequencies())

    def _sample(self, rng: np.random.Generator) -> Segments:
        return self.dataset.sample_segments(
            self.config.batch_size, self.segment_length, rng, self.train_episodes, self.config.reward_fraction
        )

    def _reward_class_frequencies(self, batches: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
        """Reward sign class (-1, 0, +1) frequencies among the transitions training scores (both
        frames real), measured on sampled batches, and in the training episodes themselves."""
        rng = np.random.default_rng(self.config.seed + 1)  # leaves the training stream untouched
        trained = torch.zeros(NUM_REWARD_CLASSES, dtype=torch.float64)
        for _ in range(batches):
            batch = self._sample(rng)
            valid = batch.mask[:, :-1] & batch.mask[:, 1:]
            trained += torch.bincount(reward_to_class(batch.rewards[valid]), minlength=NUM_REWARD_CLASSES)
        rewards = torch.from_numpy(np.concatenate([self.dataset.episode(i).rewards for i in self.train_episodes]))
        real = torch.bincount(reward_to_class(rewards), minlength=NUM_REWARD_CLASSES).double()
        return trained, real

    def train_step(self) -> dict[str, float]:
        batch = self._sample(self.rng).to(self.device)
        with self._autocast():
            losses = self.model.training_losses(batch)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return {k: float(v.detach()) for k, v in losses.items()}

    # -- the finished product ------------------------------------------------------------------------
    def export(self, fidelity: bool = True, progress: bool = True) -> Path:
        """Cut a start bank, measure fidelity on the held-out episodes, write ``checkpoint/``."""
        from neuralenvs.bench.fidelity import measure_fidelity
        from neuralenvs.checkpoint import save_checkpoint
        from neuralenvs.envs.starts import StartBank

        k = self.model.context_frames
        bank = StartBank.cut(
            ((ep.frames, ep.actions) for ep in map(self.dataset.episode, self.train_episodes)),
            k, self.config.start_bank_size, np.random.default_rng(self.config.seed),
        )
        metrics = {}
        if fidelity:
            metrics["fidelity"] = measure_fidelity(
                self.model, self.dataset, self.test_episodes, seed=self.config.seed, progress=progress
            )
        provenance = {
            "data": str(self.dataset.meta.get("source") or self.config.data),
            "real_steps": int(self.dataset.num_steps),
            "train_episodes": len(self.train_episodes),
            "held_out_episodes": len(self.test_episodes),
            "training_steps": self.config.steps * len(self.model.training_stages()),
            "stages": self.model.training_stages(),
            "batch_size": self.config.batch_size,
            "segment_length": self.segment_length,
            "lr": self.config.lr,
            "reward_fraction": self.config.reward_fraction,
            "init_from": self.config.init_from,
            "hardware": describe_hardware(),
            "wall_clock_seconds": round(self.wall_seconds, 1),
        }
        return save_checkpoint(
            self.out / "checkpoint",
            model=self.model,
            starts_frames=bank.frames,
            starts_actions=bank.actions,
            game=self.config.game,
            action_meanings=self.dataset.action_meanings,
            provenance=provenance,
            metrics=metrics,
            weights_dtype="float16",
        )


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer ``state_dict`` as safetensors tensors plus JSON (no pickling)."""
    flat: dict[str, torch.Tensor] = {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            value = value if torch.is_tensor(value) else torch.tensor(value)
            flat[f"{index}.{name}"] = value.detach().contiguous()
    return flat, {"param_groups": state["param_groups"]}


def _unflatten_optimizer(flat: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def train_world_model(config: TrainConfig, device: str | None = None, progress: bool = True) -> Path:
    """Train (resuming if ``config.out`` holds a run) and export the checkpoint."""
    trainer = Trainer(config, device=device)
    trainer.train(progress=progress)
    return trainer.export(progress=progress)


__all__ = ["TrainConfig", "Trainer", "train_world_model"]
