"""DIAMOND's reward and termination model, usable by any family that dreams in pixel space.

Rewards and episode ends depend on what changed between two frames and on the action that changed
it, and sometimes on more history than two frames show (a life counter, a timer), so the model
encodes each transition ``(frame_t, action_t, frame_{t+1})`` with a CNN conditioned on the action,
runs an LSTM over the transitions, and predicts from its output two classifications:

- reward sign: 3 classes, index ``sign(r) + 1`` (so classes mean -1, 0, +1);
- termination: 2 classes (not ended, ended).

Two encoders are available. ``"conditioned"`` is DIAMOND's: the down half of a U-Net whose adaptive
group norms take the action. ``"plain"`` is a stack of strided convolutions with no normalisation,
with the action embedding joined to its features before the LSTM. On Boxing at 64x64 the score
digits are the only sign of a reward, a few pixels out of 4096. With balanced batches of single
transitions, the plain encoder separates the reward classes within about 100 steps. The
conditioned one had not found them after 200 to 300 steps for two seeds of three
(``benchmarks/reward_head.py`` measures a trained head).

``sees_next_frame=False`` drops the next frame from the input: the encoder sees ``frame_t`` and the
action, and the LSTM supplies the history. A reward is then judged from what led up to it, not from
its consequence on screen. That helps when the dream cannot draw the consequence: a small diffusion
model that blurs the punch and never redraws the score still places the boxers well enough for such
a head.

``end_lstm_dim > 0`` gives the termination head an LSTM and trunk of its own over the same encoded
transitions. The reward head's path is then untouched by what the end head learns, so an end head
can be trained onto a finished model (encoder and reward path frozen) without moving the reward
head off the calibration its training gave it. On KungFuMaster, training the shared LSTM for ends
made the reward head fire too rarely (docs/transfer_kungfumaster.md, section 13).

Frames are float ``[..., C, H, W]`` in ``[-1, 1]`` (see ``neuralenvs.world_model.frames_to_float``).
The LSTM memory is an explicit ``(h, c)`` pair of ``[B, lstm_dim]`` tensors so that a batch of dreams
can carry it in its state and restart some of them without touching the others; with an end LSTM
of its own, each holds the reward LSTM's units followed by the end LSTM's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from neuralenvs.nn.blocks import ConditionedEncoder, downsampled_size

Memory = tuple[torch.Tensor, torch.Tensor]  # (h, c), each [B, lstm_dim + end_lstm_dim]

NUM_REWARD_CLASSES = 3
NUM_END_CLASSES = 2


def reward_to_class(rewards: torch.Tensor) -> torch.Tensor:
    """Raw rewards -> sign classes {0, 1, 2} (for -1, 0, +1)."""
    return rewards.sign().long() + 1


def class_to_reward(classes: torch.Tensor) -> torch.Tensor:
    """Sign classes {0, 1, 2} -> float rewards {-1, 0, +1}."""
    return classes.float() - 1.0


def choose_classes(logits: torch.Tensor, sample: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """The most likely class of each row of ``logits[B, K]``, or one sampled from its softmax.

    Sampling happens on the generator's device (a CPU generator may drive a CUDA model), so the
    same seed gives the same classes wherever the model runs.
    """
    if not sample:
        return logits.argmax(dim=-1)
    probs = logits.float().softmax(dim=-1)
    if generator is not None:
        probs = probs.to(generator.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(logits.device)


ENCODERS = ("conditioned", "plain")


class PlainEncoder(nn.Module):
    """Strided 3x3 convolutions and SiLU, no normalisation: ``[B, in_channels, H, W] ->
    [B, channels[-1], h, w]`` with ``h = downsampled_size(H, len(channels) - 1)``, like
    :class:`ConditionedEncoder`. Each level after the first halves the resolution with its first
    convolution; ``depths`` counts the convolutions of each level."""

    def __init__(self, in_channels: int, channels: Sequence[int], depths: Sequence[int]) -> None:
        super().__init__()
        if len(channels) != len(depths):
            raise ValueError("channels and depths must have one entry per level")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 3, padding=1), nn.SiLU()]
        for i, (c, n) in enumerate(zip(channels, depths, strict=True)):
            c_prev = channels[max(0, i - 1)]
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                layers += [nn.Conv2d(c_prev if j == 0 else c, c, 3, stride=stride, padding=1), nn.SiLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RewardEndModel(nn.Module):
    """CNN over (frame, next frame) conditioned on the action, an LSTM over time, and two heads.

    Sizes default to DIAMOND's published ones (32-channel encoder with 4 levels of 2 blocks,
    128-dim action conditioning, 512-unit LSTM). ``encoder`` is ``"conditioned"`` (DIAMOND's) or
    ``"plain"`` (see the module docstring); ``end_lstm_dim > 0`` gives the termination head its own
    LSTM of that size and a trunk (``end_lstm``, ``end_trunk``), 0 lets it read the reward head's.
    """

    def __init__(
        self,
        img_channels: int,
        img_size: tuple[int, int],
        num_actions: int,
        channels: Sequence[int] = (32, 32, 32, 32),
        depths: Sequence[int] = (2, 2, 2, 2),
        cond_dim: int = 128,
        lstm_dim: int = 512,
        mid_attention: bool = True,
        encoder: str = "conditioned",
        sees_next_frame: bool = True,
        end_lstm_dim: int = 0,
    ) -> None:
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        if end_lstm_dim < 0:
            raise ValueError(f"end_lstm_dim must be >= 0 (0: the end head shares the LSTM), got {end_lstm_dim}")
        self.lstm_dim = lstm_dim
        self.end_lstm_dim = end_lstm_dim
        self.plain = encoder == "plain"
        self.sees_next_frame = sees_next_frame
        self.action_emb = nn.Embedding(num_actions, cond_dim)
        in_channels = 2 * img_channels if sees_next_frame else img_channels
        if self.plain:
            self.encoder = PlainEncoder(in_channels, channels, depths)
        else:
            self.encoder = ConditionedEncoder(in_channels, cond_dim, channels, depths, mid_attention)
        h, w = (downsampled_size(s, len(channels) - 1) for s in img_size)
        features = channels[-1] * h * w + (cond_dim if self.plain else 0)
        self.lstm = nn.LSTM(features, lstm_dim, batch_first=True)
        self.trunk = nn.Sequential(nn.Linear(lstm_dim, lstm_dim), nn.SiLU())
        self.reward_head = nn.Linear(lstm_dim, NUM_REWARD_CLASSES)
        self.end_lstm = nn.LSTM(features, end_lstm_dim, batch_first=True) if end_lstm_dim else None
        self.end_trunk = nn.Sequential(nn.Linear(end_lstm_dim, end_lstm_dim), nn.SiLU()) if end_lstm_dim else None
        self.end_head = nn.Linear(end_lstm_dim or lstm_dim, NUM_END_CLASSES)
        # added to the reward logits when dreaming (``step``), not in training: log(real class
        # frequency / trained class frequency) when training oversampled rewarded transitions, so
        # the dream's reward probabilities match the real game's (see ``correct_reward_prior``)
        self.register_buffer("reward_logit_offset", torch.zeros(NUM_REWARD_CLASSES))
        # the same for the termination logits, when training balanced "ended" against "not ended"
        self.register_buffer("end_logit_offset", torch.zeros(NUM_END_CLASSES))
        self._init_lstm()

    def _init_lstm(self) -> None:
        """Xavier input weights, orthogonal recurrent weights, forget-gate bias 1: the usual recipe
        that lets gradients through long sequences from the first update."""
        for lstm in (self.lstm, self.end_lstm):
            if lstm is None:
                continue
            for name, p in lstm.named_parameters():
                if name.startswith("weight_ih"):
                    nn.init.xavier_uniform_(p)
                elif name.startswith("weight_hh"):
                    nn.init.orthogonal_(p)
                elif name.startswith("bias"):
                    nn.init.zeros_(p)
                    if name.startswith("bias_ih"):
                        p.data[lstm.hidden_size : 2 * lstm.hidden_size].fill_(1.0)  # gates are (i, f, g, o)

    def initial_memory(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> Memory:
        """Zero ``(h, c)``: the memory at the start of a sequence."""
        p = self.reward_head.weight
        size = self.lstm_dim + self.end_lstm_dim
        z = torch.zeros(batch_size, size, device=device or p.device, dtype=dtype or p.dtype)
        return z, z.clone()

    def forward(
        self,
        frames: torch.Tensor,
        actions: torch.Tensor,
        next_frames: torch.Tensor,
        memory: Memory | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, Memory]:
        """Logits over a sequence of T transitions.

        ``frames``, ``next_frames``: float [B, T, C, H, W] (``next_frames`` unread unless
        ``sees_next_frame``); ``actions``: long [B, T]; ``memory``: the
        ``(h, c)`` before the first transition (zeros when None). Returns reward logits [B, T, 3],
        termination logits [B, T, 2] and the memory after the last transition.
        """
        b, t = actions.shape
        seen = torch.cat([frames, next_frames], dim=2) if self.sees_next_frame else frames
        seen = seen.flatten(0, 1).contiguous(memory_format=torch.channels_last)  # faster convolutions
        action = self.action_emb(actions.flatten())
        if self.plain:
            x = torch.cat([self.encoder(seen).flatten(1), action], dim=1).reshape(b, t, -1)
        else:
            x = self.encoder(seen, action).reshape(b, t, -1)
        if memory is None:
            memory = self.initial_memory(b, x.device, x.dtype)
        d = self.lstm_dim
        h0, c0 = (m[None, :, :d].contiguous() for m in memory)
        out, (h, c) = self.lstm(x, (h0, c0))
        out = self.trunk(out)
        if self.end_lstm is None:
            return self.reward_head(out), self.end_head(out), (h[0], c[0])
        end_h0, end_c0 = (m[None, :, d:].contiguous() for m in memory)
        end_out, (end_h, end_c) = self.end_lstm(x, (end_h0, end_c0))
        memory = torch.cat([h[0], end_h[0]], dim=-1), torch.cat([c[0], end_c[0]], dim=-1)
        return self.reward_head(out), self.end_head(self.end_trunk(end_out)), memory

    def step(
        self, frame: torch.Tensor, action: torch.Tensor, next_frame: torch.Tensor, memory: Memory
    ) -> tuple[torch.Tensor, torch.Tensor, Memory]:
        """One transition per row (``frame``, ``next_frame``: [B, C, H, W]; ``action``: [B]):
        reward logits [B, 3], termination logits [B, 2], and the new memory."""
        rew, end, memory = self(frame[:, None], action[:, None], next_frame[:, None], memory)
        rew = rew[:, 0] + self.reward_logit_offset.to(rew.dtype)
        return rew, end[:, 0] + self.end_logit_offset.to(end.dtype), memory

    def correct_reward_prior(self, trained: torch.Tensor, real: torch.Tensor) -> None:
        """Undo oversampling: the model was trained on reward classes with frequencies ``trained``
        [3] but the game has ``real`` [3]; Bayes' rule shifts each class's logit by
        ``log(real / trained)`` (a prior correction; the learned likelihood is kept)."""
        self.reward_logit_offset.copy_(prior_offset(trained, real, NUM_REWARD_CLASSES))

    def correct_end_prior(self, real_end_rate: float) -> None:
        """Undo ``balance_ends``: training saw "ended" as often as "not ended", the game ends an
        episode at a share ``real_end_rate`` of its steps."""
        real = torch.tensor([1.0 - real_end_rate, real_end_rate])
        self.end_logit_offset.copy_(prior_offset(torch.ones(NUM_END_CLASSES), real, NUM_END_CLASSES))

    def losses(
        self,
        frames: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        terminated: torch.Tensor,
        mask: torch.Tensor,
        balance_rewards: bool = False,
        balance_ends: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Cross-entropy losses over segments, the LSTM starting from zero memory at each segment's
        first real frame, as it does at a dream's start (the padding at a segment's front is moved
        behind it, where nothing reads it).

        ``frames``: float [B, T + 1, C, H, W]; ``actions``, ``rewards`` (raw), ``terminated``: [B, T];
        ``mask``: bool [B, T + 1], True on real frames. A transition counts only when both of its
        frames are real. Returns ``{"reward", "termination"}``, each a mean over the counted transitions
        (zero when none count). ``balance_rewards`` weighs the reward loss so that every reward class
        present in the batch carries the same total weight (a rare class is otherwise outvoted by
        "no reward"); the model then learns as if the classes were equally frequent, which
        ``correct_reward_prior`` with uniform ``trained`` frequencies undoes at dream time.
        ``balance_ends`` does the same for episode ends (undone by ``correct_end_prior``): a game
        ends a life once in hundreds of steps, and an unweighted head learns never to end one.
        """
        frames, actions, rewards, terminated, mask = start_at_first_real_frame(
            mask, frames, actions, rewards, terminated
        )
        rew_logits, end_logits, _ = self(frames[:, :-1], actions, frames[:, 1:])
        valid = mask[:, :-1] & mask[:, 1:]
        count = valid.sum().clamp(min=1)
        rew_loss = F.cross_entropy(
            rew_logits.flatten(0, 1).float(), reward_to_class(rewards).flatten(), reduction="none"
        )
        end_loss = F.cross_entropy(end_logits.flatten(0, 1).float(), terminated.long().flatten(), reduction="none")
        w = valid.flatten().float()
        rew_w = balanced_weights(w, reward_to_class(rewards).flatten(), NUM_REWARD_CLASSES) if balance_rewards else w
        end_w = balanced_weights(w, terminated.long().flatten(), NUM_END_CLASSES) if balance_ends else w
        return {"reward": (rew_loss * rew_w).sum() / count, "termination": (end_loss * end_w).sum() / count}


def start_at_first_real_frame(
    mask: torch.Tensor, frames: torch.Tensor, *steps: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Shift each segment left by its padded frames (``mask``: bool [B, T + 1], False on padding,
    which only ever comes first) so its real part starts at position 0; the padding wraps round to
    the end. ``frames`` is [B, T + 1, ...], each of ``steps`` [B, T]. Returns frames, the steps and
    the mask, shifted alike.

    A dream's head starts from zero memory on its first real frame. Run over the black padding
    first, the LSTM would learn a different start: one that no dream ever has, so that a head
    trained on segments cut just before an episode's end would meet the end with a memory unlike a
    freshly started dream's (``docs/transfer_crazyclimber.md``, section 15)."""
    pad = (~mask).long().cumprod(dim=1).sum(dim=1)  # leading padded frames per segment
    if not pad.any():
        return frames, *steps, mask

    def shifted(x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        index = (torch.arange(length, device=x.device)[None] + pad[:, None]) % length
        return x.gather(1, index.view(*index.shape, *[1] * (x.dim() - 2)).expand_as(x))

    return shifted(frames), *(shifted(x) for x in steps), shifted(mask)


def balanced_weights(w: torch.Tensor, classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Reweigh per-transition weights ``w[N]`` so that every class present carries the same total
    weight, and the total stays ``w.sum()``."""
    per_class = torch.zeros(num_classes, device=w.device).index_add_(0, classes, w)
    present = (per_class > 0).sum().clamp(min=1)
    return w * w.sum() / (present * per_class.clamp(min=1)[classes])


def prior_offset(trained: torch.Tensor, real: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``log(real / trained)`` of normalised class frequencies: the logit shift that turns a
    classifier trained at frequencies ``trained`` into one for frequencies ``real``."""
    trained, real = (torch.as_tensor(x, dtype=torch.float64).clamp(min=1e-6) for x in (trained, real))
    if trained.shape != (num_classes,) or real.shape != (num_classes,):
        raise ValueError(f"class frequencies must have shape [{num_classes}]")
    return ((real / real.sum()).log() - (trained / trained.sum()).log()).float()
