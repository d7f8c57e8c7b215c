"""IRIS-style token world model (Micheli et al. 2023): a VQ autoencoder turns frames into discrete
tokens, and a GPT with a per-dream KV cache dreams the next frame's tokens autoregressively and
predicts reward and termination."""

from neuralenvs.models.token.config import TokenConfig
from neuralenvs.models.token.world_model import TokenState, TokenWorldModel

__all__ = ["TokenConfig", "TokenState", "TokenWorldModel"]
