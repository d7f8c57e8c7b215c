"""The imagination loop: DIAMOND's schedule with any world-model family and any SB3 agent.

One run plays one game under the Atari 100k protocol::

    warm-up: collect ``warmup_steps`` real steps with a random policy
    epoch 0: train the world model (``wm_steps_first_epoch`` per stage), then the agent in the
             dream (``agent_steps_first_epoch`` dreamed steps)
    epoch e: collect ``steps_per_epoch`` real steps with the agent, train the world model
             ``wm_steps_per_epoch`` more steps per stage, train the agent in the dream
    ...      until ``real_steps`` real steps are spent, then
    final:   evaluate the agent on ``neuralenvs/<Game>-real-v0`` in test mode (game over, not a
             lost life ends an episode), ``eval_episodes`` episodes.

The world model is trained in place: the dream environment holds the very module the trainer
updates, so the agent always dreams with the latest weights, and its dreams start from real
contexts cut from everything collected so far (refreshed every epoch).

A run lives in a folder::

    runs/atari100k/Boxing-diffusion-s0/
      imagination.json   the config; a resume must match it
      episodes/          the real data (an EpisodeDataset, appended atomically)
      world_model/       the world model's trainer folder (its state, then checkpoint/)
      agent.zip          the SB3 agent (replaced atomically)
      progress.json      counters, for humans (the files above are the truth)
      tensorboard/       the loop's and the agent's logs
      result.json        the final evaluation; its presence means the run is finished

Resuming after a kill: every phase's output is durable when it ends (a collected chunk, a world
model state, an agent file), and each epoch asks only that every counter has reached its target
for that epoch. A rerun therefore redoes at most the phase that was cut, from the last durable
state. Real steps collected in a chunk that was cut before it was stored are not counted and are
collected again (the environment restarts at a new episode).

Collected steps are stored as chunks: the episode in progress when a collection phase ends is
stored as a truncated episode, and the next phase continues the same game from its last frame.
So the world model trains on every real step at once, as DIAMOND's growing episodes allow, even
for games whose episodes are thousands of steps long.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from neuralenvs.data.episodes import Episode, EpisodeDataset
from neuralenvs.training.run_settings import record_run_settings
from neuralenvs.training.trainer import TrainConfig, Trainer
from neuralenvs.utils.device import describe_hardware, resolve_device
from neuralenvs.utils.io import atomic_write_text

__all__ = ["BUDGETS", "ImaginationConfig", "ImaginationRun", "run_imagination"]


@dataclass
class ImaginationConfig:
    game: str
    out: str
    family: str = "diffusion"
    model_config: str | dict = "small"
    algo: str = "ppo"
    seed: int = 0
    budget: str = "custom"
    real_steps: int = 100_000  # the benchmark's budget of real agent steps (400k frames)
    warmup_steps: int = 5_000  # random-policy steps before the first training (DIAMOND: 5k-10k)
    steps_per_epoch: int = 100  # real steps collected with the agent per epoch (DIAMOND: 100)
    epsilon: float = 0.01  # chance of a random action while collecting (DIAMOND: 0.01)
    wm_steps_first_epoch: int = 10_000  # world-model optimizer steps per training stage
    wm_steps_per_epoch: int = 400
    wm_batch_size: int = 32
    wm_lr: float = 1e-4
    reward_fraction: float = 0.0  # share of world-model segments ending at a rewarded step
    agent_steps_first_epoch: int = 2_400_000  # dreamed transitions (DIAMOND: 5000 x 32 x 15)
    agent_steps_per_epoch: int = 192_000  # (DIAMOND: 400 updates x 32 dreams x 15 steps)
    n_dreams: int = 32
    horizon: int = 15  # dream length before a cut, where the value is bootstrapped
    frame_stack: int = 4
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    start_bank_size: int = 1024
    eval_episodes: int = 100
    eval_max_steps: int | None = None  # None: the game's own end (108k-frame cap)
    precision: str = "auto"

    @classmethod
    def from_budget(cls, budget: str, game: str, out: str, **overrides: Any) -> ImaginationConfig:
        """A named budget (``smoke``, ``cpu``, ``full``) with any field overridden."""
        if budget not in BUDGETS:
            raise ValueError(f"unknown budget {budget!r}; choose one of {sorted(BUDGETS)}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown ImaginationConfig fields {unknown}")
        settings = {**BUDGETS[budget], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(game=game, out=out, budget=budget, **settings)

    def __post_init__(self) -> None:
        if not 0 < self.warmup_steps <= self.real_steps:
            raise ValueError(f"warmup_steps must lie in (0, real_steps={self.real_steps}], got {self.warmup_steps}")
        for name in ("steps_per_epoch", "n_dreams", "horizon", "frame_stack", "eval_episodes", "wm_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {self.epsilon}")

    @property
    def num_epochs(self) -> int:
        return 1 + math.ceil((self.real_steps - self.warmup_steps) / self.steps_per_epoch)

    def real_steps_after(self, epoch: int) -> int:
        """Real steps collected once epoch ``epoch``'s collection is done."""
        return min(self.real_steps, self.warmup_steps + epoch * self.steps_per_epoch)

    def wm_steps_after(self, epoch: int) -> int:
        return self.wm_steps_first_epoch + epoch * self.wm_steps_per_epoch

    def agent_steps_after(self, epoch: int) -> int:
        return self.agent_steps_first_epoch + epoch * self.agent_steps_per_epoch


