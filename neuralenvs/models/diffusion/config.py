"""Configuration of the diffusion (DIAMOND-style) world model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from neuralenvs.models.presets import check_levels, check_minimum, lists_to_tuples, named_preset
from neuralenvs.nn.reward_end import ENCODERS

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DiffusionConfig:
    """Everything that defines a diffusion world model; saved as JSON inside its checkpoint.

    The defaults are DIAMOND's Atari settings (Alonso et al. 2024), i.e. the ``"paper"`` config.
    """

    # how a trained model dreams, not what it learned: `neuralenvs resample` may change these
    DREAM_TIME_FIELDS: ClassVar[tuple[str, ...]] = (
        "sampler", "num_denoising_steps", "sample_sigma_min", "sample_sigma_max", "rho", "requantize_frames",
        "drop_change_levels", "dream_context_noise_level",
    )

    # context: the denoiser sees this many past frames and the actions taken at them
    num_context_frames: int = 4

    # denoiser U-Net (one entry per resolution level)
    channels: tuple[int, ...] = (64, 64, 64, 64)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    attention: tuple[bool, ...] = (False, False, False, False)
    mid_attention: bool = True  # self-attention in the two bottom blocks
    cond_dim: int = 256  # noise-level + action conditioning vector
    patch_size: int = 1  # >1 folds p x p pixel patches into channels before the U-Net (cheaper)
    # True: the denoiser dreams the change from the last context frame instead of the frame itself
    # (see ``Denoiser``); set sigma_data to the std of that change in the game's frames
    predict_residual: bool = False

    # EDM (Karras et al. 2022) as DIAMOND uses it
    sigma_data: float = 0.5
    sigma_offset_noise: float = 0.3  # per-channel constant noise added in training (and accounted for)
    train_sigma_loc: float = -0.4  # log-normal training noise: log(sigma) ~ N(loc, scale^2)
    train_sigma_scale: float = 1.2
    train_sigma_min: float = 2e-3
    train_sigma_max: float = 20.0

    # sampler used to dream
    sampler: str = "euler"  # "euler" or "heun"
    num_denoising_steps: int = 3
    sample_sigma_min: float = 2e-3
    sample_sigma_max: float = 5.0
    rho: float = 7.0  # Karras schedule curvature
    # True: each dreamed frame is rounded to the 8-bit grid (as the real frames the denoiser was
    # trained on are) before it becomes context for the next one, so error below one grey level
    # cannot pile up over a long dream
    requantize_frames: bool = False
    # >0: a dreamed pixel whose colour moved from the last frame by at most this many 8-bit levels
    # in every channel keeps its last colour. An Atari screen is still almost everywhere (under 1%
    # of 64x64 pixels change per step, four in five of those by more than 16 levels), but a one-step
    # residual dream nudges a fifth to a third of its pixels by one level each step, and those nudges
    # random-walk into the grid-patterned noise that a long dream dissolves into. Too high a cut
    # stops the dream: measure with benchmarks/pixel_changes.py (docs/horizon.md)
    drop_change_levels: int = 0

    # reward / termination model
    rew_channels: tuple[int, ...] = (32, 32, 32, 32)
    rew_depths: tuple[int, ...] = (2, 2, 2, 2)
    rew_cond_dim: int = 128
    rew_lstm_dim: int = 512
    rew_mid_attention: bool = True
    # "conditioned" (DIAMOND's U-Net half with action-conditioned norms) or "plain" (strided
    # convolutions, the action joined before the LSTM), which finds rare rewards far sooner
    rew_encoder: str = "conditioned"
    # False: reward and termination are judged from the frames up to the action and the action
    # itself, not from the next frame (for dreams too blurry to show a reward's consequence)
    rew_sees_next_frame: bool = True
    # >0: the termination head reads an LSTM of this size of its own instead of the reward head's, so
    # an end head can be trained onto a finished model without moving its reward head
    rew_end_lstm_dim: int = 0

    # training (read by the trainer; see ``DiffusionWorldModel.training_losses``)
    segment_length: int = 18  # transitions per segment: K - 1 burn-in + 15 (DIAMOND's dream horizon)
    denoising_targets: int = 1  # frames per segment the denoiser is trained to predict
    # >0: before each denoising target the model dreams 0 to this many frames itself (no gradient
    # through them), drawn uniformly per target, from the real frames before them, and its context
    # ends in those dreamed frames instead of the real ones, so the denoiser learns to go on from its
    # own frames as it must in a dream (exposure bias). Above num_context_frames the whole context is
    # dreamed, from further back: the errors of a longer dream are what it learns to take out
    dreamed_context_frames: int = 0
    # >0: each denoising target's context frames get Gaussian noise of a std drawn uniformly from
    # [0, context_noise_max] per target (GameNGen's context augmentation, without telling the
    # network the level). With predict_residual the noisy last frame is also what the change is
    # dreamed from, so the denoiser learns to take such noise back out rather than build on it,
    # which is how a long dream's small errors otherwise pile up into noise
    context_noise_max: float = 0.0
    # >= 2: the context noise std is instead one of this many evenly spaced levels from 0 to
    # context_noise_max, drawn per target, and the denoiser is told which (an embedding added to its
    # conditioning, as GameNGen does): it can then take noise out where told to without doing so
    # where the context is clean. 0: not told
    context_noise_levels: int = 0
    # with context_noise_levels: the level a dream's context gets (noise of that std added to it,
    # and the denoiser told so) before every dreamed frame; 0 dreams from the clean context
    dream_context_noise_level: int = 0
    # >0: each denoising target's context frames are faded toward the batch's per-pixel median
    # frame (a game's still background, where the background does not scroll) by a factor drawn
    # uniformly from [1 - context_fade_max, 1] per target, while the target stays the real frame.
    # A one-step dream's sprites come out a little fainter when it is unsure where they go, the next
    # frame builds on the fainter one, and a long dream loses them (Boxing's white boxer); trained so,
    # the denoiser learns to draw a faint sprite back at full strength
    context_fade_max: float = 0.0
    # distillation only (``DiffusionWorldModel.distillation_losses``): the weight of the real frames'
    # denoising loss beside the teacher's. Copying the teacher alone leaves a student behind it at one
    # step; real frames alone teach a one-step dream the mean of what may come, a still stage that
    # never brings a fighter on (docs/lean_denoiser.md)
    distill_real_weight: float = 0.0
    # distillation only: both models see each context with the training noise above added (and are
    # told its level), so the student learns how the teacher takes a dream's small errors back out
    distill_noisy_context: bool = False
    rew_loss_weight: float = 1.0
    # every reward class weighs the same in the reward loss (best with the trainer's reward_fraction,
    # so the rare classes are in the batches at all); the trainer then corrects the dream-time
    # prior from equal class frequencies to the real ones
    rew_balance_classes: bool = False
    # "ended" weighs as much as "not ended" in the termination loss; the dream-time prior is then
    # corrected to the training episodes' real end rate (``DiffusionWorldModel.prepare_stage``)
    rew_balance_ends: bool = False

    def __post_init__(self) -> None:
        lists_to_tuples(self)
        k = self.num_context_frames
        if k < 1:
            raise ValueError(f"num_context_frames must be >= 1, got {k}")
        check_levels(self, "U-Net", "channels", "depths", "attention")
        check_levels(self, "reward encoder", "rew_channels", "rew_depths")
        if self.rew_encoder not in ENCODERS:
            raise ValueError(f"rew_encoder must be one of {ENCODERS}, got {self.rew_encoder!r}")
        if self.sampler not in ("euler", "heun"):
            raise ValueError(f"sampler must be 'euler' or 'heun', got {self.sampler!r}")
        check_minimum(self, 1, "patch_size", "num_denoising_steps")
        check_minimum(self, 0, "rew_end_lstm_dim")
        if self.segment_length < k:
            raise ValueError(f"segment_length must be >= num_context_frames ({k}) to train the denoiser")
        if not 1 <= self.denoising_targets <= self.segment_length - k + 1:
            raise ValueError("denoising_targets must be between 1 and segment_length - num_context_frames + 1")
        if self.drop_change_levels < 0:
            raise ValueError(f"drop_change_levels must be >= 0, got {self.drop_change_levels}")
        if self.distill_real_weight < 0:
            raise ValueError(f"distill_real_weight must be >= 0, got {self.distill_real_weight}")
        if self.context_noise_max < 0:
            raise ValueError(f"context_noise_max must be >= 0, got {self.context_noise_max}")
        if not 0 <= self.context_fade_max <= 1:
            raise ValueError(f"context_fade_max must be between 0 and 1, got {self.context_fade_max}")
        if self.context_noise_levels == 1 or self.context_noise_levels < 0:
            raise ValueError(f"context_noise_levels must be 0 (not told) or >= 2, got {self.context_noise_levels}")
        top, level = max(self.context_noise_levels - 1, 0), self.dream_context_noise_level
        if not 0 <= level <= top:
            raise ValueError(f"dream_context_noise_level must be between 0 and {top}, got {level}")
        if self.context_noise_levels and self.context_noise_max <= 0:
            raise ValueError("context_noise_levels needs context_noise_max > 0")
        d = self.dreamed_context_frames
        if not 0 <= d <= self.segment_length - k:
            raise ValueError(
                f"dreamed_context_frames must be between 0 and segment_length - num_context_frames ="
                f" {self.segment_length - k} (a dream needs real frames to start from), got {d}"
            )

    def context_noise_std(self, level: int | torch.Tensor) -> float | torch.Tensor:
        """The noise std of a context noise level (with ``context_noise_levels``)."""
        return level * self.context_noise_max / (self.context_noise_levels - 1)

    @classmethod
    def named(cls, name: str) -> DiffusionConfig:
        """A named preset: ``"tiny"`` (unit tests), ``"small"`` (CPU-friendly), ``"paper"`` (DIAMOND)."""
        return named_preset(cls, PRESETS, name, "diffusion")


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # CPU-friendly: about 150 dreamed transitions/s at batch 16 on one core of a 2-core CPU (more on
    # two), reward model included. The U-Net works on 2x2 pixel patches (lossless space-to-depth),
    # so its top level runs at half resolution; 2 Euler steps instead of DIAMOND's 3.
    "small": dict(
        channels=(32, 32, 64, 64),
        depths=(1, 1, 2, 2),
        attention=(False, False, False, False),
        mid_attention=True,
        cond_dim=128,
        patch_size=2,
        num_denoising_steps=2,
        rew_channels=(16, 16, 32, 32),
        rew_depths=(1, 1, 1, 1),
        rew_cond_dim=64,
        rew_lstm_dim=256,
        rew_mid_attention=False,
        # On Boxing, DIAMOND's conditioned encoder trained on real frames never made a reward its
        # most likely class. The plain encoder, trained with balanced classes, found the rewards
        # within 600 steps. Most of a small dream's frames are too blurry to show a punch or the
        # score, so the head judges a reward from the frames before it and from the action
        # (benchmarks/reward_head.py, checkpoints/boxing-diffusion/README.md).
        rew_encoder="plain",
        rew_sees_next_frame=False,
        rew_balance_classes=True,
    ),
    # the smallest thing that exercises every code path, for tests
    "tiny": dict(
        num_context_frames=2,
        channels=(8, 16),
        depths=(1, 1),
        attention=(False, False),
        mid_attention=True,
        cond_dim=16,
        num_denoising_steps=2,
        rew_channels=(8, 8, 8, 8),
        rew_depths=(1, 1, 1, 1),
        rew_cond_dim=8,
        rew_lstm_dim=16,
        rew_mid_attention=False,
        segment_length=4,
        denoising_targets=2,
    ),
}

# What the CrazyClimber and Seaquest dreams were trained with on 2 CPU cores: "small" with one block
# per level and no attention, dreaming the change from the last frame (predict_residual).
# Frame-to-frame changes in those games have a std of about 0.05 in [-1, 1] units (2% of the pixels
# change), so sigma_data and the noise levels are 10x below DIAMOND's. Episode ends train on
# balanced classes too.
# The noise levels decide whether the dream listens to the action. Trained at log(sigma) ~ N(-2.7,
# 1.2^2) and sampled from sigma 0.5, the first CrazyClimber dream moved the climber 0.04x as much
# as the real game does when the action changes (benchmarks/action_response.py): almost no training
# step saw the high noise at which the pose is decided, so the denoiser learned to copy the last
# frame's pose. Training centred higher and wider, and sampling from 30x sigma_data, puts the
# action back in charge (docs/transfer_crazyclimber.md, section 4). Four frames per segment are denoised, so
# each step trains on the extra noise levels at little more cost. One Euler step dreams best: on
# the CrazyClimber dream, 43.8/35.4/29.8/24.5 dB at steps 1/5/15/50 against 41.1/33.0/27.0/19.7 with
# three, and no noise piling up (sharpness ratio 1.03 at step 50 against 1.83), at a third of the cost.
PRESETS["cpu-residual"] = {
    **PRESETS["small"],
    "depths": (1, 1, 1, 1),
    "mid_attention": False,
    "predict_residual": True,
    "sigma_data": 0.05,
    "sigma_offset_noise": 0.02,
    "train_sigma_loc": -1.2,
    "train_sigma_scale": 1.5,
    "sample_sigma_max": 1.5,
    "num_denoising_steps": 1,
    "denoising_targets": 4,
    "rew_balance_ends": True,
    "segment_length": 10,
}

# cpu-residual trained to go on from its own frames: the CrazyClimber cpu-residual dream moves the
# climber as far as the game does when its context is real (teacher-forced), but after a few of its
# own frames the climber stops (docs/transfer_crazyclimber.md, section 5). Ending each training context in up to
# two dreamed frames costs one extra no-gradient denoiser call per target on average.
PRESETS["cpu-dreamed"] = {**PRESETS["cpu-residual"], "dreamed_context_frames": 2}

# cpu-dreamed with an end path of its own as large as the reward head's, so that an end head can be
# trained onto a finished cpu-dreamed model without moving its reward head: fine-tuned from one, the
# end path starts as a copy of the shared LSTM and trunk (docs/transfer_kungfumaster.md, section 14).
PRESETS["cpu-dreamed-end-path"] = {**PRESETS["cpu-dreamed"], "rew_end_lstm_dim": PRESETS["small"]["rew_lstm_dim"]}
