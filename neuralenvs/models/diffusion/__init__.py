"""DIAMOND-style diffusion world model (Alonso et al. 2024): EDM denoising of the next frame
conditioned on past frames and actions, plus a recurrent reward/termination model."""

from neuralenvs.models.diffusion.config import DiffusionConfig
from neuralenvs.models.diffusion.world_model import DiffusionState, DiffusionWorldModel

__all__ = ["DiffusionConfig", "DiffusionState", "DiffusionWorldModel"]
