"""The token (IRIS-style) world model: config, tokenizer, a decoder that sees the frame before, the GPT's
losses, training stages, trainer round trip (how it dreams: test_token_dreaming.py)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import random_context as context
from conftest import randomize
from token_toy import OBS, make_model, segments

from neuralenvs.models import build_model
from neuralenvs.models.token import TokenConfig
from neuralenvs.world_model import Segments, frames_to_float

pytestmark = pytest.mark.usefixtures("single_torch_thread")


# ---- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny", "small", "paper"])
def test_config_json_round_trip(name):
    cfg = TokenConfig.named(name)
    again = TokenConfig(**json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert again == cfg and isinstance(again.tok_channels, tuple)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown token config"):
        TokenConfig.named("huge")
    with pytest.raises(ValueError, match="num_context_frames"):
        TokenConfig(context_length=4, num_context_frames=4)
    with pytest.raises(ValueError, match="slide_frames"):
        TokenConfig(context_length=4, slide_frames=4)
    with pytest.raises(ValueError, match="draft_max_batch"):
        TokenConfig(draft_max_batch=-1)
    with pytest.raises(ValueError, match="one entry per tokenizer level"):
        TokenConfig(tok_channels=(8, 8), tok_depths=(1,), tok_attention=(False,))
    with pytest.raises(ValueError, match="downsampling divides"):
        build_model("token", "paper", (60, 64, 3), 4)


def test_paper_sizes_match_iris():
    model = build_model("token", "paper", OBS, 18)
    cfg = model.config
    assert model.tokens_per_frame == 16 and cfg.vocab_size == 512  # 4x4 tokens from a 512-code book
    assert (cfg.num_layers, cfg.num_heads, cfg.embed_dim, cfg.context_length) == (10, 4, 256, 20)
    assert model.gpt.max_tokens == 20 * 17
    small = build_model("token", "small", OBS, 18)
    assert small.tokens_per_frame == 16
    assert sum(p.numel() for p in small.parameters()) * 2 < 20e6  # bytes at fp16, under 25 MB


# ---- tokenizer ------------------------------------------------------------------------------------


def tiles(n: int, seed: int = 0) -> torch.Tensor:
    """Frames uint8 [n, 64, 64, 3] made of 16x16 tiles in 4 colours: one tile per token."""
    g = torch.Generator().manual_seed(seed)
    palette = torch.tensor([[0, 0, 0], [255, 0, 0], [0, 200, 255], [255, 255, 255]], dtype=torch.uint8)
    index = torch.randint(0, 4, (n, 4, 4), generator=g)
    return palette[index].repeat_interleave(16, 1).repeat_interleave(16, 2)


def test_tokenizer_shapes_and_reconstruction_improves():
    model = make_model()
    frames = tiles(16)
    tokens = model.encode(frames.reshape(8, 2, *OBS))
    assert tokens.shape == (8, 2, 16) and tokens.dtype == torch.long
    assert 0 <= int(tokens.min()) and int(tokens.max()) < model.config.vocab_size
    decoded = model.decode(tokens)
    assert decoded.shape == (8, 2, *OBS) and decoded.dtype == torch.uint8

    model.train()
    model.set_training_stage("tokenizer")
    batch = Segments(
        frames.reshape(8, 2, *OBS),
        torch.zeros(8, 1, dtype=torch.long),
        torch.zeros(8, 1),
        torch.zeros(8, 1, dtype=torch.bool),
        torch.zeros(8, 1, dtype=torch.bool),
        torch.ones(8, 2, dtype=torch.bool),
    )
    opt = torch.optim.Adam(model.tokenizer.parameters(), lr=3e-3)
    x = frames_to_float(frames)
    with torch.no_grad():
        first = (model.tokenizer(x)[0] - x).abs().mean().item()
    for _ in range(30):
        losses = model.training_losses(batch)  # both frames of each segment: every frame, every step
        assert {"loss", "recon_l1", "recon_l2", "gradient", "codebook", "commitment", "perplexity"} <= set(losses)
        assert all(torch.isfinite(v) for v in losses.values())
        assert "tokens" not in losses  # the GPT is not trained in this stage
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    with torch.no_grad():
        recon, quantized = model.tokenizer(x)
        assert (recon - x).abs().mean().item() < 0.7 * first
        assert quantized.perplexity > 4  # 4 colours: the codebook has not collapsed onto fewer codes


# ---- a decoder that sees the frame before -----------------------------------------------------------

# a tokenizer with 16 tokens a frame whose top level keeps every pixel of its 2x2 patches
SEES_BEFORE = dict(tok_patch_size=2, tok_channels=(16, 16, 16, 16), tok_depths=(1, 1, 1, 1),
                   tok_attention=(False,) * 4, tokenizer_frames=1)


def detailed_pairs(n: int, seed: int) -> torch.Tensor:
    """uint8 [n, 2, 64, 64, 3]: a background of 4x4-pixel blocks (more detail than 16 tokens of a
    tiny codebook hold), then the same frame with one 16x16 tile repainted."""
    g = torch.Generator().manual_seed(seed)
    before = torch.randint(0, 256, (n, 16, 16, 3), generator=g, dtype=torch.uint8)
    before = before.repeat_interleave(4, 1).repeat_interleave(4, 2)
    after = before.clone()
    for i in range(n):
        r, c = torch.randint(0, 4, (2,), generator=g).tolist()
        colour = torch.randint(0, 256, (3,), generator=g, dtype=torch.uint8)
        after[i, 16 * r : 16 * r + 16, 16 * c : 16 * c + 16] = colour
    return torch.stack([before, after], dim=1)


def pair_segments(frames: torch.Tensor) -> Segments:
    n = frames.shape[0]
    no = torch.zeros(n, 1, dtype=torch.bool)
    real = torch.ones(n, 2, dtype=torch.bool)
    return Segments(frames, torch.zeros(n, 1, dtype=torch.long), torch.zeros(n, 1), no, no, real)


def test_a_decoder_that_sees_the_frame_before_starts_as_the_one_that_does_not():
    plain = make_model(**SEES_BEFORE)
    sees = make_model(tok_previous_frame=True, **SEES_BEFORE)
    assert not plain.tokenizer.sees_previous_frame and sees.tokenizer.sees_previous_frame
    missing, unexpected = sees.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(name.startswith("tokenizer.previous.") for name in missing)
    frames = detailed_pairs(4, seed=0)
    tokens = plain.encode(frames[:, 1])
    # its projections start at zero: whatever the frame before, it decodes as the plain one
    assert torch.equal(sees.decode(tokens, frames[:, 0]), plain.decode(tokens))
    assert torch.equal(sees.decode(tokens, torch.zeros_like(frames[:, 0])), plain.decode(tokens))
    with pytest.raises(ValueError, match="frame before"):
        sees.decode(tokens)
    randomize(sees.tokenizer.previous)
    assert not torch.equal(sees.decode(tokens, frames[:, 0]), sees.decode(tokens, frames[:, 1]))


def test_a_decoder_may_train_on_its_own_rebuild_of_the_frame_before():
    """``tok_previous_reconstructed``: frames with two real frames before them are decoded with the
    tokenizer's rebuild of the one before (as a dream feeds back its frames); others as they were."""
    def losses(share: float, frames: torch.Tensor) -> torch.Tensor:
        model = make_model(tok_previous_frame=True, tok_previous_reconstructed=share, randomized=True,
                           **{**SEES_BEFORE, "tokenizer_frames": 3}).train()
        model.set_training_stage("tokenizer")
        n, t = frames.shape[:2]
        no = torch.zeros(n, t - 1, dtype=torch.bool)
        batch = Segments(frames, torch.zeros(n, t - 1, dtype=torch.long), torch.zeros(n, t - 1), no, no,
                         torch.ones(n, t, dtype=torch.bool))
        torch.manual_seed(0)
        with torch.no_grad():
            return model.training_losses(batch)["loss"]

    three = torch.cat([detailed_pairs(2, seed=1), detailed_pairs(2, seed=2)[:, 1:]], dim=1)  # [2, 3, ...]
    assert not torch.equal(losses(1.0, three), losses(0.0, three))
    assert torch.equal(losses(1.0, three[:, 1:]), losses(0.0, three[:, 1:]))  # no frame two back: no rebuild
    with pytest.raises(ValueError, match="tok_previous_reconstructed"):
        make_model(tok_previous_reconstructed=1.5)


