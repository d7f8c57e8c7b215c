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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

from neuralenvs.data import EpisodeDataset
from neuralenvs.models import build_model, model_class
from neuralenvs.nn.reward_end import NUM_REWARD_CLASSES, reward_to_class
from neuralenvs.training.run_settings import record_run_settings
from neuralenvs.utils.device import describe_hardware, has_fast_bf16, resolve_device
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
    # share of segments holding an episode end; needs a family that balances its termination loss
    # and corrects the end prior (diffusion with rew_balance_ends)
    end_fraction: float = 0.0
    # a life that ends in a frozen screen ends where the freeze begins, so the termination head is
    # asked for the step that decides the life instead of a count of identical frames
    # (``EpisodeDataset.ends_at_freeze_onsets``; docs/transfer_krull.md, section 9)
    end_at_freeze_onset: bool = False
    freeze_end_delay: int = 0  # with end_at_freeze_onset: the life ends this many steps into the freeze
    init_from: str | None = None  # a checkpoint of the same family whose weights start the run
    reinit: tuple[str, ...] = ()  # with init_from: submodules (e.g. "reward_end") that start fresh instead
    freeze: tuple[str, ...] = ()  # submodules (e.g. "denoiser") whose weights training leaves as they are
    stages: tuple[str, ...] = ()  # with init_from: train only these of the family's stages (empty: all)
    # families that learn from unlabelled video (genie) train their ``labelled_stages`` on this
    # action-labelled dataset instead of ``data``: its first ``labelled_steps`` transitions only
    labelled_data: str | None = None
    labelled_steps: int = 5000
    # a checkpoint whose dreams this model learns to copy (``WorldModel.distillation_losses``)
    # instead of learning the data's next frames: a smaller, faster model of the same family
    teacher: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """Train a world model on an episode dataset, resumably. See the module docstring."""

    def __init__(self, config: TrainConfig, device: str | torch.device | None = None) -> None:
        self.config = config
        self.out = Path(config.out)
        self.device = resolve_device(device)
        self.dataset = EpisodeDataset(config.data)
        if config.end_at_freeze_onset:
            self.dataset = self.dataset.ends_at_freeze_onsets(config.freeze_end_delay)
        self.labelled, num_actions = self._labelled_data()
        for source in (self.dataset, self.labelled):
            if config.game is None and source is not None and str(source.meta.get("source", "")).startswith("atari:"):
                config.game = source.meta["source"].split(":", 1)[1]
        self._check_run_matches()
        torch.manual_seed(config.seed)  # the same config gives the same initial weights
        self.model: WorldModel = build_model(
            config.family, config.model_config, self.dataset.obs_shape, num_actions
        ).to(self.device)
        if config.end_fraction > 0 and not self.model.reweights_end_classes:
            raise ValueError(
                f"end_fraction={config.end_fraction} would teach this {config.family} model too many episode ends: "
                "use a family config that balances its termination loss (diffusion: rew_balance_ends) or end_fraction=0"
            )
        self.segment_length = config.segment_length or int(self.model.config.segment_length)
        self.optimizer = torch.optim.AdamW(
            self._trainable_parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.train_episodes, self.test_episodes = self.dataset.split(
            min(config.held_out_episodes, self.dataset.num_episodes - 1)
        )
        self.stage_index, self.step_in_stage, self.wall_seconds = 0, 0, 0.0
        self.prepared: dict[str, Any] = {}  # what each stage's one-off preparation reported
        self.stage_steps: dict[str, int] = {}  # optimizer steps each finished stage took
        self.base_provenance: dict[str, Any] | None = None  # the init_from checkpoint's
        self.rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)
        self._check_stages()
        if config.init_from is not None:
            self._init_weights(config.init_from)
        self.teacher = self._load_teacher(config.teacher)
        self._resume()

    def _labelled_data(self) -> tuple[EpisodeDataset | None, int | None]:
        """The labelled view (``labelled_data``'s first ``labelled_steps`` transitions) for families
        that learn from video, and the action count to build the model with: the data's, or for
        such a family the labelled data's (``None`` without it: the family's own latent actions)."""
        config = self.config
        cls = model_class(config.family)
        if not cls.labelled_stages:
            if config.labelled_data is not None:
                raise ValueError(
                    f"the {config.family} family learns every stage from the actions in --data; --labelled is "
                    "for families that learn from unlabelled video (genie)"
                )
            if not self.dataset.labelled:
                raise ValueError(
                    f"{config.data} holds unlabelled video (no actions), which the {config.family} family cannot "
                    "learn from: train it on an action-labelled episode dataset (neuralenvs collect), or use "
                    "--family genie"
                )
            return None, self.dataset.num_actions
        if config.labelled_data is None:
            return None, None
        if config.labelled_steps < 1:
            raise ValueError(f"labelled_steps must be >= 1, got {config.labelled_steps}")
        same = Path(config.labelled_data).resolve() == Path(config.data).resolve()
        full = self.dataset if same else EpisodeDataset(config.labelled_data)  # one dataset per path
        if not full.labelled:
            raise ValueError(f"--labelled {config.labelled_data} holds unlabelled video: give an episode dataset")
        if full.obs_shape != self.dataset.obs_shape:
            raise ValueError(
                f"--labelled {config.labelled_data} has frames of {full.obs_shape} but --data has "
                f"{self.dataset.obs_shape}: record both at the same size"
            )
        return full.first_steps(config.labelled_steps), full.num_actions

    def _check_stages(self) -> None:
        chosen, known = self.config.stages, self.model.training_stages()
        if not chosen:
            return
        unknown = [s for s in chosen if s not in known]
        if unknown:
            raise ValueError(f"stages {unknown} are not stages of the {self.config.family} family: {known}")
        if self.config.init_from is None:
            raise ValueError(
                f"training only the stages {list(chosen)} would leave the others untrained: give --init-from "
                "a checkpoint whose weights they keep, or train every stage"
            )

    def _skips(self, stage: str) -> str | None:
        """Why ``stage`` is not trained in this run, or ``None`` if it is."""
        if self.config.stages and stage not in self.config.stages:
            return f"skipping the {stage!r} stage: it keeps the weights of {self.config.init_from}"
        if stage in self.model.labelled_stages and self.labelled is None:
            return f"skipping the {stage!r} stage: it learns from labelled steps (--labelled DATA)"
        return None

    def _submodule_prefixes(self, names: tuple[str, ...], option: str) -> tuple[str, ...]:
        """``("reward_end",)`` -> ``("reward_end.",)``, refusing names that match no weight."""
        prefixes = tuple(f"{name}." for name in names)
        own = self.model.state_dict()
        unknown = [p.rstrip(".") for p in prefixes if not any(n.startswith(p) for n in own)]
        if unknown:
            raise ValueError(f"{option} names no submodule of this model: {unknown}")
        return prefixes

    def _trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Every parameter outside ``config.freeze``; the frozen ones stop requiring gradients, so
        backpropagation skips them."""
        frozen = self._submodule_prefixes(tuple(self.config.freeze), "freeze")
        trainable = []
        for name, p in self.model.named_parameters():
            p.requires_grad_(not name.startswith(frozen))  # startswith(()) is False
            if p.requires_grad:
                trainable.append(p)
        if not trainable:
            raise ValueError(f"freeze {list(self.config.freeze)} leaves nothing to train")
        return trainable

    def _init_weights(self, path: str) -> None:
        """Start from a trained checkpoint's weights (fine-tuning). Tensors the checkpoint lacks
        keep their fresh values only if they are buffers or the model can start them from the
        checkpoint (``WorldModel.fine_tune_weight_defaults``); any other difference is an error."""
        from neuralenvs.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(path)
        if checkpoint.family != self.config.family:
            raise ValueError(f"--init-from {path} is a {checkpoint.family} model, not {self.config.family}")
        self.base_provenance = checkpoint.config.get("provenance", {})
        own = self.model.state_dict()
        fresh = self._submodule_prefixes(tuple(self.config.reinit), "reinit")
        weights = {**self.model.fine_tune_weight_defaults(checkpoint.weights), **checkpoint.weights}
        weights = {n: w for n, w in weights.items() if not n.startswith(fresh)}
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

    def _load_teacher(self, path: str | None) -> WorldModel | None:
        """The frozen model to distill from, checked to dream the same game's frames and actions."""
        if path is None:
            return None
        from neuralenvs.checkpoint import build_world_model, load_checkpoint

        checkpoint = load_checkpoint(path)
        if checkpoint.family != self.config.family:
            raise ValueError(
                f"--teacher {path} is a {checkpoint.family} model: distill a {self.config.family} model from one "
                "of its own family"
            )
        teacher = build_world_model(checkpoint, device=self.device).eval().requires_grad_(False)
        if (teacher.obs_shape, teacher.num_actions) != (self.model.obs_shape, self.model.num_actions):
            raise ValueError(
                f"--teacher {path} dreams frames of {teacher.obs_shape} under {teacher.num_actions} actions, "
                f"this model {self.model.obs_shape} under {self.model.num_actions}: distill on the teacher's own "
                "game's data"
            )
        return teacher

    # -- run folder ------------------------------------------------------------------------------
    def _check_run_matches(self) -> None:
        # settings that change neither the model nor the data it sees may differ on resume
        free = ("steps", "out", "save_every_seconds", "precision")
        record_run_settings(self.out / "run.json", self.config, free=free)

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
        self.prepared = progress.get("prepared", {})
        self.rng.bit_generator.state = progress["numpy_rng"]
        torch.set_rng_state(load_file(state_dir / "torch_rng.safetensors")["cpu"])
        # states written before "steps" was stored are named after stage_index * steps + step_in_stage
        trained = progress.get("steps") or int(state_dir.name.split("-")[1]) // max(self.stage_index, 1)
        stages = self.model.training_stages()
        self.stage_steps = progress.get("stage_steps") or {s: trained for s in stages[: self.stage_index]}
        last = len(stages) - 1
        if self.stage_index > last and self.config.steps > trained:
            # a finished run asked for more steps: its last stage trains on to the new count. The
            # earlier stages stay as they are, since the later ones were trained on top of them.
            self.stage_index, self.step_in_stage = last, trained

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
            "steps": self.config.steps,
            "stage_steps": self.stage_steps,
            "prepared": self.prepared,
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
        if self._corrects_reward_prior() and self._learns_rewards():
            self.model.correct_reward_prior(*self._reward_class_frequencies())
        stages = self.model.training_stages()
        self.model.train()
        while self.stage_index < len(stages):
            stage = stages[self.stage_index]
            skip = self._skips(stage)
            if skip is not None:
                if progress:
                    tqdm.write(skip)
                self.stage_index += 1
                self.step_in_stage = 0
                continue
            self.model.set_training_stage(stage)
            dataset, episodes, _ = self._stage_data(stage)
            report = self.model.prepare_stage(stage, dataset, episodes)  # deterministic: redone on resume
            if report is not None:
                self.prepared[stage] = report
                if progress:
                    tqdm.write(f"prepared the {stage!r} stage: {report}")
            bar = tqdm(total=self.config.steps, initial=self.step_in_stage, disable=not progress,
                       desc=f"training {self.config.family} [{stage}]", unit="step")
            last_save = time.perf_counter()
            while self.step_in_stage < self.config.steps:
                t0 = time.perf_counter()
                logs = self.train_step(stage)
                self.step_in_stage += 1
                self.wall_seconds += time.perf_counter() - t0
                bar.update(1)
                bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()})
                if time.perf_counter() - last_save > self.config.save_every_seconds:
                    self.save_state()
                    last_save = time.perf_counter()
            bar.close()
            self.stage_steps[stage] = self.step_in_stage
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
        if self._corrects_reward_prior():
            self.model.correct_reward_prior(*self._reward_class_frequencies())

    def _stage_data(self, stage: str | None) -> tuple[EpisodeDataset, list[int], dict[str, float]]:
        """Where a stage's batches come from, and their oversampling of rewarded and ending
        segments: a video-trained family's labelled stages (its only ones that learn rewards)
        sample the labelled view, its other stages ``data`` without oversampling; other families
        sample ``data``."""
        oversample = {"reward_fraction": self.config.reward_fraction, "end_fraction": self.config.end_fraction}
        labelled_stages = self.model.labelled_stages
        if stage in labelled_stages and self.labelled is not None:
            return self.labelled, list(range(self.labelled.num_episodes)), oversample
        return self.dataset, self.train_episodes, {} if labelled_stages else oversample

    def _corrects_reward_prior(self) -> bool:
        """Whether training sees the reward classes at other than their real frequencies."""
        return self.config.reward_fraction > 0 or self.config.end_fraction > 0 or self.model.reweights_reward_classes

    def _learns_rewards(self) -> bool:
        return not self.model.labelled_stages or self.labelled is not None

    def _reward_stage(self) -> str | None:
        return self.model.labelled_stages[0] if self.model.labelled_stages else None

    def _sample(self, rng: np.random.Generator, stage: str | None = None) -> Segments:
        dataset, episodes, oversample = self._stage_data(stage)
        return dataset.sample_segments(self.config.batch_size, self.segment_length, rng, episodes, **oversample)

    def _reward_class_frequencies(self, batches: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
        """Reward sign class (-1, 0, +1) frequencies among the transitions training scores (both
        frames real), measured on sampled batches, and in the training episodes themselves."""
        rng = np.random.default_rng(self.config.seed + 1)  # leaves the training stream untouched
        trained = torch.zeros(NUM_REWARD_CLASSES, dtype=torch.float64)
        stage = self._reward_stage()
        for _ in range(batches):
            batch = self._sample(rng, stage)
            valid = batch.mask[:, :-1] & batch.mask[:, 1:]
            trained += torch.bincount(reward_to_class(batch.rewards[valid]), minlength=NUM_REWARD_CLASSES)
        dataset, episodes, _ = self._stage_data(stage)
        rewards = torch.from_numpy(np.concatenate([dataset.episode(i).rewards for i in episodes]))
        real = torch.bincount(reward_to_class(rewards), minlength=NUM_REWARD_CLASSES).double()
        return trained, real

    def train_step(self, stage: str | None = None) -> dict[str, float]:
        """One optimizer step on a batch of ``stage``'s data (see :meth:`_stage_data`)."""
        batch = self._sample(self.rng, stage).to(self.device)
        with self._autocast():
            if self.teacher is None:
                losses = self.model.training_losses(batch)
            else:
                losses = self.model.distillation_losses(batch, self.teacher)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return {k: float(v.detach()) for k, v in losses.items()}

    def _fidelity_data(self) -> tuple[EpisodeDataset, list[int]] | None:
        """Held-out real episodes whose actions are the model's: ``data``'s when they are, else the
        labelled dataset's last episodes beyond the labelled steps (when it is another dataset than
        ``data``, so the unlabelled stages never saw them either); ``None`` if neither exists."""
        if self.dataset.labelled and self.dataset.num_actions == self.model.num_actions and self.test_episodes:
            return self.dataset, self.test_episodes
        if self.labelled is None or Path(self.config.labelled_data).resolve() == Path(self.config.data).resolve():
            return None
        full = EpisodeDataset(self.config.labelled_data)
        unused = list(range(self.labelled.num_episodes, full.num_episodes))[-self.config.held_out_episodes :]
        return (full, unused) if unused and self.config.held_out_episodes > 0 else None

    # -- the finished product ------------------------------------------------------------------------
    def export(self, fidelity: bool = True, progress: bool = True) -> Path:
        """Cut a start bank, measure fidelity (and controllability, for a latent-action model) on
        the held-out episodes, write ``checkpoint/``.

        A model whose actions are not the data's (a genie model without labelled data has its own
        latent actions; video has none) gets a start bank with action 0 between its frames, actions
        named ``LATENT_i``, and no game: a dream id ``<Game>-<family>-v0`` promises the game's action
        space. Its fidelity is measured where real actions of its own action space exist."""
        from neuralenvs.checkpoint import save_checkpoint
        from neuralenvs.envs.starts import StartBank
        from neuralenvs.measure.controllability import measure_controllability, supports_controllability
        from neuralenvs.measure.fidelity import measure_fidelity

        k = self.model.context_frames
        own_actions = self.dataset.labelled and self.dataset.num_actions == self.model.num_actions
        bank = StartBank.from_dataset(
            self.dataset, k, self.config.start_bank_size, np.random.default_rng(self.config.seed),
            episodes=self.train_episodes, actions=own_actions,
        )
        if self.labelled is not None:
            action_meanings = self.labelled.action_meanings
        elif own_actions:
            action_meanings = self.dataset.action_meanings
        else:
            action_meanings = [f"LATENT_{i}" for i in range(self.model.num_actions)]
        game = self.config.game if own_actions or self.labelled is not None else None
        metrics = {}
        if fidelity:
            held_out = self._fidelity_data()
            if held_out is not None:
                metrics["fidelity"] = measure_fidelity(
                    self.model, *held_out, seed=self.config.seed, progress=progress
                )
            if supports_controllability(self.model) and self.test_episodes:
                metrics["controllability"] = measure_controllability(
                    self.model, self.dataset, self.test_episodes, seed=self.config.seed, progress=progress
                )
        stages = [s for s in self.model.training_stages() if self._skips(s) is None]
        provenance = {
            "data": str(self.dataset.meta.get("source") or self.config.data),
            "real_steps": int(self.dataset.num_steps),
            "train_episodes": len(self.train_episodes),
            "held_out_episodes": len(self.test_episodes),
            "training_steps": sum(self.stage_steps.get(s, self.config.steps) for s in stages),
            "stages": stages,
            "batch_size": self.config.batch_size,
            "segment_length": self.segment_length,
            "lr": self.config.lr,
            "reward_fraction": self.config.reward_fraction,
            "end_fraction": self.config.end_fraction,
            "init_from": self.config.init_from,
            "teacher": self.config.teacher,
            "hardware": describe_hardware(),
            "wall_clock_seconds": round(self.wall_seconds, 1),
        }
        if self.base_provenance is not None:  # a fine-tune's budget includes its base's
            provenance["base"] = self.base_provenance
        if self.model.labelled_stages:
            provenance["labelled_data"] = self.config.labelled_data
            provenance["labelled_transitions"] = int(self.labelled.num_steps) if self.labelled is not None else 0
            provenance["prepared"] = self.prepared
            if game is None and self.config.game is not None:
                provenance["game_of_data"] = self.config.game
        return save_checkpoint(
            self.out / "checkpoint",
            model=self.model,
            starts_frames=bank.frames,
            starts_actions=bank.actions,
            game=game,
            action_meanings=action_meanings,
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
