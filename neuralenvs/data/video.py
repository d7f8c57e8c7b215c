"""Unlabelled video as episodes: read a folder of video files or image sequences with OpenCV.

A latent-action model (the genie family) learns from frames alone. :func:`import_videos` turns a
folder into an ordinary :class:`~neuralenvs.data.EpisodeDataset`, so the trainer, the start banks
and the measurements read video exactly as they read recorded episodes:

- every video file (``.mp4``, ``.avi``, ``.mov``, ``.mkv``, ``.webm``) found under the folder is one
  clip, and so is every folder of image files (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, sorted by
  name), the folder itself included;
- frames are converted to RGB (or grayscale for one channel) and resized to the observation size
  with ``INTER_AREA``, the interpolation of the Atari preprocessing; a clip longer than
  ``max_episode_frames`` is split into several episodes;
- actions are all 0, rewards 0, nothing terminates, and each episode's last step is truncated (the
  clip ended; the game did not); the dataset's meta says ``"labelled": false`` and
  ``"source": "video:<folder>"``, so nothing mistakes those zeros for real actions.

The import is all-or-nothing: it writes into a hidden sibling folder and renames it into place at
the end. Re-running it on a finished import reuses it; after a crash it starts over.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from neuralenvs.data.episodes import Episode, EpisodeDataset
from neuralenvs.utils.io import fsync_dir, temp_sibling

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")

__all__ = ["IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "find_clips", "import_videos", "read_clip"]


def find_clips(root: str | os.PathLike) -> list[Path]:
    """Every clip under ``root``, sorted: video files, and folders holding image files."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder {str(root)!r} does not exist or is not a folder")
    clips: list[Path] = []
    for folder, _, files in os.walk(root):
        names = sorted(files)
        clips += [Path(folder) / n for n in names if n.lower().endswith(VIDEO_EXTENSIONS)]
        if any(n.lower().endswith(IMAGE_EXTENSIONS) for n in names):
            clips.append(Path(folder))
    return sorted(clips)


def _convert(image: np.ndarray, obs_shape: tuple[int, int, int]) -> np.ndarray:
    import cv2

    h, w, c = obs_shape
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if c == 3:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB if image.shape[2] == 1 else cv2.COLOR_BGR2RGB)
    elif image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image.reshape(h, w, c), dtype=np.uint8)


def read_clip(path: str | os.PathLike, obs_shape: tuple[int, int, int], frame_skip: int = 1) -> Iterator[np.ndarray]:
    """The frames of one clip (a video file or a folder of images) as uint8 ``obs_shape`` arrays,
    keeping every ``frame_skip``-th (a 60 fps recording with ``frame_skip=4`` ticks like the Atari
    100k protocol's 15 frames per second)."""
    import cv2

    path = Path(path)
    if obs_shape[2] not in (1, 3):
        raise ValueError(f"video frames can become 1- or 3-channel observations, not {obs_shape}")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        for i, file in enumerate(files):
            if i % frame_skip:
                continue
            image = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
            if image is None:
                raise ValueError(f"OpenCV could not decode the image {str(file)!r}")
            yield _convert(image, obs_shape)
        return
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(
            f"OpenCV could not open the video {str(path)!r}: the file is damaged or its codec is not "
            "supported by this OpenCV build (re-encode it, e.g. ffmpeg -i in.mkv -c:v mpeg4 out.mp4)"
        )
    try:
        i = 0
        while True:
            ok, image = capture.read()
            if not ok:
                break
            if i % frame_skip == 0:
                yield _convert(image, obs_shape)
            i += 1
    finally:
        capture.release()


def _episodes(frames: Iterator[np.ndarray], max_frames: int) -> Iterator[np.ndarray]:
    """Consecutive chunks of at most ``max_frames`` frames (at least 2 each: one transition)."""
    buffer: list[np.ndarray] = []
    for frame in frames:
        buffer.append(frame)
        if len(buffer) == max_frames:
            yield np.stack(buffer)
            buffer = []
    if len(buffer) >= 2:
        yield np.stack(buffer)


def import_videos(
    src: str | os.PathLike,
    dest: str | os.PathLike,
    obs_shape: tuple[int, int, int] = (64, 64, 3),
    *,
    frame_skip: int = 1,
    max_episode_frames: int = 10_000,
    progress: bool = True,
) -> EpisodeDataset:
    """Import every clip under ``src`` into an unlabelled episode dataset at ``dest`` (see the
    module docstring) and return it; a finished import of the same folder at ``dest`` is reused."""
    from tqdm.auto import tqdm

    src, dest = Path(src).resolve(), Path(dest)
    source = f"video:{src}"
    if (dest / "meta.json").exists():
        existing = EpisodeDataset(dest)
        if existing.meta.get("source") != source or tuple(existing.obs_shape) != tuple(obs_shape):
            raise ValueError(
                f"{dest} already holds {existing.meta.get('source')!r} at {existing.obs_shape}, not {source!r} "
                f"at {tuple(obs_shape)}: import into another folder"
            )
        return existing
    if frame_skip < 1 or max_episode_frames < 2:
        raise ValueError("frame_skip must be >= 1 and max_episode_frames >= 2")
    clips = find_clips(src)
    if not clips:
        raise ValueError(
            f"no video files ({', '.join(VIDEO_EXTENSIONS)}) or image sequences ({', '.join(IMAGE_EXTENSIONS)}) "
            f"found under {src}"
        )
    tmp = temp_sibling(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        dataset = EpisodeDataset(tmp, obs_shape=obs_shape, num_actions=1, source=source, labelled=False)
        for clip in tqdm(clips, desc="importing video", unit="clip", disable=not progress):
            for frames in _episodes(read_clip(clip, obs_shape, frame_skip), max_episode_frames):
                t = len(frames) - 1
                truncated = np.zeros(t, bool)
                truncated[-1] = True
                dataset.append(
                    Episode(frames, np.zeros(t, np.int64), np.zeros(t, np.float32), np.zeros(t, bool), truncated)
                )
        if dataset.num_episodes == 0:
            raise ValueError(f"the clips under {src} hold no clip of at least 2 frames")
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return EpisodeDataset(dest)
