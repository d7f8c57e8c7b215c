"""The token (IRIS-style) world model: tokenizer, GPT, per-dream KV cache, sliding window, training
stages, trainer round trip."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from neuralenvs.models import build_model
from neuralenvs.models.token import TokenConfig, TokenState, TokenWorldModel
from neuralenvs.world_model import Segments, frames_to_float

pytestmark = pytest.mark.usefixtures("single_torch_thread")

OBS = (64, 64, 3)
NUM_ACTIONS = 6


def make_model(seed: int = 0, obs_shape=OBS, randomized: bool = False, **overrides) -> TokenWorldModel:
    torch.manual_seed(seed)
    cfg = dataclasses.replace(TokenConfig.named("tiny"), **overrides)
    model = TokenWorldModel(cfg, obs_shape, NUM_ACTIONS).eval()
    if randomized:
        randomize(model, seed)
    return model


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random values in every parameter: a fresh model starts near-uniform (GPT) or partly at zero
    (the tokenizer's residual blocks), which would let context-dependence tests pass vacuously."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def context(b: int, model: TokenWorldModel, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    k = model.context_frames
    frames = torch.randint(0, 256, (b, k, *model.obs_shape), generator=g, dtype=torch.uint8)
    actions = torch.randint(0, model.num_actions, (b, k - 1), generator=g)
    return frames, actions


def segments(b: int, model: TokenWorldModel, length: int | None = None, pad: int = 0, seed: int = 0) -> Segments:
    """Segments of smooth random frames (so the tokenizer can learn them) with ``pad`` padded frames
    before the episode start, sparse rewards and ends."""
    g = torch.Generator().manual_seed(seed)
    seq = model.config.segment_length if length is None else length
    h, w, c = model.obs_shape
    coarse = torch.rand(b, seq + 1, c, h // 16, w // 16, generator=g)
    smooth = torch.nn.functional.interpolate(coarse.flatten(0, 1), size=(h, w), mode="bilinear")
    frames = (smooth.reshape(b, seq + 1, c, h, w).movedim(2, -1) * 255).round().to(torch.uint8)
    mask = torch.ones(b, seq + 1, dtype=torch.bool)
    mask[:, :pad] = False
    frames[:, :pad] = 0
    actions = torch.randint(0, model.num_actions, (b, seq), generator=g)
    actions[:, :pad] = 0
    rewards = torch.randint(-1, 2, (b, seq), generator=g).float() * 2.0
    terminated = torch.rand(b, seq, generator=g) < 0.2
    return Segments(frames, actions, rewards, terminated, torch.zeros_like(terminated), mask)


def run(model: TokenWorldModel, state: TokenState, actions: list[list[int]], seed: int, sample_heads=False):
    """Step through ``actions`` with a fresh generator; returns the states and every step's outputs."""
    g = torch.Generator().manual_seed(seed)
    outputs = []
    for a in actions:
        state, frames, reward, terminated = model.step(state, torch.tensor(a), g, sample_heads=sample_heads)
        outputs.append((frames, reward, terminated, state.tokens.clone()))
    return state, outputs


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


def test_cached_dreaming_matches_the_full_sequence():
    """Greedy dreaming with the KV cache picks, at every position, the argmax of the uncached
    transformer run over the whole dreamed sequence; the heads agree too."""
    model = make_model(randomized=True, temperature=0.0, context_length=6, slide_frames=1)
    state = model.init_state(*context(2, model))
    actions = [[1, 4], [0, 2], [5, 5]]
    state, _ = run(model, state, actions, seed=0)
    n = int(state.num_frames[0])
    assert n == model.context_frames + 3
    seq = model.gpt.interleave(state.tokens[:, :n], state.actions[:, : n - 1])
    with torch.no_grad():
        hidden = model.gpt(seq)
        p, block = model.tokens_per_frame, model.gpt.block_size
        start = (model.context_frames - 1) * block + p  # the first dreamed step's action token
        for q in range(start, seq.shape[1] - 1):
            if (q + 1) % block == p:
                continue  # the next token is an action: not predicted
            assert torch.equal(model.gpt.head_obs(hidden[:, q]).argmax(-1), seq[:, q + 1]), q


