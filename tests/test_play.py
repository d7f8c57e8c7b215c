"""`neuralenvs play` headless: SDL's dummy video driver, key presses posted as pygame events. The
keys must reach the dream as the game's actions, the dream must advance, and the recording must be a
readable video."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

pygame = pytest.importorskip("pygame")

from neuralenvs.errors import NeuralEnvsError  # noqa: E402
from neuralenvs.play import keys_to_action, play  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_torch_thread")
DREAM = "neuralenvs/Boxing-diffusion-v0"


@pytest.fixture(autouse=True)
def headless(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")


def press_then_release(key: int, down_after: int, up_after: int):
    """An ``on_step`` hook: presses ``key`` after step ``down_after`` and lets go after ``up_after``."""
    def on_step(step: int) -> None:
        if step == down_after:
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key))
        elif step == up_after:
            pygame.event.post(pygame.event.Event(pygame.KEYUP, key=key))
    return on_step


def read_video(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


@pytest.mark.parametrize("env_id", [DREAM, "neuralenvs/Boxing-real-v0"])
def test_keys_reach_the_game_as_its_actions(env_id: str, tmp_path: Path) -> None:
    up = keys_to_action(env_id)[("w",)]
    video = tmp_path / "played.mp4"
    played = play(env_id, fps=1000, zoom=2, record=video, max_steps=24, seed=0,
                  on_step=press_then_release(pygame.K_w, down_after=5, up_after=15))
    # a key posted after step n is read before step n + 1
    assert played.actions == [0] * 5 + [up] * 10 + [0] * 9
    assert len(played.frames) == 25  # the reset frame and one a step
    assert any(not np.array_equal(played.frames[0], f) for f in played.frames[1:]), "the game never moved"
    frames = read_video(video)
    assert len(frames) == 25
    assert frames[0].shape[:2] == (2 * played.frames[0].shape[0], 2 * played.frames[0].shape[1])


def test_without_a_display_it_asks_for_a_recording(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SDL_VIDEODRIVER")
    with pytest.raises(NeuralEnvsError, match="--record"):
        play(DREAM, max_steps=5)
    assert "SDL_VIDEODRIVER" not in os.environ


def test_an_id_that_is_not_a_game_is_refused() -> None:
    with pytest.raises(NeuralEnvsError, match="not a neuralenvs id"):
        keys_to_action("CartPole")


def test_a_recording_keeps_each_episode_end(tmp_path: Path) -> None:
    """Short dreams (horizon 3) end and restart while playing: every step's frame stays."""
    played = play(DREAM, fps=1000, zoom=1, record=tmp_path / "v.mp4", max_steps=7, seed=0, horizon=3)
    assert len(played.actions) == 7 and len(played.frames) == 7 + 3  # a reset frame for each of 3 dreams
