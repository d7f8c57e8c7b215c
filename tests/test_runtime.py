"""Dreaming compiled (``neuralenvs.envs.runtime.compile_for_dreaming``): what a family names is
compiled, a compiled dream dreams what the eager one does, and a machine where compiling fails
falls back to eager with a warning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neuralenvs.envs.runtime as runtime
from neuralenvs.envs.dream import DreamVectorEnv
from neuralenvs.envs.runtime import compile_for_dreaming, compile_mode, dreaming, is_compiled
from neuralenvs.envs.starts import StartBank
from neuralenvs.models import build_model
from neuralenvs.world_model import WorldModel

OBS_SHAPE = (16, 16, 3)


def _diffusion() -> WorldModel:
    torch.manual_seed(0)
    return build_model("diffusion", "tiny", OBS_SHAPE, 3).eval()


def _dream(model: WorldModel, steps: int) -> list[torch.Tensor]:
    """Frames of ``steps`` steps of 2 dreams from fixed random context, actions and noise."""
    g = torch.Generator().manual_seed(1)
    k = model.context_frames
    frames = torch.randint(0, 256, (2, k, *OBS_SHAPE), dtype=torch.uint8, generator=g)
    actions = torch.randint(0, model.num_actions, (2, k - 1 + steps), generator=g)
    out = []
    with dreaming(model):
        state = model.init_state(frames, actions[:, : k - 1])
        for t in range(steps):
            result = model.step(state, actions[:, k - 1 + t], g)
            state = result.state
            out.append(result.next_frames)
    return out


def test_compile_modes_are_checked() -> None:
    assert compile_mode(False) is None
    assert compile_mode(True) == "default"
    assert compile_mode("reduce-overhead") == "reduce-overhead"
    with pytest.raises(ValueError, match="compile must be"):
        compile_mode("fastest")


def test_a_compiled_diffusion_dream_dreams_what_the_eager_one_dreams(single_torch_thread: None) -> None:
    model = _diffusion()
    eager = _dream(model, 3)
    keys = sorted(model.state_dict())
    assert model.compiled_modules() == (model.denoiser.net,)
    assert compile_for_dreaming(model, 2)
    assert is_compiled(model.denoiser.net)
    assert torch._dynamo.config.recompile_limit >= runtime.COMPILES_KEPT  # many dreams, one forward
    assert sorted(model.state_dict()) == keys  # checkpoints stay as they were
    compiled = _dream(model, 3)
    for a, b in zip(eager, compiled, strict=True):
        # fused operations round differently: a pixel may land one 8-bit level away
        diff = (a.int() - b.int()).abs()
        assert int(diff.max()) <= 1
        assert float((diff > 0).float().mean()) < 0.01


def test_compiling_falls_back_to_eager_where_it_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _diffusion()
    eager = _dream(model, 2)

    def broken_compile(fn, **kwargs):
        def call(*args, **kw):
            raise RuntimeError("no C++ compiler here")

        return call

    monkeypatch.setattr(runtime.torch, "compile", broken_compile)
    with pytest.warns(RuntimeWarning, match="torch.compile failed here.*no C\\+\\+ compiler"):
        assert not compile_for_dreaming(model, 2)
    assert not is_compiled(model.denoiser.net)
    for a, b in zip(eager, _dream(model, 2), strict=True):
        assert torch.equal(a, b)  # eager again, exactly

    bank = StartBank(
        frames=np.zeros((4, model.context_frames, *OBS_SHAPE), dtype=np.uint8),
        actions=np.zeros((4, model.context_frames - 1), dtype=np.int64),
    )
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        env = DreamVectorEnv(model, bank, 2, compile=True)
    assert not env.compiled
    env.reset(seed=0)
    env.step(np.zeros(2, dtype=np.int64))


def test_a_family_that_names_nothing_is_not_compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = build_model("token", "tiny", OBS_SHAPE, 3)
    calls = []
    monkeypatch.setattr(runtime.torch, "compile", lambda fn, **kw: calls.append(fn) or fn)
    assert model.compiled_modules() == ()
    assert not compile_for_dreaming(model, 2)
    assert not calls
    with pytest.raises(ValueError, match="compile must be"):
        DreamVectorEnv(_diffusion(), None, 1, compile="fastest")
