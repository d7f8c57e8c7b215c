"""Configuration of the token (IRIS-style) world model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from neuralenvs.models.presets import (
    check_between,
    check_levels,
    check_minimum,
    check_transformer_window,
    lists_to_tuples,
    named_preset,
)


@dataclass(frozen=True)
class TokenConfig:
    """Everything that defines a token world model; saved as JSON inside its checkpoint.

    The defaults are IRIS's Atari settings (Micheli et al. 2023), i.e. the ``"paper"`` config,
    except for the tokenizer's losses: IRIS adds a perceptual (LPIPS) loss, whose network we would
    have to download, so we use L1 + L2 + an image-gradient L1 instead, and l2-normalised codes
    (see ``neuralenvs.nn.quantize``).
    """

    # how a trained model dreams, not what it learned: `neuralenvs resample` may change these
    DREAM_TIME_FIELDS: ClassVar[tuple[str, ...]] = (
        "slide_frames",
        "temperature",
        "draft_max_batch",
        "reuse_unchanged_frames",
    )

    # ---- tokenizer: a VQ autoencoder, frame -> (H / f) x (W / f) tokens, f = patch * 2^(levels - 1)
    vocab_size: int = 512  # codebook entries
    code_dim: int = 512  # codebook vector size
    normalize_codes: bool = True
    code_usage_decay: float = 0.9  # moving average of each code's use per training batch ...
    dead_code_threshold: float = 0.03  # ... below which the code is moved onto an encoder output
    tok_channels: tuple[int, ...] = (64, 64, 64, 64, 64)  # one entry per resolution level, top first
    tok_depths: tuple[int, ...] = (2, 2, 2, 2, 2)  # residual blocks per level
    tok_attention: tuple[bool, ...] = (False, False, True, True, False)  # IRIS: at 16x16 and 8x8
    tok_mid_attention: bool = True  # self-attention between the two bottom blocks
    tok_patch_size: int = 1  # >1 folds p x p pixel patches into channels first (cheaper top level)
    # the decoder also sees the frame before (its own last output in a dream): a few coarse tokens say
    # where things are, the frame before what they look like and what did not move (after Delta-IRIS)
    tok_previous_frame: bool = False
    # with it: the share of training frames decoded with the tokenizer's own rebuild of the frame
    # before (from its tokens and the frame before that), as a dream feeds back its own frames
    tok_previous_reconstructed: float = 0.0
    # residual blocks of the encoder of the frame before, per level or one number for all (None:
    # tok_depths); fewer cost less at every dreamed step, most at the top (largest) levels
    tok_previous_depth: int | tuple[int, ...] | None = None

    # ---- world model: a GPT over blocks [tokens of frame t, action t], one block per time step
    context_length: int = 20  # frames the transformer attends to (its window; IRIS: 20)
    num_context_frames: int = 1  # real frames a dream starts from (at most context_length - 1)
    slide_frames: int = 1  # frames dropped from the front of a dream's full window at once
    num_layers: int = 10
    num_heads: int = 4
    embed_dim: int = 256
    dropout: float = 0.1
    temperature: float = 1.0  # sampling temperature of the frame tokens; 0 takes the most likely
    # at temperature 0, batches of at most this many dreams guess a frame's tokens as the last
    # frame's and check the guesses in one pass (speculative decoding, the same tokens in fewer
    # passes: TokenWorldModel._greedy_frame); 0: never. On a 2-core CPU it pays up to 16 dreams
    # (about 3x at 1, 1.3x at 16) and no more from 32 on (docs/speed_levers.md)
    draft_max_batch: int = 16
    # a dream whose new frame has all the last frame's tokens keeps the last frame instead of decoding
    # it again, where the tokenizer sees the frame before (Boxing's: PSNR the same, 1.04 to 1.7x as
    # fast; docs/speed_levers.md)
    reuse_unchanged_frames: bool = True

    # ---- training (read by the trainer; see ``TokenWorldModel.training_losses``)
    segment_length: int = 19  # transitions per segment: context_length frames
    tokenizer_frames: int = 4  # frames per segment the tokenizer is trained on
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    gradient_weight: float = 0.5  # L1 between the images' horizontal/vertical differences
    commitment_weight: float = 0.25
    codebook_weight: float = 1.0
    # > 0: a patch discriminator trains beside the decoder, which also learns to fool it, with a
    # gradient this many times the pixel losses' (neuralenvs.nn.discriminator, nn.quantize): sharper
    # frames where pixel losses settle for a blur
    adversarial_weight: float = 0.0
    rew_loss_weight: float = 1.0  # reward and termination cross-entropies vs the token one

    def __post_init__(self) -> None:
        lists_to_tuples(self)
        check_levels(self, "tokenizer", "tok_channels", "tok_depths", "tok_attention")
        check_minimum(self, 1, "tok_patch_size", "segment_length", "tokenizer_frames")
        check_minimum(self, 2, "vocab_size")
        check_minimum(self, 0, "temperature", "draft_max_batch")
        check_transformer_window(self)
        check_between(self, "slide_frames", 1, self.context_length - 1, "context_length - 1")
        check_between(self, "tok_previous_reconstructed", 0.0, 1.0)
        check_minimum(self, 0, "adversarial_weight")
        if self.tok_previous_depth is not None:
            depths = self.previous_frame_depths
            if len(depths) != len(self.tok_channels) or min(depths) < 0:
                raise ValueError(
                    f"tok_previous_depth must be a number >= 0 or one per tokenizer level "
                    f"({len(self.tok_channels)}), got {self.tok_previous_depth}"
                )
        if not 0.0 <= self.code_usage_decay < 1.0:
            raise ValueError(f"code_usage_decay must be in [0, 1), got {self.code_usage_decay}")

    @property
    def previous_frame_depths(self) -> tuple[int, ...]:
        """Residual blocks per level of the encoder of the frame before."""
        depths = self.tok_depths if self.tok_previous_depth is None else self.tok_previous_depth
        return (depths,) * len(self.tok_channels) if isinstance(depths, int) else depths

    @property
    def downsampling(self) -> int:
        """Pixels per token side: a frame of H x W pixels becomes (H / f) x (W / f) tokens."""
        return self.tok_patch_size * 2 ** (len(self.tok_channels) - 1)

    @classmethod
    def named(cls, name: str) -> TokenConfig:
        """A named preset: ``"tiny"`` (unit tests), ``"small"`` (CPU-friendly), ``"paper"`` (IRIS)."""
        return named_preset(cls, PRESETS, name, "token")


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # CPU-friendly: a tokenizer on 2x2 pixel patches with one block per level, a 3-layer GPT of width
    # 128 over 8 frames. Measured on a 2-core AMD EPYC (benchmarks/dream_speed.py, whole step: 16
    # transformer calls, the window's recomputation once it is full, decoding, heads): about 200
    # dreamed transitions/s at batch 16 and 215-250 at batch 64 on one thread, 360-390 on two;
    # slide_frames=4 (recompute every 4th step) nearly doubles that at a shorter average context.
    "small": dict(
        code_dim=32,
        tok_channels=(32, 64, 64, 64),
        tok_depths=(1, 1, 1, 1),
        tok_attention=(False, False, False, False),
        tok_mid_attention=True,
        tok_patch_size=2,
        context_length=8,
        num_context_frames=4,
        num_layers=3,
        num_heads=4,
        embed_dim=128,
        segment_length=7,
        tokenizer_frames=2,
    ),
    # the smallest thing that exercises every code path, for tests
    "tiny": dict(
        vocab_size=32,
        code_dim=8,
        tok_channels=(16, 16, 16),
        tok_depths=(1, 1, 1),
        tok_attention=(False, False, False),
        tok_mid_attention=False,
        tok_patch_size=4,
        context_length=4,
        num_context_frames=2,
        num_layers=2,
        num_heads=2,
        embed_dim=16,
        dropout=0.0,
        segment_length=3,
        tokenizer_frames=2,
    ),
}
