"""IRIS-style world model: a VQ tokenizer turns frames into tokens, a GPT dreams the next frame's
tokens one by one (with a KV cache) and predicts reward and termination at the action token.

A dream's state (:class:`TokenState`) is, for each of its B dreams, its own window of frame tokens
and actions (at most ``context_length`` frames), the number of frames in it, and a KV cache with
one length per dream. Invariant between steps: a dream with ``n`` frames has cached every token of
its window except the newest frame's last one, i.e. ``(n - 1) * (P + 1) + P - 1`` tokens
(P = tokens per frame). One ``step`` then feeds, for every dream at once, ``[last token, action]``
(2 tokens: the action's output gives reward, termination and the first new token), then the P - 1
sampled tokens one at a time, and decodes the P new tokens into a frame: P transformer calls, one
decoder call. At temperature 0 a small batch takes the same tokens in fewer calls, by guessing that
the new frame repeats the last and checking the guesses (``TokenWorldModel._greedy_frame``). A
dream whose new tokens all repeat the last frame's keeps that frame and skips the decoder, where
the decoder sees the frame before (``reuse_unchanged_frames``).

Restarts and the sliding window are per dream:

- ``reset_where`` encodes the new context of the masked dreams, builds their cache rows from it, and
  copies every other dream's window and cache rows unchanged.
- When a dream's window is full (``context_length`` frames), its oldest ``slide_frames`` frames are
  dropped and its cache rows are *recomputed* from the frames it keeps (the others' rows untouched).
  Why recompute instead of shifting the cached keys: the keys of a kept token were computed (in
  every layer above the first) while it attended to the dropped frames, and with absolute position
  embeddings they also carry the old positions, so shifted keys would describe a sequence the model
  never saw in training. Recomputing makes a slid dream exactly a fresh dream started from its kept
  window, which is what training shows the model (segments of at most ``context_length`` frames
  starting at position 0). ``slide_frames > 1`` trades some context for fewer recomputations.

Randomness is drawn from the caller's generator in a fixed order (one uniform per dream per frame
token, then the head samples), and each dream's tokens use only its own draws, so the same seed
gives the same dream, and restarting one dream does not change what the others dream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from neuralenvs.models.token.config import TokenConfig
from neuralenvs.models.token.gpt import WorldModelGPT
from neuralenvs.models.token.tokenizer import Tokenizer
from neuralenvs.nn.frame_tokens import FrameTokens
from neuralenvs.nn.reward_end import choose_classes, class_to_reward, reward_to_class
from neuralenvs.nn.transformer import KVCache
from neuralenvs.world_model import Segments, StepResult, WorldModel

STAGES = ("tokenizer", "transformer")


@dataclass
class TokenState:
    """The state of B dreams. Every tensor has the batch first (the cache: second) and lives on the
    model's device."""

    tokens: torch.Tensor  # long [B, context_length, P]: frame tokens of the window, oldest first
    actions: torch.Tensor  # long [B, context_length]: actions[:, i] was taken at frame i of the window
    num_frames: torch.Tensor  # long [B]: frames in each dream's window (the rest is unused)
    cache: KVCache  # per-dream keys/values and lengths
    # uint8 [B, H, W, C]: each dream's newest frame, which a tokenizer that sees the frame before
    # decodes the next one with (``None`` for one that does not)
    last_frame: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    def clone(self) -> TokenState:
        last = None if self.last_frame is None else self.last_frame.clone()
        return TokenState(self.tokens.clone(), self.actions.clone(), self.num_frames.clone(), self.cache.clone(), last)


