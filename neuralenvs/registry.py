"""Gym ids: the real Atari 100k games and one dreamed environment per shipped checkpoint.

Shipped checkpoints live in ``checkpoints/<game>-<family>/`` at the repository root, which installs
as the data-only distribution ``neuralenvs-checkpoints`` (package ``neuralenvs_checkpoints``, see
``checkpoints/pyproject.toml``), so an installed wheel finds them as a source checkout does. More
folders can be listed in the ``NEURALENVS_CHECKPOINTS`` environment variable (``os.pathsep``-separated).
Each is registered as ``neuralenvs/<Game>-<family>-v0``; ``neuralenvs/Dream-v0`` takes any
checkpoint folder as ``checkpoint=PATH``.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import gymnasium as gym

from neuralenvs.envs.atari import ATARI100K_GAMES
from neuralenvs.errors import NeuralEnvsError

NAMESPACE = "neuralenvs"
DREAM_ID = f"{NAMESPACE}/Dream-v0"
SHIPPED_PACKAGE = "neuralenvs_checkpoints"


def checkpoint_dirs() -> list[Path]:
    """Folders searched for shipped checkpoints, in order: the installed ``neuralenvs_checkpoints``
    (or, in a source tree that is not installed, its ``checkpoints/``), then
    ``NEURALENVS_CHECKPOINTS``."""
    spec = importlib.util.find_spec(SHIPPED_PACKAGE)
    dirs = [Path(p) for p in spec.submodule_search_locations or []] if spec is not None else []
    dirs.append(Path(__file__).resolve().parent.parent / "checkpoints")
    dirs += [Path(p) for p in os.environ.get("NEURALENVS_CHECKPOINTS", "").split(os.pathsep) if p]
    unique = dict.fromkeys(d.resolve() for d in dirs if d.is_dir())
    return list(unique)


def shipped_checkpoints() -> dict[str, Path]:
    """``{gym id: checkpoint folder}`` for every checkpoint found in ``checkpoint_dirs()``.

    Reads only each ``config.json`` (cheap); a folder whose config cannot be read is skipped here
    and reported in full when someone loads it.
    """
    found: dict[str, Path] = {}
    for root in checkpoint_dirs():
        for folder in sorted(p for p in root.iterdir() if (p / "config.json").is_file()):
            try:
                config = json.loads((folder / "config.json").read_text())
                game, family = config["game"], config["family"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if game:
                found.setdefault(f"{NAMESPACE}/{game}-{family}-v0", folder)
    return found


def register_all() -> None:
    """Register every id. Safe to call twice."""
    registry = gym.envs.registration.registry
    for game in ATARI100K_GAMES:
        env_id = f"{NAMESPACE}/{game}-real-v0"
        if env_id not in registry:
            gym.register(env_id, entry_point="neuralenvs.envs.atari:make_atari_env", kwargs={"game": game})
    if DREAM_ID not in registry:
        gym.register(
            DREAM_ID,
            entry_point="neuralenvs.registry:make_dream_env",
            vector_entry_point="neuralenvs.registry:make_dream_vector_env",
            nondeterministic=True,
        )
    for env_id, folder in shipped_checkpoints().items():
        if env_id not in registry:
            gym.register(
                env_id,
                entry_point="neuralenvs.registry:make_dream_env",
                vector_entry_point="neuralenvs.registry:make_dream_vector_env",
                kwargs={"checkpoint": str(folder)},
                nondeterministic=True,
            )


def list_envs(kind: str | None = None) -> list[str]:
    """Every neuralenvs gym id, sorted; ``kind`` filters by suffix family (``"real"``,
    ``"diffusion"``, ...)."""
    ids = sorted(i for i in gym.envs.registration.registry if i.startswith(f"{NAMESPACE}/"))
    if kind is not None:
        ids = [i for i in ids if i.endswith(f"-{kind}-v0")]
    return ids


def real_env_id(game: str) -> str:
    from neuralenvs.envs.atari import check_game

    return f"{NAMESPACE}/{check_game(game)}-real-v0"


def game_of(env_id: str) -> str:
    """The game of a neuralenvs id: ``neuralenvs/Boxing-diffusion-v0`` -> ``Boxing``."""
    name = env_id.split("/")[-1]
    if "-" not in name:
        raise NeuralEnvsError(f"{env_id!r} is not a neuralenvs id like 'neuralenvs/Boxing-diffusion-v0'")
    return name.split("-")[0]


def resolve_checkpoint(env_id_or_path: str | os.PathLike) -> Path:
    """A checkpoint folder from a gym id (``neuralenvs/Pong-diffusion-v0``) or a folder path."""
    text = str(env_id_or_path)
    if Path(text).is_dir():  # what a registered id's entry point is given: no catalogue scan
        return Path(text)
    shipped = shipped_checkpoints()
    if text in shipped:
        return shipped[text]
    known = ", ".join(sorted(shipped)) or "none found"
    raise ValueError(
        f"{text!r} is neither a checkpoint folder nor a shipped dream id (shipped: {known})"
    )


def load_world_model_and_starts(env_id_or_path, device=None):
    """``(model, StartBank, config dict)`` of a checkpoint, the model on ``device``."""
    from neuralenvs.checkpoint import build_world_model, load_checkpoint
    from neuralenvs.envs.starts import StartBank

    checkpoint = load_checkpoint(resolve_checkpoint(env_id_or_path))
    model = build_world_model(checkpoint, device=device)
    return model, StartBank(checkpoint.starts_frames, checkpoint.starts_actions), checkpoint.config


def load_world_model(env_id_or_path, device=None):
    """The trained ``WorldModel`` behind a dream id or checkpoint folder."""
    return load_world_model_and_starts(env_id_or_path, device=device)[0]


def _model_and_starts(checkpoint: str, prompt, device):
    """The checkpoint's model and where its dreams start: its start bank, or with ``prompt`` (an
    image array or file path) that image, on every reset (Genie's single-image start)."""
    from neuralenvs.envs.starts import StartBank

    model, starts, _ = load_world_model_and_starts(checkpoint, device=device)
    if prompt is not None:
        starts = StartBank.from_prompt(prompt, model.context_frames, model.obs_shape)
    return model, starts


def make_dream_env(checkpoint: str, horizon: int = 1000, prompt=None, **kwargs):
    """Entry point of the dream ids: one dream as a ``gymnasium.Env`` (``prompt``: an image or
    image file every reset starts from, instead of the checkpoint's start bank)."""
    from neuralenvs.envs.dream import DreamEnv

    device = kwargs.pop("device", None)
    model, starts = _model_and_starts(checkpoint, prompt, device)
    return DreamEnv(model, starts, horizon=horizon, device=device, **kwargs)


def make_dream_vector_env(checkpoint: str, num_envs: int = 1, horizon: int = 1000, prompt=None, **kwargs):
    """Vector entry point of the dream ids: ``num_envs`` dreams stepped in one forward pass."""
    from neuralenvs.envs.dream import DreamVectorEnv

    device = kwargs.pop("device", None)
    model, starts = _model_and_starts(checkpoint, prompt, device)
    return DreamVectorEnv(model, starts, num_envs=num_envs, horizon=horizon, device=device, **kwargs)
