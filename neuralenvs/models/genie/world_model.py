"""Genie-style world model (Bruce et al. 2024): learned from unlabelled video, played with latent
actions, and made into a game with the real action space by a few labelled steps.

Stages (:meth:`GenieWorldModel.training_stages`), each training only its own parameters:

1. ``"tokenizer"``: the VQ autoencoder, on single frames;
2. ``"latent_actions"``: the LAM, on consecutive frames;
3. ``"dynamics"``: the MaskGIT transformer, on the frozen tokenizer's tokens and the frozen LAM's
   latent actions;
4. ``"heads"`` (labelled data only, :attr:`labelled_stages`): the reward and termination heads on
   the frozen transformer's features; before it, :meth:`prepare_stage` fits the action map.

The first three never read ``batch.actions`` or ``batch.rewards``: any video will do.

Actions. ``num_actions`` is what a dream takes. Without labelled data it is ``n_latent`` and an
action *is* a latent action (the map is the identity). After the heads stage it is the real game's
action count, and a buffer ``action_map[num_actions, n_latent]`` holds, for each real action, the
frequencies of the latent actions that followed it in the labelled steps. The dream turns a real action into a
latent one by *sampling* that empirical distribution (``sample_action_map``, the default) rather
than taking its most frequent latent action: the LAM's latent action describes everything that
changed, including what the game did by itself (an opponent's move), so one real action is
followed by different latent actions, and sampling reproduces that variety where the argmax would
make every press of a button do the same thing and never the rarer outcomes. A real action the
labelled data never showed behaves like an average action (the latent actions' overall frequencies).

Context. ``init_state`` reads the latent actions between its real context frames with the LAM, from
the frames themselves; the context actions it is given are checked but not used. The LAM reads
more of what happened than any map from real actions could say, and it is how the dynamics saw its
training data. A single-image prompt (the image repeated) thus reads as "nothing changed".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from neuralenvs.models.genie.config import GenieConfig
from neuralenvs.models.genie.dynamics import Dynamics, RewardEndHeads
from neuralenvs.models.genie.latent_action import LatentActionModel
from neuralenvs.models.genie.tokenizer import Tokenizer
from neuralenvs.nn.frame_tokens import FrameTokens
from neuralenvs.nn.reward_end import NUM_REWARD_CLASSES, choose_classes, class_to_reward, reward_to_class
from neuralenvs.nn.spatiotemporal import LayerKV
from neuralenvs.world_model import Segments, StepResult, WorldModel, frames_to_float

STAGES = ("tokenizer", "latent_actions", "dynamics", "heads")


@dataclass
class GenieState:
    """B dreams' windows, on the model's device. Slots ``0 .. length - 1`` hold each dream's last
    frames, the newest at ``length - 1``, and the next frame is dreamed at temporal position
    ``length``; a dream that (re)started within the window leaves its first slots empty. ``context``
    holds the dynamics' keys and values of those slots, or is ``None`` when the next step must
    compute them (after a window slid, or with ``slide_frames`` 1, always)."""

    tokens: torch.Tensor  # long [B, W - 1, S]
    latents: torch.Tensor  # long [B, W - 1]: the latent action that led into each frame
    valid: torch.Tensor  # bool [B, W - 1]: False where a dream has no frame (yet)
    length: int  # slots in use, the same for every dream of the batch
    # uint8 [B, H, W, C]: each dream's newest frame, which a tokenizer that sees the frame before
    # decodes the next one with (``None`` for one that does not)
    last_frame: torch.Tensor | None = None
    # per layer, keys and values [B * S, heads, length, head_dim]; never changed in place, so copies
    # of a state share them
    context: list[LayerKV] | None = None

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    def clone(self) -> GenieState:
        last = None if self.last_frame is None else self.last_frame.clone()
        context = None if self.context is None else list(self.context)
        return GenieState(self.tokens.clone(), self.latents.clone(), self.valid.clone(), self.length, last, context)


class GenieWorldModel(FrameTokens, WorldModel):
    """Tokenizer, latent action model, MaskGIT dynamics, reward/termination heads, action map."""

    family = "genie"
    config_class = GenieConfig
    # bf16 autocast paid from 16 genie dreams up, not at 1 to 8 (docs/speed_levers.md, "Which precision pays")
    cpu_bf16_min_batch = 16
    labelled_stages = ("heads",)

    def __init__(self, config: GenieConfig, obs_shape: tuple[int, int, int], num_actions: int | None = None) -> None:
        """``num_actions``: the real game's action count when the model is (to be) mapped to one;
        ``None`` (learning from video alone) exposes the ``n_latent`` latent actions."""
        super().__init__(config, obs_shape, config.n_latent if num_actions is None else num_actions)
        h, w, c = self.obs_shape
        self.tokenizer = Tokenizer(config, c, (h, w))
        self.tokens_per_frame = self.tokenizer.tokens_per_frame
        self.lam = LatentActionModel(config, c, (h, w))
        self.dynamics = Dynamics(config, self.tokens_per_frame)
        self.heads = RewardEndHeads(config.embed_dim, config.head_hidden)
        # until a map is fitted, action i is latent action i mod n_latent (the identity when the
        # model exposes its latent actions)
        identity = F.one_hot(torch.arange(self.num_actions) % config.n_latent, config.n_latent).float()
        self.register_buffer("action_map", identity)
        self.register_buffer("reward_logit_offset", torch.zeros(NUM_REWARD_CLASSES))
        self._stage = "all"

    @property
    def context_frames(self) -> int:
        return self.config.num_context_frames

    @property
    def window(self) -> int:
        return self.config.context_length

    # ---- frames, tokens, latent actions ---------------------------------------------------------

    # encode / decode (uint8 frames <-> tokens) come from FrameTokens

    def _lam_inputs(self, frames: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every transition of ``frames`` uint8 [B, T, H, W, C] as LAM inputs: past frames float
        [B, T - 1, lam_context, C, H, W] and next frames [B, T - 1, C, H, W]. A past frame before a
        sequence's first valid frame (``valid[B, T]``, leading False) repeats that first frame."""
        b, t = valid.shape
        first = (~valid).long().cumprod(dim=1).sum(dim=1).clamp(max=t - 1)  # index of the first valid frame
        steps = torch.arange(t - 1, device=frames.device)
        back = torch.arange(self.config.lam_context - 1, -1, -1, device=frames.device)
        idx = (steps[:, None] - back).clamp(min=0)  # [T - 1, context]
        idx = torch.maximum(idx[None], first[:, None, None])  # [B, T - 1, context]
        rows = torch.arange(b, device=frames.device)[:, None, None]
        x = frames_to_float(frames).to(self.dtype)  # [B, T, C, H, W]
        return x[rows, idx], x[:, 1:]

    @torch.no_grad()
    def infer_latent_actions(self, frames: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """The latent actions long [B, T - 1] between consecutive frames uint8 [B, T, H, W, C]
        (``valid[B, T]`` marks padding before a sequence's start; default: all frames real)."""
        if valid is None:
            valid = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
        if frames.shape[1] < 2:
            return torch.zeros(frames.shape[0], 0, dtype=torch.long, device=frames.device)
        past, nxt = self._lam_inputs(frames.to(self.device), valid.to(self.device))
        ids = self.lam.infer(past.flatten(0, 1), nxt.flatten(0, 1))
        return ids.reshape(frames.shape[0], frames.shape[1] - 1)

    def map_actions(self, actions: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions long [B] -> latent actions long [B] (sampled from the map, or its argmax: see the
        module docstring). One uniform per dream, drawn on the generator's device."""
        probs = self.action_map.float()[actions]
        if not self.config.sample_action_map:
            return probs.argmax(dim=-1)
        if generator is None:
            u = torch.rand(probs.shape[0], device=probs.device)
        else:
            u = torch.rand(probs.shape[0], generator=generator, device=generator.device).to(probs.device)
        cdf = probs.cumsum(dim=-1)
        index = (cdf < u[:, None] * cdf[:, -1:]).sum(dim=-1)
        return index.clamp(max=self.config.n_latent - 1)

    # ---- dreaming -----------------------------------------------------------------------------

    @torch.no_grad()
    def init_state(self, frames: torch.Tensor, actions: torch.Tensor) -> GenieState:
        """Start dreams from K real frames: their tokens, and the latent actions between them read
        by the LAM (``actions`` are validated but not used: see the module docstring)."""
        frames, _ = self.check_context(frames, actions)
        return self._start_windows(frames, self.window - 1)

    def _start_windows(self, frames: torch.Tensor, length: int) -> GenieState:
        """Windows of ``length`` slots whose last K hold the real ``frames`` uint8 [B, K, H, W, C]."""
        b, k = frames.shape[:2]
        w1 = self.window - 1
        state = GenieState(
            tokens=torch.zeros(b, w1, self.tokens_per_frame, dtype=torch.long, device=self.device),
            latents=torch.full((b, w1), self.config.n_latent, dtype=torch.long, device=self.device),
            valid=torch.zeros(b, w1, dtype=torch.bool, device=self.device),
            length=length,
            last_frame=frames[:, -1].to(self.device).clone() if self.tokenizer.sees_previous_frame else None,
        )
        state.tokens[:, length - k : length] = self.encode(frames)
        state.latents[:, length - k + 1 : length] = self.infer_latent_actions(frames)
        state.valid[:, length - k : length] = True
        return state

    def _context(self, state: GenieState) -> list[LayerKV]:
        """The dynamics' keys and values of the state's window: cached, or computed now."""
        if state.context is not None:
            return state.context
        n = state.length
        return self.dynamics.prefill(state.tokens[:, :n], self._incoming(state)[:, :n], state.valid[:, :n])

    def _incoming(self, state: GenieState) -> torch.Tensor:
        """The incoming latent action of every window frame, ``[UNKNOWN]`` where the frame before
        it is not in the window (as in training, where a segment's first frame has no action)."""
        before = F.pad(state.valid[:, :-1], (1, 0), value=False)
        return torch.where(before, state.latents, torch.full_like(state.latents, self.config.n_latent))

    @torch.no_grad()
    def step_latent(
        self,
        state: GenieState,
        latents: torch.Tensor,
        generator: torch.Generator | None = None,
        sample_heads: bool = False,
    ) -> StepResult:
        """Dream every dream's next frame given latent actions ``latents`` long [B] (what
        :meth:`step` does after mapping its actions). ``state`` is not modified."""
        if latents.shape != (state.batch_size,):
            raise ValueError(f"one latent action per dream: shape [{state.batch_size}], got {list(latents.shape)}")
        latents = latents.to(self.device, torch.long)
        if latents.numel() and (latents.min() < 0 or latents.max() >= self.config.n_latent):
            raise ValueError(f"latent actions must be in [0, {self.config.n_latent})")
        cfg = self.config
        context, valid = self._context(state), state.valid[:, : state.length]
        tokens = self.dynamics.sample(context, valid, latents, cfg.maskgit_steps, cfg.temperature, generator)
        features, new_kv = self.dynamics.new_frame_and_kv(tokens, latents, context, valid)
        rew_logits, end_logits = self.heads(features)
        rew_logits = rew_logits.float() + self.reward_logit_offset.float()
        new = self._grown(state, tokens, latents, context, new_kv)
        frames = self.decode(tokens, state.last_frame)
        if state.last_frame is not None:
            new.last_frame = frames
        reward = class_to_reward(choose_classes(rew_logits, sample_heads, generator))
        terminated = choose_classes(end_logits.float(), sample_heads, generator).bool()
        return StepResult(new, frames, reward, terminated)

    def _grown(
        self, state: GenieState, tokens: torch.Tensor, latents: torch.Tensor, context: list[LayerKV],
        new_kv: list[LayerKV],
    ) -> GenieState:
        """The windows with the new frame (``tokens[B, S]``, reached by ``latents[B]``, keys and values
        ``new_kv``) after the others. A window with room keeps its context and adds the new frame's;
        a full one drops its oldest ``slide_frames`` frames, and the next step recomputes the rest."""
        n, w1 = state.length, self.window - 1
        kept = (
            torch.cat([state.tokens[:, :n], tokens[:, None]], dim=1),
            torch.cat([state.latents[:, :n], latents[:, None]], dim=1),
            F.pad(state.valid[:, :n], (0, 1), value=True),
        )
        if n < w1:
            pairs = zip(context, new_kv, strict=True)
            grown = [(torch.cat([k, nk], dim=2), torch.cat([v, nv], dim=2)) for (k, v), (nk, nv) in pairs]
        else:
            kept, grown = tuple(x[:, self.config.slide_frames :] for x in kept), None
        length = kept[0].shape[1]
        pad = w1 - length
        return GenieState(
            tokens=F.pad(kept[0], (0, 0, 0, pad)),
            latents=F.pad(kept[1], (0, pad), value=self.config.n_latent),
            valid=F.pad(kept[2], (0, pad), value=False),
            length=length,
            context=grown,
        )

    @torch.no_grad()
    def step(
        self,
        state: GenieState,
        actions: torch.Tensor,
        generator: torch.Generator | None = None,
        sample_heads: bool = False,
    ) -> StepResult:
        """Map each dream's action to a latent action and dream its next frame, reward and end."""
        actions = self.check_step_actions(actions, state.batch_size)
        return self.step_latent(state, self.map_actions(actions, generator), generator, sample_heads)

    @torch.no_grad()
    def reset_where(
        self, state: GenieState, mask: torch.Tensor, frames: torch.Tensor, actions: torch.Tensor
    ) -> GenieState:
        """Restart the masked dreams from new context; the others' windows are copied as they are
        (the given ``state`` is not modified)."""
        mask = self.check_reset_mask(mask, state.batch_size, frames, actions)
        if not mask.any():
            return state
        frames, _ = self.check_context(frames, actions)
        fresh = self._start_windows(frames, state.length)  # the restarted dreams' frames end where the others' do
        new = state.clone()
        new.tokens[mask], new.latents[mask], new.valid[mask] = fresh.tokens, fresh.latents, fresh.valid
        if new.last_frame is not None:
            new.last_frame[mask] = fresh.last_frame
        if state.context is not None:  # only the restarted dreams' keys and values are computed
            rows, s = mask.nonzero().flatten(), self.tokens_per_frame
            new.context = [
                (_with_rows(k, rows, fresh_k, s), _with_rows(v, rows, fresh_v, s))
                for (k, v), (fresh_k, fresh_v) in zip(state.context, self._context(fresh), strict=True)
            ]
        return new

    # ---- training -----------------------------------------------------------------------------

    def training_stages(self) -> list[str]:
        """Tokenizer, latent actions, dynamics (all from video), then heads (labelled data)."""
        return list(STAGES)

    def set_training_stage(self, stage: str) -> None:
        """Which losses :meth:`training_losses` returns: one stage's, or ``"all"`` of them summed
        (the default; each part still trains on the others' outputs without gradients)."""
        if stage not in (*STAGES, "all"):
            raise ValueError(f"unknown training stage {stage!r}; the genie family has {[*STAGES, 'all']}")
        self._stage = stage

    def prepare_stage(self, stage: str, dataset, episodes: list[int]) -> dict[str, float] | None:
        """Before ``"heads"``: fit the action map on the labelled ``episodes`` of ``dataset``: read
        every transition's latent action with the (trained, frozen) LAM and count, per real action,
        how often each latent action followed it. An action the data never shows gets the latent
        actions' overall frequencies. Returns the map's *purity*: the share of labelled transitions
        whose latent action is their real action's most frequent one (1: real actions determine
        latent actions; 1 / n_latent: they say nothing about them)."""
        if stage != "heads":
            return None
        if dataset.num_actions != self.num_actions:
            raise ValueError(
                f"the labelled data has {dataset.num_actions} actions but this model was built for "
                f"{self.num_actions}: build it with the labelled data's action count"
            )
        counts = torch.zeros(self.action_map.shape, dtype=torch.float64, device=self.device)
        chunk = 256
        for i in episodes:
            ep = dataset.episode(i)
            for lo in range(0, len(ep), chunk):
                # the LAM's past frames for the chunk's first transition come from before the chunk
                pad = min(lo, self.config.lam_context - 1)
                frames = torch.from_numpy(np.ascontiguousarray(ep.frames[lo - pad : lo + chunk + 1]))
                latents = self.infer_latent_actions(frames[None])[0, pad:]
                real = torch.from_numpy(ep.actions[lo : lo + chunk]).to(counts.device)
                counts.index_put_((real, latents.to(counts.device)), torch.ones_like(real, dtype=counts.dtype),
                                  accumulate=True)
        total = counts.sum()
        if total == 0:
            raise ValueError("the labelled data holds no transitions: the action map cannot be fitted")
        seen = counts.sum(dim=1, keepdim=True) > 0
        rows = torch.where(seen, counts, counts.sum(dim=0, keepdim=True))
        self.action_map.copy_((rows / rows.sum(dim=1, keepdim=True)).to(self.action_map))
        return {
            "labelled_transitions": int(total),
            "purity": float(counts.max(dim=1).values.sum() / total),
            "unseen_actions": int((~seen).sum()),
        }

    def correct_reward_prior(self, trained: torch.Tensor, real: torch.Tensor) -> None:
        """Shift the dream-time reward logits by ``log(real / trained)`` (the trainer oversampled
        rewarded steps of the labelled data)."""
        trained, real = (torch.as_tensor(x, dtype=torch.float64).clamp(min=1e-6) for x in (trained, real))
        offset = (real / real.sum()).log() - (trained / trained.sum()).log()
        self.reward_logit_offset.copy_(offset.to(self.reward_logit_offset))

    def training_losses(self, batch: Segments) -> dict[str, torch.Tensor]:
        """The current stage's losses (see :meth:`set_training_stage`): ``"loss"`` plus detached
        components. Only ``"heads"`` reads the batch's rewards and ends; no stage reads its actions."""
        parts = {
            "tokenizer": (self._tokenizer_losses, "tokenizer"),
            "latent_actions": (self._lam_losses, "latent_actions"),
            "dynamics": (self._dynamics_losses, "tokens"),
            "heads": (self._heads_losses, "heads"),
        }
        chosen = STAGES if self._stage == "all" else (self._stage,)
        total = torch.zeros((), device=batch.frames.device)
        logs: dict[str, torch.Tensor] = {}
        for stage in chosen:
            fn, key = parts[stage]
            losses = fn(batch)
            total = total + losses[key]
            logs.update(losses)
        return {"loss": total, **{k: v.detach() for k, v in logs.items()}}

    # _tokenizer_losses comes from FrameTokens

    def _lam_losses(self, batch: Segments) -> dict[str, torch.Tensor]:
        """LAM losses on the segment's real transitions (both frames real), ``lam_transitions`` per
        segment at random when set."""
        past, nxt = self._lam_inputs(batch.frames, batch.mask)
        real = batch.mask[:, :-1] & batch.mask[:, 1:]
        k = self.config.lam_transitions
        if k and k < real.shape[1]:  # keep k real transitions per segment (fewer if it has fewer)
            scores = real.float() + torch.rand(real.shape, device=real.device)
            keep = torch.zeros_like(real).scatter_(1, scores.topk(k, dim=1).indices, True)
            real = real & keep
        if not bool(real.any()):  # a batch of single frames: nothing to learn from, but stay finite
            real = torch.zeros_like(real)
            real[:, -1] = True
        return self.lam.losses(past[real], nxt[real])

    @torch.no_grad()
    def _window_inputs(self, batch: Segments) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """The frozen tokenizer's tokens ``[B, W, S]``, the frozen LAM's incoming latent actions
        ``[B, W]`` (``[UNKNOWN]`` where the previous frame is not real) and the mask ``[B, W]`` of a
        batch laid out in one full window: the segment's last ``W`` frames, or all of them
        right-aligned with empty positions before (as a young dream's frames are). Also returns
        how many of the window's frames came from the segment."""
        frames, mask = batch.frames[:, -self.window :], batch.mask[:, -self.window :]
        n = frames.shape[1]
        tokens = torch.zeros(*frames.shape[:2], self.tokens_per_frame, dtype=torch.long, device=frames.device)
        tokens[mask] = self.encode(frames[mask])
        latents = torch.full(mask.shape, self.config.n_latent, dtype=torch.long, device=frames.device)
        latents[:, 1:] = self.infer_latent_actions(frames, mask)
        latents = torch.where(F.pad(mask[:, :-1], (1, 0), value=False), latents, self.config.n_latent)
        pad = self.window - n
        if pad:
            tokens = F.pad(tokens, (0, 0, pad, 0))
            latents = F.pad(latents, (pad, 0), value=self.config.n_latent)
            mask = F.pad(mask, (pad, 0), value=False)
        return tokens, latents, mask, n

    def _dynamics_losses(self, batch: Segments) -> dict[str, torch.Tensor]:
        """MaskGIT cross-entropy on the masked tokens of every frame whose previous frame is real.

        Each frame's share of masked tokens is ``cos(pi/2 * u)``, ``u`` uniform (MaskGIT's
        schedule), at least one token."""
        tokens, latents, mask, _ = self._window_inputs(batch)
        b, w, s = tokens.shape
        device = tokens.device
        ratio = torch.cos(torch.pi / 2 * torch.rand(b, w - 1, device=device))
        count = (ratio * s).ceil().clamp(min=1)
        rank = torch.rand(b, w - 1, s, device=device).argsort(dim=-1).argsort(dim=-1)
        masked = rank < count[..., None]
        logits = self.dynamics.teacher_forced(tokens, latents, mask, masked).float()
        weight = (masked & (mask[:, 1:] & mask[:, :-1])[..., None]).flatten().float()
        ce = F.cross_entropy(logits.flatten(0, 2), tokens[:, 1:].flatten(), reduction="none")
        count = weight.sum().clamp(min=1)
        with torch.no_grad():
            accuracy = ((logits.argmax(-1) == tokens[:, 1:]).flatten().float() * weight).sum() / count
        return {"tokens": (ce * weight).sum() / count, "token_accuracy": accuracy}

    def _heads_losses(self, batch: Segments) -> dict[str, torch.Tensor]:
        """Reward-sign and termination cross-entropies of every real transition, from the frozen
        dynamics' features of the frame it led to (computed in eval mode, as a dream does)."""
        tokens, latents, mask, n = self._window_inputs(batch)
        if n < 2:
            raise ValueError("the heads train on transitions: segments need at least 2 frames")
        was_training = self.dynamics.training
        self.dynamics.eval()
        with torch.no_grad():
            features = self.dynamics.clean_features(tokens, latents, mask)
        self.dynamics.train(was_training)
        # the transitions into the segment's last n - 1 frames (the last n - 1 of the window)
        rew_logits, end_logits = self.heads(features[:, self.window - n + 1 :])
        rewards, terminated = batch.rewards[:, -(n - 1) :], batch.terminated[:, -(n - 1) :]
        valid = (mask[:, -(n - 1) :] & mask[:, -n:-1]).flatten().float()
        count = valid.sum().clamp(min=1)
        rew = F.cross_entropy(rew_logits.flatten(0, 1).float(), reward_to_class(rewards).flatten(), reduction="none")
        end = F.cross_entropy(end_logits.flatten(0, 1).float(), terminated.long().flatten(), reduction="none")
        rew, end = (rew * valid).sum() / count, (end * valid).sum() / count
        return {"heads": rew + end, "reward": rew, "termination": end}


def _with_rows(kv: torch.Tensor, rows: torch.Tensor, values: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    """A copy of one layer's keys or values ``kv[B * S, ...]`` whose dreams ``rows`` [M] hold
    ``values[M * S, ...]``."""
    out = kv.reshape(-1, tokens_per_frame, *kv.shape[1:]).clone()
    out[rows] = values.reshape(-1, tokens_per_frame, *values.shape[1:]).to(out.dtype)
    return out.reshape(kv.shape)
