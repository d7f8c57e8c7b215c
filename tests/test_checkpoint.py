"""Checkpoints: round trips, validation errors, atomic saves, and corruption fuzzing.

Uses the toy family from ``tests/checkpoint_toy.py`` (registered for each test through
``monkeypatch``) so these tests do not depend on the real families.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import neuralenvs.checkpoint.publish as publish_module
from neuralenvs.checkpoint import (
    CARD_FILE,
    CHECKPOINT_FILES,
    CONFIG_FILE,
    FORMAT_VERSION,
    STARTS_FILE,
    WEIGHTS_FILE,
    Checkpoint,
    build_world_model,
    config_digest,
    file_digest,
    load_checkpoint,
    save_checkpoint,
)
from neuralenvs.errors import CheckpointError, NeuralEnvsError
from neuralenvs.utils.io import atomic_write_bytes, atomic_write_text

TESTS_DIR = Path(__file__).resolve().parent
OBS = (8, 8, 3)
ACTIONS = 4


@pytest.fixture(autouse=True)
def toy_family(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    import checkpoint_toy

    import neuralenvs.models

    monkeypatch.setitem(neuralenvs.models.FAMILIES, checkpoint_toy.TOY_FAMILY, checkpoint_toy.TOY_ENTRY)
    return checkpoint_toy


@pytest.fixture
def toy(toy_family):
    return toy_family


def _save(toy, path: Path, seed: int = 0, **kwargs) -> tuple[torch.nn.Module, np.ndarray, np.ndarray]:
    model = toy.make_toy_model(seed)
    frames, actions = toy.make_starts(seed, 5, 2, OBS, ACTIONS)
    kwargs.setdefault("game", "Toy")
    save_checkpoint(path, model=model, starts_frames=frames, starts_actions=actions, **kwargs)
    return model, frames, actions


def _hidden_siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


def _edit_config(path: Path, reseal: bool, **changes) -> None:
    config = json.loads((path / CONFIG_FILE).read_text())
    config.update(changes)
    if reseal:
        config["config_sha256"] = config_digest(config)
    (path / CONFIG_FILE).write_text(json.dumps(config))


def _replace_starts(path: Path, **arrays: np.ndarray) -> None:
    """Write a start bank by hand and reseal, as a crafted (not damaged) checkpoint would be."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    (path / STARTS_FILE).write_bytes(buffer.getvalue())
    config = json.loads((path / CONFIG_FILE).read_text())
    config["checksums"][STARTS_FILE] = file_digest(buffer.getvalue())
    config["config_sha256"] = config_digest(config)
    (path / CONFIG_FILE).write_text(json.dumps(config))


# ---------------------------------------------------------------------------------------------
# Round trips