# Named budgets. ``full`` is DIAMOND's schedule (days on one GPU per game and seed). ``cpu`` keeps
# the 100k real steps but trains the world model and the agent far less, to fit in about an hour
# on 2 CPU cores with the token family's ``small`` config. ``smoke`` exercises every phase in a
# few minutes, for CI.
BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": dict(
        real_steps=1_000, warmup_steps=600, steps_per_epoch=200, model_config="tiny",
        wm_steps_first_epoch=30, wm_steps_per_epoch=15, wm_batch_size=8, wm_lr=3e-4,
        agent_steps_first_epoch=1_024, agent_steps_per_epoch=512, n_dreams=8,
        algo_kwargs={"n_steps": 32, "batch_size": 64, "n_epochs": 2},
        start_bank_size=64, eval_episodes=2, eval_max_steps=1_000,
    ),
    "cpu": dict(
        real_steps=100_000, warmup_steps=10_000, steps_per_epoch=10_000, model_config="small",
        wm_steps_first_epoch=1_000, wm_steps_per_epoch=200, wm_lr=3e-4,
        agent_steps_first_epoch=10_240, agent_steps_per_epoch=10_240, n_dreams=16,
        start_bank_size=1024, eval_episodes=100,
    ),
    # The recipe of the shipped CrazyClimber dream (docs/transfer_crazyclimber.md, section 5) inside the loop:
    # half the real steps random, then five rounds of 10k steps played by the dream-trained agent,
    # so the dream can learn the states the agent reaches. 86 minutes on 2 CPU cores; it did not
    # beat the dream built from random play alone (docs/transfer_crazyclimber.md, section 11).
    "cpu-dreamed": dict(
        real_steps=100_000, warmup_steps=50_000, steps_per_epoch=10_000, model_config="cpu-dreamed",
        wm_steps_first_epoch=4_000, wm_steps_per_epoch=500, wm_batch_size=16, wm_lr=3e-4, reward_fraction=0.5,
        agent_steps_first_epoch=100_000, agent_steps_per_epoch=30_000, n_dreams=16,
        start_bank_size=1024, eval_episodes=30,
    ),
    "full": dict(
        real_steps=100_000, warmup_steps=5_000, steps_per_epoch=100, model_config="paper",
        wm_steps_first_epoch=10_000, wm_steps_per_epoch=400, wm_lr=1e-4,
        agent_steps_first_epoch=2_400_000, agent_steps_per_epoch=192_000, n_dreams=32,
        start_bank_size=4096, eval_episodes=100,
    ),
}


