"""A person plays a dream, or the real game, with the keyboard.

    neuralenvs play neuralenvs/CrazyClimber-diffusion-v0             # a dream, in a window
    neuralenvs play neuralenvs/CrazyClimber-real-v0                  # the real game, same keys
    neuralenvs play neuralenvs/Boxing-diffusion-v0 --record boxing.mp4 --steps 300   # headless too

The window and the keyboard are gymnasium's (``gymnasium.utils.play``, on pygame). Keys are the
game's own (ALE's keys-to-action: w/a/s/d to move, space to fire), because a dream's actions are the
real game's minimal action set. With ``--record`` every frame shown is also written to an mp4; on a
machine without a display, pygame is put on SDL's dummy video driver, so a recording can be made
(the actions are then whatever keys arrive, which is no key at all unless a script posts them).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from neuralenvs.errors import NeuralEnvsError
from neuralenvs.registry import game_of, real_env_id

DEFAULT_FPS = 15  # 4 emulator frames a step: about a quarter of the arcade's speed, easy to follow
DEFAULT_ZOOM = 6.0  # a 64x64 dream shown at 384x384


def has_display() -> bool:
    """Whether a window can open here (an X or Wayland display, or a desktop OS)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def keys_to_action(env_id: str) -> dict[tuple[str, ...], int]:
    """The real game's key map (ALE's), which a dream of that game shares."""
    real = gym.make(real_env_id(game_of(env_id)))
    try:
        return real.get_wrapper_attr("get_keys_to_action")()
    finally:
        real.close()


class Recorder(gym.Wrapper):
    """Keeps every frame the player is shown (after each reset and step) and every action taken;
    writes the frames as an mp4."""

    def __init__(self, env: gym.Env, zoom: float) -> None:
        super().__init__(env)
        self.zoom = zoom
        self.frames: list[np.ndarray] = []
        self.actions: list[int] = []
        self.rewards: list[float] = []
        self._just_reset = False

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        result = self.env.reset(**kwargs)
        if self._just_reset:  # reset twice in a row (gymnasium's play does): the player saw one frame
            self.frames.pop()
        self._just_reset = True
        self.frames.append(np.asarray(self.env.render(), np.uint8))
        return result

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        result = self.env.step(action)
        self._just_reset = False
        self.frames.append(np.asarray(self.env.render(), np.uint8))
        self.actions.append(int(action))
        self.rewards.append(float(result[1]))
        return result

    def write(self, path: str | os.PathLike[str], fps: int) -> Path:
        import cv2  # here, not at the top: the CLI imports this module for its defaults

        if not self.frames:
            raise NeuralEnvsError("nothing was played, so there is nothing to record")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        h, w = self.frames[0].shape[:2]
        size = (int(w * self.zoom), int(h * self.zoom))
        video = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not video.isOpened():
            raise NeuralEnvsError(f"OpenCV cannot write {path}; give a path ending in .mp4")
        for frame in self.frames:
            video.write(cv2.cvtColor(cv2.resize(frame, size, interpolation=cv2.INTER_NEAREST), cv2.COLOR_RGB2BGR))
        video.release()
        return path


def play(
    env_id: str,
    *,
    fps: int = DEFAULT_FPS,
    zoom: float = DEFAULT_ZOOM,
    record: str | os.PathLike[str] | None = None,
    max_steps: int | None = None,
    seed: int | None = None,
    on_step: Callable[[int], None] | None = None,
    **env_kwargs: Any,
) -> Recorder:
    """Play ``env_id`` (a dream or a real game) with the keyboard until the window closes (Esc) or
    ``max_steps`` steps; returns what was played. ``on_step(step)`` runs after each step (the
    tests post scripted key events from it)."""
    if fps < 1:
        raise NeuralEnvsError(f"fps must be >= 1, got {fps}")
    if not has_display():
        if record is None or max_steps is None:
            raise NeuralEnvsError(
                "there is no display here, so no window can open: give --record FILE.mp4 and --steps N "
                "to play headless and keep a video"
            )
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        import pygame
        from gymnasium.utils.play import play as gym_play
    except ImportError as error:
        raise NeuralEnvsError("playing needs pygame: pip install pygame") from error

    key_map = keys_to_action(env_id)
    recorder = Recorder(gym.make(env_id, render_mode="rgb_array", **env_kwargs), zoom)

    def after_step(*_: Any) -> None:
        step = len(recorder.actions)
        if on_step is not None:
            on_step(step)
        if max_steps is not None and step >= max_steps:
            pygame.event.post(pygame.event.Event(pygame.QUIT))  # closes the window, as Esc does

    try:
        gym_play(recorder, fps=fps, zoom=zoom, callback=after_step, keys_to_action=key_map, seed=seed, noop=0)
    finally:
        recorder.close()
    if record is not None:
        print(f"wrote {recorder.write(record, fps)}: {len(recorder.actions)} steps, "
              f"return {sum(recorder.rewards):g}")
    return recorder
