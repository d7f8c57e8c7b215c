"""Where dreams start: banks of real context segments, and single-image prompts.

A dream is started from ``K`` real frames and the ``K - 1`` actions between them (the model's
``context_frames``), as DIAMOND and IRIS start their imagined rollouts from real states. A
:class:`StartBank` holds many such segments, cut from real episodes, and is shipped with each
checkpoint as ``starts.npz``. A prompt (one image) is the degenerate segment Genie made famous: the
image repeated ``K`` times with NOOP (action 0) between the copies.

Banks are numpy on the host; :class:`DeviceStarts` is the one copy of a bank that a dream keeps on
the model's device.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

PathLike = str | os.PathLike
ObsShape = tuple[int, int, int]

__all__ = ["DeviceStarts", "StartBank", "load_image", "prompt_image", "prompt_context"]


def load_image(path: PathLike, obs_shape: Sequence[int]) -> np.ndarray:
    """Read an image file with OpenCV as RGB (or grayscale when ``C == 1``) and resize it to
    ``obs_shape`` (H, W, C) with ``INTER_AREA``, the interpolation the Atari preprocessing uses."""
    import cv2  # imported here: only prompts from files need OpenCV

    h, w, c = (int(x) for x in obs_shape)
    if c not in (1, 3):
        raise ValueError(
            f"cannot read an image file into a {c}-channel observation {tuple(obs_shape)}; "
            "only 1 (grayscale) and 3 (RGB) channels are supported. Pass a uint8 array of that "
            "shape instead of a path."
        )
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt image {str(path)!r} does not exist or is not a file")
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if c == 1 else cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"OpenCV could not decode {str(path)!r} as an image (use a PNG or JPG file)")
    if c == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # OpenCV reads BGR; games give RGB
    if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    if image.ndim == 2:
        image = image[..., None]
    return np.ascontiguousarray(image, dtype=np.uint8)


def prompt_image(image: Any, obs_shape: Sequence[int]) -> np.ndarray:
    """Validate a prompt and return it as a fresh uint8 [H, W, C] array.

    ``image`` is a path (read and resized with :func:`load_image`) or an array / tensor that must
    already be uint8 of exactly ``obs_shape`` (a ``(H, W)`` array is accepted when ``C == 1``): an
    array is never silently resized, so a wrong-sized prompt is caught rather than distorted.
    """
    obs_shape = tuple(int(x) for x in obs_shape)
    h, w, c = obs_shape
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, obs_shape)
    if hasattr(image, "detach"):  # a torch tensor, possibly on an accelerator
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if c == 1 and array.shape == (h, w):
        array = array[..., None]
    if array.shape != obs_shape:
        raise ValueError(
            f"prompt image has shape {array.shape}, expected {obs_shape} (H, W, C), the model's "
            f"observation shape. Resize it with cv2.resize(image, ({w}, {h}), "
            "interpolation=cv2.INTER_AREA), or pass a file path to have it read and resized."
        )
    if array.dtype != np.uint8:
        raise ValueError(
            f"prompt image has dtype {array.dtype}, expected uint8 in [0, 255]; convert it first, "
            "e.g. (image * 255).round().astype(np.uint8) for floats in [0, 1]"
        )
    return array.copy()


def prompt_context(
    image: Any, context_frames: int, obs_shape: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """The context a single image starts a dream from: the image repeated ``context_frames`` times
    (uint8 [1, K, H, W, C]) and NOOP actions (int64 [1, K - 1], all 0)."""
    k = _positive_int(context_frames, "context_frames")
    frame = prompt_image(image, obs_shape)
    frames = np.broadcast_to(frame, (1, k, *frame.shape)).copy()
    return frames, np.zeros((1, k - 1), dtype=np.int64)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class StartBank:
    """A bank of N real context segments: ``frames`` uint8 [N, K, H, W, C] and ``actions`` int64
    [N, K - 1], where ``actions[:, i]`` led from ``frames[:, i]`` to ``frames[:, i + 1]``.

    A bank's K may exceed the model's ``context_frames``: a dream is then started from the last
    ``context_frames`` frames and a frame stack can still show up to K real frames.
    """

    def __init__(self, frames: np.ndarray, actions: np.ndarray | None = None) -> None:
        frames = np.asarray(frames)
        if frames.ndim != 5:
            raise ValueError(
                f"start frames must be uint8 [N, K, H, W, C], got an array of shape {frames.shape}; "
                "a single segment needs a leading axis (frames[None])"
            )
        if frames.dtype != np.uint8:
            raise ValueError(f"start frames must have dtype uint8, got {frames.dtype}")
        n, k = frames.shape[:2]
        if n < 1 or k < 1 or min(frames.shape[2:]) < 1:
            raise ValueError(f"start frames must hold at least one frame, got shape {frames.shape}")
        if actions is None:
            actions = np.zeros((n, k - 1), dtype=np.int64)
        actions = np.asarray(actions)
        if actions.dtype.kind not in "iu":
            raise ValueError(f"start actions must be integers, got dtype {actions.dtype}")
        if actions.shape != (n, k - 1):
            raise ValueError(
                f"start actions must have shape (N, K - 1) = {(n, k - 1)} for frames of shape "
                f"{frames.shape}, got {actions.shape}"
            )
        if actions.size and actions.min() < 0:
            raise ValueError(f"start actions must be >= 0, got a minimum of {actions.min()}")
        self.frames: np.ndarray = np.ascontiguousarray(frames)
        self.actions: np.ndarray = np.ascontiguousarray(actions, dtype=np.int64)

    # ----------------------------------------------------------------------------- properties
    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def context_frames(self) -> int:
        """K, the number of frames in each segment."""
        return int(self.frames.shape[1])

    @property
    def obs_shape(self) -> ObsShape:
        h, w, c = self.frames.shape[2:]
        return int(h), int(w), int(c)

    def __repr__(self) -> str:
        return f"StartBank(n={len(self)}, context_frames={self.context_frames}, obs_shape={self.obs_shape})"

    # ------------------------------------------------------------------------------- sampling
    def sample_indices(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` segment indices drawn uniformly with replacement (dreams may share a start)."""
        return rng.integers(0, len(self), size=int(n))

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random segments: frames uint8 [n, K, H, W, C] and actions int64 [n, K - 1]."""
        idx = self.sample_indices(n, rng)
        return self.frames[idx], self.actions[idx]

    def check_compatible(self, obs_shape: Sequence[int], num_actions: int, context_frames: int) -> None:
        """Raise ``ValueError`` unless this bank can start dreams of a model with these properties."""
        obs_shape = tuple(int(x) for x in obs_shape)
        if self.obs_shape != obs_shape:
            raise ValueError(
                f"start bank frames are {self.obs_shape} (H, W, C) but the model dreams {obs_shape}; "
                "cut the bank from episodes recorded with the same preprocessing as the model's data"
            )
        if self.context_frames < context_frames:
            raise ValueError(
                f"start bank segments have {self.context_frames} frames but the model needs "
                f"{context_frames} context frames; re-cut the bank with "
                f"StartBank.cut(episodes, K={context_frames}, ...)"
            )
        if self.actions.size and self.actions.max() >= num_actions:
            raise ValueError(
                f"start bank holds action {self.actions.max()} but the model has only {num_actions} "
                "actions; the bank was cut from a game with a different action set"
            )

    # --------------------------------------------------------------------------- constructors
    @classmethod
    def from_prompt(
        cls, image: Any, context_frames: int, obs_shape: Sequence[int] | None = None
    ) -> StartBank:
        """A one-segment bank from a single image (array or path), repeated ``context_frames``
        times with NOOP actions. ``obs_shape`` is required for a path (it sets the resize target);
        for an array it defaults to the array's own shape."""
        if obs_shape is None:
            if isinstance(image, (str, os.PathLike)):
                raise ValueError("obs_shape (H, W, C) is required to read a prompt from a file")
            obs_shape = tuple(np.shape(image))
            if len(obs_shape) != 3:
                raise ValueError(f"a prompt image must be [H, W, C], got shape {obs_shape}")
        return cls(*prompt_context(image, context_frames, obs_shape))

    @classmethod
    def cut(
        cls,
        episodes: Iterable[tuple[np.ndarray, np.ndarray]],
        context_frames: int,
        n: int,
        rng: np.random.Generator,
    ) -> StartBank:
        """Cut ``n`` random ``context_frames``-frame windows from real episodes.

        ``episodes`` yields ``(frames uint8 [T + 1, H, W, C], actions int [T])``. Only full windows
        are used (no padding before an episode's start: a dream must start from real frames).
        Windows are drawn uniformly over all windows of all episodes, without replacement when
        there are at least ``n`` of them.
        """
        k = _positive_int(context_frames, "context_frames")
        n = _positive_int(n, "n")
        kept: list[tuple[np.ndarray, np.ndarray]] = []
        counts: list[int] = []
        shape: tuple[int, ...] | None = None
        for i, (frames, actions) in enumerate(episodes):
            frames, actions = np.asarray(frames), np.asarray(actions)
            if frames.ndim != 4 or frames.dtype != np.uint8:
                raise ValueError(
                    f"episode {i}: frames must be uint8 [T + 1, H, W, C], got {frames.dtype} {frames.shape}"
                )
            if actions.dtype.kind not in "iu" or actions.shape != (frames.shape[0] - 1,):
                raise ValueError(
                    f"episode {i}: actions must be integers of shape (T,) = ({frames.shape[0] - 1},) "
                    f"for {frames.shape[0]} frames, got {actions.dtype} {actions.shape}"
                )
            if shape is None:
                shape = frames.shape[1:]
            elif frames.shape[1:] != shape:
                raise ValueError(f"episode {i}: frames are {frames.shape[1:]}, earlier episodes {shape}")
            windows = frames.shape[0] - k + 1
            if windows > 0:
                kept.append((frames, actions))
                counts.append(windows)
        total = int(sum(counts))
        if total == 0:
            raise ValueError(
                f"no episode has {k} frames, so no full {k}-frame window can be cut; "
                "collect longer episodes or use a smaller context"
            )
        picks = rng.choice(total, size=n, replace=n > total)
        bounds = np.cumsum(counts)
        episode_of = np.searchsorted(bounds, picks, side="right")
        start_of = picks - (bounds[episode_of] - np.asarray(counts)[episode_of])
        out_frames = np.empty((n, k, *kept[0][0].shape[1:]), dtype=np.uint8)
        out_actions = np.empty((n, k - 1), dtype=np.int64)
        for j, (e, t) in enumerate(zip(episode_of.tolist(), start_of.tolist(), strict=True)):
            out_frames[j] = kept[e][0][t : t + k]
            out_actions[j] = kept[e][1][t : t + k - 1]
        return cls(out_frames, out_actions)

    @classmethod
    def from_dataset(
        cls,
        dataset: Any,
        context_frames: int,
        n: int,
        rng: np.random.Generator,
        episodes: Iterable[int] | None = None,
        actions: bool = True,
    ) -> StartBank:
        """``n`` windows :meth:`cut` from the episodes of an ``EpisodeDataset`` (all of them, or the
        indices ``episodes``). ``actions=False`` puts NOOP (0) between the frames instead of the
        dataset's actions, for data whose actions mean nothing to the model (video)."""
        indices = range(dataset.num_episodes) if episodes is None else episodes
        return cls.cut(
            ((ep.frames, ep.actions if actions else np.zeros_like(ep.actions)) for ep in map(dataset.episode, indices)),
            context_frames, n, rng,
        )

    # ------------------------------------------------------------------------------------ I/O
    def save(self, path: PathLike) -> None:
        """Write ``frames`` and ``actions`` to a compressed ``.npz`` atomically (temporary file,
        then rename), so an interrupted write never leaves a half-written bank."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            # a file object (not a name) stops numpy from appending ".npz" to the temporary name
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(f, frames=self.frames, actions=self.actions)
            os.chmod(tmp, 0o644)  # mkstemp makes the file private; a shipped bank must be readable
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: PathLike) -> StartBank:
        """Read a bank written by :meth:`save`; never unpickles."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"start bank {str(path)!r} does not exist")
        try:
            data = np.load(path, allow_pickle=False)
        except (ValueError, OSError, zipfile.BadZipFile) as e:
            raise ValueError(f"cannot read start bank {str(path)!r} as an .npz archive: {e}") from e
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(
                f"start bank {str(path)!r} holds a single array, not an .npz archive with the arrays "
                "'frames' and 'actions'; write banks with StartBank.save"
            )
        with data:
            names = sorted(data.files)
            try:
                arrays = {name: data[name] for name in names if name in ("frames", "actions")}
            except ValueError as e:  # e.g. an object array, which would need pickle
                raise ValueError(f"cannot read start bank {str(path)!r}: {e}") from e
        missing = {"frames", "actions"} - set(arrays)
        if missing:
            raise ValueError(
                f"start bank {str(path)!r} lacks the array(s) {sorted(missing)}; it holds {names}"
            )
        frames, actions = arrays["frames"], arrays["actions"]
        try:
            return cls(frames, actions)
        except ValueError as e:
            raise ValueError(f"start bank {str(path)!r} is invalid: {e}") from e