def test_speculative_decoding_dreams_what_the_token_loop_dreams():
    """At temperature 0 a small batch guesses each frame as the last one and checks the guesses in
    passes over the dreams still unsettled (``draft_max_batch``): the frames, tokens, heads and cache
    are the one-token loop's, in fewer transformer calls."""
    # seed 1: a random model whose dreams change 0 to 2 tokens a step, a different number per dream
    model = make_model(seed=1, randomized=True, temperature=0.0, context_length=6, slide_frames=2)
    frames, actions = context(5, model, seed=4)
    steps = torch.randint(0, NUM_ACTIONS, (9, 5), generator=torch.Generator().manual_seed(1)).tolist()
    results, calls = {}, {}
    for draft_max_batch in (0, 8):
        model.config = dataclasses.replace(model.config, draft_max_batch=draft_max_batch)
        fed = calls[draft_max_batch] = []
        feed = model.gpt.feed
        model.gpt.feed = lambda seq, *args, _feed=feed, _fed=fed: _fed.append(len(seq)) or _feed(seq, *args)
        try:
            results[draft_max_batch] = run(model, model.init_state(frames, actions), steps, seed=0)
        finally:
            del model.gpt.feed
    (loop_state, loop_out), (draft_state, draft_out) = results[0], results[8]
    for (fa, ra, ta, tok_a), (fb, rb, tb, tok_b) in zip(loop_out, draft_out, strict=True):
        assert torch.equal(tok_a, tok_b) and torch.equal(fa, fb)
        assert torch.equal(ra, rb) and torch.equal(ta, tb)
    assert torch.equal(loop_state.cache.lengths, draft_state.cache.lengths)
    used = torch.arange(loop_state.cache.capacity) < loop_state.cache.lengths[:, None]  # [B, slots]
    for name in ("k", "v"):
        a, b = getattr(loop_state.cache, name), getattr(draft_state.cache, name)
        torch.testing.assert_close(a.movedim(3, 2)[:, used], b.movedim(3, 2)[:, used], rtol=1e-5, atol=1e-5)
    # the loop feeds every dream P times a step; the passes feed fewer times, and some feed only
    # the dreams whose guesses failed (else the test would not reach the later passes)
    assert calls[0] == [5] * len(steps) * model.tokens_per_frame
    assert len(steps) < len(calls[8]) < len(calls[0]) / 2
    assert any(rows < 5 for rows in calls[8])


def test_only_frames_whose_tokens_changed_are_decoded():
    """``decode_next`` with reuse: a dream whose tokens all repeat the last frame's keeps the last
    frame; any changed token, first or last, decodes."""
    model = make_model(randomized=True, tok_previous_frame=True)
    g = torch.Generator().manual_seed(0)
    last_tokens = torch.randint(0, model.config.vocab_size, (5, model.tokens_per_frame), generator=g)
    tokens = last_tokens.clone()
    tokens[1, -1] = (tokens[1, -1] + 1) % model.config.vocab_size
    tokens[3, 0] = (tokens[3, 0] + 1) % model.config.vocab_size
    last = torch.randint(0, 256, (5, *model.obs_shape), generator=g, dtype=torch.uint8)
    decoded = []
    decode = model.tokenizer.decode
    model.tokenizer.decode = lambda t, *args: decoded.append(len(t)) or decode(t, *args)
    try:
        frames = model.decode_next(tokens, last_tokens, last, reuse=True)
    finally:
        del model.tokenizer.decode
    assert decoded == [2]
    full = model.decode(tokens, last)
    changed = torch.tensor([False, True, False, True, False])
    assert ((full[changed].int() - frames[changed].int()).abs() <= 1).all()
    assert torch.equal(frames[~changed], last[~changed])
    assert (full[~changed] != last[~changed]).any()  # the decode it saves would have moved pixels
    assert torch.equal(model.decode_next(tokens, last_tokens, last, reuse=False), full)


