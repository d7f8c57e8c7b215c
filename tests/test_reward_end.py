"""The reward and termination model every family shares (``neuralenvs.nn.reward_end``): reward
classes, step-by-step equals whole-sequence, padding, class balancing, the end prior, and an end path
of its own."""

from __future__ import annotations

import math

import pytest
import torch

from neuralenvs.nn.reward_end import RewardEndModel, choose_classes, class_to_reward, reward_to_class


def tiny_model_and_segments(b: int, transitions: int, **model_options):
    """A small reward/termination model (seed 0) and ``b`` random segments of ``transitions`` steps
    on 8x8 frames with 3 actions, no rewards and no ends: (model, frames, actions, rewards, ended)."""
    torch.manual_seed(0)
    model = RewardEndModel(3, (8, 8), 3, channels=(4,), depths=(1,), cond_dim=8, lstm_dim=6, **model_options)
    frames = torch.rand(b, transitions + 1, 3, 8, 8) * 2 - 1
    actions = torch.randint(0, 3, (b, transitions))
    return model, frames, actions, torch.zeros(b, transitions), torch.zeros(b, transitions, dtype=torch.bool)


def test_reward_classes():
    assert reward_to_class(torch.tensor([-7.0, -1.0, 0.0, 0.5, 20.0])).tolist() == [0, 0, 1, 2, 2]
    assert class_to_reward(torch.tensor([0, 1, 2])).tolist() == [-1.0, 0.0, 1.0]
    logits = torch.tensor([[0.0, 5.0, 0.0], [9.0, 0.0, 0.0]])
    assert choose_classes(logits, sample=False).tolist() == [1, 0]
    a = choose_classes(logits, True, torch.Generator().manual_seed(0))
    b = choose_classes(logits, True, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


@pytest.mark.parametrize("encoder", ["conditioned", "plain"])
@pytest.mark.parametrize("sees_next_frame", [True, False])
@pytest.mark.parametrize("end_lstm_dim", [0, 3])
def test_reward_model_stepwise_equals_sequence(encoder, sees_next_frame, end_lstm_dim):
    torch.manual_seed(0)
    model = RewardEndModel(3, (12, 10), 5, channels=(4, 8), depths=(1, 1), cond_dim=8, lstm_dim=6, encoder=encoder,
                           sees_next_frame=sees_next_frame, end_lstm_dim=end_lstm_dim)
    frames = torch.rand(2, 5, 3, 12, 10) * 2 - 1
    actions = torch.randint(0, 5, (2, 4))
    rew, end, (h, c) = model(frames[:, :-1], actions, frames[:, 1:])
    other_next, _, _ = model(frames[:, :-1], actions, torch.rand(2, 4, 3, 12, 10))
    assert torch.equal(other_next, rew) == (not sees_next_frame)  # the next frame matters only if seen
    memory = model.initial_memory(2)
    for t in range(4):
        r, e, memory = model.step(frames[:, t], actions[:, t], frames[:, t + 1], memory)
        torch.testing.assert_close(r, rew[:, t])
        torch.testing.assert_close(e, end[:, t])
    torch.testing.assert_close(memory[0], h)
    torch.testing.assert_close(memory[1], c)


def test_an_end_head_with_its_own_lstm_learns_without_moving_the_reward_head():
    """Training only the end path (what ``--freeze ... reward_end.lstm reward_end.trunk
    reward_end.reward_head`` leaves to train) must leave every reward logit as it was; with a shared
    LSTM the same training moves them."""
    frames = torch.rand(4, 7, 3, 8, 8) * 2 - 1
    actions = torch.randint(0, 3, (4, 6))
    rewards, ended = torch.zeros(4, 6), torch.zeros(4, 6, dtype=torch.bool)
    ended[:, -1] = True
    mask = torch.ones(4, 7, dtype=torch.bool)
    moved = {}
    for end_lstm_dim, trained in ((5, ("end_lstm.", "end_trunk.", "end_head.")), (0, ("lstm.", "end_head."))):
        torch.manual_seed(0)
        model = RewardEndModel(3, (8, 8), 3, channels=(4,), depths=(1,), cond_dim=8, lstm_dim=6,
                               encoder="plain", end_lstm_dim=end_lstm_dim)
        before, _, _ = model(frames[:, :-1], actions, frames[:, 1:])
        opt = torch.optim.Adam([p for n, p in model.named_parameters() if n.startswith(trained)], lr=1e-2)
        for _ in range(20):
            opt.zero_grad()
            model.losses(frames, actions, rewards, ended, mask, balance_ends=True)["termination"].backward()
            opt.step()
        after, end_logits, _ = model(frames[:, :-1], actions, frames[:, 1:])
        moved[end_lstm_dim] = (after - before).abs().max().item()
        assert (end_logits[:, -1].argmax(-1) == 1).all()  # the end path learned the ends
    assert moved[5] == 0.0 and moved[0] > 1e-3


def test_the_plain_reward_encoder_finds_a_reward_shown_by_a_few_pixels():
    """Like a game's score: the reward sign is visible only in two pixels of a 32x32 frame whose
    other pixels move at random. The plain encoder must find it from balanced batches quickly."""
    torch.manual_seed(0)
    model = RewardEndModel(3, (32, 32), 4, channels=(8, 8, 16), depths=(1, 1, 1), cond_dim=8, lstm_dim=32,
                           encoder="plain")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        frames = torch.rand(n, 2, 3, 32, 32) * 2 - 1
        frames[:, :, :, :2] = -1.0  # the "score" rows
        rewards = torch.randint(-1, 2, (n, 1)).float()
        frames[rewards[:, 0] > 0, 1, :, 0, 4] = 1.0  # "+1": one pixel lights up on the left
        frames[rewards[:, 0] < 0, 1, :, 0, 27] = 1.0  # "-1": one on the right
        return frames, torch.randint(0, 4, (n, 1)), rewards, torch.ones(n, 2, dtype=torch.bool)

    for _ in range(150):
        frames, actions, rewards, mask = batch(48)
        loss = model.losses(frames, actions, rewards, torch.zeros(48, 1, dtype=torch.bool), mask)["reward"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    frames, actions, rewards, _ = batch(300)
    logits, _, _ = model(frames[:, :1], actions, frames[:, 1:])
    accuracy = (logits[:, 0].argmax(-1) == reward_to_class(rewards[:, 0])).float().mean()
    assert accuracy > 0.95, accuracy


def test_reward_losses_ignore_padding():
    model, frames, actions, rewards, terminated = tiny_model_and_segments(2, 4)
    mask = torch.tensor([[False, False, True, True, True]] * 2)
    base = model.losses(frames, actions, rewards, terminated, mask)
    rewards[:, :2], terminated[:, :2] = 5.0, True  # targets of transitions that touch padding
    same = model.losses(frames, actions, rewards, terminated, mask)
    torch.testing.assert_close(base, same)
    rewards[:, 3] = -1.0
    assert model.losses(frames, actions, rewards, terminated, mask)["reward"] != base["reward"]


def test_a_padded_segment_is_scored_as_a_dream_started_at_its_first_real_frame():
    """The LSTM meets a segment's real transitions from zero memory, as a dream's head does, not
    after running over the black padding before an episode's start."""
    torch.manual_seed(0)
    model = RewardEndModel(3, (8, 8), 3, channels=(4,), depths=(1,), cond_dim=8, lstm_dim=6, end_lstm_dim=4)
    frames = torch.rand(2, 6, 3, 8, 8) * 2 - 1
    actions = torch.randint(0, 3, (2, 5))
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 1.0, 0.0]])
    terminated = torch.tensor([[False, False, False, False, True], [False] * 5])
    pad = 2
    frames[:, :pad] = 0.0
    mask = torch.arange(6)[None].expand(2, 6) >= pad
    padded = model.losses(frames, actions, rewards, terminated, mask)
    real = model.losses(frames[:, pad:], actions[:, pad:], rewards[:, pad:], terminated[:, pad:], mask[:, pad:])
    torch.testing.assert_close(padded, real)
    one_row = model.losses(frames[:1, pad:], actions[:1, pad:], rewards[:1, pad:], terminated[:1, pad:], mask[:1, pad:])
    mixed = torch.cat([mask[:1], torch.ones(1, 6, dtype=torch.bool)])  # padding in one row only
    both = model.losses(frames, actions, rewards, terminated, mixed)
    assert both["reward"] != one_row["reward"]  # the unpadded row still counts


