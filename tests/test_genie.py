"""The genie (latent-action) family: FSQ, the latent action model and its collapse guard, MaskGIT
dynamics trained as they dream, training stages, the action map, video import, the trainer with
unlabelled video plus a labelled set, controllability, and playing a dream learned from a recorded
video from a single image. Dreaming itself (sampling, per-dream state, the sliding window):
test_genie_dreaming.py."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import random_context as context
from genie_toy import OBS, make_model

from neuralenvs.data import Episode, EpisodeDataset
from neuralenvs.models import build_model
from neuralenvs.models.genie import GenieConfig, GenieWorldModel
from neuralenvs.models.genie.dynamics import teacher_forcing_mask
from neuralenvs.nn.quantize import FiniteScalarQuantizer, fsq_levels
from neuralenvs.registry import register_all
from neuralenvs.world_model import Segments, frames_to_float

pytestmark = pytest.mark.usefixtures("single_torch_thread")


MOVES = {0: (0, 0), 1: (-8, 0), 2: (8, 0), 3: (0, -8), 4: (0, 8)}  # noop, up, down, left, right


def square_episodes(n: int, length: int, seed: int = 0, size: int = 64) -> list[Episode]:
    """A white square moved by the actions (noop, up, down, left, right) on a dark background;
    reward +1 whenever it reaches the right edge, the episode ends at its last step."""
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(n):
        actions = rng.integers(0, 5, length)
        y, x = (int(v) for v in rng.integers(8, size - 16, 2))
        frames = np.full((length + 1, size, size, 3), 20, np.uint8)
        rewards = np.zeros(length, np.float32)
        for t in range(length + 1):
            frames[t, y : y + 8, x : x + 8] = 255
            if t < length:
                dy, dx = MOVES[int(actions[t])]
                y, x = int(np.clip(y + dy, 0, size - 8)), int(np.clip(x + dx, 0, size - 8))
                rewards[t] = 1.0 if x == size - 8 else 0.0
        terminated = np.zeros(length, bool)
        terminated[-1] = True
        episodes.append(Episode(frames, actions, rewards, terminated, np.zeros(length, bool)))
    return episodes


def segments(model: GenieWorldModel, b: int = 3, pad: int = 1, seed: int = 0) -> Segments:
    eps = square_episodes(b, model.config.segment_length, seed=seed)
    frames = torch.from_numpy(np.stack([e.frames for e in eps]))
    actions = torch.from_numpy(np.stack([e.actions for e in eps]))
    mask = torch.ones(frames.shape[:2], dtype=torch.bool)
    mask[0, :pad], frames[0, :pad], actions[0, :pad] = False, 0, 0
    rewards = torch.from_numpy(np.stack([e.rewards for e in eps]))
    terminated = torch.from_numpy(np.stack([e.terminated for e in eps]))
    return Segments(frames, actions, rewards, terminated, torch.zeros_like(terminated), mask)


# ---- config -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny", "small", "paper"])
def test_config_json_round_trip(name):
    cfg = GenieConfig.named(name)
    assert GenieConfig(**json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown genie config"):
        GenieConfig.named("huge")
    with pytest.raises(ValueError, match="num_context_frames"):
        GenieConfig(context_length=4, num_context_frames=4)
    with pytest.raises(ValueError, match="maskgit_steps"):
        GenieConfig(maskgit_steps=0)
    with pytest.raises(ValueError, match="downsampling divides"):
        build_model("genie", "small", (60, 64, 3), None)


def test_preset_sizes():
    small = build_model("genie", "small", OBS, None)
    assert small.num_actions == small.config.n_latent == 8  # Genie's 8 latent actions
    assert small.tokens_per_frame == 16
    assert sum(p.numel() for p in small.parameters()) * 2 < 20e6  # bytes at fp16, under 25 MB
    paper = GenieConfig.named("paper")
    assert (paper.n_latent, paper.context_length, paper.vocab_size, paper.maskgit_steps) == (8, 16, 1024, 25)


# ---- FSQ and the latent action model ------------------------------------------------------------------


def test_fsq_levels_and_round_trip():
    assert fsq_levels(8) == (2, 2, 2) and fsq_levels(6) == (2, 3) and fsq_levels(7) == (7,)
    fsq = FiniteScalarQuantizer((2, 3))
    assert fsq.num_codes == 6
    codes = fsq.lookup(torch.arange(6))
    assert codes.shape == (6, 2) and codes.min() == -1 and codes.max() == 1
    z = torch.logit(((codes + 1) / 2).clamp(0.05, 0.95))  # values that squash onto the codes
    assert torch.equal(fsq.quantize(z), torch.arange(6))
    z = torch.randn(10, 2, requires_grad=True)
    q, idx = fsq(z)
    assert torch.equal(q.detach(), fsq.lookup(idx))
    q.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0  # straight-through gradients


def _moves_batch(n: int, g: torch.Generator, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """n transitions of a 4x4 square moved 4 pixels up, down, left or right (the label)."""
    moves = torch.tensor([[-4, 0], [4, 0], [0, -4], [0, 4]])
    y, x = torch.randint(4, size - 8, (2, n), generator=g)
    a = torch.randint(0, 4, (n,), generator=g)
    frames = torch.zeros(n, 2, size, size, 3, dtype=torch.uint8)
    for i in range(n):
        frames[i, 0, y[i] : y[i] + 4, x[i] : x[i] + 4] = 255
        yy, xx = y[i] + moves[a[i], 0], x[i] + moves[a[i], 1]
        frames[i, 1, yy : yy + 4, xx : xx + 4] = 255
    return frames, a


def _train_lam(model: GenieWorldModel, steps: int, seed: int) -> None:
    model.train()
    opt = torch.optim.Adam(model.lam.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = frames_to_float(_moves_batch(32, g)[0])
        opt.zero_grad()
        model.lam.losses(x[:, :1], x[:, 1])["latent_actions"].backward()
        opt.step()
    model.eval()


def test_latent_actions_are_consistent_and_distinct():
    """On video of a square moved in 4 directions, the LAM learns latent actions that each
    direction triggers consistently, and that tell the directions apart (no labels seen)."""
    model = make_model(seed=1, obs_shape=(32, 32, 3))
    _train_lam(model, 250, seed=2)
    frames, moves = _moves_batch(200, torch.Generator().manual_seed(5))
    latents = model.infer_latent_actions(frames)[:, 0]
    majority = [int(torch.bincount(latents[moves == d], minlength=4).argmax()) for d in range(4)]
    consistent = sum(int((latents[moves == d] == majority[d]).sum()) for d in range(4)) / len(moves)
    assert consistent > 0.8 and len(set(majority)) >= 3, (majority, consistent)


def test_collapse_guard_keeps_latent_actions_in_use():
    """An encoder driven into collapse (every transition on the same side of every FSQ boundary)
    is pulled out by the running-median guard; without it (decay 1: the centre never moves) every
    transition stays one latent action."""
    used = {}
    for decay in (0.9, 1.0):
        model = make_model(seed=0, obs_shape=(32, 32, 3), lam_center_decay=decay)
        _train_lam(model, 2, seed=0)  # the guard has seen its first batches
        with torch.no_grad():
            model.lam.to_code.bias.add_(6.0)
        _train_lam(model, 60, seed=1)
        frames, _ = _moves_batch(200, torch.Generator().manual_seed(5))
        used[decay] = int(torch.unique(model.infer_latent_actions(frames)).numel())
    assert used[1.0] == 1 and used[0.9] >= 2, used


# ---- dynamics -----------------------------------------------------------------------------------------


def test_training_predicts_exactly_as_dreaming_does():
    """The teacher-forced training pass scores the last frame of a window with the same logits as a
    dream's MaskGIT pass over that frame (same clean context, same visible tokens)."""
    model = make_model(randomized=True, context_length=4)
    dyn = model.dynamics
    b, w, s = 2, model.window, model.tokens_per_frame
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.config.vocab_size, (b, w, s), generator=g)
    actions = torch.randint(0, model.config.n_latent, (b, w), generator=g)
    actions[:, 0] = model.config.n_latent  # the window's first frame has no known incoming action
    valid = torch.ones(b, w, dtype=torch.bool)
    valid[1, 0] = False  # a younger dream
    masked = torch.rand(b, w - 1, s, generator=g) < 0.5
    with torch.no_grad():
        train_logits = dyn.teacher_forced(tokens, actions, valid, masked)[:, -1]
        ctx = dyn.prefill(tokens[:, :-1], actions[:, :-1], valid[:, :-1])
        visible = torch.where(masked[:, -1], torch.full_like(tokens[:, -1], dyn.mask_token), tokens[:, -1])
        dream_logits = dyn.head(dyn.new_frame(visible, actions[:, -1], ctx, valid[:, :-1]))
    torch.testing.assert_close(train_logits, dream_logits, rtol=1e-4, atol=1e-4)
    mask = teacher_forcing_mask(valid[:, :-1])
    assert mask.shape == (b, 2 * (w - 1), 2 * (w - 1))
    assert not mask[1, 1:, 0].any()  # a padded frame is seen by nothing but itself