class ImaginationRun:
    """One game, one seed, one family: see the module docstring. ``run()`` does (or finishes) it."""

    def __init__(self, config: ImaginationConfig, device: str | torch.device | None = None,
                 progress: bool = True) -> None:
        from neuralenvs.envs.atari import action_meanings, check_game, make_atari_env
        from neuralenvs.models import model_class

        if model_class(config.family).labelled_stages:
            raise ValueError(
                f"the imagination loop trains families that learn every stage from the collected, "
                f"action-labelled steps (diffusion, token); {config.family!r} learns from video plus a "
                "separate labelled set and is not supported by the loop yet"
            )
        self.config = config
        config.game = check_game(config.game)
        self.out = Path(config.out)
        self.device = resolve_device(device)
        self.progress = progress
        self._check_run_matches()
        self.real_env = make_atari_env(config.game, train=True, frame_stack=config.frame_stack)
        self.dataset = EpisodeDataset(
            self.out / "episodes", obs_shape=(64, 64, 3), num_actions=int(self.real_env.action_space.n),
            action_meanings=action_meanings(self.real_env), source=f"atari:{config.game}",
        )
        self.rng = np.random.default_rng([config.seed, self.dataset.num_episodes])  # a resume draws anew
        self.real_env.action_space.seed(int(self.rng.integers(2**31)))
        self._obs: np.ndarray | None = None  # the real game's current observation between chunks
        self._episode_return = 0.0
        self.real_returns: list[float] = []  # returns of real (training-mode) episodes finished here
        self.trainer: Trainer | None = None
        self.agent = None
        self.dream = None
        self._writer = None
        self._t0 = time.perf_counter()
        progress_file = self.out / "progress.json"
        self._seconds_before = json.loads(progress_file.read_text())["wall_seconds"] if progress_file.exists() else 0.0

    # -- run folder ------------------------------------------------------------------------------
    def _check_run_matches(self) -> None:
        record_run_settings(self.out / "imagination.json", self.config, what="imagination run")

    @property
    def result_path(self) -> Path:
        return self.out / "result.json"

    def _write_progress(self, epoch: int, phase: str) -> None:
        info = {
            "epoch": epoch, "num_epochs": self.config.num_epochs, "phase": phase,
            "real_steps": self.dataset.num_steps,
            "wm_steps_per_stage": self.trainer.step_in_stage if self.trainer else 0,
            "agent_steps": int(self.agent.num_timesteps) if self.agent is not None else 0,
            "wall_seconds": self.wall_seconds,
        }
        atomic_write_text(self.out / "progress.json", json.dumps(info, indent=1))

    @property
    def wall_seconds(self) -> float:
        """Wall-clock of the whole run so far, over every resume."""
        return round(self._seconds_before + time.perf_counter() - self._t0, 1)

    def _log(self, tag: str, value: float, step: int) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.out / "tensorboard" / "loop"))
        self._writer.add_scalar(tag, value, step)

    # -- real data -------------------------------------------------------------------------------
    def collect(self, until_steps: int) -> None:
        """Play the real game (training mode) until the dataset holds ``until_steps`` steps; the
        agent acts (with ``epsilon`` random actions) once it exists, a random policy before."""
        need = until_steps - self.dataset.num_steps
        if need <= 0:
            return
        env, cfg = self.real_env, self.config
        if self._obs is None:
            self._obs, _ = env.reset(seed=int(self.rng.integers(2**31)))
            self._episode_return = 0.0
        frames, actions, rewards, terms, truncs = [self._newest(self._obs)], [], [], [], []
        bar = tqdm(total=need, disable=not self.progress, desc="collecting real steps", unit="step", leave=False)
        threads = torch.get_num_threads()
        # one observation at a time is too small to share: extra threads only wait on each other,
        # which costs 40x on a busy 2-core machine (measured: 10 instead of 430 steps/s)
        torch.set_num_threads(1)
        try:
            for _ in range(need):
                if self.agent is None or self.rng.random() < cfg.epsilon:
                    action = int(env.action_space.sample())
                else:
                    action = int(self.agent.predict(self._obs, deterministic=False)[0])
                self._obs, reward, terminated, truncated, _ = env.step(action)
                frames.append(self._newest(self._obs))
                actions.append(action)
                rewards.append(float(reward))
                terms.append(bool(terminated))
                truncs.append(bool(truncated))
                self._episode_return += float(reward)
                bar.update(1)
                if terminated or truncated:
                    self.dataset.append(Episode(np.stack(frames), actions, rewards, terms, truncs))
                    self.real_returns.append(self._episode_return)
                    self._log("real/train_episode_return", self._episode_return, self.dataset.num_steps)
                    self._obs, _ = env.reset()
                    self._episode_return = 0.0
                    frames, actions, rewards, terms, truncs = [self._newest(self._obs)], [], [], [], []
        finally:
            torch.set_num_threads(threads)
            bar.close()
        if actions:  # the episode goes on in the next chunk; store what we have as truncated
            truncs[-1] = True
            self.dataset.append(Episode(np.stack(frames), actions, rewards, terms, truncs))

    def _newest(self, obs: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(obs[..., -3:])

    # -- world model -----------------------------------------------------------------------------
    def _make_trainer(self) -> Trainer:
        cfg = self.config
        train_config = TrainConfig(
            family=cfg.family, model_config=cfg.model_config, data=str(self.out / "episodes"),
            out=str(self.out / "world_model"), steps=cfg.wm_steps_after(cfg.num_epochs - 1),
            batch_size=cfg.wm_batch_size, lr=cfg.wm_lr, seed=cfg.seed, held_out_episodes=0,
            precision=cfg.precision, start_bank_size=cfg.start_bank_size, game=cfg.game,
            reward_fraction=cfg.reward_fraction, save_every_seconds=float("inf"),
        )
        trainer = Trainer(train_config, device=self.device)
        trainer.dataset = self.dataset  # one instance: the collector's appends are seen at once
        return trainer

    def train_world_model(self, until_steps: int) -> None:
        """Train every stage of the world model until each has ``until_steps`` steps."""
        trainer = self.trainer
        need = until_steps - trainer.step_in_stage
        if need <= 0:
            return
        trainer.refresh_data()
        model = trainer.model
        logs: dict[str, float] = {}
        for stage in model.training_stages():
            model.set_training_stage(stage)
            model.train()
            bar = tqdm(range(need), disable=not self.progress, desc=f"world model [{stage}]", unit="step", leave=False)
            t0 = time.perf_counter()
            for _ in bar:
                logs = trainer.train_step()
                bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()})
            trainer.wall_seconds += time.perf_counter() - t0
            for name, value in logs.items():
                self._log(f"world_model/{stage}/{name}", value, until_steps)
        model.eval()
        trainer.step_in_stage = until_steps
        trainer.save_state()

    # -- agent -----------------------------------------------------------------------------------
    def _start_bank(self):
        from neuralenvs.envs.starts import StartBank

        return StartBank.from_dataset(self.dataset, self.trainer.model.context_frames, self.config.start_bank_size,
                                      self.rng)

    def _make_agent(self) -> None:
        from neuralenvs.envs.dream import DreamVectorEnv
        from neuralenvs.sb3 import ALGORITHMS, default_algo_kwargs, make_sb3_env

        cfg = self.config
        self.dream = DreamVectorEnv(
            self.trainer.model, self._start_bank(), cfg.n_dreams, horizon=cfg.horizon,
            frame_stack=cfg.frame_stack, device=self.device,
        )
        self.dream.reset(seed=cfg.seed)
        vec_env = make_sb3_env(self.dream)
        name = cfg.algo.lower()
        if name not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {cfg.algo!r}; choose one of {sorted(ALGORITHMS)}")
        cls = ALGORITHMS[name]
        path = self.out / "agent.zip"
        if path.exists():
            self.agent = cls.load(str(path), env=vec_env, device=self.device)
        else:
            kwargs = {**default_algo_kwargs(name, n_envs=cfg.n_dreams), **cfg.algo_kwargs}
            self.agent = cls(
                "CnnPolicy", vec_env, seed=cfg.seed, device=self.device,
                tensorboard_log=str(self.out / "tensorboard"), **kwargs,
            )

    def train_agent(self, until_steps: int) -> None:
        from neuralenvs.sb3 import save_agent

        need = until_steps - int(self.agent.num_timesteps)
        if need <= 0:
            return
        self.dream.set_starts(self._start_bank())
        self.agent.learn(need, reset_num_timesteps=False, tb_log_name="agent", progress_bar=False)
        save_agent(self.agent, self.out / "agent.zip")

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        if self.result_path.exists():
            return json.loads(self.result_path.read_text())
        cfg = self.config
        self.collect(cfg.warmup_steps)
        self.trainer = self._make_trainer()
        self._make_agent()
        epochs = tqdm(range(cfg.num_epochs), disable=not self.progress, desc=f"{cfg.game} imagination", unit="epoch")
        for epoch in epochs:
            self.collect(cfg.real_steps_after(epoch))
            self._write_progress(epoch, "collected")
            self.train_world_model(cfg.wm_steps_after(epoch))
            self._write_progress(epoch, "world model trained")
            self.train_agent(cfg.agent_steps_after(epoch))
            self._write_progress(epoch, "agent trained")
            if self.real_returns:
                epochs.set_postfix(real=self.dataset.num_steps, ret=f"{np.mean(self.real_returns[-10:]):.1f}")
        return self.evaluate()

    def evaluate(self) -> dict[str, Any]:
        from neuralenvs.envs.atari import human_normalized_score
        from neuralenvs.registry import real_env_id
        from neuralenvs.sb3 import evaluate

        cfg = self.config
        score = evaluate(
            self.agent, real_env_id(cfg.game), n_episodes=cfg.eval_episodes, seed=10_000 + cfg.seed,
            env_kwargs={"frame_stack": cfg.frame_stack}, max_episode_steps=cfg.eval_max_steps,
        )
        self.trainer.export(fidelity=False, progress=False)
        result = {
            "game": cfg.game, "family": cfg.family, "algo": cfg.algo, "seed": cfg.seed, "budget": cfg.budget,
            "score": score["mean"], "score_stderr": score["stderr"], "returns": score["returns"],
            "hns": human_normalized_score(cfg.game, score["mean"]),
            "eval_episodes": score["n_episodes"], "eval_max_steps": cfg.eval_max_steps,
            "real_steps": self.dataset.num_steps,
            "wm_steps_per_stage": self.trainer.step_in_stage,
            "agent_steps": int(self.agent.num_timesteps),
            "world_model_seconds": round(self.trainer.wall_seconds, 1),
            "wall_clock_seconds": self.wall_seconds,
            "device": str(self.device), "hardware": describe_hardware(),
        }
        self._log("real/eval_return", score["mean"], self.dataset.num_steps)
        atomic_write_text(self.result_path, json.dumps(result, indent=1))
        return result

    def close(self) -> None:
        self.real_env.close()
        if self._writer is not None:
            self._writer.close()


def run_imagination(config: ImaginationConfig, device: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Do (or finish) one imagination run and return its result (``result.json``)."""
    run = ImaginationRun(replace(config), device=device, progress=progress)
    try:
        return run.run()
    finally:
        run.close()