def test_round_trip_float32_is_exact(toy, tmp_path: Path) -> None:
    path = tmp_path / "Toy-toy"
    model, frames, actions = _save(
        toy,
        path,
        action_meanings=["NOOP", "FIRE", "LEFT", "RIGHT"],
        provenance={"data": "4 random episodes", "real_steps": 100, "wall_clock_seconds": 1.5},
        metrics={"psnr": {"1": 31.0}, "nan_metric": float("nan")},
    )
    assert sorted(os.listdir(path)) == sorted(CHECKPOINT_FILES)
    assert _hidden_siblings(path) == []

    checkpoint = load_checkpoint(path)
    assert isinstance(checkpoint, Checkpoint)
    config = checkpoint.config
    assert config["format_version"] == FORMAT_VERSION
    assert config["family"] == toy.TOY_FAMILY and checkpoint.family == toy.TOY_FAMILY
    assert config["model_config"] == {"hidden": 8, "context": 2, "channels": [4, 6], "gain": 0.5}
    assert config["game"] == "Toy"
    assert config["obs_shape"] == list(OBS) and checkpoint.obs_shape == OBS
    assert config["num_actions"] == ACTIONS
    assert config["action_meanings"] == ["NOOP", "FIRE", "LEFT", "RIGHT"]
    assert config["weights_dtype"] == "float32"
    assert config["provenance"]["real_steps"] == 100
    assert config["provenance"]["neuralenvs_version"]
    assert config["provenance"]["num_parameters"] == sum(p.numel() for p in model.parameters())
    assert config["metrics"] == {"psnr": {"1": 31.0}, "nan_metric": None}  # JSON has no NaN

    np.testing.assert_array_equal(checkpoint.starts_frames, frames)
    np.testing.assert_array_equal(checkpoint.starts_actions, actions)
    assert checkpoint.starts_frames.dtype == np.uint8 and checkpoint.starts_actions.dtype == np.int64

    loaded = build_world_model(checkpoint, device="cpu")
    assert type(loaded) is type(model) and loaded.config == model.config
    assert not loaded.training and loaded.device == torch.device("cpu")
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for name, tensor in original.items():
        assert restored[name].dtype == tensor.dtype, name
        assert torch.equal(restored[name], tensor), name
    assert loaded.action_logits.weight is loaded.embed.weight  # tying survives

    # The generated card shows the data, budget and metrics.
    assert "4 random episodes" in checkpoint.card and "psnr.1" in checkpoint.card
    # A path to config.json works too.
    assert load_checkpoint(path / CONFIG_FILE).config == config


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_round_trip_half_precision(toy, tmp_path: Path, dtype: str) -> None:
    model, _, _ = _save(toy, tmp_path / "full")
    _save(toy, tmp_path / "half", weights_dtype=dtype)
    full = (tmp_path / "full" / WEIGHTS_FILE).stat().st_size
    half = (tmp_path / "half" / WEIGHTS_FILE).stat().st_size
    assert half < 0.75 * full

    checkpoint = load_checkpoint(tmp_path / "half")
    stored = checkpoint.weights
    assert stored["encoder.weight"].dtype == getattr(torch, dtype)
    assert stored["updates"].dtype == torch.int64 and stored["flags"].dtype == torch.bool
    loaded = build_world_model(checkpoint, device="cpu")
    tolerance = {"float16": 1e-3, "bfloat16": 1e-2}[dtype]
    for name, tensor in model.state_dict().items():
        restored = loaded.state_dict()[name]
        assert restored.dtype == tensor.dtype, name  # cast back to the model's dtype
        if tensor.is_floating_point():
            torch.testing.assert_close(restored, tensor, rtol=tolerance, atol=tolerance)
        else:
            assert torch.equal(restored, tensor), name  # integer buffers are never cast


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_new_metrics_leave_the_weights_file_byte_for_byte(toy, tmp_path: Path, dtype: str) -> None:
    from neuralenvs.checkpoint import update_metrics

    _save(toy, tmp_path / "ckpt", weights_dtype=dtype)
    before = (tmp_path / "ckpt" / WEIGHTS_FILE).read_bytes()
    for i in range(3):  # safetensors orders its header's metadata at random from one save to the next
        update_metrics(tmp_path / "ckpt", note=i)
        assert (tmp_path / "ckpt" / WEIGHTS_FILE).read_bytes() == before
    assert load_checkpoint(tmp_path / "ckpt").config["metrics"]["note"] == 2
    _save(toy, tmp_path / "other", seed=1, same_weights_as=before)  # other tensors: written anew
    assert (tmp_path / "other" / WEIGHTS_FILE).read_bytes() != before


def test_custom_card_and_torch_starts(toy, tmp_path: Path) -> None:
    model = toy.make_toy_model()
    frames, actions = toy.make_starts(0, 3, 2, OBS, ACTIONS)
    save_checkpoint(
        tmp_path / "c",
        model=model,
        starts_frames=torch.from_numpy(frames),
        starts_actions=torch.from_numpy(actions).int(),
        card="# my card\n",
    )
    checkpoint = load_checkpoint(tmp_path / "c")
    assert checkpoint.card == "# my card\n"
    assert checkpoint.starts_actions.dtype == np.int64
    assert checkpoint.config["game"] is None
    assert checkpoint.config["action_meanings"] == [f"ACTION_{i}" for i in range(ACTIONS)]


# ---------------------------------------------------------------------------------------------
# Atomic saves


