"""A tiny world model and a corruption fuzzer, for the checkpoint tests and benchmark.

The toy family (``"checkpoint-toy"``, registered only while a checkpoint test or the benchmark
runs) exists so checkpoint code can be tested without the real families: it has everything a
checkpoint must carry (conv, linear, embedding weights; tied weights; a BatchNorm with its int64
``num_batches_tracked``; an int64 and a bool buffer; a config with a tuple field). Its dreams are
meaningless.

The fuzzer damages one file of a saved checkpoint at a time (1-8 random bytes changed, or the file
cut at a random length, zero included; or, in the structured modes, one JSON value or one start
array replaced by a random one) and sorts what ``load_checkpoint`` + ``build_world_model``
do with it:

- ``clean_error``: a ``CheckpointError`` (what corruption should give);
- ``verified_load``: it loaded and the model, start bank and sealed config are exactly what was
  saved (possible for damage to the unsealed ``provenance``/``metrics`` text and to the card);
- ``accepted_load``: only in the resealed modes, where the checksums are recomputed after the damage
  (as a hand-crafted file would have them) so the parsers and validators themselves are fuzzed: a
  file that is well-formed and consistent may load, whatever its values;
- ``unverified_load``: it loaded but differs from what was saved (a failure);
- ``other_exception``: any other exception escaped (a failure).
"""

from __future__ import annotations

import io
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from neuralenvs.checkpoint import (
    CARD_FILE,
    CHECKPOINT_FILES,
    CONFIG_FILE,
    SEALED_FIELDS,
    STARTS_FILE,
    WEIGHTS_FILE,
    build_world_model,
    config_digest,
    file_digest,
    load_checkpoint,
    save_checkpoint,
)
from neuralenvs.errors import CheckpointError
from neuralenvs.world_model import Segments, StepResult, WorldModel

TOY_FAMILY = "checkpoint-toy"  # distinct from conftest's "toy" environment-test model
TOY_ENTRY = "checkpoint_toy:CheckpointToyModel"  # for neuralenvs.models.FAMILIES (tests/ on sys.path)
OK_OUTCOMES = ("clean_error", "verified_load", "accepted_load")
FAIL_OUTCOMES = ("unverified_load", "other_exception", "timeout")


@dataclass(frozen=True)
class CheckpointToyConfig:
    hidden: int = 8
    context: int = 2
    channels: tuple[int, ...] = (4, 6)
    gain: float = 0.5

    def __post_init__(self) -> None:
        # JSON gives lists back; keep the dataclass hashable and equal to the saved one.
        object.__setattr__(self, "channels", tuple(self.channels))
        if self.hidden <= 0 or self.context <= 0 or len(self.channels) != 2 or min(self.channels) <= 0:
            raise ValueError(f"invalid toy config {self}")

    @classmethod
    def named(cls, name: str) -> CheckpointToyConfig:
        if name != "tiny":
            raise ValueError(f"unknown toy config {name!r}")
        return cls()