def stack_frames(frames: np.ndarray, frame_stack: int) -> np.ndarray:
    """The observation a dream env with ``frame_stack`` shows after ``frames`` uint8 [N, T, H, W, C]
    (newest last): the last ``frame_stack`` of them as [N, H, W, frame_stack * C], the oldest in the
    first C channels. With fewer than ``frame_stack`` frames the oldest is repeated rather than
    zeros shown."""
    n, t, h, w, c = frames.shape
    if frame_stack <= t:
        stacked = frames[:, t - frame_stack :]
    else:
        stacked = np.concatenate([np.repeat(frames[:, :1], frame_stack - t, axis=1), frames], axis=1)
    return np.ascontiguousarray(stacked.transpose(0, 2, 3, 1, 4).reshape(n, h, w, frame_stack * c))


class DeviceStarts:
    """A :class:`StartBank` laid out for one model on its device, so that a dream's (re)start is a
    gather: the model's context (the last K frames and the K - 1 actions between them) and the
    first frame stack. :class:`neuralenvs.envs.dream.DreamVectorEnv` builds one per bank."""

    def __init__(self, bank: StartBank, context_frames: int, frame_stack: int, device: torch.device):
        self.bank = bank
        frames, actions = bank.frames, bank.actions
        kb = frames.shape[1]
        k = context_frames
        # the bank may hold more frames than the model reads: the model gets the newest K
        self.frames = torch.from_numpy(np.ascontiguousarray(frames[:, kb - k :])).to(device)
        self.actions = torch.from_numpy(np.ascontiguousarray(actions[:, kb - k :])).to(device)
        self.stack_np = stack_frames(frames, frame_stack)
        self.stack = torch.from_numpy(self.stack_np).to(device)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.bank.sample_indices(n, rng)