# ---- training -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("stage", "trained"), [("tokenizer", "tokenizer."), ("latent_actions", "lam."),
                                                ("dynamics", "dynamics."), ("heads", "heads.")])
def test_training_stages_train_only_their_part(stage, trained):
    model = make_model().train()
    assert model.training_stages() == ["tokenizer", "latent_actions", "dynamics", "heads"]
    model.set_training_stage(stage)
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-2)  # as the trainer builds it
    for seed in range(2):
        opt.zero_grad(set_to_none=True)
        model.training_losses(segments(model, seed=seed))["loss"].backward()
        opt.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, params[name])}
    changed |= {name for name, b in model.named_buffers() if not torch.equal(b, buffers[name])}
    assert changed and all(name.startswith(trained) for name in changed), changed


@pytest.mark.parametrize("stage", ["tokenizer", "latent_actions", "dynamics"])
def test_unlabelled_stages_never_read_actions_or_rewards(stage):
    model = make_model(randomized=True).train()
    model.set_training_stage(stage)
    batch = segments(model)
    other = Segments(batch.frames, (batch.actions + 3) % 5, torch.randn_like(batch.rewards),
                     ~batch.terminated, batch.truncated, batch.mask)
    torch.manual_seed(0)
    a = model.training_losses(batch)
    torch.manual_seed(0)
    b = model.training_losses(other)
    assert a["loss"].item() == b["loss"].item()


