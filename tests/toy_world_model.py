"""Test helpers: a tiny but real WorldModel for the environment tests (not shipped, not a
family), a probe that wraps any model, and synthetic episodes.

It predicts the next frame as the last frame plus a convolutional update from the last K frames
and the action, plus Gaussian noise drawn from the caller's generator (so seeds matter, as with a
sampling model), a reward sign class and a termination class from linear heads on pooled
features. The termination head's bias makes a sampled dream end every ~13 steps on average.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neuralenvs.world_model import Segments, StepResult, WorldModel, float_to_frames, frames_to_float


@dataclass(frozen=True)
class ToyConfig:
    context: int = 2  # frames a dream starts from
    channels: int = 8
    noise: float = 0.03  # std of the per-pixel noise, in [-1, 1] units
    termination_bias: float = -2.5  # logit of "terminated" before the features: p ~ 0.08

    @classmethod
    def named(cls, name: str) -> ToyConfig:
        if name != "tiny":
            raise ValueError(f"unknown toy config {name!r}; the toy model has only 'tiny'")
        return cls()


class ToyWorldModel(WorldModel):
    family = "toy"
    config_class = ToyConfig

    def __init__(self, config: ToyConfig, obs_shape: tuple[int, int, int], num_actions: int) -> None:
        super().__init__(config, obs_shape, num_actions)
        c = self.obs_shape[2]
        ch = config.channels
        self.action_embedding = nn.Embedding(self.num_actions, ch)
        self.encoder = nn.Conv2d(c * config.context, ch, 3, padding=1)
        self.decoder = nn.Conv2d(ch, c, 3, padding=1)
        self.reward_head = nn.Linear(ch, 3)
        self.termination_head = nn.Linear(ch, 2)
        with torch.no_grad():
            self.termination_head.weight.mul_(0.1)
            self.termination_head.bias.copy_(torch.tensor([0.0, config.termination_bias]))

    @property
    def context_frames(self) -> int:
        return self.config.context

    # the state is simply the last K frames, uint8 [B, K, H, W, C]
    def init_state(self, frames: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        k = self.context_frames
        if frames.dtype != torch.uint8 or tuple(frames.shape[1:]) != (k, *self.obs_shape):
            raise ValueError(
                f"expected uint8 frames [B, {k}, *{self.obs_shape}], got {frames.dtype} {frames.shape}"
            )
        if tuple(actions.shape) != (frames.shape[0], k - 1):
            raise ValueError(f"expected actions [B, {k - 1}], got {tuple(actions.shape)}")
        return frames.to(self.device).clone()

    def _predict(self, context: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """context uint8 [B, K, H, W, C] -> next frame (float, no noise), reward and termination logits."""
        x = frames_to_float(context).flatten(1, 2)  # [B, K * C, H, W]
        h = torch.relu(self.encoder(x) + self.action_embedding(actions)[:, :, None, None])
        last = frames_to_float(context[:, -1])
        next_frame = last + 0.5 * torch.tanh(self.decoder(h))
        pooled = h.mean(dim=(2, 3))
        return next_frame, self.reward_head(pooled), self.termination_head(pooled)

    def step(
        self,
        state: torch.Tensor,
        actions: torch.Tensor,
        generator: torch.Generator | None = None,
        sample_heads: bool = False,
    ) -> StepResult:
        next_frame, reward_logits, termination_logits = self._predict(state, actions)
        noise = torch.randn(next_frame.shape, generator=generator, device=next_frame.device)
        frames = float_to_frames(next_frame + self.config.noise * noise)
        if sample_heads:
            reward_class = torch.multinomial(reward_logits.softmax(-1), 1, generator=generator)[:, 0]
            terminated = torch.multinomial(termination_logits.softmax(-1), 1, generator=generator)[:, 0]
        else:
            reward_class = reward_logits.argmax(-1)
            terminated = termination_logits.argmax(-1)
        new_state = torch.cat([state[:, 1:], frames[:, None]], dim=1)
        return StepResult(new_state, frames, (reward_class - 1).float(), terminated.bool())

    def reset_where(
        self, state: torch.Tensor, mask: torch.Tensor, frames: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor:
        mask = self.check_reset_mask(mask, state.shape[0], frames, actions)
        frames, _ = self.check_context(frames, actions)
        new_state = state.clone()
        new_state[mask] = frames
        return new_state

    def training_losses(self, batch: Segments) -> dict[str, Any]:
        """MSE on the next frame and cross-entropy on reward sign and termination, over every
        step whose K-frame context fits in the segment and whose target frame is real."""
        k = self.context_frames
        frames = batch.frames  # [B, L + 1, H, W, C]
        steps = frames.shape[1] - k  # targets frames[:, k:]
        windows = frames.unfold(1, k, 1)[:, :steps]  # [B, steps, H, W, C, K]
        context = windows.permute(0, 1, 5, 2, 3, 4).flatten(0, 1)  # [B * steps, K, H, W, C]
        actions = batch.actions[:, k - 1 :].flatten()
        target = frames_to_float(frames[:, k:].flatten(0, 1))
        valid = batch.mask[:, k:].flatten().float()
        next_frame, reward_logits, termination_logits = self._predict(context, actions)
        reward_class = (torch.sign(batch.rewards[:, k - 1 :]).long() + 1).flatten()
        terminated = batch.terminated[:, k - 1 :].long().flatten()
        denominator = valid.sum().clamp_min(1.0)
        frame_loss = ((next_frame - target) ** 2).mean(dim=(1, 2, 3)).mul(valid).sum() / denominator
        reward_loss = (
            F.cross_entropy(reward_logits, reward_class, reduction="none").mul(valid).sum() / denominator
        )
        termination_loss = (
            F.cross_entropy(termination_logits, terminated, reduction="none").mul(valid).sum() / denominator
        )
        loss = frame_loss + reward_loss + termination_loss
        return {"loss": loss, "frame": frame_loss, "reward": reward_loss, "termination": termination_loss}


def make_toy(obs_shape: tuple[int, int, int] = (64, 64, 3), num_actions: int = 6) -> ToyWorldModel:
    torch.manual_seed(0)  # the same weights in every test
    return ToyWorldModel(ToyConfig(), obs_shape, num_actions)


def synthetic_episodes(
    n: int, length: int, obs_shape: tuple[int, int, int], num_actions: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random "real" episodes: frames uint8 [T + 1, H, W, C] and actions [T]."""
    rng = np.random.default_rng(seed)
    return [
        (
            rng.integers(0, 256, size=(length + 1, *obs_shape), dtype=np.uint8),
            rng.integers(0, num_actions, size=length),
        )
        for _ in range(n)
    ]


