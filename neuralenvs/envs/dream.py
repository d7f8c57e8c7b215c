"""Dreamed environments: a :class:`~neuralenvs.world_model.WorldModel` as a Gymnasium environment.

:class:`DreamVectorEnv` runs N dreams in one batch: every ``step`` is one ``model.step`` for all of
them. A dream ends when the model's termination head says so or after ``horizon`` steps; with the
default SAME_STEP autoreset it restarts inside that same step from a new real context (one
``model.reset_where`` call for every finished dream, so the others keep their state). This is the
environment an agent trains in. :class:`DreamEnv` is the one-dream ``gymnasium.Env`` view, for
``gym.make``, playing, video and ``check_env``.

Observations are uint8 ``(H, W, C * frame_stack)``: the last ``frame_stack`` frames concatenated
along channels, oldest first. The real Atari environment produces the same layout, so a policy
trained in the dream runs unchanged in the game. Right after a start the stack holds the real
context frames (never zeros), so the agent sees what it would see in the game.

Everything stays on the model's device; the observation batch crosses to the host once per step
(``output="numpy"``) or not at all (``output="torch"``).
"""

from __future__ import annotations

import os
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from gymnasium import logger, spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from neuralenvs.envs.runtime import (
    DEFAULT_PRECISION,
    compile_for_dreaming,
    dreaming,
    resolve_precision,
)
from neuralenvs.envs.starts import DeviceStarts, PathLike, StartBank, prompt_context
from neuralenvs.utils.device import resolve_device
from neuralenvs.world_model import WorldModel

__all__ = ["DreamVectorEnv", "DreamEnv"]

