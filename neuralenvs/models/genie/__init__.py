"""Genie-style latent-action world model (Bruce et al. 2024): a VQ video tokenizer, a latent action
model that discovers ``n_latent`` actions from unlabelled video, and a spatio-temporal MaskGIT
dynamics transformer; reward and termination heads and a real-to-latent action map are fitted on a
few labelled steps."""

from neuralenvs.models.genie.config import GenieConfig
from neuralenvs.models.genie.world_model import GenieState, GenieWorldModel

__all__ = ["GenieConfig", "GenieState", "GenieWorldModel"]
