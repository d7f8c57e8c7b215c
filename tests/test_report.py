"""Measurement JSON: written atomically with the stamp that says how and where it was made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neuralenvs.bench.report import write_json


def test_write_json_stamps_command_hardware_and_versions(tmp_path: Path) -> None:
    path = write_json(tmp_path / "deep" / "result.json", {"psnr": 30.5}, quiet=True)
    data = json.loads(path.read_text())
    assert data["psnr"] == 30.5
    run = data["run"]
    assert run["command"] and run["hardware"] and run["written"]
    assert run["versions"]["torch"] and run["versions"]["gymnasium"]
    assert list(tmp_path.joinpath("deep").iterdir()) == [path]  # no temporary file left behind


def test_score_gap_is_in_standard_errors_of_the_difference_and_keeps_its_sign() -> None:
    from neuralenvs.bench.utility import score_gap

    gap = score_gap({"mean": 10.0, "stderr": 3.0}, {"mean": 2.0, "stderr": 4.0})
    assert gap == {"gap": 8.0, "gap_stderr": 5.0, "gap_over_stderr": 1.6}
    assert score_gap({"mean": 300.0, "stderr": 0.0}, {"mean": 600.0, "stderr": 0.0})["gap_over_stderr"] == -float("inf")
    assert score_gap({"mean": 1.0, "stderr": 0.0}, {"mean": 1.0, "stderr": 0.0})["gap_over_stderr"] == 0.0


def _scores(mean: float, stderr: float, n: int = 30) -> dict:
    return {"mean": mean, "stderr": stderr, "n_episodes": n}


def test_transfer_record_sets_the_dream_agent_beside_the_real_agents_and_the_card_shows_it() -> None:
    from neuralenvs.bench.transfer import compare_to_real_agents
    from neuralenvs.checkpoint.card import make_model_card

    utility = {"game": "Krull", "dream_steps": 200_000, "agent": _scores(2500.0, 30.0), "random": _scores(1500.0, 40.0)}
    ceiling = {"game": "Krull", "random": _scores(1400.0, 100.0, 20), "milestones": [
        {"agent_steps": 100_000, "agent": _scores(3400.0, 120.0, 20)},
        {"agent_steps": 200_000, "agent": _scores(3600.0, 160.0, 20)},
    ]}
    record = compare_to_real_agents(utility, ceiling, real_steps=100_577, budget={"real_steps": 100_577})
    assert record["dream_agent_vs_random"]["gap_over_stderr"] == 20.0  # 1000 / hypot(30, 40)
    same_agent, same_real = record["same_agent_steps"], record["same_real_steps"]
    assert same_agent["agent_steps"] == 200_000 and same_real["agent_steps"] == 100_000  # 100,577 is within 5% of 100k
    assert same_agent["utility_ratio"] == 1000.0 / 2200.0  # each agent against its own random play
    assert same_real["dream_agent_vs_real_agent"]["gap"] == -900.0
    assert compare_to_real_agents({**utility, "dream_steps": 30_000}, ceiling, 100_577, {})["same_agent_steps"] is None

    config = {"family": "diffusion", "game": "Krull", "obs_shape": [64, 64, 3], "metrics": {"transfer": record}}
    card = make_model_card(config)
    assert "Utility ratio (dream agent - random) / (real agent - random): 0.45" in card
    assert "| real-game agent, as many real steps as built the dream (100000) | 3400.0 ± 120.0 | -900.0" in card
    assert "transfer.game" not in card  # a table of its own, not flattened into the metric rows


def test_agents_over_seeds_are_averaged_with_the_spread_across_seeds_and_the_card_lists_them() -> None:
    import pytest

    from neuralenvs.bench.transfer import across_seeds
    from neuralenvs.checkpoint.card import make_model_card

    def result(seed: int | None, agent: float, command: str = "") -> dict:
        r = {"game": "KungFuMaster", "dream_steps": 100_000, "agent": _scores(agent, 100.0),
             "random": _scores(400.0, 60.0), "agent_vs_random": {"gap_over_stderr": (agent - 400.0) / 116.6},
             "run": {"command": command}}
        return r if seed is None else {**r, "seed": seed}

    # a result written before the seed was stored gives it from its command line
    summary = across_seeds([result(0, 1800.0), result(1, 3000.0), result(None, 2400.0, "neuralenvs utility --seed 2")])
    assert [row["seed"] for row in summary["seeds"]] == [0, 1, 2]
    assert summary["agent_mean"] == pytest.approx(2400.0)
    assert summary["agent_mean_stderr_across_seeds"] == pytest.approx(600.0 / 3**0.5)  # not the 100 of 30 games
    with pytest.raises(ValueError, match="twice"):
        across_seeds([result(0, 1800.0), result(0, 3000.0)])
    with pytest.raises(ValueError, match="several games"):
        across_seeds([result(0, 1800.0), {**result(1, 3000.0), "game": "Krull"}])

    card = make_model_card({"family": "diffusion", "game": "KungFuMaster", "obs_shape": [64, 64, 3],
                            "metrics": {"utility_seeds": summary}})
    assert "The same over 3 agent seeds (100000 dreamed steps each):" in card
    assert "| 2 | 2400.0 ± 100.0 | 400.0 ± 60.0 | +17.2 |" in card
    assert "| mean | 2400.0 ± 346.4 (s.e. across seeds) | 400.0 | |" in card
    assert "utility_seeds." not in card  # a table of its own, not flattened into the metric rows


def test_a_fine_tuned_and_calibrated_dream_counts_every_run_and_every_real_step_it_took() -> None:
    from neuralenvs.bench.transfer import dream_budget

    base = {"real_steps": 74_716, "training_steps": 4000, "wall_clock_seconds": 2000.0, "hardware": "cpu"}
    tuned = {"real_steps": 74_716, "training_steps": 1500, "wall_clock_seconds": 100.5, "hardware": "cpu", "base": base,
             "reward_prior_calibrated": {"transitions": 25_454, "adds_real_steps": 25_454}}
    budget = dream_budget(tuned)
    assert budget["real_steps"] == 74_716 + 25_454  # episodes from outside the training data are real steps too
    assert budget["world_model_steps"] == 5500 and budget["world_model_seconds"] == 2100.5 and budget["runs"] == 2
    assert dream_budget(base)["real_steps"] == 74_716 and dream_budget(base)["runs"] == 1


def test_speed_ab_times_dreams_in_turns_and_gives_ratios_to_the_first(tmp_path: Path) -> None:
    import subprocess
    import sys

    genie, diffusion = "neuralenvs/Boxing-genie-v0", "neuralenvs/Boxing-diffusion-v0"
    out = tmp_path / "ab.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "speed_ab.py"
    subprocess.run(
        [sys.executable, str(script), genie, diffusion, "--batches", "1",
         "--rounds", "2", "--seconds", "0.05", "--threads", "1", "--out", str(out)],
        check=True, capture_output=True,
    )
    rows = json.loads(out.read_text())["rows"]
    assert [(r["dream"], r["batch"]) for r in rows] == [(genie, 1), (diffusion, 1)]
    assert rows[0]["ratio_to_first"] == 1.0
    assert all(len(r["transitions_per_second"]) == 2 and min(r["transitions_per_second"]) > 0 for r in rows)
    assert rows[1]["ratio_to_first"] == rows[1]["median"] / rows[0]["median"]


def test_speed_ab_times_one_dream_in_two_precisions_in_turns(tmp_path: Path) -> None:
    import subprocess
    import sys

    genie = "neuralenvs/Boxing-genie-v0"
    out = tmp_path / "ab.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "speed_ab.py"
    subprocess.run(
        [sys.executable, str(script), genie, "--precision", "fp32", "bf16", "--batches", "2",
         "--rounds", "1", "--seconds", "0.05", "--threads", "1", "--out", str(out)],
        check=True, capture_output=True,
    )
    rows = json.loads(out.read_text())["rows"]
    assert [(r["dream"], r["precision"], r["batch"]) for r in rows] == [(genie, "fp32", 2), (genie, "bf16", 2)]
    assert rows[0]["ratio_to_first"] == 1.0 and rows[1]["median"] > 0


def test_speed_ratio_pairs_dreams_by_name_and_takes_medians_over_pairs() -> None:
    from benchmark_scripts import load_benchmark

    speed_ratio = load_benchmark("speed_ratio")

    def run(peak: float, rate: float, loop: float, dream: str) -> dict:
        row = {"dream": dream, "batch": 16, "precision": "fp32", "transitions_per_second": rate,
               "flops_per_transition": 1e8, "per_fp32_gflops": rate / peak}
        return {"matmul_peak_flops": {"fp32": peak * 1e9}, "rows": [row],
                "loops": [{"checkpoint": "neuralenvs/Boxing-genie-v0", "loop_transitions_per_second": loop}]}

    # the older run named the dream by its folder, the newer by its gym id
    pairs = [speed_ratio.compare(run(200, 100, 50, "checkpoints/boxing-genie"),
                                 run(100, 150, 60, "neuralenvs/Boxing-genie-v0"), "fp32", "fp32"),
             speed_ratio.compare(run(100, 100, 50, "checkpoints/boxing-genie"),
                                 run(100, 300, 100, "neuralenvs/Boxing-genie-v0"), "fp32", "fp32")]
    assert [(r["dream"], r["as_timed"], r["ratio"]) for r in pairs[0]["dreams"]] == [("boxing-genie", 1.5, 3.0)]
    assert (pairs[0]["loops"][0]["as_timed"], pairs[0]["loops"][0]["ratio"]) == pytest.approx((1.2, 2.4))
    medians = speed_ratio.medians(pairs)
    assert medians["dreams"] == [{"dream": "boxing-genie", "batch": 16, "pairs": 2, "as_timed": 2.25, "ratio": 3.0}]
    assert (medians["loops"][0]["as_timed"], medians["loops"][0]["ratio"]) == pytest.approx((1.6, 2.2))


def test_the_narrow_agent_encoder_is_natures_layout_at_half_the_width() -> None:
    import importlib.util

    import gymnasium as gym
    import numpy as np
    import torch
    from stable_baselines3.common.torch_layers import NatureCNN

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "narrow_policy.py"
    spec = importlib.util.spec_from_file_location("narrow_policy", script)
    narrow_policy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(narrow_policy)
    space = gym.spaces.Box(0, 255, (12, 64, 64), np.uint8)  # 4 stacked RGB frames, channels first
    narrow, nature = narrow_policy.NarrowCNN(space), NatureCNN(space)
    size = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert size(narrow) < size(nature) / 2
    assert [m.out_channels for m in narrow.cnn if isinstance(m, torch.nn.Conv2d)] == [16, 32, 32]
    obs = torch.rand(3, 12, 64, 64) * 255
    assert narrow(obs).shape == (3, 256) and (narrow(obs) >= 0).all()


def test_look_check_scores_each_dream_at_each_seed_and_step(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "look.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "look_check.py"
    subprocess.run(
        [sys.executable, str(script), "neuralenvs/Boxing-genie-v0", "--game", "Boxing", "--steps", "2", "5",
         "--seeds", "0", "1", "--threads", "1", "--out", str(out)],
        check=True, capture_output=True,
    )
    rows = json.loads(out.read_text())["rows"]
    dream = "neuralenvs/Boxing-genie-v0"
    assert [(r["dream"], r["seed"]) for r in rows] == [(dream, 0), (dream, 1)]
    assert all(set(r["look"]) == {"2", "5"} and r["look"]["5"]["sharpness_ratio"] > 0 for r in rows)