# Atari runs at 60 Hz and the 100k protocol keeps one frame in 4: a dream ticks at 15 frames/s.
RENDER_FPS = 15


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class DreamVectorEnv(VectorEnv):
    """N dreams of one world model, stepped together.

    Args:
        model: the world model; it is moved to ``device``. It dreams in eval mode (the mode it
            was in is restored after each call, so a trainer may share it).
        starts: the :class:`StartBank` (or the path of its ``.npz``) dreams start from; ``None``
            allows only prompted starts (``reset(options={"prompt": image})``).
        num_envs: how many dreams run in the batch.
        horizon: steps after which a dream is truncated (``None``: never). The default, 1000, is
            for playing; DIAMOND trains its agent on 15-step dreams started from real states and
            bootstraps the value at the cut, which is what ``horizon=15`` gives.
        frame_stack: how many of the latest frames an observation holds.
        device: where the model runs and the dreams live; ``None`` picks CUDA when available.
        output: ``"numpy"`` (the default, what SB3 and gymnasium wrappers expect) or ``"torch"``
            (observations, rewards, terminated and truncated as tensors on ``device``, for agents
            that live on the GPU too; infos stay numpy).
        render_mode: ``None`` or ``"rgb_array"``.
        sample_heads: sample reward and termination from the heads' distributions instead of
            taking the most likely class.
        autoreset: ``True`` (SAME_STEP autoreset). ``False`` leaves finished dreams as they are
            (``AutoresetMode.DISABLED``): restart them with ``reset(options={"reset_mask": m})``.
        max_episode_steps: alias of ``horizon``, accepted because ``gymnasium.make_vec`` passes a
            registered ``max_episode_steps`` to vector entry points; it wins when given.
        precision: ``"auto"`` (the default: bf16 on a GPU with bf16 or a CPU with AMX / AVX-512
            bf16, else fp32; on a CPU fp32 for fewer dreams than the family's
            ``cpu_bf16_min_batch``), ``"fp32"`` or ``"bf16"`` (the model runs under bf16 autocast;
            ``benchmarks/dream_speed.py`` measures the speed, docs/speed.md the fidelity).
        compile: ``False`` (the default), ``True`` or a ``torch.compile`` mode: compile the modules
            the family names (:meth:`WorldModel.compiled_modules`: the diffusion dreams' U-Net) for
            ``num_envs`` dreams, here, before the first reset (:func:`compile_for_dreaming`; speed
            and cost in docs/speed_levers.md). Where compiling fails, a warning says so and the dream runs
            as it would without; ``compiled`` says which happened.

    ``step`` returns rewards as float32 (the dtype SB3 buffers use; gymnasium's own vector envs use
    float64) and terminated / truncated as bool. A dream that ends at the horizon by termination is
    reported terminated, not truncated, so the agent does not bootstrap past a real end.

    ``reset`` options: ``"prompt"`` (an image array or a file path) starts every dream from that
    image, and later autoresets restart from it too, until a ``reset`` without a prompt returns to
    the bank; ``"reset_mask"`` (bool array of shape ``(N,)``) restarts only those dreams.

    Infos: ``episode_step`` (steps since each dream's start) and, for dreams that finished in
    this step, ``final_obs`` / ``final_info`` with their ``_final_obs`` / ``_final_info`` masks as
    gymnasium 1.x SAME_STEP vector envs give them; ``final_info`` holds ``episode_step`` and
    ``episode = {"r": dreamed return, "l": length}``.
    """

    metadata: dict[str, Any] = {
        "autoreset_mode": AutoresetMode.SAME_STEP,
        "render_modes": ["rgb_array"],
        "render_fps": RENDER_FPS,
    }

    def __init__(
        self,
        model: WorldModel,
        starts: StartBank | PathLike | None,
        num_envs: int = 1,
        *,
        horizon: int | None = 1000,
        frame_stack: int = 1,
        device: torch.device | str | None = None,
        output: Literal["numpy", "torch"] = "numpy",
        render_mode: str | None = None,
        sample_heads: bool = False,
        autoreset: bool = True,
        max_episode_steps: int | None = None,
        precision: str = DEFAULT_PRECISION,
        compile: bool | str = False,
    ) -> None:
        if not isinstance(model, WorldModel):
            raise TypeError(f"model must be a neuralenvs WorldModel, got {type(model).__name__}")
        self.num_envs = _check_positive_int(num_envs, "num_envs")
        if max_episode_steps is not None:
            horizon = max_episode_steps
        self.horizon: int | None = None if horizon is None else _check_positive_int(horizon, "horizon")
        self.frame_stack = _check_positive_int(frame_stack, "frame_stack")
        if output not in ("numpy", "torch"):
            raise ValueError(f"output must be 'numpy' or 'torch', got {output!r}")
        self.output = output
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device, self.num_envs, model.cpu_bf16_min_batch)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.render_mode = render_mode
        self.sample_heads = bool(sample_heads)
        self.autoreset = bool(autoreset)
        self.metadata = {
            **type(self).metadata,
            "autoreset_mode": AutoresetMode.SAME_STEP if self.autoreset else AutoresetMode.DISABLED,
        }

        self.model: WorldModel = model.to(self.device)
        self.compiled = compile_for_dreaming(self.model, self.num_envs, self.precision, compile)
        self._context_frames = int(model.context_frames)
        h, w, c = (int(x) for x in model.obs_shape)
        self._channels = c
        self.single_observation_space = spaces.Box(0, 255, (h, w, c * self.frame_stack), dtype=np.uint8)
        self.single_action_space = spaces.Discrete(int(model.num_actions))
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        if isinstance(starts, (str, os.PathLike)):
            starts = StartBank.load(starts)
        if starts is not None and not isinstance(starts, StartBank):
            raise TypeError(f"starts must be a StartBank, a path to its .npz, or None; got {type(starts)}")
        self.starts: StartBank | None = starts
        self._bank: DeviceStarts | None = None
        if starts is not None:
            starts.check_compatible(model.obs_shape, model.num_actions, self._context_frames)
            self._bank = DeviceStarts(starts, self._context_frames, self.frame_stack, self.device)
        self._source: DeviceStarts | None = self._bank  # where (re)starts come from: the bank or a prompt

        self._state: Any = None  # the model's state; None until the first reset
        self._stack: torch.Tensor | None = None  # uint8 [N, H, W, S * C] on the device
        self._steps = np.zeros(self.num_envs, dtype=np.int64)
        self._returns = np.zeros(self.num_envs, dtype=np.float64)
        self._finished = np.zeros(self.num_envs, dtype=bool)  # waiting for a reset (autoreset=False)
        self._generator = torch.Generator(device=self.device)
        self._generator_seeded = False

    # ----------------------------------------------------------------------------------- reset
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray | torch.Tensor, dict[str, Any]]:
        """Start every dream (or those in ``options["reset_mask"]``) from a new start.

        A seed seeds both the start sampling (numpy) and the dream sampling (a torch generator on
        the model's device), so the same seed and actions give the same dream.
        """
        options = dict(options or {})
        prompt = options.pop("prompt", None)
        reset_mask = options.pop("reset_mask", None)
        if options:
            raise ValueError(
                f"unknown reset option(s) {sorted(options)}; DreamVectorEnv understands 'prompt' "
                "(an image array or file path) and 'reset_mask' (bool array of shape (num_envs,))"
            )
        # validate everything before anything changes, so a bad call leaves every dream as it was
        if prompt is not None:
            frames, actions = prompt_context(prompt, self._context_frames, self.model.obs_shape)
            source = DeviceStarts(StartBank(frames, actions), self._context_frames, self.frame_stack, self.device)
        elif self._bank is not None:
            source = self._bank
        else:
            raise ValueError(
                "this dream has no start bank; start it from an image with "
                "reset(options={'prompt': image_or_path}) or pass starts= when creating it"
            )
        mask: np.ndarray | None = None
        if reset_mask is not None:
            mask = np.asarray(reset_mask)
            if mask.dtype != np.bool_ or mask.shape != (self.num_envs,):
                raise ValueError(
                    f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), "
                    f"got {mask.dtype} {mask.shape}"
                )
            if self._state is None:
                raise RuntimeError("reset_mask restarts some dreams of a running batch; call reset() first")

        super().reset(seed=seed)  # seeds self.np_random when a seed is given
        if seed is not None:
            self._generator.manual_seed(int(seed))
        elif not self._generator_seeded:
            self._generator.manual_seed(int(self.np_random.integers(2**63)))
        self._generator_seeded = True
        self._source = source

        if mask is None:
            idx = torch.from_numpy(source.sample(self.num_envs, self.np_random)).to(self.device)
            with dreaming(self.model, self.precision):
                self._state = self.model.init_state(source.frames[idx], source.actions[idx])
            self._stack = source.stack[idx]
            self._steps[:] = 0
            self._returns[:] = 0.0
            self._finished[:] = False
        elif mask.any():
            # a fresh tensor: the previous one may be held by the caller (output="torch")
            self._stack = self._stack.clone()
            self._restart(mask, self._stack)

        infos = {"episode_step": self._steps.copy(), "_episode_step": np.ones(self.num_envs, dtype=bool)}
        if self.output == "torch":
            return self._stack, infos
        return self._stack.to("cpu", copy=True).numpy(), infos

    def _restart(self, mask: np.ndarray, stack: torch.Tensor) -> np.ndarray:
        """Restart the dreams in ``mask`` from new starts, writing their first frame stacks into
        ``stack`` in place; one ``reset_where`` for all of them. Returns the start indices."""
        assert self._source is not None
        idx = self._source.sample(int(mask.sum()), self.np_random)
        idx_t = torch.from_numpy(idx).to(self.device)
        mask_t = torch.from_numpy(mask).to(self.device)
        with dreaming(self.model, self.precision):
            self._state = self.model.reset_where(
                self._state, mask_t, self._source.frames[idx_t], self._source.actions[idx_t]
            )
        stack[mask_t] = self._source.stack[idx_t]
        self._steps[mask] = 0
        self._returns[mask] = 0.0
        self._finished[mask] = False
        return idx

    # ------------------------------------------------------------------------------------ step
    def _actions_tensor(self, actions: Any) -> torch.Tensor:
        """Validate a batch of actions and return it as int64 on the device; raises ``ValueError``
        (before anything advances) for the wrong shape, a non-integer dtype or an out-of-range
        value."""
        n, a = self.num_envs, int(self.single_action_space.n)
        expected = f"actions must be an integer array of shape ({n},) with values in [0, {a})"
        if isinstance(actions, torch.Tensor):
            if actions.dtype.is_floating_point or actions.dtype.is_complex or actions.dtype == torch.bool:
                raise ValueError(f"{expected}; got a tensor of dtype {actions.dtype}")
            if tuple(actions.shape) != (n,):
                raise ValueError(f"{expected}; got a tensor of shape {tuple(actions.shape)}")
            values = actions.to(self.device, torch.long)
            low, high = int(values.min()), int(values.max())
            if low < 0 or high >= a:
                bad = ((values < 0) | (values >= a)).nonzero().flatten().tolist()
                raise ValueError(f"{expected}; got out-of-range values at dreams {bad[:8]}")
            return values
        array = np.asarray(actions)
        if array.dtype.kind not in "iu":
            raise ValueError(f"{expected}; got dtype {array.dtype}")
        if array.shape != (n,):
            raise ValueError(f"{expected}; got shape {array.shape}")
        bad = (array < 0) | (array >= a)
        if bad.any():
            where = np.flatnonzero(bad)[:8]
            raise ValueError(f"{expected}; got {array[where].tolist()} at dreams {where.tolist()}")
        return torch.from_numpy(array.astype(np.int64)).to(self.device)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Advance all N dreams by one ``model.step``; finished dreams restart within the step."""
        if self._state is None or self._stack is None:
            raise RuntimeError("call reset() before step()")
        actions_t = self._actions_tensor(actions)
        if self._finished.any():  # only with autoreset=False
            raise RuntimeError(
                f"dream(s) {np.flatnonzero(self._finished).tolist()} ended; restart them with "
                "reset() or reset(options={'reset_mask': mask}) before stepping again"
            )
        n, c = self.num_envs, self._channels

        with dreaming(self.model, self.precision):
            result = self.model.step(
                self._state, actions_t, generator=self._generator, sample_heads=self.sample_heads
            )
        frames = result.next_frames
        if frames.dtype != torch.uint8 or tuple(frames.shape) != (n, *self.model.obs_shape):
            raise RuntimeError(
                f"{type(self.model).__name__}.step returned next_frames {frames.dtype} "
                f"{tuple(frames.shape)}, expected uint8 {(n, *self.model.obs_shape)}: a bug in the model"
            )
        self._state = result.state
        # a new tensor every step: an observation handed out is never written to afterwards
        stack = torch.cat([self._stack[..., c:], frames.to(self.device)], dim=-1)

        reward_t = result.reward.to(self.device, torch.float32)
        terminated_t = result.terminated.to(self.device, torch.bool)
        # copies: the model may reuse its output buffers, and the caller keeps what it is given
        reward = np.array(reward_t.cpu().numpy())
        terminated = np.array(terminated_t.cpu().numpy())
        self._steps += 1
        self._returns += reward
        if self.horizon is None:
            truncated = np.zeros(n, dtype=bool)
        else:
            truncated = (self._steps >= self.horizon) & ~terminated
        done = terminated | truncated

        obs_np = stack.to("cpu", copy=True).numpy() if self.output == "numpy" else None
        infos: dict[str, Any] = {}
        if done.any():
            finished_at = np.flatnonzero(done)
            lengths = np.where(done, self._steps, 0)
            returns = np.where(done, self._returns, 0.0)
            step_info = {
                "episode_step": lengths,
                "_episode_step": done.copy(),
                "episode": {"r": returns, "_r": done.copy(), "l": lengths.copy(), "_l": done.copy()},
                "_episode": done.copy(),
            }
            if self.autoreset:
                final_obs = np.full(n, None, dtype=object)
                finals = (
                    obs_np[finished_at]
                    if obs_np is not None
                    else stack[torch.from_numpy(done).to(self.device)]
                )
                for j, i in enumerate(finished_at.tolist()):  # per finished dream only
                    final_obs[i] = finals[j]
                infos.update(
                    final_obs=final_obs,
                    _final_obs=done.copy(),
                    final_info=step_info,
                    _final_info=done.copy(),
                )
                start_idx = self._restart(done, stack)
                if obs_np is not None:
                    obs_np[finished_at] = self._source.stack_np[start_idx]
            else:
                self._finished |= done
                infos.update(step_info)
        infos["episode_step"] = self._steps.copy()
        infos["_episode_step"] = np.ones(n, dtype=bool)
        self._stack = stack

        if self.output == "torch":
            truncated_t = torch.from_numpy(truncated).to(self.device)
            return stack, reward_t.clone(), terminated_t.clone(), truncated_t, infos
        return obs_np, reward, terminated, truncated, infos

    # ------------------------------------------------------------------------------ rendering
    def current_frames(self) -> np.ndarray:
        """The newest frame of every dream, uint8 [N, H, W, 3] (grayscale repeated to RGB)."""
        if self._stack is None:
            raise RuntimeError("call reset() before rendering")
        newest = self._stack[..., -self._channels :].cpu().numpy()
        if newest.shape[-1] == 1:
            return np.repeat(newest, 3, axis=-1)
        return np.array(newest)  # a copy: the caller may draw on it

    def render(self) -> tuple[np.ndarray, ...] | None:
        """The current frame of each dream, as gymnasium's vector envs return them (a tuple with
        one RGB array per dream), so gymnasium's vector rendering and video wrappers work."""
        if self.render_mode is None:
            logger.warn(
                "render() was called but render_mode is None; create the env with render_mode='rgb_array'"
            )
            return None
        return tuple(self.current_frames())

    def close_extras(self, **kwargs: Any) -> None:
        # drop the dreams' state (a KV cache can be large); the model belongs to the caller
        self._state = None
        self._stack = None

    def set_starts(self, starts: StartBank) -> None:
        """Replace the start bank; dreams running now go on, later (re)starts come from ``starts``.

        The imagination loop calls this after each round of real collection, so the agent's
        dreams start from the newest real states without rebuilding the environment.
        """
        if not isinstance(starts, StartBank):
            raise TypeError(f"starts must be a StartBank, got {type(starts).__name__}")
        starts.check_compatible(self.model.obs_shape, self.model.num_actions, self._context_frames)
        was_bank = self._source is self._bank
        self.starts = starts
        self._bank = DeviceStarts(starts, self._context_frames, self.frame_stack, self.device)
        if was_bank:
            self._source = self._bank

    # ----------------------------------------------------------------------------- inspection
    @property
    def state(self) -> Any:
        """The model's current state for all dreams (read-only by convention)."""
        return self._state

    @property
    def episode_steps(self) -> np.ndarray:
        return self._steps.copy()


