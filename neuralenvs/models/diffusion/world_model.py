"""DIAMOND-style world model: dream the next frame by denoising it, predict reward and termination
with a recurrent classifier over the dreamed transitions.

A dream's state is small and fixed-size: the last K frames (float, [-1, 1]), the K - 1 actions
taken at the first K - 1 of them, and the reward/termination LSTM memory. One ``step`` runs the
sampler (``num_denoising_steps`` U-Net calls) and one reward/termination call for the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from neuralenvs.models.diffusion.config import DiffusionConfig
from neuralenvs.models.diffusion.denoiser import Denoiser
from neuralenvs.models.diffusion.sampler import randn, sample_next_frame
from neuralenvs.nn.reward_end import NUM_REWARD_CLASSES, RewardEndModel, choose_classes, class_to_reward
from neuralenvs.world_model import Segments, StepResult, WorldModel, float_to_frames, frames_to_float


def keep_still_pixels(next_x: torch.Tensor, last_x: torch.Tensor, levels: int) -> torch.Tensor:
    """``next_x[B, C, H, W]`` with every pixel whose colour differs from ``last_x`` by at most
    ``levels`` 8-bit levels in every channel set back to its ``last_x`` colour (both in [-1, 1])."""
    moved_levels = (next_x.float() - last_x.float()).abs().amax(dim=1, keepdim=True) * 127.5
    return torch.where(moved_levels < levels + 0.5, last_x, next_x)


@dataclass
class DiffusionState:
    """The state of B dreams. Every tensor has the batch first and lives on the model's device."""

    frames: torch.Tensor  # float [B, K, C, H, W] in [-1, 1], oldest first
    actions: torch.Tensor  # long [B, K - 1]: actions[:, i] was taken at frames[:, i]
    h: torch.Tensor  # [B, rew_lstm_dim + rew_end_lstm_dim]: reward/termination LSTM memory
    c: torch.Tensor  # [B, rew_lstm_dim + rew_end_lstm_dim]

    @property
    def batch_size(self) -> int:
        return self.frames.shape[0]