def test_a_dream_whose_tokens_did_not_change_keeps_its_last_frame():
    """With ``reuse_unchanged_frames`` a dream whose new tokens are all the last frame's keeps that
    frame and is not decoded; the others are decoded from their tokens and frame before as without
    it, and the tokens and heads do not change."""
    model = make_model(seed=1, randomized=True, temperature=0.0, context_length=6, tok_previous_frame=True)
    frames, actions = context(5, model, seed=4)
    steps = torch.randint(0, NUM_ACTIONS, (9, 5), generator=torch.Generator().manual_seed(1))
    rows = torch.arange(5)

    def dream(reuse: bool) -> tuple[list, list[int]]:
        """Every step's new tokens, frames and heads, and the batch of every decoder call."""
        model.config = dataclasses.replace(model.config, reuse_unchanged_frames=reuse)
        decoded, out = [], []
        decode = model.tokenizer.decode
        model.tokenizer.decode = lambda tokens, *args: decoded.append(len(tokens)) or decode(tokens, *args)
        try:
            state, g = model.init_state(frames, actions), torch.Generator().manual_seed(0)
            for a in steps:
                state, new_frames, reward, terminated = model.step(state, a, g)
                out.append((state.tokens[rows, state.num_frames - 1], new_frames, reward, terminated))
        finally:
            del model.tokenizer.decode
        return out, decoded

    (plain, _), (reused, decoded) = dream(False), dream(True)
    last_tokens, last, kept, moved = model.encode(frames[:, -1]), frames[:, -1], 0, 0
    for (tok0, _, r0, t0), (tok1, f1, r1, t1) in zip(plain, reused, strict=True):
        assert torch.equal(tok0, tok1) and torch.equal(r0, r1) and torch.equal(t0, t1)
        same = (tok1 == last_tokens).all(dim=1)
        assert torch.equal(f1[same], last[same])
        expected = model.decode(tok1, last)  # every dream decoded from the frames the reusing dream kept
        assert ((expected[~same].int() - f1[~same].int()).abs() <= 1).all()
        kept += int(same.sum())
        moved += int((expected[same] != last[same]).any(dim=(1, 2, 3)).sum())
        last_tokens, last = tok1, f1
    # both kinds of dream occur, a kept frame is one a decode would have changed, and only the
    # changed dreams were decoded
    assert 0 < kept < steps.numel() and moved > 0
    assert sum(decoded) == steps.numel() - kept


# ---- per-dream state ----------------------------------------------------------------------------


@pytest.mark.parametrize("sees_before", [False, True])
def test_restarting_one_dream_leaves_the_others_unchanged(sees_before):
    model = make_model(randomized=True, temperature=1.0, context_length=6, tok_previous_frame=sees_before)
    state = model.init_state(*context(3, model))
    state, _ = run(model, state, [[0, 1, 2], [3, 4, 5], [1, 1, 1]], seed=1)
    new_frames, new_actions = context(1, model, seed=9)
    restarted = model.reset_where(state, torch.tensor([False, True, False]), new_frames, new_actions)
    assert state.num_frames.tolist() == [5, 5, 5]  # the given state is not modified
    assert restarted.num_frames.tolist() == [5, 2, 5]
    # the others' windows and cache rows are exactly as they were
    keep = torch.tensor([0, 2])
    for name in ("tokens", "actions", "num_frames"):
        assert torch.equal(getattr(restarted, name)[keep], getattr(state, name)[keep])
    assert torch.equal(restarted.cache.k[:, keep], state.cache.k[:, keep])
    assert torch.equal(restarted.cache.v[:, keep], state.cache.v[:, keep])
    assert torch.equal(restarted.cache.lengths[keep], state.cache.lengths[keep])
    if sees_before:  # the frame the next one is decoded with: the new context's last, or as it was
        assert torch.equal(restarted.last_frame[1], new_frames[0, -1])
        assert torch.equal(restarted.last_frame[keep], state.last_frame[keep])
    else:
        assert restarted.last_frame is None
    # and the restarted dream starts exactly as a fresh dream from its new context
    fresh = model.init_state(new_frames, new_actions)
    assert torch.equal(restarted.cache.k[:, 1], fresh.cache.k[:, 0])
    assert torch.equal(restarted.cache.lengths[1], fresh.cache.lengths[0])

    # several steps from the same seed: dreams 0 and 2 slide their full windows while dream 1 fills
    # its new one, and they dream exactly what they would have without the restart
    later = [[2, 0, 5], [4, 4, 4], [0, 1, 3]]
    end_a, a = run(model, restarted, later, seed=5)
    end_b, b = run(model, state, later, seed=5)
    for (fa, ra, ta, tok_a), (fb, rb, tb, tok_b) in zip(a, b, strict=True):
        assert torch.equal(fa[keep], fb[keep]) and torch.equal(tok_a[keep], tok_b[keep])
        assert torch.equal(ra[keep], rb[keep]) and torch.equal(ta[keep], tb[keep])
    assert not torch.equal(a[0][0][1], b[0][0][1])  # dream 1 did restart
    assert end_a.num_frames.tolist() == [6, 5, 6]
    assert torch.equal(end_a.cache.k[:, keep], end_b.cache.k[:, keep])