class DreamEnv(gym.Env):
    """One dream as a ``gymnasium.Env``: ``step`` returns ``terminated`` / ``truncated`` and the
    dream then waits for ``reset`` (no autoreset). Same arguments as :class:`DreamVectorEnv`
    (``num_envs`` is 1, ``output`` is numpy).

    The same seed gives the same dream. Where the dream is registered, its spec declares
    ``nondeterministic=True`` (a sampling model is not step-deterministic across differently
    seeded runs).
    """

    metadata: dict[str, Any] = {
        "render_modes": ["rgb_array"],
        "render_fps": RENDER_FPS,
        "nondeterministic": True,
    }

    def __init__(
        self,
        model: WorldModel,
        starts: StartBank | PathLike | None,
        *,
        horizon: int | None = 1000,
        frame_stack: int = 1,
        device: torch.device | str | None = None,
        render_mode: str | None = None,
        sample_heads: bool = False,
        max_episode_steps: int | None = None,
        precision: str = DEFAULT_PRECISION,
        compile: bool | str = False,
    ) -> None:
        self.vector_env = DreamVectorEnv(
            model,
            starts,
            1,
            horizon=horizon,
            frame_stack=frame_stack,
            device=device,
            output="numpy",
            render_mode=render_mode,
            sample_heads=sample_heads,
            autoreset=False,
            max_episode_steps=max_episode_steps,
            precision=precision,
            compile=compile,
        )
        self.observation_space = self.vector_env.single_observation_space
        self.action_space = self.vector_env.single_action_space
        self.render_mode = render_mode

    @property
    def model(self) -> WorldModel:
        return self.vector_env.model

    @property
    def horizon(self) -> int | None:
        return self.vector_env.horizon

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start the dream from a new start (or from ``options={"prompt": image_or_path}``)."""
        if options and "reset_mask" in options:
            raise ValueError("DreamEnv runs one dream; 'reset_mask' is a DreamVectorEnv option")
        obs, _ = self.vector_env.reset(seed=seed, options=options)
        # one generator for both views, so env.np_random is what samples this env's starts
        self._np_random = self.vector_env.np_random
        self._np_random_seed = self.vector_env.np_random_seed
        return obs[0], {"episode_step": 0}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if isinstance(action, torch.Tensor):
            action = action.detach().cpu().numpy()
        actions = np.asarray(action)
        if actions.dtype.kind not in "iu" or actions.shape not in ((), (1,)):
            raise ValueError(
                f"action must be one integer in [0, {self.action_space.n}) (an int, a numpy integer or "
                f"a 0-d integer array), got {action!r}"
            )
        actions = actions.reshape(1)
        obs, reward, terminated, truncated, infos = self.vector_env.step(actions)
        info: dict[str, Any] = {"episode_step": int(infos["episode_step"][0])}
        if "episode" in infos:
            info["episode"] = {"r": float(infos["episode"]["r"][0]), "l": int(infos["episode"]["l"][0])}
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), info

    def render(self) -> np.ndarray | None:
        """The dream's current frame, uint8 [H, W, 3]."""
        if self.render_mode is None:
            logger.warn(
                "render() was called but render_mode is None; create the env with render_mode='rgb_array'"
            )
            return None
        return self.vector_env.current_frames()[0]

    def close(self) -> None:
        self.vector_env.close()
