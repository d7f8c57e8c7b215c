"""Configuration of the Genie-style (latent-action) world model."""

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
class GenieConfig:
    """Everything that defines a Genie-style world model; saved as JSON inside its checkpoint.

    Three parts, trained one after the other from unlabelled video (Bruce et al. 2024), then small
    heads from a few labelled steps:

    - a *tokenizer*: a convolutional VQ autoencoder, one token per ``downsampling x downsampling``
      pixel patch (Genie uses an ST-ViViT; a per-frame CNN is much cheaper on a CPU and its tokens
      are what the dynamics attends across time anyway);
    - a *latent action model* (LAM): an encoder of ``(past frames, next frame)`` quantised (FSQ) to
      one of ``n_latent`` latent actions, and a decoder that must rebuild the next frame from the
      past frames and that latent action alone, so it has to say what changed;
    - a *dynamics* model: a spatio-temporal transformer that fills in the next frame's tokens by
      MaskGIT, given the past frames' tokens and the latent action.

    The ``"paper"`` preset keeps Genie's design constants (8 latent actions, 16 frames of context,
    a 1024-code tokenizer, 25 MaskGIT steps) at a size one GPU trains (65M parameters), not
    Genie's 11B.
    """

    # how a trained model dreams, not what it learned: `neuralenvs resample` may change these
    DREAM_TIME_FIELDS: ClassVar[tuple[str, ...]] = ("maskgit_steps", "temperature", "sample_action_map", "slide_frames")

    # ---- tokenizer: frame -> (H / f) x (W / f) tokens, f = tok_patch_size * 2^(levels - 1)
    vocab_size: int = 1024
    code_dim: int = 32
    normalize_codes: bool = True  # l2-normalised codes (see neuralenvs.nn.quantize)
    code_usage_decay: float = 0.9
    dead_code_threshold: float = 0.03  # vectors per batch below which a code is moved
    tok_channels: tuple[int, ...] = (64, 128, 128)  # one entry per resolution level, top first
    tok_depths: tuple[int, ...] = (2, 2, 2)
    tok_patch_size: int = 4  # p x p pixels folded into channels before the first convolution
    tok_previous_frame: bool = False  # the decoder also sees the frame before (neuralenvs.nn.previous_frame)
    # with it: the share of training frames decoded with the tokenizer's own rebuild of the frame
    # before (from its tokens and the frame before that), as a dream feeds back its own frames
    tok_previous_reconstructed: float = 0.0

    # ---- latent action model
    n_latent: int = 8  # latent actions (Genie: 8)
    lam_context: int = 2  # past frames the LAM sees besides the next one
    lam_patch_size: int = 2
    lam_channels: tuple[int, ...] = (64, 128, 128, 128)
    lam_depths: tuple[int, ...] = (1, 1, 1, 1)
    lam_center_decay: float = 0.9  # collapse guard: moving median per code dimension (latent_action.py)
    lam_transitions: int = 0  # transitions per segment the LAM trains on (0: every real one)

    # ---- dynamics: a spatio-temporal transformer with MaskGIT sampling
    context_length: int = 16  # frames the dynamics attends to, the one being dreamed included
    num_context_frames: int = 4  # real frames a dream starts from (at most context_length - 1)
    num_layers: int = 12
    num_heads: int = 8
    embed_dim: int = 512
    dropout: float = 0.1
    maskgit_steps: int = 25  # refinement passes per dreamed frame (Genie: 25)
    temperature: float = 1.0  # token sampling temperature; 0 takes the most likely token
    sample_action_map: bool = True  # dream-time real action -> latent: sample the fitted map, or argmax
    # frames a full window drops at once: 1 recomputes the window's keys and values at every step;
    # more lets the window grow again frame by frame, each new frame's keys and values added to the
    # others', at a shorter context on average (at most context_length - num_context_frames, so that
    # a restarted dream's real frames always fit before the frame it dreams)
    slide_frames: int = 1

    # ---- reward and termination heads, on the dynamics' features of the dreamed frame
    head_hidden: int = 256

    # ---- training (read by the model's training_losses and by the trainer)
    tokenizer_frames: int = 4  # frames per segment the tokenizer trains on
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    gradient_weight: float = 0.5
    commitment_weight: float = 0.25
    codebook_weight: float = 1.0
    # > 0: a patch discriminator trains beside the decoder, which also learns to fool it, with a
    # gradient this many times the pixel losses' (neuralenvs.nn.discriminator, nn.quantize): sharper
    # frames where pixel losses settle for a blur
    adversarial_weight: float = 0.0

    def __post_init__(self) -> None:
        lists_to_tuples(self)
        check_levels(self, "tokenizer", "tok_channels", "tok_depths")
        check_levels(self, "LAM", "lam_channels", "lam_depths")
        check_minimum(self, 1, "tok_patch_size", "lam_patch_size", "lam_context", "maskgit_steps", "tokenizer_frames")
        check_minimum(self, 1, "n_latent")
        check_minimum(self, 2, "vocab_size")
        check_minimum(self, 0, "temperature")
        check_transformer_window(self)
        high = self.context_length - self.num_context_frames
        check_between(self, "slide_frames", 1, high, "context_length - num_context_frames")
        check_between(self, "tok_previous_reconstructed", 0.0, 1.0)
        check_minimum(self, 0, "adversarial_weight")
        if self.lam_transitions < 0:
            raise ValueError(f"lam_transitions must be >= 0 (0: all), got {self.lam_transitions}")

    @property
    def downsampling(self) -> int:
        """Pixels per token side."""
        return self.tok_patch_size * 2 ** (len(self.tok_channels) - 1)

    @property
    def segment_length(self) -> int:
        """Transitions per training segment: a full window of ``context_length`` frames."""
        return self.context_length - 1

    @classmethod
    def named(cls, name: str) -> GenieConfig:
        """A named preset: ``"tiny"`` (unit tests), ``"small"`` (CPU), ``"paper"`` (Genie's design)."""
        return named_preset(cls, PRESETS, name, "genie")


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # CPU-friendly, for 64x64 frames: 16 tokens per frame (16x16-pixel patches), a 4-layer,
    # 128-wide ST transformer over a 4-frame window, 4 MaskGIT steps. 16 tokens rather than 64
    # (8x8 patches) because every MaskGIT pass runs the transformer over the frame's tokens: 64
    # tokens make each pass 4x dearer, and the token family dreams Boxing at 16 tokens per frame
    # within 1.5 dB of repeating the last frame at step 1 and above it from step 5. Measured on a
    # 2-core AMD EPYC, one torch thread (benchmarks/dream_speed.py): 143 dreamed transitions/s at
    # batch 16. Trains in about 22 minutes there with --steps 2000 --lr 1e-3 (see the README).
    "small": dict(
        vocab_size=512,
        code_dim=32,
        tok_channels=(32, 64, 64),
        tok_depths=(1, 1, 1),
        tok_patch_size=4,
        lam_context=1,
        lam_patch_size=4,
        lam_channels=(32, 64, 64),
        lam_depths=(1, 1, 1),
        lam_transitions=1,
        context_length=4,
        num_context_frames=2,
        num_layers=4,
        num_heads=4,
        embed_dim=128,
        dropout=0.0,
        maskgit_steps=4,
        head_hidden=128,
        tokenizer_frames=1,
    ),
    # the smallest thing that exercises every code path, for tests
    "tiny": dict(
        vocab_size=32,
        code_dim=8,
        tok_channels=(8, 16, 16),
        tok_depths=(1, 1, 1),
        tok_patch_size=4,
        n_latent=4,
        lam_context=1,
        lam_patch_size=4,
        lam_channels=(8, 16),
        lam_depths=(1, 1),
        context_length=4,
        num_context_frames=2,
        num_layers=2,
        num_heads=2,
        embed_dim=16,
        dropout=0.0,
        maskgit_steps=2,
        head_hidden=16,
        tokenizer_frames=2,
    ),
}