class TokenWorldModel(FrameTokens, WorldModel):
    """VQ tokenizer plus a GPT over [frame tokens, action] blocks, with reward and termination heads."""

    family = "token"
    config_class = TokenConfig
    # bf16 autocast paid no token dream below 32 on either EPYC measured; PPO's 32 dreams ran faster
    # in bf16 (docs/speed_levers.md, "Which precision pays")
    cpu_bf16_min_batch = 32

    def __init__(self, config: TokenConfig, obs_shape: tuple[int, int, int], num_actions: int) -> None:
        super().__init__(config, obs_shape, num_actions)
        h, w, c = self.obs_shape
        self.tokenizer = Tokenizer(config, c, (h, w))
        self.tokens_per_frame = self.tokenizer.tokens_per_frame
        self.gpt = WorldModelGPT(config, self.tokens_per_frame, self.num_actions)
        self._stage = "all"

    @property
    def context_frames(self) -> int:
        return self.config.num_context_frames

    # ---- tokens -------------------------------------------------------------------------------

    # encode / decode (uint8 frames <-> tokens) come from FrameTokens

    def _sample_tokens(self, logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """One token per row of ``logits[B, V]`` at the config's temperature (0: the most likely).

        Inverse-CDF sampling with exactly one uniform per row, drawn on the generator's device: row
        b always uses the b-th draw, whatever the other rows' logits are."""
        if self.config.temperature == 0:
            return logits.float().argmax(dim=-1)  # the same token; argmax over bf16 is 4x slower on CPUs
        probs = (logits.float() / self.config.temperature).softmax(dim=-1)
        if generator is None:
            u = torch.rand(probs.shape[0], device=probs.device)
        else:
            u = torch.rand(probs.shape[0], generator=generator, device=generator.device).to(probs.device)
        cdf = probs.cumsum(dim=-1)
        index = (cdf < u[:, None] * cdf[:, -1:]).sum(dim=-1)
        return index.clamp(max=probs.shape[-1] - 1)

    # ---- dreaming -----------------------------------------------------------------------------

    def _prefill_rows(self, cache: KVCache, rows: torch.Tensor, tokens: torch.Tensor, actions: torch.Tensor) -> None:
        """(Re)build the cache rows ``rows`` (indices [M]) from windows of ``n`` frames each:
        ``tokens[M, n, P]``, ``actions[M, n - 1]``; every token but the newest frame's last one."""
        seq = self.gpt.interleave(tokens, actions)[:, :-1]
        if seq.shape[1] == 0:  # one frame of one token: nothing to cache yet
            shape = (cache.k.shape[0], len(rows), cache.k.shape[2], 0, cache.k.shape[4])
            k = v = torch.zeros(shape, device=cache.k.device, dtype=cache.k.dtype)
        else:
            k, v = self.gpt.prefill(seq)
        cache.set_rows(rows, k.to(cache.k.dtype), v.to(cache.v.dtype))

    def state_from_tokens(
        self, tokens: torch.Tensor, actions: torch.Tensor, last_frame: torch.Tensor | None = None
    ) -> TokenState:
        """Dreams started from windows of frame tokens ``tokens[B, n, P]`` and ``actions[B, n - 1]``
        (1 <= n <= context_length): what ``init_state`` does after encoding its frames. A tokenizer
        that sees the frame before also needs the newest frame, ``last_frame`` uint8 [B, H, W, C]."""
        b, n, p = tokens.shape
        w = self.config.context_length
        if not 1 <= n <= w or p != self.tokens_per_frame or actions.shape != (b, n - 1):
            raise ValueError(
                f"expected tokens [B, n <= {w}, {self.tokens_per_frame}] and actions [B, n - 1], got "
                f"{list(tokens.shape)} and {list(actions.shape)}"
            )
        device = self.device
        window = torch.zeros(b, w, p, dtype=torch.long, device=device)
        window[:, :n] = tokens
        acts = torch.zeros(b, w, dtype=torch.long, device=device)
        acts[:, : n - 1] = actions
        cache = self.gpt.empty_cache(b, device)
        self._prefill_rows(cache, torch.arange(b, device=device), window[:, :n], acts[:, : n - 1])
        num_frames = torch.full((b,), n, dtype=torch.long, device=device)
        if not self.tokenizer.sees_previous_frame:
            last_frame = None
        elif last_frame is None or last_frame.shape != (b, *self.obs_shape):
            shape = ", ".join(map(str, self.obs_shape))
            raise ValueError(f"this model decodes with the frame before: give last_frame [B, {shape}]")
        return TokenState(window, acts, num_frames, cache, last_frame)

    @torch.no_grad()
    def init_state(self, frames: torch.Tensor, actions: torch.Tensor) -> TokenState:
        """Start dreams from real context: tokenize the K frames and cache the transformer's keys and
        values over them and their K - 1 actions."""
        frames, actions = self.check_context(frames, actions)
        return self.state_from_tokens(self.encode(frames), actions, frames[:, -1].clone())

    def _slide(self, state: TokenState) -> None:
        """In place: drop the oldest ``slide_frames`` frames of every full window and recompute
        those dreams' cache rows from what they keep."""
        w, s = self.config.context_length, self.config.slide_frames
        full = state.num_frames >= w
        if not bool(full.any()):
            return
        rows = full.nonzero().flatten()
        kept_tokens = state.tokens[rows, s:]  # [M, w - s, P]
        kept_actions = state.actions[rows, s:]  # [M, w - s]; the last is not taken yet
        state.tokens[rows] = F.pad(kept_tokens, (0, 0, 0, s))
        state.actions[rows] = F.pad(kept_actions, (0, s))
        state.num_frames[rows] = w - s
        self._prefill_rows(state.cache, rows, kept_tokens, kept_actions[:, : w - s - 1])

    @torch.no_grad()
    def step(
        self,
        state: TokenState,
        actions: torch.Tensor,
        generator: torch.Generator | None = None,
        sample_heads: bool = False,
    ) -> StepResult:
        """Dream every dream's next frame token by token, and its reward and termination.

        ``state`` is not modified: the new state is a copy.
        """
        actions = self.check_step_actions(actions, state.batch_size)
        new = state.clone()
        self._slide(new)
        rows = torch.arange(new.batch_size, device=actions.device)
        n = new.num_frames.clone()
        new.actions[rows, n - 1] = actions

        last_frame_tokens = new.tokens[rows, n - 1]
        if self.config.temperature == 0 and new.batch_size <= self.config.draft_max_batch:
            next_tokens, action_out = self._greedy_frame(new.cache, last_frame_tokens, actions)
        else:
            next_tokens, action_out = self._sampled_frame(new.cache, last_frame_tokens, actions, generator)
        rew_logits, end_logits = self.gpt.head_reward(action_out), self.gpt.head_end(action_out)
        new.tokens[rows, n] = next_tokens
        new.num_frames = n + 1

        frames = self.decode_next(next_tokens, last_frame_tokens, state.last_frame, self.config.reuse_unchanged_frames)
        if new.last_frame is not None:
            new.last_frame = frames
        reward = class_to_reward(choose_classes(rew_logits, sample_heads, generator))
        terminated = choose_classes(end_logits, sample_heads, generator).bool()
        return StepResult(new, frames, reward, terminated)

    def _sampled_frame(
        self, cache: KVCache, last_tokens: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The next frame's tokens ``[B, P]`` after the last frame's tokens ``last_tokens[B, P]`` and
        ``actions[B]``, sampled one at a time at the config's temperature, and the action token's
        output ``[B, dim]`` (for the reward and end heads); ``cache`` is advanced over them, all but
        the new frame's last token."""
        p = self.tokens_per_frame
        first = torch.stack([last_tokens[:, p - 1], actions], dim=1)
        action_out = out = self.gpt.feed(first, cache)[:, -1]
        next_tokens = torch.empty(last_tokens.shape[0], p, dtype=torch.long, device=actions.device)
        for i in range(p):
            token = self._sample_tokens(self.gpt.head_obs(out), generator)
            next_tokens[:, i] = token
            if i < p - 1:
                out = self.gpt.feed(token[:, None], cache)[:, -1]
        return next_tokens, action_out

    def _greedy_frame(
        self, cache: KVCache, draft: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What :meth:`_sampled_frame` gives at temperature 0, the most likely tokens, after the last
        frame's tokens ``draft[B, P]`` and ``actions[B]``, in fewer transformer calls.

        Speculative decoding, with the last frame as the guess: most tokens of a frame repeat the
        frame before's (Boxing's dreams change about 2.3 of 16 a step), so a pass feeds every token still
        unsettled as its guess, and keeps, per dream, the predictions up to and including the first
        that differs from its guess: each of those was predicted from the tokens that really come
        before it. A pass settles at least one token of each dream it feeds, and the next feeds only
        the dreams left, so a frame takes at most one pass more than its dream has changed tokens,
        where the loop takes P. The tokens are the loop's (each is the argmax over the same context,
        up to the rounding of a wider matrix product); a pass costs more than a one-token call, which
        is why large batches keep the loop (``draft_max_batch``)."""
        b, p = draft.shape
        device = draft.device
        offsets = torch.arange(p + 1, device=device)
        base = cache.lengths.clone()
        last_slot = cache.capacity - 1
        # the known tokens, then the guesses for the rest, then P spare columns that passes past a
        # row's end read and write, so that no index is clamped onto a real token
        frame = torch.cat([draft, draft], dim=1)
        known = torch.zeros(b, dtype=torch.long, device=device)
        rows = torch.arange(b, device=device)  # the dreams whose frame is not settled yet
        # first pass: [last token, action, guesses 0 .. P - 2]; output i + 1 predicts token i
        seq = torch.cat([draft[:, -1:], actions[:, None], draft[:, :-1]], dim=1)
        out = self.gpt.feed(seq, cache, base[:, None] + offsets)
        action_out, pred_out = out[:, 1], out[:, 1:]
        for _ in range(p):
            # pred_out[m, j] predicts token known + j of dream rows[m], from its guesses before it
            t = pred_out.shape[1]
            pred = self.gpt.head_obs(pred_out).float().argmax(dim=-1)  # [M, t]
            at = known[rows, None] + offsets[:t]
            guess = frame[rows[:, None], at]
            agree = guess == pred
            # predictions kept: up to and including the first that differs from its guess
            kept = (agree.long().cumprod(dim=1).sum(dim=1) + 1).minimum(p - known[rows])
            frame[rows[:, None], at] = torch.where(offsets[:t] < kept[:, None], pred, guess)
            known[rows] += kept
            # cached: the last token, the action and the first known - 1 tokens of the new frame
            cache.lengths[rows] = base[rows] + 1 + known[rows]
            rows = rows[known[rows] < p]
            if len(rows) == 0:
                return frame[:, :p], action_out
            # next pass, for the unsettled dreams only: the newest known token, then the guesses
            # after it; a dream with fewer tokens left fills the pass with guesses whose outputs are
            # not read, their keys going to slots past its length that are rewritten before read
            t = p - int(known[rows].min())
            at = (known[rows] - 1)[:, None] + offsets[:t]
            slots = (cache.lengths[rows, None] + offsets[:t]).clamp(max=last_slot)
            pred_out = self.gpt.feed(frame[rows[:, None], at], cache, slots, rows)
        raise RuntimeError("a pass settled no token: speculative decoding is broken")

    @torch.no_grad()
    def reset_where(
        self, state: TokenState, mask: torch.Tensor, frames: torch.Tensor, actions: torch.Tensor
    ) -> TokenState:
        """Restart the masked dreams from new context; the others' windows and cache rows are copied,
        not recomputed (and the given ``state`` is not modified)."""
        mask = self.check_reset_mask(mask, state.batch_size, frames, actions)
        if not mask.any():
            return state
        fresh = self.init_state(frames, actions)
        new = state.clone()
        new.tokens[mask] = fresh.tokens
        new.actions[mask] = fresh.actions
        new.num_frames[mask] = fresh.num_frames
        new.cache.k[:, mask] = fresh.cache.k.to(new.cache.k.dtype)
        new.cache.v[:, mask] = fresh.cache.v.to(new.cache.v.dtype)
        new.cache.lengths[mask] = fresh.cache.lengths
        if new.last_frame is not None:
            new.last_frame[mask] = fresh.last_frame
        return new

    # ---- training -----------------------------------------------------------------------------

    def training_stages(self) -> list[str]:
        """The tokenizer first, then the transformer on the frozen tokenizer's tokens (as IRIS)."""
        return list(STAGES)

    def set_training_stage(self, stage: str) -> None:
        """``"tokenizer"``: ``training_losses`` trains only the tokenizer; ``"transformer"``: only the
        GPT, on tokens from the tokenizer computed without gradients; ``"all"`` (the default before
        any stage is set): both at once, the GPT still on gradient-free tokens."""
        if stage not in (*STAGES, "all"):
            raise ValueError(f"unknown training stage {stage!r}; the token family has {[*STAGES, 'all']}")
        self._stage = stage

    def training_losses(self, batch: Segments) -> dict[str, torch.Tensor]:
        """The current stage's losses (see :meth:`set_training_stage`): ``"loss"`` plus detached
        components."""
        losses: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=batch.frames.device)
        if self._stage in ("tokenizer", "all"):
            tok = self._tokenizer_losses(batch)
            total = total + tok.pop("tokenizer")
            losses.update(tok)
        if self._stage in ("transformer", "all"):
            wm = self._world_model_losses(batch)
            cfg = self.config
            total = total + wm["tokens"] + cfg.rew_loss_weight * (wm["reward"] + wm["termination"])
            losses.update(wm)
        return {"loss": total, **{k: v.detach() for k, v in losses.items()}}

    # _tokenizer_losses comes from FrameTokens

    def _world_model_losses(self, batch: Segments) -> dict[str, torch.Tensor]:
        """Cross-entropies of the GPT over segments of at most ``context_length`` frames.

        Each segment is shifted so that its first real frame sits at position 0 (padding before an
        episode start goes to the end, where causal attention never lets a real token see it), as a
        dream's window always starts at position 0; a segment longer than the window is cropped at
        a random offset. Frame tokens are scored where their frame is real, reward and termination
        where both frames of the transition are.
        """
        cfg = self.config
        device = batch.frames.device
        b, length = batch.actions.shape
        t = min(length + 1, cfg.context_length)  # frames per sequence
        p, block = self.tokens_per_frame, self.gpt.block_size

        mask = batch.mask
        pad = (~mask).long().cumprod(dim=1).sum(dim=1)  # leading padded frames
        extra = (mask.sum(dim=1) - t).clamp(min=0)  # real frames beyond the window
        offset = (torch.rand(b, device=device) * (extra + 1).float()).long().clamp(max=extra)
        src = pad[:, None] + offset[:, None] + torch.arange(t, device=device)  # [B, t]
        inside = src <= length
        src = src.clamp(max=length)
        rows = torch.arange(b, device=device)[:, None]
        real = mask[rows, src] & inside  # [B, t]

        tokens = torch.zeros(b, t, p, dtype=torch.long, device=device)
        with torch.no_grad():
            tokens[real] = self.encode(batch.frames[rows, src][real])
        src_a = src[:, : t - 1].clamp(max=length - 1)
        actions = batch.actions[rows, src_a].long()
        rewards = batch.rewards[rows, src_a]
        terminated = batch.terminated[rows, src_a]
        real_transition = real[:, :-1] & real[:, 1:]

        seq = self.gpt.interleave(tokens, actions)  # [B, t * block - 1]
        hidden = self.gpt(seq)
        # frame tokens: the output at position q predicts token q + 1 unless that is an action
        q = torch.arange(seq.shape[1] - 1, device=device)
        q = q[(q + 1) % block != p]
        logits = self.gpt.head_obs(hidden[:, q]).float()
        weight = real[:, (q + 1) // block].float()
        ce = F.cross_entropy(logits.flatten(0, 1), seq[:, q + 1].flatten(), reduction="none")
        token_loss = (ce * weight.flatten()).sum() / weight.sum().clamp(min=1)

        # reward and termination at the action tokens
        at = torch.arange(t - 1, device=device) * block + p
        h = hidden[:, at]
        w = real_transition.float().flatten()
        count = w.sum().clamp(min=1)
        rew_ce = F.cross_entropy(
            self.gpt.head_reward(h).float().flatten(0, 1), reward_to_class(rewards).flatten(), reduction="none"
        )
        end_ce = F.cross_entropy(
            self.gpt.head_end(h).float().flatten(0, 1), terminated.long().flatten(), reduction="none"
        )
        return {"tokens": token_loss, "reward": (rew_ce * w).sum() / count, "termination": (end_ce * w).sum() / count}