def test_a_decoder_that_sees_the_frame_before_keeps_what_did_not_move():
    """Trained alike on the same pairs, the tokenizer whose decoder sees the frame before
    reconstructs the detail that 16 tokens cannot hold; the plain one blurs it."""
    errors = {}
    for sees in (False, True):
        model = make_model(tok_previous_frame=sees, **SEES_BEFORE).train()
        model.set_training_stage("tokenizer")
        opt = torch.optim.Adam(model.tokenizer.parameters(), lr=3e-3)
        for step in range(80):
            loss = model.training_losses(pair_segments(detailed_pairs(8, seed=step)))["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        test = detailed_pairs(16, seed=999)
        with torch.no_grad():
            decoded = model.decode(model.encode(test[:, 1]), test[:, 0])
        errors[sees] = (decoded.float() - test[:, 1].float()).abs().mean().item()
    assert errors[True] < 0.5 * errors[False], errors


# ---- GPT --------------------------------------------------------------------------------------------


def test_gpt_loss_falls_on_a_fixed_batch():
    model = make_model().train()
    model.set_training_stage("transformer")
    batch = segments(4, model, pad=1)
    opt = torch.optim.Adam(model.gpt.parameters(), lr=1e-2)
    first = None
    for _ in range(12):
        losses = model.training_losses(batch)
        assert {"loss", "tokens", "reward", "termination"} <= set(losses) and "recon_l1" not in losses
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        first = losses["loss"].item() if first is None else first
    with torch.no_grad():
        assert model.training_losses(batch)["loss"].item() < 0.75 * first


def test_padding_is_moved_out_of_the_way():
    """A segment with padded frames before its episode start trains on exactly what the segment
    of its real frames alone does (the real frames start at position 0 either way)."""
    model = make_model(randomized=True)
    model.set_training_stage("transformer")
    padded = segments(3, model, pad=2)
    real = Segments(
        padded.frames[:, 2:],
        padded.actions[:, 2:],
        padded.rewards[:, 2:],
        padded.terminated[:, 2:],
        padded.truncated[:, 2:],
        padded.mask[:, 2:],
    )
    with torch.no_grad():
        a, b = model.training_losses(padded), model.training_losses(real)
    for key in ("tokens", "reward", "termination"):
        torch.testing.assert_close(a[key], b[key])



# ---- training -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["tokenizer", "transformer"])
def test_training_stages_train_only_their_part(stage):
    model = make_model().train()
    assert model.training_stages() == ["tokenizer", "transformer"]
    model.set_training_stage(stage)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-2)  # as the trainer builds it
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        model.training_losses(segments(2, model))["loss"].backward()
        opt.step()
    trained, frozen = ("tokenizer.", "gpt.") if stage == "tokenizer" else ("gpt.", "tokenizer.")
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all(name.startswith(trained) for name in changed)
    assert not any(name.startswith(frozen) for name in changed)