def test_overwrite_replaces_and_cleans_up(toy, tmp_path: Path) -> None:
    path = tmp_path / "ck"
    _save(toy, path, seed=0)
    second, _, _ = _save(toy, path, seed=1)
    loaded = build_world_model(load_checkpoint(path), device="cpu")
    assert torch.equal(loaded.encoder.weight, second.encoder.weight)
    assert _hidden_siblings(path) == []


def test_failed_save_keeps_previous_checkpoint(toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ck"
    first, _, _ = _save(toy, path, seed=0)
    real_write = publish_module.write_file_durably

    def dies_on_starts(target, data, **kwargs):
        if Path(target).name == STARTS_FILE:
            raise OSError(28, "No space left on device")
        real_write(target, data, **kwargs)

    monkeypatch.setattr(publish_module, "write_file_durably", dies_on_starts)
    with pytest.raises(OSError, match="No space"):
        _save(toy, path, seed=1)
    assert _hidden_siblings(path) == []
    loaded = build_world_model(load_checkpoint(path), device="cpu")
    assert torch.equal(loaded.encoder.weight, first.encoder.weight)


def test_failed_install_puts_previous_back(toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ck"
    first, _, _ = _save(toy, path, seed=0)
    real_rename = os.rename

    def refuse_new_folder(src, dst):
        if ".tmp-" in os.fspath(src):
            raise PermissionError(13, "Permission denied")
        real_rename(src, dst)

    with monkeypatch.context() as patch, pytest.raises(PermissionError):
        patch.setattr(os, "rename", refuse_new_folder)
        _save(toy, path, seed=1)
    assert _hidden_siblings(path) == []
    loaded = build_world_model(load_checkpoint(path), device="cpu")
    assert torch.equal(loaded.encoder.weight, first.encoder.weight)


def test_load_recovers_inside_the_swap_window(toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ck"
    first, _, _ = _save(toy, path, seed=0)
    # What a save killed between its two renames leaves behind: the old checkpoint moved aside.
    os.rename(path, tmp_path / ".ck.old-deadbeef0000")
    loaded = build_world_model(load_checkpoint(path), device="cpu")
    assert torch.equal(loaded.encoder.weight, first.encoder.weight)
    # The next save installs the new one; it removes the leftover only once it is old (a fresh
    # one could be another process's save in progress).
    _save(toy, path, seed=1)
    assert _hidden_siblings(path) == [".ck.old-deadbeef0000"]
    assert load_checkpoint(path).weights["encoder.weight"].shape == first.encoder.weight.shape
    monkeypatch.setattr(publish_module, "_STALE_TRASH_SECONDS", -1.0)
    _save(toy, path, seed=2)
    assert _hidden_siblings(path) == []


def test_symlinked_checkpoint_is_replaced_not_followed(toy, tmp_path: Path) -> None:
    first, _, _ = _save(toy, tmp_path / "run1", seed=0)
    (tmp_path / "latest").symlink_to(tmp_path / "run1", target_is_directory=True)
    second, _, _ = _save(toy, tmp_path / "latest", seed=1)
    assert not (tmp_path / "latest").is_symlink()
    latest = build_world_model(load_checkpoint(tmp_path / "latest"), device="cpu")
    kept = build_world_model(load_checkpoint(tmp_path / "run1"), device="cpu")
    assert torch.equal(latest.encoder.weight, second.encoder.weight)
    assert torch.equal(kept.encoder.weight, first.encoder.weight)
    assert _hidden_siblings(tmp_path / "latest") == []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_concurrent_saves_never_break_loads(toy, tmp_path: Path) -> None:
    """A reader polling a checkpoint that another thread keeps re-saving always gets a whole one."""
    import threading

    path = tmp_path / "ck"
    _save(toy, path, seed=0)
    models = [toy.make_toy_model(seed) for seed in range(3)]
    frames, actions = toy.make_starts(0, 5, 2, OBS, ACTIONS)
    done = threading.Event()
    save_errors: list[BaseException] = []

    def keep_saving() -> None:
        try:
            for i in range(60):
                save_checkpoint(path, model=models[i % 3], starts_frames=frames, starts_actions=actions)
        except BaseException as exc:  # surfaced by the assertion below
            save_errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=keep_saving)
    thread.start()
    loads = 0
    while not done.is_set():
        load_checkpoint(path)  # any CheckpointError here fails the test
        loads += 1
    thread.join()
    assert save_errors == [] and loads > 0
    assert _hidden_siblings(path) == []


def test_refuses_to_replace_what_is_not_a_checkpoint(toy, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="notes.txt"):
        _save(toy, folder)
    assert (folder / "notes.txt").read_text() == "precious"
    plain = tmp_path / "file"
    plain.write_text("x")
    with pytest.raises(FileExistsError):
        _save(toy, plain)
    assert plain.read_text() == "x"
    assert _hidden_siblings(folder) == [] and _hidden_siblings(plain) == []


def test_save_rejects_bad_arguments_without_writing(toy, tmp_path: Path) -> None:
    model = toy.make_toy_model()
    frames, actions = toy.make_starts(0, 3, 2, OBS, ACTIONS)
    path = tmp_path / "ck"
    bad_calls = [
        ({"weights_dtype": "int8"}, "weights_dtype"),
        ({"starts_frames": frames.astype(np.float32)}, "uint8"),
        ({"starts_frames": frames[:, :, :4]}, "shape"),
        ({"starts_frames": frames[:, :1], "starts_actions": actions[:, :0]}, "dreams from 2"),
        ({"starts_actions": actions[:, :0]}, "shape"),
        ({"starts_actions": actions + ACTIONS}, r"\[0, 4\)"),
        ({"action_meanings": ["A"]}, "action_meanings"),
    ]
    for override, match in bad_calls:
        kwargs = {"model": model, "starts_frames": frames, "starts_actions": actions, **override}
        with pytest.raises(ValueError, match=match):
            save_checkpoint(path, **kwargs)
    assert not path.exists() and _hidden_siblings(path) == []


def test_unregistered_family_warns(toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import neuralenvs.models

    monkeypatch.delitem(neuralenvs.models.FAMILIES, toy.TOY_FAMILY)
    with pytest.warns(UserWarning, match="not registered"):
        _save(toy, tmp_path / "ck")


# ---------------------------------------------------------------------------------------------
# Validation errors


def test_wrong_format_version(toy, tmp_path: Path) -> None:
    path = tmp_path / "ck"
    _save(toy, path)
    _edit_config(path, reseal=True, format_version=FORMAT_VERSION + 1)
    with pytest.raises(CheckpointError, match=f"reads format version {FORMAT_VERSION}") as info:
        load_checkpoint(path)
    assert info.value.field == "format_version" and info.value.path == path / CONFIG_FILE
    assert "Upgrade neuralenvs" in str(info.value)


@pytest.mark.parametrize("missing", CHECKPOINT_FILES)
def test_missing_file(toy, tmp_path: Path, missing: str) -> None:
    path = tmp_path / "ck"
    _save(toy, path)
    (path / missing).unlink()
    with pytest.raises(CheckpointError, match="missing file") as info:
        load_checkpoint(path)
    assert info.value.path == path / missing and info.value.field is None


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint folder") as info:
        load_checkpoint(tmp_path / "nowhere")
    assert info.value.path == tmp_path / "nowhere"


def test_hand_edits(toy, tmp_path: Path) -> None:
    path = tmp_path / "ck"
    _save(toy, path)
    _edit_config(path, reseal=False, metrics={"psnr": 99.0})  # unsealed: allowed
    assert load_checkpoint(path).config["metrics"] == {"psnr": 99.0}
    _edit_config(path, reseal=False, game="Pong")  # sealed: caught
    with pytest.raises(CheckpointError, match="config_digest") as info:
        load_checkpoint(path)
    assert info.value.field == "config_sha256"
    _edit_config(path, reseal=True)  # re-sealed on purpose: accepted
    assert load_checkpoint(path).game == "Pong"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"obs_shape": [8, 8]}, "obs_shape"),
        ({"obs_shape": [8, 8, 0]}, "obs_shape"),
        ({"obs_shape": [8, 8, True]}, "obs_shape"),
        ({"num_actions": 0}, "num_actions"),
        ({"num_actions": 5}, "action_meanings"),
        ({"action_meanings": ["a", "b", "c", 4]}, "action_meanings"),
        ({"family": ""}, "family"),
        ({"model_config": [1]}, "model_config"),
        ({"weights_dtype": "float64"}, "weights_dtype"),
        ({"provenance": None}, "provenance"),
        ({"checksums": {}}, "checksums"),
        ({"game": 3}, "game"),
    ],
)
def test_invalid_config_fields(toy, tmp_path: Path, changes: dict, field: str) -> None:
    path = tmp_path / "ck"
    _save(toy, path)
    _edit_config(path, reseal=True, **changes)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert info.value.field == field and info.value.path == path / CONFIG_FILE