class CheckpointToyModel(WorldModel):
    family = TOY_FAMILY
    config_class = CheckpointToyConfig

    def __init__(
        self, config: CheckpointToyConfig, obs_shape: tuple[int, int, int], num_actions: int
    ) -> None:
        super().__init__(config, obs_shape, num_actions)
        h, w, c = self.obs_shape
        c0, c1 = config.channels
        self.encoder = nn.Conv2d(c * config.context, c0, 3, padding=1)
        self.norm = nn.BatchNorm2d(c0)
        self.mix = nn.Conv2d(c0, c1, 1)
        self.proj = nn.Linear(c1, config.hidden)
        self.embed = nn.Embedding(num_actions, config.hidden)
        self.action_logits = nn.Linear(config.hidden, num_actions, bias=False)
        self.action_logits.weight = self.embed.weight  # tied: two state_dict names, one tensor
        self.reward_head = nn.Linear(config.hidden, 3)
        self.end_head = nn.Linear(config.hidden, 2)
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))
        self.register_buffer("flags", torch.zeros(3, dtype=torch.bool))

    @property
    def context_frames(self) -> int:
        return self.config.context

    def _features(self, frames: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        b = frames.shape[0]
        x = frames.movedim(-1, -3).float().div(255).reshape(b, -1, *frames.shape[-3:-1])
        x = self.mix(torch.relu(self.norm(self.encoder(x)))).mean(dim=(-2, -1))
        return self.proj(x) * self.config.gain + self.embed(actions)

    def init_state(self, frames: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"frames": frames[:, -self.context_frames :].to(self.device)}

    def step(
        self,
        state: dict[str, torch.Tensor],
        actions: torch.Tensor,
        generator: torch.Generator | None = None,
        sample_heads: bool = False,
    ) -> StepResult:
        h = self._features(state["frames"], actions)
        reward = self.reward_head(h).argmax(-1).float() - 1
        terminated = self.end_head(h).argmax(-1).bool()
        next_frames = state["frames"][:, -1]
        frames = torch.cat([state["frames"][:, 1:], next_frames[:, None]], dim=1)
        return StepResult({"frames": frames}, next_frames, reward, terminated)

    def reset_where(
        self, state: dict[str, torch.Tensor], mask: torch.Tensor, frames: torch.Tensor, actions: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        new = state["frames"].clone()
        new[mask] = frames[:, -self.context_frames :].to(new.device)
        return {"frames": new}

    def training_losses(self, batch: Segments) -> dict[str, torch.Tensor]:
        k = self.context_frames
        h = self._features(batch.frames[:, :k], batch.actions[:, k - 1])
        loss = self.reward_head(h).logsumexp(-1).mean()
        return {"loss": loss}


def make_toy_model(
    seed: int = 0, obs_shape: tuple[int, int, int] = (8, 8, 3), num_actions: int = 4, **config: Any
) -> CheckpointToyModel:
    """A toy model with seeded random weights and non-default buffers (so a round trip that dropped
    a buffer or reset it would be noticed)."""
    torch.manual_seed(seed)
    model = CheckpointToyModel(CheckpointToyConfig(**config), obs_shape, num_actions)
    with torch.no_grad():
        model.norm.running_mean.uniform_(-1, 1)
        model.norm.running_var.uniform_(0.5, 2)
        model.norm.num_batches_tracked.fill_(17 + seed)
        model.updates.fill_(123_456_789_012 + seed)
        model.flags[1] = True
    return model


def make_starts(
    seed: int, n: int, k: int, obs_shape: tuple[int, int, int], num_actions: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(n, k, *obs_shape), dtype=np.uint8)
    actions = rng.integers(0, num_actions, size=(n, k - 1), dtype=np.int64)
    return frames, actions


# --------------------------------------------------------------------------------------------------
# Fuzzing


@dataclass
class Reference:
    """A saved checkpoint and what loading it must give back."""

    folder: Path
    files: dict[str, bytes]
    state: dict[str, torch.Tensor]
    config: dict[str, Any]
    frames: np.ndarray
    actions: np.ndarray


def save_reference(folder: Path, model: WorldModel, frames: np.ndarray, actions: np.ndarray) -> Reference:
    save_checkpoint(
        folder,
        model=model,
        starts_frames=frames,
        starts_actions=actions,
        game="Toy",
        action_meanings=[f"A{i}" for i in range(model.num_actions)],
        # Fixed time and machine, so the bytes (and hence a seeded fuzz run) are the same every time.
        provenance={
            "data": "random frames",
            "real_steps": 1000,
            "training_steps": 10,
            "created": "2024-01-01T00:00:00+00:00",
            "hardware": "test machine",
        },
        metrics={"psnr": {"1": 30.5, "15": 21.25}, "fps": 1234.5},
    )
    checkpoint = load_checkpoint(folder)
    loaded = build_world_model(checkpoint, device="cpu")
    return Reference(
        folder=folder,
        files={name: (folder / name).read_bytes() for name in CHECKPOINT_FILES},
        state={k: v.detach().clone() for k, v in loaded.state_dict().items()},
        config=checkpoint.config,
        frames=frames,
        actions=actions,
    )


def mutate(data: bytes, rng: np.random.Generator, *, truncate: bool) -> bytes:
    """Cut ``data`` at a random length (0 included), or change 1-8 random bytes to other values.

    Half of the changed bytes become printable ASCII: random bytes mostly break UTF-8 or JSON
    syntax at once, while printable ones also reach the validation behind the parsers.
    """
    if truncate or not data:
        return data[: int(rng.integers(0, max(len(data), 1)))]
    out = bytearray(data)
    count = min(int(rng.integers(1, 9)), len(out))
    for position in rng.choice(len(out), size=count, replace=False):
        old = out[position]
        if rng.random() < 0.5:
            new = int(rng.integers(0x20, 0x7E))  # 0x20..0x7d; shift past the old value to differ
            out[position] = new + 1 if new >= old else new
        else:
            out[position] = old ^ int(rng.integers(1, 256))  # never 0, so the byte always changes
    return bytes(out)


def reseal(files: dict[str, bytes], target: str) -> dict[str, bytes]:
    """Recompute the integrity fields after ``files[target]`` changed, as a hand-crafted (rather
    than damaged) file would have them, so the damage reaches the parsers."""
    files = dict(files)
    if target == CONFIG_FILE:
        try:
            config = json.loads(files[CONFIG_FILE])
        except ValueError:
            return files  # unparsable: nothing to reseal, the JSON error is what gets tested
        if isinstance(config, dict):
            config["config_sha256"] = config_digest(config)
            files[CONFIG_FILE] = json.dumps(config).encode()
        return files
    if target in (WEIGHTS_FILE, STARTS_FILE):
        config = json.loads(files[CONFIG_FILE])
        config["checksums"][target] = file_digest(files[target])
        config["config_sha256"] = config_digest(config)
        files[CONFIG_FILE] = json.dumps(config).encode()
    return files


def _random_json(rng: np.random.Generator, depth: int = 0) -> Any:
    """A random JSON value: every type, small and absurd numbers, nested containers."""
    kind = int(rng.integers(0, 9 if depth < 2 else 6))
    if kind == 0:
        return None
    if kind == 1:
        return bool(rng.random() < 0.5)
    if kind == 2:
        return int(rng.integers(-3, 41))
    if kind == 3:
        return int(rng.choice([0, -1, 2**31, 2**62, -(2**63)]))
    if kind == 4:
        return float(rng.choice([0.0, -1.5, 1e-300, 1e300, float(rng.normal() * 10)]))
    if kind == 5:
        return "".join(chr(int(c)) for c in rng.integers(0x20, 0x7F, size=int(rng.integers(0, 8))))
    if kind in (6, 7):
        return [_random_json(rng, depth + 1) for _ in range(int(rng.integers(0, 5)))]
    return {f"k{i}": _random_json(rng, depth + 1) for i in range(int(rng.integers(0, 4)))}


def _json_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            paths += _json_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            paths += _json_paths(value, (*prefix, index))
    return paths


def mutate_config_values(data: bytes, rng: np.random.Generator) -> bytes:
    """Change one value of config.json (any depth) to a random JSON value, delete a key, or add
    one; the result is valid JSON, so the damage reaches the field validation and the model build."""
    config = json.loads(data)
    paths = [p for p in _json_paths(config) if p and p[0] != "config_sha256"]
    path = paths[int(rng.integers(0, len(paths)))]
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    action = rng.random()
    if action < 0.15 and isinstance(parent, dict):
        del parent[path[-1]]
    elif action < 0.25 and isinstance(parent, dict):
        parent[f"extra_{int(rng.integers(0, 100))}"] = _random_json(rng)
    else:
        parent[path[-1]] = _random_json(rng)
    return json.dumps(config).encode()


def mutate_start_arrays(reference: Reference, rng: np.random.Generator) -> bytes:
    """A start bank with one array replaced by a random one (dtype, shape, values), one action
    value pushed out of range, or an array missing or added; a valid .npz archive."""
    arrays: dict[str, np.ndarray] = {"frames": reference.frames.copy(), "actions": reference.actions.copy()}
    action = rng.random()
    if action < 0.5:
        name = "frames" if rng.random() < 0.5 else "actions"
        dtype = rng.choice(np.array(["uint8", "int64", "int32", "float32", "bool", "uint64"]))
        shape = list(arrays[name].shape)
        for axis in rng.choice(len(shape), size=int(rng.integers(1, len(shape) + 1)), replace=False):
            shape[axis] = int(rng.integers(0, 10))
        if rng.random() < 0.2:
            shape = shape[: int(rng.integers(0, len(shape)))]
        arrays[name] = rng.integers(-3, 300, size=shape).astype(str(dtype))
    elif action < 0.8:
        index = tuple(int(rng.integers(0, d)) for d in arrays["actions"].shape)
        arrays["actions"][index] = int(rng.choice([-1, -(2**40), 2**40])) + (
            reference.config["num_actions"] if rng.random() < 0.5 else 0
        )
    elif action < 0.9:
        del arrays["frames" if rng.random() < 0.5 else "actions"]
    else:
        arrays["extra"] = np.zeros(3)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _same_as_saved(reference: Reference, checkpoint: Any, model: WorldModel) -> bool:
    state = model.state_dict()
    if state.keys() != reference.state.keys():
        return False
    if not all(
        state[k].dtype == v.dtype and torch.equal(state[k], v.to(state[k].device))
        for k, v in reference.state.items()
    ):
        return False
    if not (
        np.array_equal(checkpoint.starts_frames, reference.frames)
        and np.array_equal(checkpoint.starts_actions, reference.actions)
        and checkpoint.starts_frames.dtype == np.uint8
        and checkpoint.starts_actions.dtype == np.int64
    ):
        return False
    return all(checkpoint.config[f] == reference.config[f] for f in (*SEALED_FIELDS, "config_sha256"))


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise TimeoutError after ``seconds`` (POSIX main thread only; otherwise unbounded). Not for
    use under pytest-timeout, which owns SIGALRM."""
    usable = (
        seconds and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"case ran over {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def classify(
    folder: Path, reference: Reference, *, resealed: bool, time_limit: float | None = None
) -> tuple[str, str]:
    """Load the checkpoint in ``folder`` and say which outcome it was, with a short detail."""
    try:
        with _time_limit(time_limit):
            checkpoint = load_checkpoint(folder)
            model = build_world_model(checkpoint, device="cpu")
    except CheckpointError as exc:
        return "clean_error", f"{Path(exc.path).name}:{exc.field}"
    except TimeoutError as exc:
        return "timeout", str(exc)
    except Exception as exc:  # noqa: BLE001 - any other exception type is exactly what we look for
        return "other_exception", f"{type(exc).__name__}: {exc}"
    if resealed:
        return "accepted_load", ""
    if _same_as_saved(reference, checkpoint, model):
        return "verified_load", ""
    return "unverified_load", "loaded, but differs from what was saved"


@dataclass
class FuzzReport:
    """Outcome counts per (file, mode), plus the failing cases."""

    counts: dict[str, Counter[str]] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    errors_named: dict[str, Counter[str]] = field(default_factory=dict)
    max_case_seconds: float = 0.0
    total_cases: int = 0

    def table(self) -> str:
        outcomes = (*OK_OUTCOMES, *FAIL_OUTCOMES)
        width = max([len(k) for k in self.counts] + [12])
        rows = [f"{'file (mode)':<{width}} " + " ".join(f"{o:>15}" for o in outcomes)]
        for key, counter in self.counts.items():
            rows.append(f"{key:<{width}} " + " ".join(f"{counter.get(o, 0):>15}" for o in outcomes))
        rows.append(f"{self.total_cases} cases, slowest {self.max_case_seconds * 1000:.1f} ms")
        return "\n".join(rows)

    def as_json(self) -> dict[str, Any]:
        return {
            "total_cases": self.total_cases,
            "max_case_seconds": self.max_case_seconds,
            "counts": {k: dict(v) for k, v in self.counts.items()},
            "errors_named": {k: dict(v.most_common(20)) for k, v in self.errors_named.items()},
            "failures": self.failures,
        }


def run_fuzz(
    reference: Reference,
    workdir: Path,
    *,
    cases_per_file: int,
    seed: int = 0,
    reseal_cases_per_file: int = 0,
    structured_cases: int = 0,
    truncate_share: float = 0.25,
    time_limit: float | None = None,
) -> FuzzReport:
    """Damage each checkpoint file ``cases_per_file`` times (the first case of each file is a cut to
    zero bytes) and classify each load; then, for config/weights/starts, ``reseal_cases_per_file``
    more cases with the integrity fields recomputed."""
    report = FuzzReport()
    case_folder = workdir / "case"
    case_folder.mkdir(parents=True, exist_ok=True)
    on_disk: dict[str, bytes] = {}
    # (file, mode, cases); modes: "damaged" bytes, "resealed" damaged bytes with recomputed
    # checksums, "values"/"arrays": well-formed files with wrong contents, resealed.
    plans: list[tuple[str, str, int]] = [(name, "damaged", cases_per_file) for name in CHECKPOINT_FILES]
    plans += [(name, "resealed", reseal_cases_per_file) for name in CHECKPOINT_FILES if name != CARD_FILE]
    plans += [(CONFIG_FILE, "values", structured_cases), (STARTS_FILE, "arrays", structured_cases)]
    for file_index, (target, mode, count) in enumerate(plans):
        if count <= 0:
            continue
        resealed = mode != "damaged"
        key = f"{target} ({mode})"
        counter = report.counts.setdefault(key, Counter())
        named = report.errors_named.setdefault(key, Counter())
        rng = np.random.default_rng([seed, file_index])
        for case in range(count):
            truncate = mode in ("damaged", "resealed") and (case == 0 or bool(rng.random() < truncate_share))
            files = dict(reference.files)
            if mode == "values":
                files[target] = mutate_config_values(files[target], rng)
            elif mode == "arrays":
                files[target] = mutate_start_arrays(reference, rng)
            else:
                files[target] = b"" if case == 0 else mutate(files[target], rng, truncate=truncate)
            if resealed:
                files = reseal(files, target)
            for name, data in files.items():
                if on_disk.get(name) != data:  # rewriting unchanged files would dominate the run time
                    (case_folder / name).write_bytes(data)
                    on_disk[name] = data
            start = time.perf_counter()
            outcome, detail = classify(case_folder, reference, resealed=resealed, time_limit=time_limit)
            report.max_case_seconds = max(report.max_case_seconds, time.perf_counter() - start)
            report.total_cases += 1
            counter[outcome] += 1
            if outcome == "clean_error":
                named[detail] += 1
            if outcome in FAIL_OUTCOMES:
                report.failures.append(
                    {
                        "file": target,
                        "mode": mode,
                        "case": case,
                        "truncated": truncate,
                        "detail": detail,
                    }
                )
    return report
