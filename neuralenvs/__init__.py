"""neuralenvs: trained world models as batched Gymnasium environments.

Importing the package registers the gym ids ``neuralenvs/<Game>-real-v0`` (the real Atari 100k
games), ``neuralenvs/Dream-v0`` (any checkpoint, ``checkpoint=PATH``) and one
``neuralenvs/<Game>-<family>-v0`` per shipped checkpoint.
"""

from neuralenvs.envs.atari import ATARI100K_GAMES, make_atari_env
from neuralenvs.registry import game_of, list_envs, load_world_model, real_env_id, register_all

__version__ = "0.1.0"

register_all()


def __getattr__(name: str):
    # Checkpoint functions pull in torch: imported on first use, so `import neuralenvs` stays light.
    if name in ("save_checkpoint", "load_checkpoint"):
        from neuralenvs import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'neuralenvs' has no attribute {name!r}")

__all__ = [
    "ATARI100K_GAMES",
    "make_atari_env",
    "list_envs",
    "game_of",
    "real_env_id",
    "load_world_model",
    "save_checkpoint",
    "load_checkpoint",
    "__version__",
]
