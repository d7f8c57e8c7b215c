"""Real data: episode datasets on disk and collecting them from real environments."""

from neuralenvs.data.episodes import Episode, EpisodeDataset

__all__ = ["Episode", "EpisodeDataset"]