def test_invalid_start_banks(toy, tmp_path: Path) -> None:
    path = tmp_path / "ck"
    _, frames, actions = _save(toy, path)
    cases = [
        ({"frames": frames.astype(np.int16), "actions": actions}, "frames", "uint8"),
        ({"frames": frames[..., :2], "actions": actions}, "frames", "shape"),
        ({"frames": frames, "actions": actions.astype(np.int32)}, "actions", "int64"),
        ({"frames": frames, "actions": actions[:, :0]}, "actions", "shape"),
        ({"frames": frames, "actions": actions - 1}, "actions", "values"),
        ({"frames": frames}, None, "exactly"),
        ({"frames": frames, "actions": actions, "more": actions}, None, "exactly"),
    ]
    for arrays, field, match in cases:
        _replace_starts(path, **arrays)
        with pytest.raises(CheckpointError, match=match) as info:
            load_checkpoint(path)
        assert info.value.field == field and info.value.path == path / STARTS_FILE
    # A pickled object array must be refused, not unpickled.
    _replace_starts(path, frames=np.array([{"a": 1}], dtype=object), actions=actions)
    with pytest.raises(CheckpointError, match="not a readable .npz"):
        load_checkpoint(path)


def test_weights_checksum_and_header(toy, tmp_path: Path) -> None:
    path = tmp_path / "ck"
    _save(toy, path)
    data = bytearray((path / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    (path / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256") as info:
        load_checkpoint(path)
    assert info.value.path == path / WEIGHTS_FILE
    # A header claiming more bytes than the file has, resealed so only the parser can catch it.
    bad = (10**9).to_bytes(8, "little") + b"{}"
    (path / WEIGHTS_FILE).write_bytes(bad)
    config = json.loads((path / CONFIG_FILE).read_text())
    config["checksums"][WEIGHTS_FILE] = file_digest(bad)
    config["config_sha256"] = config_digest(config)
    (path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="header claims"):
        load_checkpoint(path)


def test_shape_mismatch_names_tensor_and_shapes(toy, tmp_path: Path) -> None:
    path = tmp_path / "ck"
    _save(toy, path)
    checkpoint = load_checkpoint(path)
    checkpoint.config["model_config"]["hidden"] = 5
    with pytest.raises(CheckpointError) as info:
        build_world_model(checkpoint, device="cpu")
    error = info.value
    assert error.path == path / WEIGHTS_FILE and error.field == "proj.weight"
    assert "[8, 6]" in str(error) and "[5, 6]" in str(error)


def test_missing_and_unexpected_tensors(toy, tmp_path: Path) -> None:
    path = tmp_path / "ck"
    _save(toy, path)
    checkpoint = load_checkpoint(path)
    del checkpoint.weights["reward_head.bias"]
    with pytest.raises(CheckpointError, match="tensor missing") as info:
        build_world_model(checkpoint, device="cpu")
    assert info.value.field == "reward_head.bias"
    checkpoint = load_checkpoint(path)
    checkpoint.weights["stray.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError, match="not part of") as info:
        build_world_model(checkpoint, device="cpu")
    assert info.value.field == "stray.weight"
    checkpoint = load_checkpoint(path)
    checkpoint.weights["updates"] = torch.zeros((), dtype=torch.float32)
    with pytest.raises(CheckpointError, match="stored as") as info:
        build_world_model(checkpoint, device="cpu")
    assert info.value.field == "updates"


def test_wrong_family_and_bad_model_config(toy, tmp_path: Path) -> None:
    path = tmp_path / "ck"
    _save(toy, path)
    checkpoint = load_checkpoint(path)
    checkpoint.config["family"] = "no-such-family"
    with pytest.raises(CheckpointError, match="unknown world-model family") as info:
        build_world_model(checkpoint, device="cpu")
    assert info.value.field == "family" and info.value.path == path / CONFIG_FILE
    for bad in ({"hidden": 8, "surprise": 1}, {"hidden": 0}, {"channels": [4]}):
        checkpoint = load_checkpoint(path)
        checkpoint.config["model_config"] = bad
        with pytest.raises(CheckpointError) as info:
            build_world_model(checkpoint, device="cpu")
        assert info.value.field == "model_config"


def test_checkpoint_error_is_informative_and_picklable(tmp_path: Path) -> None:
    error = CheckpointError(tmp_path / CONFIG_FILE, "obs_shape", "must be 3 positive integers")
    assert isinstance(error, NeuralEnvsError)
    text = str(error)
    assert str(tmp_path / CONFIG_FILE) in text and "'obs_shape'" in text and "copy" in text
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.path, clone.field, str(clone)) == (error.path, error.field, text)


# ---------------------------------------------------------------------------------------------
# Atomic file helpers


def test_atomic_write_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "index.json"
    assert atomic_write_text(target, "one") == target
    atomic_write_bytes(target, memoryview(b"two"))
    assert target.read_text() == "two"

    def broken_replace(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated"):
        atomic_write_text(target, "three")
    assert target.read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json"]


# ---------------------------------------------------------------------------------------------
# Fuzzing

FUZZ_CASES = 200  # damaged bytes, per file
RESEAL_CASES = 100  # damaged bytes with checksums recomputed, per binary file and config.json
STRUCTURED_CASES = 150  # well-formed files with wrong values, for config.json and starts.npz


@pytest.mark.timeout(120)
def test_fuzz_corruption(toy, tmp_path: Path, record_property) -> None:
    """Every damaged checkpoint must either fail with CheckpointError or load exactly what was saved.

    Policy: weights and start bank carry SHA-256 checksums, so any change to them is a clean error;
    config.json's sealed fields carry a digest, so a successful load after damage there means only
    provenance/metrics text or formatting changed; the README is prose and always loads. In the
    resealed modes the damage reaches the parsers, which must never raise anything else.
    """
    model = toy.make_toy_model(3)
    frames, actions = toy.make_starts(3, 4, 2, OBS, ACTIONS)
    reference = toy.save_reference(tmp_path / "reference", model, frames, actions)
    report = toy.run_fuzz(
        reference,
        tmp_path / "fuzz",
        cases_per_file=FUZZ_CASES,
        seed=20240601,
        reseal_cases_per_file=RESEAL_CASES,
        structured_cases=STRUCTURED_CASES,
    )
    print("\n" + report.table())
    record_property("checkpoint_fuzz", json.dumps(report.as_json()["counts"]))

    assert report.failures == [], report.failures[:5]
    counts = report.counts
    assert report.total_cases == 4 * FUZZ_CASES + 3 * RESEAL_CASES + 2 * STRUCTURED_CASES
    assert counts[f"{WEIGHTS_FILE} (damaged)"]["clean_error"] == FUZZ_CASES
    assert counts[f"{STARTS_FILE} (damaged)"]["clean_error"] == FUZZ_CASES
    assert counts[f"{CARD_FILE} (damaged)"]["verified_load"] == FUZZ_CASES
    assert counts[f"{CONFIG_FILE} (damaged)"]["clean_error"] > FUZZ_CASES // 2
    # The structured modes really reach the validators (not just the JSON / zip parsers).
    named = report.errors_named
    assert len(named[f"{CONFIG_FILE} (values)"]) >= 5
    assert {f"{STARTS_FILE}:frames", f"{STARTS_FILE}:actions"} <= set(named[f"{STARTS_FILE} (arrays)"])
