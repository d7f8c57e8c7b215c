"""benchmarks/weight_mix.py: a dream between two checkpoints of one model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from benchmark_scripts import load_benchmark
from conftest import randomize

from neuralenvs.checkpoint import build_world_model, load_checkpoint, save_checkpoint
from neuralenvs.models import build_model

ROOT = Path(__file__).resolve().parent.parent


def test_mixed_weights_lie_on_the_line_and_refuse_other_models():
    mix = load_benchmark("weight_mix").mixed_weights
    a = {"w": torch.zeros(3), "steps": torch.tensor([4])}
    b = {"w": torch.tensor([1.0, 2.0, -4.0]), "steps": torch.tensor([4])}
    torch.testing.assert_close(mix(a, b, 0.25)["w"], torch.tensor([0.25, 0.5, -1.0]))
    assert torch.equal(mix(a, b, 0.0)["w"], a["w"]) and torch.equal(mix(a, b, 1.0)["w"], b["w"])
    with pytest.raises(ValueError, match="shapes"):
        mix(a, {**b, "w": torch.zeros(4)}, 0.5)
    with pytest.raises(ValueError, match="non-float"):
        mix(a, {**b, "steps": torch.tensor([5])}, 0.5)
    with pytest.raises(ValueError, match="names"):
        mix(a, {"w": b["w"]}, 0.5)


def test_the_script_saves_a_loadable_mix_with_its_provenance(tmp_path):
    obs_shape, num_actions = (16, 16, 3), 3
    frames = np.random.default_rng(0).integers(0, 256, (2, 5, *obs_shape), dtype=np.uint8)
    actions = np.zeros((2, 4), dtype=np.int64)
    ends = []
    for seed in (0, 1):
        model = randomize(build_model("diffusion", "tiny", obs_shape, num_actions), seed=seed)
        ends.append(save_checkpoint(tmp_path / f"end{seed}", model=model, starts_frames=frames, starts_actions=actions))
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "weight_mix.py"), *map(str, ends),
                    "--fractions", "0.3", "--out", str(tmp_path / "mix{percent}")], check=True, capture_output=True)

    mixed = load_checkpoint(tmp_path / "mix30")
    assert mixed.config["provenance"]["mixed"] == {"from": str(ends[0]), "with": str(ends[1]), "fraction": 0.3}
    weights = [build_world_model(load_checkpoint(p), device="cpu").state_dict() for p in ends]
    got = build_world_model(mixed, device="cpu").state_dict()
    name = next(k for k, v in got.items()
                if v.is_floating_point() and v.numel() > 1 and not torch.equal(weights[0][k], weights[1][k]))
    torch.testing.assert_close(got[name], 0.7 * weights[0][name] + 0.3 * weights[1][name])
