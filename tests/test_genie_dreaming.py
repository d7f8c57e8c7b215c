"""How a genie dream steps: MaskGIT's passes, temperature, per-dream state (restarts, batches, the
decoder that sees the frame before, context latents), and the window that slides by several frames
and keeps its keys and values between."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_same_steps
from conftest import random_context as context
from genie_toy import OBS, make_model, run

from neuralenvs.models.genie import GenieConfig

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_maskgit_runs_its_steps_and_fills_every_token():
    model = make_model(randomized=True, maskgit_steps=3, temperature=1.0)
    calls = []
    original = model.dynamics.new_frame_and_kv

    def counting(tokens, *args):
        calls.append(int((tokens == model.dynamics.mask_token).sum()))
        return original(tokens, *args)

    model.dynamics.new_frame_and_kv = counting
    state = model.init_state(*context(2, model))
    state, frames, _, _ = model.step(state, torch.tensor([0, 1]), torch.Generator().manual_seed(0))
    # 3 MaskGIT passes with fewer masked tokens each time, then one over the finished frame for the heads
    s = model.tokens_per_frame
    assert calls[0] == 2 * s and calls[0] > calls[1] > calls[2] and calls[3] == 0 and len(calls) == 4
    assert (state.tokens[:, -1] < model.config.vocab_size).all() and frames.shape == (2, *OBS)


def test_temperature_zero_is_deterministic_and_temperature_samples():
    greedy = make_model(randomized=True, temperature=0.0, sample_action_map=False)
    state = greedy.init_state(*context(2, greedy))
    a = greedy.step(state, torch.tensor([1, 2]), torch.Generator().manual_seed(0)).next_frames
    b = greedy.step(state, torch.tensor([1, 2]), torch.Generator().manual_seed(99)).next_frames
    assert torch.equal(a, b)
    hot = make_model(randomized=True, temperature=5.0)
    state = hot.init_state(*context(2, hot))
    c = hot.step(state, torch.tensor([1, 2]), torch.Generator().manual_seed(0)).next_frames
    d = hot.step(state, torch.tensor([1, 2]), torch.Generator().manual_seed(99)).next_frames
    assert not torch.equal(c, d)


# ---- per-dream state --------------------------------------------------------------------------------


@pytest.mark.parametrize("sees_before", [False, True])
def test_restarting_one_dream_leaves_the_others_unchanged(sees_before):
    model = make_model(randomized=True, tok_previous_frame=sees_before)
    state = model.init_state(*context(3, model))
    state, _ = run(model, state, [[0, 1, 2], [3, 0, 1], [1, 1, 1]], seed=1)
    new_frames, new_actions = context(1, model, seed=9)
    restarted = model.reset_where(state, torch.tensor([False, True, False]), new_frames, new_actions)
    keep = torch.tensor([0, 2])
    for name in ("tokens", "latents", "valid"):
        assert torch.equal(getattr(restarted, name)[keep], getattr(state, name)[keep])
    fresh = model.init_state(new_frames, new_actions)
    assert torch.equal(restarted.tokens[1], fresh.tokens[0]) and torch.equal(restarted.valid[1], fresh.valid[0])
    assert restarted.valid[1].sum() == model.context_frames and state.valid.all()
    if sees_before:  # the frame the next one is decoded with: the new context's last, or as it was
        assert torch.equal(restarted.last_frame[1], new_frames[0, -1])
        assert torch.equal(restarted.last_frame[keep], state.last_frame[keep])
    else:
        assert restarted.last_frame is None
    # the others go on dreaming exactly what they would have without the restart
    later = [[2, 0, 3], [3, 3, 3], [0, 1, 2]]
    _, a = run(model, restarted, later, seed=5)
    _, b = run(model, state, later, seed=5)
    assert_same_steps(a, b, keep)


@pytest.mark.parametrize("sees_before", [False, True])
def test_a_dream_is_the_same_alone_or_in_a_batch(sees_before):
    """Greedy dreams (a sampled dream draws from one generator stream that the batch shares)."""
    model = make_model(randomized=True, temperature=0.0, tok_previous_frame=sees_before)
    frames, actions = context(3, model, seed=2)
    steps = [[1, 2, 3], [0, 0, 1], [2, 2, 2], [3, 1, 0], [0, 0, 0]]  # past the 4-frame window
    _, batched = run(model, model.init_state(frames, actions), steps, seed=0, sample_heads=False)
    alone_state = model.init_state(frames[:1], actions[:1])
    _, alone = run(model, alone_state, [[a[0]] for a in steps], seed=0, sample_heads=False)
    before = frames[:, -1]
    for (fb, rb, tb, tok_b), (fa, ra, ta, tok_a) in zip(batched, alone, strict=True):
        assert torch.equal(tok_b[0], tok_a[0]) and torch.equal(rb[0], ra[0]) and torch.equal(tb[0], ta[0])
        if sees_before:
            # a convolution's rounding depends on the batch size: one decode may move a pixel by a
            # level, and as each frame is decoded from the one before, such levels spread along the
            # dream (on some CPUs, 2 levels by step 5). So each batched frame is checked against the
            # same tokens and frame before decoded alone; the tokens, checked above, are exact.
            decoded_alone = model.decode(tok_b[:1, -1], before[:1])[0]
            assert int((fb[0].int() - decoded_alone.int()).abs().max()) <= 1
            before = fb
        else:
            assert torch.equal(fb[0], fa[0])
    if sees_before:  # the first frame of both is decoded from the same real frame
        assert int((batched[0][0][0].int() - alone[0][0][0].int()).abs().max()) <= 1
    assert any(not torch.equal(out[3][0], out[3][1]) for out in batched)


def test_a_decoder_that_sees_the_frame_before_decodes_each_dreamed_frame_with_the_one_before():
    model = make_model(randomized=True, temperature=0.0, tok_previous_frame=True)
    frames, actions = context(2, model, seed=3)
    state = model.init_state(frames, actions)
    assert torch.equal(state.last_frame, frames[:, -1])
    first = model.step(state, torch.tensor([0, 1]))
    assert torch.equal(first.next_frames, model.decode(first.state.tokens[:, -1], frames[:, -1]))
    second = model.step(first.state, torch.tensor([1, 0]))
    assert torch.equal(second.next_frames, model.decode(second.state.tokens[:, -1], first.next_frames))
    assert torch.equal(second.state.last_frame, second.next_frames)
    with pytest.raises(ValueError, match="frame before"):
        model.decode(first.state.tokens[:, -1])


def test_context_latents_are_read_from_the_frames():
    """init_state reads the latent actions between its frames with the LAM (the given context
    actions are checked, not used); a repeated single image gives the same dream whatever they are."""
    model = make_model(randomized=True, num_actions=6)
    frames, actions = context(2, model)
    a = model.init_state(frames, actions)
    b = model.init_state(frames, (actions + 1) % 6)
    assert torch.equal(a.latents, b.latents) and torch.equal(a.tokens, b.tokens)
    k = model.context_frames
    assert torch.equal(a.latents[:, -(k - 1) :], model.infer_latent_actions(frames))
    assert (a.latents[:, : -(k - 1)] == model.config.n_latent).all()  # before the context: unknown
    with pytest.raises(ValueError, match=r"actions must be in \[0, 6\)"):
        model.init_state(frames, actions + 6)


# ---- a window that slides by several frames -----------------------------------------------------------


def _assert_cache_is_a_recompute(model, state) -> None:
    """The cached keys and values of every dream's frames equal those a prefill of its window gives
    (slots a restarted dream left empty hold whatever: nothing attends to them)."""
    n = state.length
    recomputed = model.dynamics.prefill(state.tokens[:, :n], model._incoming(state)[:, :n], state.valid[:, :n])
    frames = state.valid[:, :n].repeat_interleave(model.tokens_per_frame, dim=0)  # [B * S, n]
    for cached, fresh in zip(state.context, recomputed, strict=True):
        for x, y in zip(cached, fresh, strict=True):  # keys, values: [B * S, heads, n, head_dim]
            torch.testing.assert_close(x.transpose(1, 2)[frames], y.transpose(1, 2)[frames], rtol=1e-4, atol=1e-5)


def test_a_window_that_slides_by_several_frames_keeps_what_a_recompute_gives():
    """With slide_frames 3 in a 6-frame window, each new frame's keys and values join the cached
    ones, and the cache always equals a recompute of the window's frames at their positions, also
    after one dream restarts. The window holds 5 frames, drops 3 with the next, and grows again."""
    model = make_model(randomized=True, context_length=6, slide_frames=3)
    state = model.init_state(*context(3, model))
    assert state.length == 5 and state.context is None
    g = torch.Generator().manual_seed(0)
    lengths, cached = [], 0
    for i in range(9):
        state = model.step(state, torch.tensor([i % 4, 1, 2]), g).state
        if i == 4:
            state = model.reset_where(state, torch.tensor([False, True, False]), *context(1, model, seed=7))
            assert state.valid[1, : state.length].sum() == model.context_frames
        lengths.append(state.length)
        if state.context is not None:
            _assert_cache_is_a_recompute(model, state)
            cached += 1
    assert lengths == [3, 4, 5, 3, 4, 5, 3, 4, 5] and cached == 6


def test_sliding_by_one_frame_recomputes_the_full_window_every_step():
    model = make_model(randomized=True)
    state = model.init_state(*context(2, model))
    for a in ([0, 1], [2, 3], [1, 1]):
        state = model.step(state, torch.tensor(a)).state
        assert state.length == model.window - 1 and state.context is None and state.valid.all()


def test_a_sliding_dream_restarted_keeps_the_others_and_matches_its_own_batch():
    """With the window sliding by 2, a restart leaves the other dreams' frames exactly as they would
    have been, and a greedy dream is the same alone or in a batch (sliding by 1: the tests above)."""
    model = make_model(randomized=True, temperature=0.0, slide_frames=2)
    frames, actions = context(3, model, seed=2)
    steps = [[1, 2, 3], [0, 0, 1], [2, 2, 2], [3, 1, 0], [0, 0, 0], [1, 0, 1]]
    state, batched = run(model, model.init_state(frames, actions), steps[:3], seed=0, sample_heads=False)
    restarted = model.reset_where(state, torch.tensor([False, True, False]), *context(1, model, seed=9))
    _, a = run(model, restarted, steps[3:], seed=5, sample_heads=False)
    _, b = run(model, state, steps[3:], seed=5, sample_heads=False)
    assert_same_steps(a, b, torch.tensor([0, 2]))
    _, alone = run(model, model.init_state(frames[:1], actions[:1]), [[s[0]] for s in steps[:3]], seed=0,
                   sample_heads=False)
    for (_, _, _, tok_b), (_, _, _, tok_a) in zip(batched, alone, strict=True):
        assert torch.equal(tok_b[0], tok_a[0])


def test_slide_frames_must_leave_room_for_a_restarted_dream():
    assert GenieConfig(context_length=6, num_context_frames=2, slide_frames=4).slide_frames == 4
    for bad in (0, 5):
        with pytest.raises(ValueError, match="slide_frames"):
            GenieConfig(context_length=6, num_context_frames=2, slide_frames=bad)
