"""Real data: episode datasets on disk, collecting them from real environments, and importing
unlabelled video as episodes."""

from neuralenvs.data.episodes import Episode, EpisodeDataset
from neuralenvs.data.video import import_videos

__all__ = ["Episode", "EpisodeDataset", "import_videos"]