def test_a_dream_is_the_same_alone_or_in_a_batch():
    model = make_model(randomized=True, temperature=0.0)
    frames, actions = context(3, model, seed=2)
    batch_state = model.init_state(frames, actions)
    alone_state = model.init_state(frames[:1], actions[:1])
    steps = [[1, 2, 3], [4, 0, 1], [2, 2, 2], [5, 3, 0], [0, 0, 0]]  # past the 4-frame window
    _, batched = run(model, batch_state, steps, seed=0)
    _, alone = run(model, alone_state, [[a[0]] for a in steps], seed=0)
    for (fb, rb, tb, tok_b), (fa, ra, ta, tok_a) in zip(batched, alone, strict=True):
        assert torch.equal(tok_b[0], tok_a[0]) and torch.equal(fb[0], fa[0])
        assert torch.equal(rb[0], ra[0]) and torch.equal(tb[0], ta[0])
    # the dreams did not all dream the same thing (the test would be vacuous otherwise)
    assert any(not torch.equal(out[3][0], out[3][1]) for out in batched)


@pytest.mark.parametrize("slide, sees_before", [(1, False), (2, False), (2, True)])
def test_sliding_window_equals_a_fresh_dream_from_the_kept_frames(slide, sees_before):
    model = make_model(randomized=True, temperature=1.0, slide_frames=slide, tok_previous_frame=sees_before)
    w = model.config.context_length
    state = model.init_state(*context(2, model))
    state, _ = run(model, state, [[1, 2]] * (w - model.context_frames), seed=0)
    assert state.num_frames.tolist() == [w, w]  # full: the next step slides
    kept = model.state_from_tokens(state.tokens[:, slide:w], state.actions[:, slide : w - 1], state.last_frame)
    slid, out_slid = run(model, state, [[3, 4]], seed=7)
    ref, out_ref = run(model, kept, [[3, 4]], seed=7)
    assert slid.num_frames.tolist() == ref.num_frames.tolist() == [w - slide + 1] * 2
    assert torch.equal(out_slid[0][0], out_ref[0][0]) and torch.equal(slid.tokens, ref.tokens)
    assert torch.equal(slid.cache.lengths, ref.cache.lengths)
    torch.testing.assert_close(slid.cache.k, ref.cache.k, rtol=0, atol=0)
    # long dreams stay bounded and keep working
    state, outputs = run(model, slid, [[0, 5]] * 3 * w, seed=3)
    assert int(state.num_frames.max()) <= w and int(state.cache.lengths.max()) < state.cache.capacity
    assert outputs[-1][0].shape == (2, *OBS)


def test_bad_input_raises_clear_errors():
    model = make_model()
    frames, actions = context(2, model)
    with pytest.raises(TypeError, match="uint8"):
        model.init_state(frames.float(), actions)
    with pytest.raises(ValueError, match="context frames must have shape"):
        model.init_state(frames[:, :1], actions)
    with pytest.raises(ValueError, match="context actions"):
        model.init_state(frames, actions[:, :0])
    with pytest.raises(ValueError, match=r"actions must be in \[0, 6\)"):
        model.init_state(frames, actions + 6)
    state = model.init_state(frames, actions)
    with pytest.raises(ValueError, match="one action per dream"):
        model.step(state, torch.tensor([0]))
    with pytest.raises(TypeError, match="integers"):
        model.step(state, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"got values in \[-1, 0\]"):
        model.step(state, torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="mask selects 1 dreams"):
        model.reset_where(state, torch.tensor([True, False]), frames, actions)
    with pytest.raises(ValueError, match="unknown training stage"):
        model.set_training_stage("gpt")


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


def test_token_changes_counts_fewer_calls_where_guesses_are_checked(tmp_path):
    """``benchmarks/token_changes.py`` on the shipped token dream: the changed tokens it counts are
    what the calls come from (at most one call more than the most changed dream's changes), and the
    same dream with guesses off takes one call per token."""
    from benchmark_scripts import load_benchmark

    from neuralenvs.cli import main as cli
    from neuralenvs.registry import resolve_checkpoint

    count = load_benchmark("token_changes").count_changes
    dream = "neuralenvs/Boxing-token-v0"
    checked = count(dream, dreams=2, steps=6)
    cli(["resample", "--checkpoint", str(resolve_checkpoint(dream)), "--out", str(tmp_path / "loop"),
         "--set", "draft_max_batch=0"])
    loop = count(str(tmp_path / "loop"), dreams=2, steps=6)
    assert checked["checks_guesses"] and not loop["checks_guesses"]
    assert sum(checked["changed_tokens_histogram"]) == 2 * 6
    assert loop["calls_per_step_mean"] == loop["loop_calls_per_step"] == 16
    assert 1 <= checked["calls_per_step_mean"] < 16
    # the two dreams dream the same frames, so they change as many tokens
    assert checked["changed_tokens_histogram"] == loop["changed_tokens_histogram"]