def test_dynamics_loss_falls_on_a_fixed_batch():
    model = make_model().train()
    model.set_training_stage("dynamics")
    batch = segments(model, b=4)
    opt = torch.optim.Adam(model.dynamics.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        torch.manual_seed(0)  # the same masks every step
        loss = model.training_losses(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


# ---- the action map ---------------------------------------------------------------------------------


def _labelled(tmp_path: Path, episodes: list[Episode], num_actions: int = 5, name: str = "labelled") -> EpisodeDataset:
    ds = EpisodeDataset(tmp_path / name, obs_shape=OBS, num_actions=num_actions, source="synthetic:squares",
                        action_meanings=["NOOP", "UP", "DOWN", "LEFT", "RIGHT", "UNUSED"][:num_actions])
    for ep in episodes:
        ds.append(ep)
    return ds


def test_action_map_is_the_empirical_latent_distribution(tmp_path):
    ds = _labelled(tmp_path, square_episodes(3, 20), num_actions=6)  # action 5 never occurs
    model = make_model(randomized=True, num_actions=6)
    assert torch.equal(model.action_map.argmax(dim=1), torch.arange(6) % model.config.n_latent)  # unfitted
    report = model.prepare_stage("heads", ds, [0, 1, 2])
    counts = torch.zeros(6, model.config.n_latent)
    for ep in ds:
        latents = model.infer_latent_actions(torch.from_numpy(ep.frames)[None])[0]
        counts.index_put_((torch.from_numpy(ep.actions), latents), torch.ones(len(ep)), accumulate=True)
    expected = counts[:5] / counts[:5].sum(dim=1, keepdim=True)
    torch.testing.assert_close(model.action_map[:5], expected)
    torch.testing.assert_close(model.action_map[5], counts.sum(0) / counts.sum())  # unseen: the overall mix
    assert report["labelled_transitions"] == 60 and report["unseen_actions"] == 1
    assert report["purity"] == pytest.approx(float(counts.max(dim=1).values.sum() / 60))
    # dreams take the game's actions now, mapped by sampling (or by the argmax when asked)
    state = model.init_state(*context(2, model))
    assert model.step(state, torch.tensor([5, 2]), torch.Generator().manual_seed(0)).next_frames.shape == (2, *OBS)
    argmax = dataclasses.replace(model.config, sample_action_map=False)
    greedy = GenieWorldModel(argmax, OBS, 6)
    greedy.action_map.copy_(model.action_map)
    assert torch.equal(greedy.map_actions(torch.arange(6)), model.action_map.argmax(dim=1))
    with pytest.raises(ValueError, match="labelled data has 6 actions"):
        make_model(num_actions=4).prepare_stage("heads", ds, [0])


def test_first_steps_view_cuts_the_last_episode(tmp_path):
    ds = _labelled(tmp_path, square_episodes(3, 10))
    view = ds.first_steps(25)
    assert view.num_steps == 25 and view.num_episodes == 3 and view.episode_lengths.tolist() == [10, 10, 5]
    cut = view.episode(2)
    assert cut.truncated[-1] and not cut.terminated.any() and cut.frames.shape[0] == 6
    assert np.array_equal(cut.frames, ds.episode(2).frames[:6])
    assert view.first_steps(100).num_steps == 25
    with pytest.raises(TypeError, match="read-only"):
        view.append(ds.episode(0))


# ---- video ----------------------------------------------------------------------------------------------


def _write_video(path: Path, frames: np.ndarray, fps: float = 15.0) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, frames.shape[2:0:-1])
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def test_import_videos_and_image_sequences(tmp_path):
    from neuralenvs.data.video import import_videos

    src = tmp_path / "videos"
    (src / "clip_b").mkdir(parents=True)
    big = np.zeros((12, 96, 128, 3), np.uint8)
    big[:, 30:60, 40:80] = (255, 0, 0)  # a red block: RGB order must survive
    _write_video(src / "a.mp4", big)
    for i in range(5):
        cv2.imwrite(str(src / "clip_b" / f"{i:03d}.png"), cv2.cvtColor(big[i], cv2.COLOR_RGB2BGR))
    (src / "notes.txt").write_text("not a clip")
    ds = import_videos(src, tmp_path / "episodes", OBS, max_episode_frames=8, progress=False)
    assert not ds.labelled and ds.meta["source"] == f"video:{src.resolve()}" and ds.obs_shape == OBS
    assert ds.episode_lengths.tolist() == [7, 3, 4]  # 12 frames split 8 + 4, then the 5 images
    ep = ds.episode(0)
    assert ep.frames.shape == (8, *OBS) and not ep.actions.any() and not ep.rewards.any()
    assert ep.truncated[-1] and not ep.terminated.any()
    centre = ep.frames[0, 32]
    assert centre[32, 0] > 200 and centre[32, 2] < 60  # red, resized with the block still in place
    again = import_videos(src, tmp_path / "episodes", OBS, progress=False)  # reused, not redone
    assert again.num_episodes == 3
    with pytest.raises(ValueError, match="already holds"):
        import_videos(src / "clip_b", tmp_path / "episodes", OBS, progress=False)
    with pytest.raises(ValueError, match="no video files"):
        import_videos(tmp_path / "episodes" / "episodes", tmp_path / "other", OBS, progress=False)


# ---- trainer -------------------------------------------------------------------------------------------


def _video_dataset(tmp_path: Path) -> EpisodeDataset:
    ds = EpisodeDataset(tmp_path / "video", obs_shape=OBS, num_actions=1, source="video:/nowhere", labelled=False)
    for ep in square_episodes(4, 12, seed=3):
        n = len(ep)
        ds.append(Episode(ep.frames, np.zeros(n, np.int64), np.zeros(n, np.float32), np.zeros(n, bool),
                          np.zeros(n, bool)))
    return ds


def test_trainer_learns_from_video_and_a_few_labelled_steps(tmp_path, monkeypatch):
    from neuralenvs.checkpoint import build_world_model, load_checkpoint
    from neuralenvs.training import TrainConfig, Trainer

    video = _video_dataset(tmp_path)
    labelled = _labelled(tmp_path, square_episodes(4, 20, seed=4))
    cfg = TrainConfig(family="genie", model_config="tiny", data=str(video.path), out=str(tmp_path / "run"), steps=2,
                      batch_size=2, held_out_episodes=1, start_bank_size=4, labelled_data=str(labelled.path),
                      labelled_steps=30, reward_fraction=0.5, game="Squares")
    trainer = Trainer(cfg, device="cpu")
    assert trainer.model.num_actions == 5 and trainer.labelled.num_steps == 30
    trainer.train(progress=False)
    assert trainer.stage_index == 4 and trainer.prepared["heads"]["labelled_transitions"] == 30
    checkpoint = load_checkpoint(trainer.export(progress=False))
    prov = checkpoint.config["provenance"]
    assert prov["stages"] == ["tokenizer", "latent_actions", "dynamics", "heads"] and prov["training_steps"] == 8
    assert prov["labelled_transitions"] == 30 and prov["prepared"]["heads"]["labelled_transitions"] == 30
    assert checkpoint.num_actions == 5 and checkpoint.game == "Squares"
    assert checkpoint.action_meanings == ["NOOP", "UP", "DOWN", "LEFT", "RIGHT"]
    # controllability on the video's held-out episode; fidelity on labelled episodes nothing trained on
    metrics = checkpoint.config["metrics"]
    assert metrics["controllability"]["episodes"] == [3] and metrics["fidelity"]["episodes"] == [3]
    assert not checkpoint.starts_actions.any()  # video has no actions
    model = build_world_model(checkpoint, device="cpu")
    torch.testing.assert_close(model.action_map, trainer.model.action_map, rtol=1e-3, atol=1e-3)
    # the run folder resumes the finished run, with what its preparation reported
    again = Trainer(cfg, device="cpu")
    assert again.stage_index == 4 and again.prepared == trainer.prepared
    # a checkpoint folder <game>-genie registers as <Game>-genie-v0, with the game's actions
    shutil.copytree(tmp_path / "run" / "checkpoint", tmp_path / "shipped" / "squares-genie")
    monkeypatch.setenv("NEURALENVS_CHECKPOINTS", str(tmp_path / "shipped"))
    register_all()
    env = gym.make("neuralenvs/Squares-genie-v0", horizon=3, device="cpu")
    assert env.action_space == gym.spaces.Discrete(5)
    env.reset(seed=0)
    assert env.step(4)[0].shape == OBS
    env.close()


def test_trainer_without_labelled_data_keeps_the_latent_actions(tmp_path):
    from neuralenvs.checkpoint import load_checkpoint
    from neuralenvs.training import TrainConfig, Trainer

    data = _labelled(tmp_path, square_episodes(3, 12))  # an episode dataset: its actions are ignored
    cfg = TrainConfig(family="genie", model_config="tiny", data=str(data.path), out=str(tmp_path / "run"), steps=1,
                      batch_size=2, held_out_episodes=1, start_bank_size=4, game="Squares")
    trainer = Trainer(cfg, device="cpu")
    assert trainer.model.num_actions == trainer.model.config.n_latent == 4
    trainer.train(progress=False)
    checkpoint = load_checkpoint(trainer.export(progress=False))
    assert checkpoint.config["provenance"]["stages"] == ["tokenizer", "latent_actions", "dynamics"]
    assert checkpoint.config["provenance"]["labelled_transitions"] == 0
    assert checkpoint.num_actions == 4 and checkpoint.action_meanings == [f"LATENT_{i}" for i in range(4)]
    assert checkpoint.game is None and checkpoint.config["provenance"]["game_of_data"] == "Squares"
    assert not checkpoint.starts_actions.any()  # the data's 5 actions are not this model's 4


def test_cli_takes_video_or_data_not_both(tmp_path, capsys):
    from neuralenvs.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--family", "genie", "--data", "x", "--video", "y", "--out", str(tmp_path), "--steps", "1"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_trainer_refuses_mismatched_data(tmp_path):
    from neuralenvs.training import TrainConfig, Trainer

    video = _video_dataset(tmp_path)
    labelled = _labelled(tmp_path, square_episodes(1, 5))
    with pytest.raises(ValueError, match="unlabelled video"):
        Trainer(TrainConfig(family="token", model_config="tiny", data=str(video.path), out=str(tmp_path / "a"),
                            steps=1), device="cpu")
    with pytest.raises(ValueError, match="--labelled is"):
        Trainer(TrainConfig(family="token", model_config="tiny", data=str(labelled.path), out=str(tmp_path / "b"),
                            steps=1, labelled_data=str(labelled.path)), device="cpu")
    with pytest.raises(ValueError, match="holds unlabelled video"):
        Trainer(TrainConfig(family="genie", model_config="tiny", data=str(video.path), out=str(tmp_path / "c"),
                            steps=1, labelled_data=str(video.path)), device="cpu")


# ---- controllability -----------------------------------------------------------------------------------


def test_controllability_is_zero_when_actions_do_nothing(tmp_path):
    from neuralenvs.measure.controllability import measure_controllability

    ds = _labelled(tmp_path, square_episodes(2, 12))
    model = make_model(randomized=True, temperature=1.0)
    result = measure_controllability(model, ds, [0, 1], num_windows=6)
    assert result["t"] == 4 and result["windows"] == 6 and np.isfinite(result["delta_psnr"])
    assert result["delta_psnr"] == pytest.approx(result["psnr_inferred"] - result["psnr_random"])
    with torch.no_grad():
        model.dynamics.action_embedding.weight.zero_()  # latent actions change nothing
    deaf = measure_controllability(model, ds, [0, 1], num_windows=6)
    assert deaf["delta_psnr"] == 0.0
    with pytest.raises(TypeError, match="no latent actions"):
        measure_controllability(build_model("token", "tiny", OBS, 5), ds, [0])


# ---- end to end: a recorded game as video, trained, played from one image ------------------------------


def test_train_on_recorded_video_and_play_from_one_image(tmp_path):
    import neuralenvs
    from neuralenvs.cli import main

    env = neuralenvs.make_atari_env("Boxing")
    obs, _ = env.reset(seed=0)
    frames = [obs]
    rng = np.random.default_rng(0)
    for _ in range(200):
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        frames.append(obs)
        if terminated or truncated:
            obs, _ = env.reset()
            frames.append(obs)
    env.close()
    videos = tmp_path / "videos"
    videos.mkdir()
    _write_video(videos / "boxing-1.mp4", np.stack(frames[:120]))
    _write_video(videos / "boxing-2.mp4", np.stack(frames[120:]))  # the second one is held out
    prompt = tmp_path / "frame.png"
    cv2.imwrite(str(prompt), cv2.cvtColor(frames[50], cv2.COLOR_RGB2BGR))

    out = tmp_path / "run"
    main(["train", "--family", "genie", "--config", "tiny", "--video", str(videos), "--out", str(out),
          "--steps", "3", "--batch-size", "4", "--held-out", "1"])
    assert (out / "video-episodes" / "meta.json").exists()
    dream = gym.make("neuralenvs/Dream-v0", checkpoint=str(out / "checkpoint"), prompt=str(prompt), device="cpu")
    n = GenieConfig.named("tiny").n_latent
    assert dream.action_space == gym.spaces.Discrete(n)
    first, _ = dream.reset(seed=0)
    assert first.shape == OBS
    for action in range(n):  # every latent action dreams a frame from the same image
        dream.reset(seed=0)
        obs, reward, terminated, truncated, _ = dream.step(action)
        assert obs.shape == OBS and obs.dtype == np.uint8 and reward in (-1.0, 0.0, 1.0)
    again, _ = dream.reset(seed=1)
    assert np.array_equal(again, first)  # every reset starts from the image
    dream.close()
    metrics = json.loads((out / "checkpoint" / "config.json").read_text())["metrics"]
    assert metrics["controllability"]["t"] == 4 and np.isfinite(metrics["controllability"]["delta_psnr"])