def test_balanced_reward_loss_weighs_each_present_class_equally():
    model, frames, actions, rewards, terminated = tiny_model_and_segments(2, 4)
    rewards[0, 2] = 3.0  # one "+1" among 7 counted "0"s (the first transition of row 1 is padding)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 0] = False
    first, _, _ = model(frames[:1, :-1], actions[:1], frames[:1, 1:])
    second, _, _ = model(frames[1:, 1:-1], actions[1:, 1:], frames[1:, 2:])  # from its first real frame
    logits = torch.cat([first[0], second[0]])
    counted_rewards = torch.cat([rewards[0], rewards[1, 1:]])
    ce = torch.nn.functional.cross_entropy(logits, reward_to_class(counted_rewards), reduction="none")
    positive = counted_rewards != 0
    expected = (ce[positive].mean() + ce[~positive].mean()) / 2
    balanced = model.losses(frames, actions, rewards, terminated, mask, balance_rewards=True)["reward"]
    torch.testing.assert_close(balanced, expected)
    plain = model.losses(frames, actions, rewards, terminated, mask)["reward"]
    torch.testing.assert_close(plain, ce.mean())


def test_balanced_end_loss_and_end_prior():
    model, frames, actions, rewards, terminated = tiny_model_and_segments(1, 4)
    terminated[0, 3] = True  # one end among four transitions
    mask = torch.ones(1, 5, dtype=torch.bool)
    _, logits, _ = model(frames[:, :-1], actions, frames[:, 1:])
    ce = torch.nn.functional.cross_entropy(logits[0], terminated[0].long(), reduction="none")
    balanced = model.losses(frames, actions, rewards, terminated, mask, balance_ends=True)["termination"]
    torch.testing.assert_close(balanced, (ce[3] + ce[:3].mean()) / 2)
    # at dream time the logits move by log(real / uniform), so p(end) scales by the real rate
    memory = model.initial_memory(1)
    _, before, _ = model.step(frames[:, 0], actions[:, 0], frames[:, 1], memory)
    model.correct_end_prior(0.01)
    _, after, _ = model.step(frames[:, 0], actions[:, 0], frames[:, 1], memory)
    torch.testing.assert_close(after - before, torch.tensor([[math.log(0.99 / 0.5), math.log(0.01 / 0.5)]]))
