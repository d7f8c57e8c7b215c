"""How a token dream steps: the KV cache against the full sequence, speculative decoding, frames
kept where tokens did not change, restarts, batches and the sliding window."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import assert_same_steps
from conftest import random_context as context
from token_toy import NUM_ACTIONS, OBS, make_model, run

pytestmark = pytest.mark.usefixtures("single_torch_thread")


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
    assert_same_steps(loop_out, draft_out)
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
    assert_same_steps(a, b, keep)
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