class DiffusionWorldModel(WorldModel):
    """Denoiser (EDM U-Net over the K past frames and actions) plus reward/termination model."""

    family = "diffusion"
    config_class = DiffusionConfig

    def __init__(self, config: DiffusionConfig, obs_shape: tuple[int, int, int], num_actions: int) -> None:
        super().__init__(config, obs_shape, num_actions)
        h, w, c = self.obs_shape
        self.denoiser = Denoiser(config, c, self.num_actions)
        self.reward_end = RewardEndModel(
            img_channels=c,
            img_size=(h, w),
            num_actions=self.num_actions,
            channels=config.rew_channels,
            depths=config.rew_depths,
            cond_dim=config.rew_cond_dim,
            lstm_dim=config.rew_lstm_dim,
            mid_attention=config.rew_mid_attention,
            encoder=config.rew_encoder,
            sees_next_frame=config.rew_sees_next_frame,
            end_lstm_dim=config.rew_end_lstm_dim,
        )

    def compiled_modules(self) -> tuple[nn.Module, ...]:
        # the U-Net, called once a step per Euler step at the batch's shape: compiled, its group
        # norms, SiLUs and scale-and-shifts fuse (docs/speed_levers.md, "The diffusion dreams compiled");
        # the reward model restarts at other shapes, and the token and genie dreams gained nothing
        # measurable
        return (self.denoiser.net,)

    @property
    def context_frames(self) -> int:
        return self.config.num_context_frames

    # ---- dreaming -----------------------------------------------------------------------------

    @torch.no_grad()
    def init_state(self, frames: torch.Tensor, actions: torch.Tensor) -> DiffusionState:
        """Start dreams from real context: keep the frames and actions, and burn the
        reward/termination memory in on the K - 1 context transitions."""
        frames, actions = self.check_context(frames, actions)
        x = frames_to_float(frames).to(self.dtype)
        if self.context_frames > 1:
            _, _, (h, c) = self.reward_end(x[:, :-1], actions, x[:, 1:])
        else:
            h, c = self.reward_end.initial_memory(x.shape[0], x.device, x.dtype)
        return DiffusionState(frames=x, actions=actions, h=h, c=c)

    @torch.no_grad()
    def step(
        self,
        state: DiffusionState,
        actions: torch.Tensor,
        generator: torch.Generator | None = None,
        sample_heads: bool = False,
    ) -> StepResult:
        """Denoise the next frame of every dream, then classify reward and termination.

        Randomness (the sampler's starting noise, then the head samples when ``sample_heads``) is
        drawn from ``generator`` in a fixed order, so the same seed gives the same dream.
        """
        actions = self.check_step_actions(actions, state.batch_size)
        cfg = self.config
        ctx_actions = torch.cat([state.actions, actions[:, None]], dim=1)  # taken at the K context frames
        next_x = self._dream_frame(state.frames, ctx_actions, generator)
        frames = float_to_frames(next_x)
        if cfg.requantize_frames:
            next_x = frames_to_float(frames).to(next_x.dtype)
        rew_logits, end_logits, (h, c) = self.reward_end.step(state.frames[:, -1], actions, next_x, (state.h, state.c))
        reward = class_to_reward(choose_classes(rew_logits, sample_heads, generator))
        terminated = choose_classes(end_logits, sample_heads, generator).bool()
        new_state = DiffusionState(
            frames=torch.cat([state.frames[:, 1:], next_x[:, None]], dim=1),
            actions=ctx_actions[:, 1:],
            h=h,
            c=c,
        )
        return StepResult(new_state, frames, reward, terminated)

    def _dream_frame(
        self, frames: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The next frame after ``frames[B, K]`` under ``actions[B, K]``, with the config's sampler
        settings: how the model dreams, in a dream and in training on its own frames."""
        cfg = self.config
        context, level = frames, None
        if cfg.dream_context_noise_level:
            level = torch.full((frames.shape[0],), cfg.dream_context_noise_level, device=frames.device)
            noise = randn(frames.shape, frames.device, frames.dtype, generator)
            context = (frames + cfg.context_noise_std(cfg.dream_context_noise_level) * noise).clamp(-1, 1)
        next_x = sample_next_frame(
            self.denoiser, context, actions, num_steps=cfg.num_denoising_steps, method=cfg.sampler,
            sigma_min=cfg.sample_sigma_min, sigma_max=cfg.sample_sigma_max, rho=cfg.rho, generator=generator,
            context_noise_level=level,
        )
        if cfg.drop_change_levels > 0:
            next_x = keep_still_pixels(next_x, frames[:, -1], cfg.drop_change_levels)
        return next_x

    @torch.no_grad()
    def reset_where(
        self, state: DiffusionState, mask: torch.Tensor, frames: torch.Tensor, actions: torch.Tensor
    ) -> DiffusionState:
        """Restart the masked dreams from new context; the others' tensors are copied, not
        recomputed (and the given ``state`` is not modified)."""
        mask = self.check_reset_mask(mask, state.batch_size, frames, actions)
        if not mask.any():
            return state
        fresh = self.init_state(frames, actions)
        new = {}
        for f in fields(DiffusionState):
            t = getattr(state, f.name).clone()
            t[mask] = getattr(fresh, f.name).to(t.dtype)
            new[f.name] = t
        return DiffusionState(**new)

    # ---- training -----------------------------------------------------------------------------

    @property
    def reweights_reward_classes(self) -> bool:
        return self.config.rew_balance_classes

    @property
    def reweights_end_classes(self) -> bool:
        return self.config.rew_balance_ends

    def correct_reward_prior(self, trained: torch.Tensor, real: torch.Tensor) -> None:
        if self.config.rew_balance_classes:  # the loss made every class equally frequent
            trained = torch.ones(NUM_REWARD_CLASSES)
        self.reward_end.correct_reward_prior(trained, real)

    def prepare_stage(self, stage: str, dataset: Any, episodes: list[int]) -> dict[str, Any] | None:
        """With ``rew_balance_ends``, set the dream-time termination prior to the share of the
        training episodes' steps that end an episode."""
        if not self.config.rew_balance_ends:
            return None
        terminated = [dataset.episode(i).terminated for i in episodes]
        rate = sum(int(t.sum()) for t in terminated) / max(sum(len(t) for t in terminated), 1)
        self.reward_end.correct_end_prior(rate)
        return {"end_rate": rate}

    def legacy_weight_defaults(self) -> dict[str, torch.Tensor]:
        return {
            "reward_end.reward_logit_offset": torch.zeros_like(self.reward_end.reward_logit_offset),
            "reward_end.end_logit_offset": torch.zeros_like(self.reward_end.end_logit_offset),
        }

    def fine_tune_weight_defaults(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What a model fine-tuned from one with fewer parts starts its new parts from.

        - An end path of its own (``rew_end_lstm_dim``), from a model whose end head read the shared
          LSTM and trunk, starts as a copy of them: its end logits are then the old model's, and it
          keeps what the shared LSTM learned to remember, which a fresh one did not learn from short
          segments (docs/transfer_kungfumaster.md, section 14).
        - A context noise level embedding (``context_noise_levels``) starts at zero, so the model
          told its context's noise level starts as the one that was not told.
        """
        defaults = self._end_path_from_shared(weights)
        noise_emb, name = self.denoiser.net.context_noise_emb, "denoiser.net.context_noise_emb.weight"
        if noise_emb is not None and name not in weights:
            defaults[name] = torch.zeros_like(noise_emb.weight)
        return defaults

    def _end_path_from_shared(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        head = self.reward_end
        if head.end_lstm is None or any(n.startswith("reward_end.end_lstm.") for n in weights):
            return {}
        copied = {}
        for own, shared in ((head.end_lstm, "lstm"), (head.end_trunk, "trunk")):
            for name, p in own.named_parameters():
                w = weights.get(f"reward_end.{shared}.{name}")
                if w is None or w.shape != p.shape:
                    return {}  # a different size: the end path starts fresh
                copied[f"reward_end.end_{shared}.{name}"] = w
        return copied

    def training_losses(self, batch: Segments) -> dict[str, torch.Tensor]:
        """Denoising loss on ``config.denoising_targets`` frames per segment plus the
        reward/termination losses over the whole segment.

        The denoising windows are :meth:`_denoising_windows`'s. The reward/termination model runs its
        LSTM from zero memory over every transition of the segment and is scored where both frames
        are real.
        """
        frames = frames_to_float(batch.frames).to(self.dtype)  # [B, L+1, C, H, W]
        actions = batch.actions.long()
        rew_end = self.reward_end.losses(
            frames, actions, batch.rewards, batch.terminated, batch.mask,
            balance_rewards=self.config.rew_balance_classes, balance_ends=self.config.rew_balance_ends,
        )
        heads = self.config.rew_loss_weight * (rew_end["reward"] + rew_end["termination"])
        logged = {name: v.detach() for name, v in rew_end.items()}
        if not any(p.requires_grad for p in self.denoiser.parameters()):
            # a frozen denoiser (training heads only) learns nothing from its loss, which is most
            # of a step's cost
            return {"loss": heads, "denoising": torch.zeros((), device=frames.device), **logged}

        denoising = self._real_denoising_loss(*self._denoising_windows(frames, actions, batch.mask))
        return {"loss": denoising + heads, "denoising": denoising.detach(), **logged}

    def _real_denoising_loss(
        self, context: torch.Tensor, ctx_actions: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """The denoising loss on the real frames that followed :meth:`_denoising_windows`'s contexts,
        with the config's context fading and noise applied to them."""
        context, level = self._noisy_context(self._faded_context(context))
        return self.denoiser.loss(
            context=context, actions=ctx_actions, target=target, weight=weight, context_noise_level=level
        )

    def _faded_context(self, context: torch.Tensor) -> torch.Tensor:
        """``context [N, K, C, H, W]`` faded toward the batch's per-pixel median frame by a factor
        drawn from ``[1 - context_fade_max, 1]`` per window (``context_fade_max``; else unchanged)."""
        fade = self.config.context_fade_max
        if fade <= 0:
            return context
        background = context.flatten(0, 1).median(dim=0).values
        keep = 1 - fade * torch.rand(context.shape[0], 1, 1, 1, 1, device=context.device)
        return (background + keep * (context - background)).to(context.dtype)

    def _noisy_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``context`` with the config's training noise added (``context_noise_max``) and the level
        drawn for each window (with ``context_noise_levels``; else ``None``)."""
        cfg = self.config
        level = None
        if cfg.context_noise_levels:
            level = torch.randint(0, cfg.context_noise_levels, (context.shape[0],), device=context.device)
            std = cfg.context_noise_std(level.float())[:, None, None, None, None]
        elif cfg.context_noise_max > 0:
            std = torch.rand(context.shape[0], 1, 1, 1, 1, device=context.device) * cfg.context_noise_max
        if cfg.context_noise_max > 0:
            context = (context + std * torch.randn_like(context)).clamp(-1, 1).to(context.dtype)
        return context, level

    def distillation_losses(self, batch: Segments, teacher: WorldModel) -> dict[str, torch.Tensor]:
        """Teach this denoiser to dream the frame ``teacher``'s one-step sampler dreams, from the
        same starting noise and context, where the context is what a dream would give (its last
        frames dreamed by this model, as ``dreamed_context_frames`` says): the teacher labels the
        contexts the student meets, as in DAgger. A plain regression onto the teacher's denoised
        estimate, which a one-step sampler returns; the reward and end model are not trained here
        (start them from the teacher: ``init_from`` with ``reinit=("denoiser",)``)."""
        if not isinstance(teacher, DiffusionWorldModel):
            raise ValueError(f"a diffusion model learns from a diffusion teacher, not a {teacher.family} one")
        cfg, tcfg = self.config, teacher.config
        if tcfg.num_denoising_steps != 1 or cfg.num_denoising_steps != 1:
            raise ValueError(
                "distillation copies a one-step sampler: resample the teacher and student configs with "
                "num_denoising_steps=1"
            )
        if tcfg.sample_sigma_max != cfg.sample_sigma_max:
            raise ValueError(
                f"the student dreams from noise of std {cfg.sample_sigma_max}, the teacher {tcfg.sample_sigma_max}: "
                "give the student the teacher's sample_sigma_max"
            )
        if tcfg.predict_residual != cfg.predict_residual:
            raise ValueError("the teacher and the student must both predict the change (predict_residual) or both not")
        if tcfg.dream_context_noise_level or cfg.dream_context_noise_level:
            raise ValueError("distillation copies a dream from a clean context: set dream_context_noise_level=0")
        noise_settings = ("context_noise_max", "context_noise_levels")
        if cfg.distill_noisy_context and any(getattr(cfg, f) != getattr(tcfg, f) for f in noise_settings):
            raise ValueError(
                "distill_noisy_context shows both models the same noisy context and level: give the student "
                f"the teacher's context_noise_max and context_noise_levels ({tcfg.context_noise_max}, "
                f"{tcfg.context_noise_levels})"
            )
        frames = frames_to_float(batch.frames).to(self.dtype)
        context, ctx_actions, real, weight = self._denoising_windows(frames, batch.actions.long(), batch.mask)
        seen, level = self._noisy_context(context) if cfg.distill_noisy_context else (context, None)
        sigma = torch.full((context.shape[0],), cfg.sample_sigma_max, device=context.device)
        noisy = torch.randn(context[:, -1].shape, device=context.device, dtype=context.dtype) * cfg.sample_sigma_max
        with torch.no_grad():  # the teacher's estimate of the change, clamped to a frame as it dreams it
            target = teacher.denoiser.denoise(
                noisy, sigma, seen.to(teacher.dtype), ctx_actions, quantize=False, context_noise_level=level
            )
        out, pc = self.denoiser(noisy, sigma, seen, ctx_actions, level)
        distillation = self.denoiser.regression_loss(out, pc, noisy.float(), target.float(), weight)
        if not cfg.distill_real_weight:
            return {"loss": distillation, "distillation": distillation.detach()}
        denoising = self._real_denoising_loss(context, ctx_actions, real, weight)
        return {
            "loss": distillation + cfg.distill_real_weight * denoising,
            "distillation": distillation.detach(),
            "denoising": denoising.detach(),
        }

    def _denoising_windows(
        self, frames: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``config.denoising_targets`` windows per segment of ``frames[B, L+1]`` (float): the
        contexts ``[N, K, C, H, W]`` (their last frames dreamed, with ``dreamed_context_frames``),
        the actions taken at them ``[N, K]``, the frames that followed ``[N, C, H, W]`` and whether
        each is real ``[N]``.

        Needs segments of at least K transitions (``config.segment_length``). Targets are drawn at
        random among positions ``t >= K`` whose frame is real; each is predicted from frames
        ``t-K .. t-1`` (zeros where before the episode start) and the actions taken at them.
        """
        k = self.context_frames
        b, seq_len = actions.shape
        if seq_len < k:
            raise ValueError(f"segments need at least {k} transitions (config.segment_length), got {seq_len}")
        # pick targets: real frames first (mask + U(0,1) scores), then at random
        n = min(self.config.denoising_targets, seq_len - k + 1)
        real = mask[:, k:]
        scores = real.float() + torch.rand(real.shape, device=frames.device)
        pos = scores.topk(n, dim=1).indices + k  # [B, n]
        rows = torch.arange(b, device=frames.device)[:, None]
        ctx_pos = pos[..., None] + torch.arange(-k, 0, device=frames.device)  # [B, n, K]
        context = frames[rows[..., None], ctx_pos]  # [B, n, K, C, H, W]
        if self.config.dreamed_context_frames:
            context = self._dream_context_ends(frames, actions, mask, pos, context)
        return (
            context.flatten(0, 1),
            actions[rows[..., None], ctx_pos].flatten(0, 1),
            frames[rows, pos].flatten(0, 1),
            mask[rows, pos].flatten(),
        )

    @torch.no_grad()
    def _dream_context_ends(
        self, frames: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """``context[B, n, K]`` (the real frames before each target ``pos[B, n]``) with its last
        min(m, K) frames replaced by the model's own dream of the m frames before the target, m drawn
        uniformly from 0 to ``dreamed_context_frames`` per target. The dream starts from the real
        frames before them and uses the real actions, as a dream would; m is cut so that only real
        frames are dreamed in place of."""
        cfg, k = self.config, self.context_frames
        b, n = pos.shape
        rows = torch.arange(b, device=pos.device)[:, None].expand(b, n)
        depth = torch.randint(0, cfg.dreamed_context_frames + 1, (b, n), device=pos.device)
        depth = torch.minimum(depth, pos - k)
        for j in range(1, cfg.dreamed_context_frames + 1):  # stop at the first padded frame
            padded = ~mask[rows, (pos - j).clamp(min=0)].bool()
            depth = torch.where(padded & (depth >= j), torch.full_like(depth, j - 1), depth)
        context = context.clone()
        window = torch.arange(-k, 0, device=pos.device)
        for m in range(1, cfg.dreamed_context_frames + 1):
            bi, ni = (depth == m).nonzero(as_tuple=True)
            if len(bi) == 0:
                continue
            first = pos[bi, ni] - m  # the first frame to dream
            x = frames[bi[:, None], first[:, None] + window]  # [S, K, C, H, W]
            for j in range(m):
                dreamed = self._dream_frame(x, actions[bi[:, None], first[:, None] + j + window])
                x = torch.cat([x[:, 1:], dreamed[:, None].to(x.dtype)], dim=1)
            context[bi, ni] = x
        return context
