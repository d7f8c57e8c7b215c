"""Training world models: one resumable trainer for every family."""

from neuralenvs.training.trainer import TrainConfig, Trainer, train_world_model

__all__ = ["TrainConfig", "Trainer", "train_world_model"]