def test_trainer_trains_and_exports_a_token_model(tmp_path):
    from neuralenvs.checkpoint import build_world_model, load_checkpoint
    from neuralenvs.data import Episode, EpisodeDataset
    from neuralenvs.training import TrainConfig, Trainer

    ds = EpisodeDataset(
        tmp_path / "data", obs_shape=OBS, num_actions=3, action_meanings=["A", "B", "C"], source="synthetic:noise"
    )
    rng = np.random.default_rng(0)
    for _ in range(3):
        t = 8
        frames = rng.integers(0, 256, (t + 1, *OBS), dtype=np.uint8)
        terminated = np.zeros(t, bool)
        terminated[-1] = True
        ds.append(Episode(frames, rng.integers(0, 3, t), np.zeros(t, np.float32), terminated, np.zeros(t, bool)))
    cfg = TrainConfig(
        family="token",
        model_config="tiny",
        data=str(tmp_path / "data"),
        out=str(tmp_path / "run"),
        steps=2,
        batch_size=2,
        held_out_episodes=1,
        start_bank_size=4,
    )
    trainer = Trainer(cfg, device="cpu")
    trainer.train(progress=False)
    assert trainer.stage_index == 2
    checkpoint = load_checkpoint(trainer.export(progress=False))
    assert checkpoint.config["provenance"]["stages"] == ["tokenizer", "transformer"]
    fidelity = checkpoint.config["metrics"]["fidelity"]
    assert 0.0 < fidelity["tokenizer_psnr"] <= 60.0  # the tokenizer's round trip, beside the dream's PSNR
    model = build_world_model(checkpoint, device="cpu")
    state = model.init_state(
        torch.from_numpy(checkpoint.starts_frames[:2]), torch.from_numpy(checkpoint.starts_actions[:2])
    )
    assert model.step(state, torch.tensor([0, 2])).next_frames.shape == (2, *OBS)
    # the run folder resumes both stages' result: a new trainer picks up the finished state
    again = Trainer(cfg, device="cpu")
    assert again.stage_index == 2
    for name, w in trainer.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[name], w)


