"""The interface every world-model family implements.

A world model is a ``torch.nn.Module`` that dreams a batch of games forward one step at a time.
The environments in ``neuralenvs.envs`` and the trainer in ``neuralenvs.training`` know only this
interface, so a new family plugs in by subclassing :class:`WorldModel` and adding itself to
``neuralenvs.models.FAMILIES``.

Conventions (shared by every family):

- frames are ``uint8`` tensors laid out ``[..., H, W, C]`` (HWC, as the games give them);
- ``init_state(frames[B, K], actions[B, K-1])``: ``actions[:, i]`` led from ``frames[:, i]`` to
  ``frames[:, i + 1]``; ``K == context_frames``;
- ``step(state, actions[B])``: ``actions`` is taken at the newest frame of each dream;
- reward is predicted as its sign class (-1, 0, +1) and termination as a binary class.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass
class Segments:
    """A batch of real training segments, as sampled by ``EpisodeDataset.sample_segments``.

    ``frames[:, t]`` is the observation at which ``actions[:, t]`` was taken; ``rewards[:, t]``,
    ``terminated[:, t]`` and ``truncated[:, t]`` are what that action led to, and
    ``frames[:, t + 1]`` the frame it produced. Steps before an episode's start are padding:
    zero frames, action 0, and ``mask[:, t] == False`` for every padded frame.
    """

    frames: torch.Tensor  # uint8 [B, L + 1, H, W, C]
    actions: torch.Tensor  # int64 [B, L]
    rewards: torch.Tensor  # float32 [B, L] (raw, unclipped)
    terminated: torch.Tensor  # bool [B, L]
    truncated: torch.Tensor  # bool [B, L]
    mask: torch.Tensor  # bool [B, L + 1]: True where frames[:, t] is a real frame

    def to(self, device: torch.device | str) -> Segments:
        return Segments(**{k: v.to(device, non_blocking=True) for k, v in self.__dict__.items()})

    @property
    def batch_size(self) -> int:
        return self.frames.shape[0]


@dataclass
class StepResult:
    """What ``WorldModel.step`` returns for a batch of B dreams."""

    state: Any
    next_frames: torch.Tensor  # uint8 [B, H, W, C]
    reward: torch.Tensor  # float32 [B], in {-1, 0, +1}
    terminated: torch.Tensor  # bool [B]

    def __iter__(self):  # allows ``state, frames, reward, terminated = model.step(...)``
        return iter((self.state, self.next_frames, self.reward, self.terminated))


class WorldModel(nn.Module, abc.ABC):
    """A learned, batched, steppable game.

    Subclasses set ``family`` and take ``(config, obs_shape, num_actions)`` in ``__init__``;
    ``config`` is a frozen dataclass that round-trips through JSON (``config_class(**json)``).
    """

    family: ClassVar[str]
    config_class: ClassVar[type]
    # Stages that need action-labelled data in a family that learns its other stages from
    # unlabelled video (genie: its reward and termination heads and action map). The trainer
    # samples them from ``TrainConfig.labelled_data`` and skips them without it. Families that
    # learn everything from labelled episodes leave this empty.
    labelled_stages: ClassVar[tuple[str, ...]] = ()
    # The fewest dreams per step at which bf16 autocast beats fp32 on a CPU with native bf16; below
    # it ``precision="auto"`` dreams in fp32. A family whose step is many small operations (a token
    # at a time) pays autocast's casts without gaining from bf16's matrix products.
    cpu_bf16_min_batch: ClassVar[int] = 1

    def __init__(self, config: Any, obs_shape: tuple[int, int, int], num_actions: int) -> None:
        super().__init__()
        self.config = config
        self.obs_shape = tuple(int(x) for x in obs_shape)
        self.num_actions = int(num_actions)

    @property
    @abc.abstractmethod
    def context_frames(self) -> int:
        """How many real frames a dream starts from."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def compiled_modules(self) -> tuple[nn.Module, ...]:
        """The submodules whose forward ``DreamVectorEnv(compile=True)`` compiles with
        ``torch.compile`` (``neuralenvs.envs.compiled``): those where it measurably pays, each called
        once per step with the batch's shape. None by default."""
        return ()

    @abc.abstractmethod
    def init_state(self, frames: torch.Tensor, actions: torch.Tensor) -> Any:
        """Encode real context ``frames`` uint8[B, K, H, W, C] and ``actions`` long[B, K-1]."""

    @abc.abstractmethod
    def step(
        self,
        state: Any,
        actions: torch.Tensor,
        generator: torch.Generator | None = None,
        sample_heads: bool = False,
    ) -> StepResult:
        """Advance every dream by one step. ``sample_heads`` samples reward and termination
        from their predicted distributions instead of taking the most likely class."""

    @abc.abstractmethod
    def reset_where(
        self, state: Any, mask: torch.Tensor, frames: torch.Tensor, actions: torch.Tensor
    ) -> Any:
        """Restart only the dreams where ``mask`` is True from new context ``frames[M, K]`` and
        ``actions[M, K-1]`` (M = ``mask.sum()``); every other dream's state is left untouched."""

    @abc.abstractmethod
    def training_losses(self, batch: Segments) -> dict[str, torch.Tensor]:
        """The family's losses on a batch of real segments. Key ``"loss"`` is what is minimised;
        other keys are logged."""

    def distillation_losses(self, batch: Segments, teacher: WorldModel) -> dict[str, torch.Tensor]:
        """Losses that teach this model to dream as ``teacher`` (a trained model of the same family,
        often a larger one) does, on contexts drawn from a batch of real segments. Key ``"loss"`` is
        what is minimised. Families that cannot learn from a teacher keep this default."""
        raise NotImplementedError(
            f"the {self.family} family cannot be distilled from a teacher: train it on data without --teacher"
        )

    def training_stages(self) -> list[str]:
        """Names of consecutive training stages (e.g. tokenizer then transformer). The trainer
        calls ``set_training_stage`` before each; single-stage families keep the default."""
        return ["all"]

    def set_training_stage(self, stage: str) -> None:  # noqa: B027 - optional hook
        pass

    def prepare_stage(self, stage: str, dataset: Any, episodes: list[int]) -> dict[str, Any] | None:
        """A one-off fit before ``stage`` trains, on the ``episodes`` of the ``EpisodeDataset`` that
        stage samples (genie fits its real-to-latent action map here). The trainer calls it when
        the stage starts and again when a run resumes inside it, so it must be deterministic.
        Returns a JSON-able summary for the checkpoint's provenance, or ``None``."""
        return None

    def legacy_weight_defaults(self) -> dict[str, torch.Tensor]:
        """Tensors added to the family after checkpoints of it were shipped, each with the value
        that reproduces the older behaviour, so those checkpoints keep loading."""
        return {}

    def fine_tune_weight_defaults(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Tensors this model lacks in ``weights`` (a checkpoint it is fine-tuned from, see
        ``TrainConfig.init_from``) that it can start from something the checkpoint has, instead of
        from scratch. Names the trainer is told to re-initialise are dropped afterwards."""
        return {}

    @property
    def reweights_reward_classes(self) -> bool:
        """True if the training loss itself reweights the reward classes (then the trainer calls
        :meth:`correct_reward_prior` even without oversampling)."""
        return False

    @property
    def reweights_end_classes(self) -> bool:
        """True if the termination loss weighs "ended" as much as "not ended" and the model sets
        its own dream-time end prior (then the trainer may oversample episode ends)."""
        return False

    def correct_reward_prior(self, trained: torch.Tensor, real: torch.Tensor) -> None:
        """Called by the trainer when it oversampled rewarded transitions: reward sign classes
        (-1, 0, +1) were seen with frequencies ``trained`` [3] but occur with ``real`` [3]. A family
        whose reward head is a sign classifier shifts its dream-time logits by ``log(real/trained)``."""
        raise NotImplementedError(
            f"the {self.family} family cannot correct for oversampled rewards: train it with reward_fraction=0"
        )

    # ---- input checks shared by every family ---------------------------------------------------

    def check_context(self, frames: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate real context (uint8 frames [B, K, H, W, C], actions [B, K - 1]) and move it to
        the model's device; raise a clear error before any dream is touched."""
        k = self.context_frames
        if frames.dtype != torch.uint8:
            raise TypeError(f"context frames must be uint8, got {frames.dtype}")
        if frames.ndim != 5 or frames.shape[1] != k or tuple(frames.shape[2:]) != self.obs_shape:
            raise ValueError(
                f"context frames must have shape [B, {k}, {', '.join(map(str, self.obs_shape))}], "
                f"got {list(frames.shape)}"
            )
        if actions.shape != (frames.shape[0], k - 1):
            raise ValueError(f"context actions must have shape [B, {k - 1}], got {list(actions.shape)}")
        return frames.to(self.device), self.check_actions(actions)

    def check_reset_mask(
        self, mask: torch.Tensor, batch_size: int, frames: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor:
        """A ``reset_where`` mask as bool on the model's device, checked against the batch and
        against the number of contexts given (one per masked dream)."""
        mask = mask.to(self.device, torch.bool)
        if mask.shape != (batch_size,):
            raise ValueError(f"mask must have shape [{batch_size}], got {list(mask.shape)}")
        n = int(mask.sum())
        if frames.shape[0] != n or actions.shape[0] != n:
            raise ValueError(f"mask selects {n} dreams but got context for {frames.shape[0]} / {actions.shape[0]}")
        return mask

    def check_step_actions(self, actions: torch.Tensor, batch_size: int) -> torch.Tensor:
        """One valid action per dream (shape ``[batch_size]``), as long on the model's device."""
        if actions.shape != (batch_size,):
            raise ValueError(f"step needs one action per dream: shape [{batch_size}], got {list(actions.shape)}")
        return self.check_actions(actions)

    def check_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Integer actions in ``[0, num_actions)``, as long on the model's device."""
        if actions.dtype.is_floating_point or actions.dtype == torch.bool:
            raise TypeError(f"actions must be integers, got {actions.dtype}")
        actions = actions.to(self.device, torch.long)
        if actions.numel() and (actions.min() < 0 or actions.max() >= self.num_actions):
            lo, hi = int(actions.min()), int(actions.max())
            raise ValueError(f"actions must be in [0, {self.num_actions}), got values in [{lo}, {hi}]")
        return actions


def frames_to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [..., H, W, C] -> float [..., C, H, W] in [-1, 1]."""
    return frames.movedim(-1, -3).float().div(127.5).sub(1.0)


def float_to_frames(x: torch.Tensor) -> torch.Tensor:
    """float [..., C, H, W] in [-1, 1] -> uint8 [..., H, W, C]."""
    return x.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).movedim(-3, -1)
