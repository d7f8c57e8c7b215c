"""Episode datasets on disk: one compressed file per episode plus an index.

Layout of a dataset folder::

    meta.json              obs shape, number and meanings of actions, where the data came from
    index.json             the list of completed episodes (the source of truth)
    episodes/000042.npz    frames uint8 [T+1, H, W, C], actions [T], rewards [T],
                           terminated [T], truncated [T]

Appending writes the episode file first, then replaces the index atomically. A process killed at
any moment leaves the index naming only complete files: the episode being written when it died is
lost, every earlier one is intact. Files that the index does not name are ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from neuralenvs.utils.io import atomic_write_bytes, atomic_write_text
from neuralenvs.world_model import Segments


@dataclass
class Episode:
    """One episode: ``frames[t]`` is the observation at which ``actions[t]`` was taken."""

    frames: np.ndarray  # uint8 [T + 1, H, W, C]
    actions: np.ndarray  # int64 [T]
    rewards: np.ndarray  # float32 [T], raw (unclipped)
    terminated: np.ndarray  # bool [T]
    truncated: np.ndarray  # bool [T]

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames, dtype=np.uint8)
        self.actions = np.asarray(self.actions, dtype=np.int64)
        self.rewards = np.asarray(self.rewards, dtype=np.float32)
        self.terminated = np.asarray(self.terminated, dtype=bool)
        self.truncated = np.asarray(self.truncated, dtype=bool)
        t = len(self.actions)
        if self.frames.ndim != 4 or len(self.frames) != t + 1:
            raise ValueError(
                f"an episode of {t} actions needs frames of shape [{t + 1}, H, W, C], "
                f"got {self.frames.shape}"
            )
        for name in ("rewards", "terminated", "truncated"):
            if getattr(self, name).shape != (t,):
                raise ValueError(f"{name} must have shape ({t},), got {getattr(self, name).shape}")

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def episode_return(self) -> float:
        return float(self.rewards.sum())


class EpisodeDataset:
    """A growing folder of episodes. Create one by giving ``obs_shape`` and ``num_actions``;
    open an existing one with the path alone."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        obs_shape: tuple[int, int, int] | None = None,
        num_actions: int | None = None,
        action_meanings: list[str] | None = None,
        source: str | None = None,
        labelled: bool = True,
    ) -> None:
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if meta_path.exists():
            self.meta = json.loads(meta_path.read_text())
            for name, given in (("obs_shape", obs_shape), ("num_actions", num_actions)):
                stored = self.meta[name]
                if given is not None and list(np.atleast_1d(given)) != list(np.atleast_1d(stored)):
                    raise ValueError(
                        f"dataset {self.path} holds {name}={stored}, not {given}: "
                        "collect into a new folder, or resize to match"
                    )
        elif obs_shape is None or num_actions is None:
            raise FileNotFoundError(
                f"no episode dataset at {self.path} (no meta.json); to create one, pass "
                "obs_shape and num_actions"
            )
        else:
            (self.path / "episodes").mkdir(parents=True, exist_ok=True)
            self.meta = {
                "format_version": 1,
                "obs_shape": [int(x) for x in obs_shape],
                "num_actions": int(num_actions),
                "action_meanings": list(action_meanings) if action_meanings else None,
                "source": source,
                "labelled": bool(labelled),  # False: video, whose actions (all 0) mean nothing
            }
            atomic_write_text(meta_path, json.dumps(self.meta, indent=1))
        index_path = self.path / "index.json"
        self._index: list[dict] = json.loads(index_path.read_text()) if index_path.exists() else []
        self._cache: dict[int, Episode] = {}
        # (event, episode) -> the episode's steps with a nonzero reward ("reward") or an end ("end")
        self._event_steps: dict[tuple[str, int], np.ndarray] = {}

    # -- what is in it -----------------------------------------------------------------------
    @property
    def obs_shape(self) -> tuple[int, int, int]:
        return tuple(self.meta["obs_shape"])

    @property
    def num_actions(self) -> int:
        return int(self.meta["num_actions"])

    @property
    def action_meanings(self) -> list[str] | None:
        return self.meta.get("action_meanings")

    @property
    def labelled(self) -> bool:
        """Whether the actions are real (False for imported video: every action is 0)."""
        return bool(self.meta.get("labelled", True))

    @property
    def num_episodes(self) -> int:
        return len(self._index)

    @property
    def num_steps(self) -> int:
        return sum(e["length"] for e in self._index)

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.array([e["length"] for e in self._index], dtype=np.int64)

    @property
    def episode_returns(self) -> np.ndarray:
        return np.array([e["return"] for e in self._index], dtype=np.float64)

    def __len__(self) -> int:
        return self.num_episodes

    def __repr__(self) -> str:
        return f"EpisodeDataset({str(self.path)!r}, episodes={self.num_episodes}, steps={self.num_steps})"

    # -- writing -------------------------------------------------------------------------------
    def append(self, episode: Episode) -> int:
        """Store ``episode`` durably and return its index."""
        if episode.frames.shape[1:] != self.obs_shape:
            raise ValueError(f"frames of shape {episode.frames.shape[1:]} in a dataset of {self.obs_shape}")
        if len(episode) and (episode.actions.min() < 0 or episode.actions.max() >= self.num_actions):
            raise ValueError(f"actions must lie in [0, {self.num_actions})")
        number = max((e["number"] for e in self._index), default=-1) + 1
        name = f"episodes/{number:06d}.npz"
        buffer = _npz_bytes(episode)
        atomic_write_bytes(self.path / name, buffer)
        self._index.append(
            {"number": number, "file": name, "length": len(episode), "return": episode.episode_return}
        )
        atomic_write_text(self.path / "index.json", json.dumps(self._index))
        return len(self._index) - 1

    # -- reading -------------------------------------------------------------------------------
    def episode(self, i: int) -> Episode:
        if i in self._cache:
            return self._cache[i]
        entry = self._index[i]
        with np.load(self.path / entry["file"], allow_pickle=False) as z:
            return Episode(**{k: z[k] for k in ("frames", "actions", "rewards", "terminated", "truncated")})

    def __iter__(self) -> Iterator[Episode]:
        for i in range(self.num_episodes):
            yield self.episode(i)

    def load(self, indices: list[int] | None = None, progress: bool = False) -> EpisodeDataset:
        """Read episodes into memory once, so sampling never touches the disk."""
        from tqdm.auto import tqdm

        indices = range(self.num_episodes) if indices is None else indices
        for i in tqdm(indices, desc="loading episodes", disable=not progress, unit="ep"):
            if i not in self._cache:
                self._cache[i] = self.episode(i)
        return self

    def first_steps(self, steps: int) -> EpisodeDataset:
        """A read-only, in-memory view of the first ``steps`` transitions: whole episodes from the
        start, the last one cut short (its last kept step then counts as truncated). A latent-action
        model fits its action map and heads on such a small labelled set."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        view = _EpisodeView(self)
        left = int(steps)
        for i in range(self.num_episodes):
            if left <= 0:
                break
            ep = self.episode(i)
            if len(ep) > left:
                truncated = ep.truncated[:left].copy()
                truncated[-1] = True
                ep = Episode(
                    ep.frames[: left + 1], ep.actions[:left], ep.rewards[:left], ep.terminated[:left], truncated
                )
            view._add(ep)
            left -= len(ep)
        return view

    def ends_at_freeze_onsets(self, delay: int = 0) -> EpisodeDataset:
        """A read-only, in-memory view in which every episode that ends in a frozen screen ends
        where the freeze begins instead: its frozen frames dropped, its last kept transition (the one
        into the first frozen frame) marked terminated. With ``delay`` d the life ends d transitions
        later, inside the freeze: a head that judges a step from the frames before it (not the next
        one) has then seen the screen stop (KungFuMaster: ``docs/transfer_kungfumaster.md``, section 13).

        Some games hold the screen still for a while before they take a life (CrazyClimber: about
        40 steps at frameskip 4). Nothing the agent does in those steps matters and no reward comes,
        so for learning a policy the life is over when the freeze begins. A head that must find the
        game's end step instead has to count identical frames, and a dream that never draws the
        freeze never gets there (``docs/transfer_crazyclimber.md``, section 6). Episodes whose last two frames
        differ, or that are truncated, are kept as they are."""
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        view = _EpisodeView(self)
        for i in range(self.num_episodes):
            ep = self.episode(i)
            onset = freeze_onset(ep.frames)
            end = onset + delay  # transitions kept
            if ep.terminated[-1] and onset >= 1 and end < len(ep):
                terminated = np.zeros(end, bool)
                terminated[-1] = True
                ep = Episode(ep.frames[: end + 1], ep.actions[:end], ep.rewards[:end], terminated, ep.truncated[:end])
            view._add(ep)
        return view

    def split(self, num_test_episodes: int) -> tuple[list[int], list[int]]:
        """Train and held-out episode indices: the last ``num_test_episodes`` are held out."""
        n = self.num_episodes
        if not 0 <= num_test_episodes < n:
            raise ValueError(f"cannot hold out {num_test_episodes} of {n} episodes")
        return list(range(n - num_test_episodes)), list(range(n - num_test_episodes, n))

    def _steps_with(self, event: str, i: int) -> np.ndarray:
        """Episode ``i``'s steps with a nonzero reward (``"reward"``) or an end (``"end"``), read
        once, not on every batch."""
        if (event, i) not in self._event_steps:
            ep = self.episode(i)
            self._event_steps[(event, i)] = np.flatnonzero(ep.rewards if event == "reward" else ep.terminated)
        return self._event_steps[(event, i)]

    def sample_segments(
        self,
        batch_size: int,
        length: int,
        rng: np.random.Generator,
        episodes: list[int] | None = None,
        reward_fraction: float = 0.0,
        end_fraction: float = 0.0,
    ) -> Segments:
        """Sample ``batch_size`` segments of ``length`` transitions (``length + 1`` frames).

        Every transition is equally likely to be a segment's last one; a segment that would
        begin before its episode's start is padded there (zero frames, action 0, mask False),
        as DIAMOND does, so the first steps of every episode are trained on too.

        ``reward_fraction`` > 0 makes about that fraction of the segments contain a transition with
        a nonzero reward (drawn uniformly among them), after a uniform number (0 to ``length`` - 1)
        of the segment's real transitions. Rewards are rare in most games (3% of random Boxing
        steps), and a reward classifier trained on natural batches can settle on "never" before it
        finds the signal; oversampling, with a prior correction at dream time, fixes that.
        ``end_fraction`` does the same for transitions that end an episode (a lost life: a few
        hundred in 100k random steps); the two fractions add up.
        """
        for name, fraction in (("reward_fraction", reward_fraction), ("end_fraction", end_fraction)):
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {fraction}")
        if reward_fraction + end_fraction > 1.0:
            raise ValueError(f"reward_fraction + end_fraction must be at most 1, got {reward_fraction + end_fraction}")
        episodes = list(range(self.num_episodes)) if episodes is None else list(episodes)
        lengths = np.array([self._index[i]["length"] for i in episodes], dtype=np.float64)
        if lengths.sum() == 0:
            raise ValueError("cannot sample segments from a dataset with no transitions")
        chosen = rng.choice(len(episodes), size=batch_size, p=lengths / lengths.sum())
        lasts = rng.integers(lengths[chosen].astype(np.int64))  # each segment's last transition
        firsts = lasts - length + 1  # each segment's first real transition (padding before it)
        if reward_fraction > 0 or end_fraction > 0:
            draw = rng.random(batch_size)  # one draw per segment: [0, rf) reward, [rf, rf + ef) end
            for event, lo, hi in (("reward", 0.0, reward_fraction),
                                  ("end", reward_fraction, reward_fraction + end_fraction)):
                if hi <= lo:
                    continue
                steps = [self._steps_with(event, i) for i in episodes]
                event_episode = np.repeat(np.arange(len(episodes)), [len(t) for t in steps])
                event_step = np.concatenate(steps)
                if not len(event_step):
                    continue
                for b in np.flatnonzero((draw >= lo) & (draw < hi)):
                    j = rng.integers(len(event_step))
                    k, t = event_episode[j], event_step[j]
                    # the event after a uniform number of the segment's transitions: always putting it
                    # last would teach a recurrent head that rewards come every `length` steps. Where
                    # the episode ends too soon (always, for its end), the segment ends with the
                    # episode and its start is cut instead, so that a head also learns to find an end
                    # from as little memory as a dream started a few steps before it has
                    before = rng.integers(length)
                    chosen[b], lasts[b] = k, min(t + length - 1 - before, lengths[k] - 1)
                    firsts[b] = t - before
        h, w, c = self.obs_shape
        frames = np.zeros((batch_size, length + 1, h, w, c), np.uint8)
        actions = np.zeros((batch_size, length), np.int64)
        rewards = np.zeros((batch_size, length), np.float32)
        terminated = np.zeros((batch_size, length), bool)
        truncated = np.zeros((batch_size, length), bool)
        mask = np.zeros((batch_size, length + 1), bool)
        for b, k in enumerate(chosen):
            ep = self.episode(episodes[k])
            last = int(lasts[b])
            start = last - length + 1  # may be negative: padding before the episode start
            lo = max(int(firsts[b]), 0)
            off = lo - start
            frames[b, off:] = ep.frames[lo : last + 2]
            mask[b, off:] = True
            actions[b, off:] = ep.actions[lo : last + 1]
            rewards[b, off:] = ep.rewards[lo : last + 1]
            terminated[b, off:] = ep.terminated[lo : last + 1]
            truncated[b, off:] = ep.truncated[lo : last + 1]
        return Segments(
            frames=torch.from_numpy(frames),
            actions=torch.from_numpy(actions),
            rewards=torch.from_numpy(rewards),
            terminated=torch.from_numpy(terminated),
            truncated=torch.from_numpy(truncated),
            mask=torch.from_numpy(mask),
        )


class _EpisodeView(EpisodeDataset):
    """Episodes held in memory under another dataset's meta (see :meth:`EpisodeDataset.first_steps`)."""

    def __init__(self, parent: EpisodeDataset) -> None:  # reads and writes no files
        self.path = parent.path
        self.meta = dict(parent.meta)
        self._index = []
        self._cache = {}
        self._event_steps = {}

    def _add(self, episode: Episode) -> None:
        self._cache[len(self._index)] = episode
        self._index.append({"number": len(self._index), "file": None, "length": len(episode),
                            "return": episode.episode_return})

    def append(self, episode: Episode) -> int:
        raise TypeError("a view of a dataset's first steps is read-only; append to the dataset itself")


def freeze_onset(frames: np.ndarray) -> int:
    """The index of the first of the identical frames that end an episode (``len(frames) - 1`` when
    its last two frames differ)."""
    flat = frames.reshape(len(frames), -1)
    onset = len(flat) - 1
    while onset > 0 and np.array_equal(flat[onset - 1], flat[onset]):
        onset -= 1
    return onset


def _npz_bytes(episode: Episode) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        frames=episode.frames,
        actions=episode.actions,
        rewards=episode.rewards,
        terminated=episode.terminated,
        truncated=episode.truncated,
    )
    return buffer.getvalue()