def test_a_decoder_is_fine_tuned_to_see_the_frame_before_and_the_transformer_keeps_its_tokens(tmp_path):
    """The path from a shipped token model to one whose decoder sees the frame before: start from
    its weights (the new part fresh), train only the tokenizer stage with the encoder, codebook and
    GPT frozen. The tokens, hence what the GPT learned, stay as they were."""
    from neuralenvs.checkpoint import load_checkpoint
    from neuralenvs.data import Episode, EpisodeDataset
    from neuralenvs.training import TrainConfig, Trainer

    ds = EpisodeDataset(tmp_path / "data", obs_shape=OBS, num_actions=3, action_meanings=["A", "B", "C"])
    rng = np.random.default_rng(0)
    for _ in range(3):
        frames = detailed_pairs(5, seed=int(rng.integers(1000))).flatten(0, 1)[:9].numpy()
        ds.append(Episode(frames, rng.integers(0, 3, 8), np.zeros(8, np.float32), np.eye(8, dtype=bool)[-1],
                          np.zeros(8, bool)))
    base = dict(family="token", data=str(tmp_path / "data"), steps=3, batch_size=2, held_out_episodes=1,
                start_bank_size=4)
    plain = Trainer(TrainConfig(model_config="tiny", out=str(tmp_path / "plain"), **base), device="cpu")
    plain.train(progress=False)
    shipped = plain.export(progress=False)

    config = dataclasses.asdict(TokenConfig.named("tiny")) | {"tok_previous_frame": True}
    fine = TrainConfig(model_config=config, out=str(tmp_path / "fine"), init_from=str(shipped),
                       reinit=("tokenizer.previous",), freeze=("tokenizer.encoder", "tokenizer.quantizer", "gpt"),
                       stages=("tokenizer",), **base)
    trainer = Trainer(fine, device="cpu")
    trainer.train(progress=False)
    before = load_checkpoint(shipped).weights
    after = trainer.model.state_dict()
    for name, w in before.items():
        same = torch.equal(after[name], w)
        assert same == (not name.startswith("tokenizer.decoder.")), name
    assert load_checkpoint(trainer.export(progress=False)).config["provenance"]["stages"] == ["tokenizer"]

    with pytest.raises(ValueError, match="untrained"):
        Trainer(dataclasses.replace(fine, init_from=None, out=str(tmp_path / "x")), device="cpu")
    with pytest.raises(ValueError, match="not stages"):
        Trainer(dataclasses.replace(fine, stages=("dynamics",), out=str(tmp_path / "y")), device="cpu")


def test_a_shallower_encoder_of_the_frame_before_is_smaller_and_still_decodes_with_it():
    widths = {"tok_channels": (8, 16, 16)}  # a level that widens needs a projection without blocks
    full = make_model(randomized=True, tok_previous_frame=True, **widths)
    shallow = make_model(randomized=True, tok_previous_frame=True, tok_previous_depth=0, **widths)
    size = lambda m: sum(p.numel() for p in m.tokenizer.previous.parameters())  # noqa: E731
    assert size(shallow) < size(full) / 2
    frames, _ = context(2, shallow)
    tokens = shallow.encode(frames[:, -1])
    # the frame before changes what is decoded from the same tokens
    assert not torch.equal(shallow.decode(tokens, frames[:, 0]), shallow.decode(tokens, frames[:, -1]))
    # per level: blocks only where the maps are small
    coarse = make_model(randomized=True, tok_previous_frame=True, tok_previous_depth=[0, 1, 1], **widths)
    assert size(shallow) < size(coarse) < size(full)
    assert [len(level) for level in coarse.tokenizer.previous.levels] == [0, 1, 1]
    for bad in (-1, (0, 1)):
        with pytest.raises(ValueError, match="tok_previous_depth"):
            make_model(tok_previous_frame=True, tok_previous_depth=bad, **widths)