class ProbeModel(WorldModel):
    """Wraps any family's model to record what the env asks of it and, where a test sets
    ``terminated``, to override the termination head (family-independent episode ends).

    ``terminated`` is None (use the model's) or a bool array [B] applied at the next step only.
    """

    family = "probe"

    def __init__(self, inner: WorldModel) -> None:
        super().__init__(inner.config, inner.obs_shape, inner.num_actions)
        self.inner = inner
        self.terminated: np.ndarray | None = None
        self.never_terminate = False
        self.calls: list[tuple[str, Any]] = []
        self.last: StepResult | None = None

    @property
    def context_frames(self) -> int:
        return self.inner.context_frames

    def init_state(self, frames: torch.Tensor, actions: torch.Tensor) -> Any:
        self.calls.append(("init_state", (frames.clone(), actions.clone())))
        return self.inner.init_state(frames, actions)

    def step(
        self,
        state: Any,
        actions: torch.Tensor,
        generator: torch.Generator | None = None,
        sample_heads: bool = False,
    ) -> StepResult:
        self.calls.append(("step", actions.clone()))
        result = self.inner.step(state, actions, generator=generator, sample_heads=sample_heads)
        terminated = result.terminated
        if self.never_terminate:
            terminated = torch.zeros_like(terminated)
        if self.terminated is not None:
            terminated = torch.as_tensor(self.terminated, device=terminated.device)
            self.terminated = None
        self.last = StepResult(result.state, result.next_frames.clone(), result.reward.clone(), terminated)
        return StepResult(result.state, result.next_frames, result.reward, terminated)

    def reset_where(self, state: Any, mask: torch.Tensor, frames: torch.Tensor, actions: torch.Tensor) -> Any:
        self.calls.append(("reset_where", (mask.clone(), frames.clone(), actions.clone())))
        return self.inner.reset_where(state, mask, frames, actions)

    def training_losses(self, batch: Segments) -> dict[str, torch.Tensor]:
        return self.inner.training_losses(batch)

    def calls_to(self, name: str) -> list[Any]:
        return [args for method, args in self.calls if method == name]
