"""The imagination loop and the Atari 100k grid: schedule, chunked collection, resume after a kill,
the CI smoke run through the command line, and (slow) two runs on a local Ray cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from neuralenvs.envs.atari import human_normalized_score
from neuralenvs.training.imagination import BUDGETS, ImaginationConfig, ImaginationRun, run_imagination

# the smallest schedule that still runs every phase twice: ~30 s on one core
QUICK = dict(
    real_steps=400, warmup_steps=200, steps_per_epoch=100, wm_steps_first_epoch=10, wm_steps_per_epoch=5,
    agent_steps_first_epoch=128, agent_steps_per_epoch=128, n_dreams=4, start_bank_size=16,
    algo_kwargs={"n_steps": 32, "batch_size": 64, "n_epochs": 1}, eval_episodes=1, eval_max_steps=100,
)


@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_every_budget_spends_exactly_the_real_step_budget(budget: str) -> None:
    config = ImaginationConfig.from_budget(budget, "Pong", "unused")
    last = config.num_epochs - 1
    assert config.real_steps_after(last) == config.real_steps
    assert config.real_steps_after(last - 1) < config.real_steps  # no epoch without new data
    assert config.real_steps_after(0) == config.warmup_steps
    assert config.wm_steps_after(last) > config.wm_steps_after(0) > 0
    assert config.agent_steps_after(last) > config.agent_steps_after(0) > 0


def test_the_full_budget_is_the_protocol_and_diamonds_schedule() -> None:
    config = ImaginationConfig.from_budget("full", "Pong", "unused")
    assert config.real_steps == 100_000 and config.eval_episodes == 100 and config.eval_max_steps is None
    assert (config.steps_per_epoch, config.wm_steps_per_epoch, config.horizon, config.epsilon) == (100, 400, 15, 0.01)


def test_budget_errors_name_the_choices() -> None:
    with pytest.raises(ValueError, match="smoke"):
        ImaginationConfig.from_budget("huge", "Pong", "unused")
    with pytest.raises(TypeError, match="warmup"):
        ImaginationConfig.from_budget("smoke", "Pong", "unused", warmup=3)
    with pytest.raises(ValueError, match="warmup_steps"):
        ImaginationConfig.from_budget("smoke", "Pong", "unused", warmup_steps=5_000)


def test_a_family_that_needs_a_separate_labelled_set_is_refused(tmp_path: Path) -> None:
    config = ImaginationConfig.from_budget("smoke", "Boxing", str(tmp_path / "run"), family="genie")
    with pytest.raises(ValueError, match="genie"):
        ImaginationRun(config, progress=False)


def test_collection_stores_chunks_that_continue_the_same_game(tmp_path: Path) -> None:
    config = ImaginationConfig.from_budget("smoke", "Boxing", str(tmp_path / "run"), **QUICK)
    run = ImaginationRun(config, progress=False)
    try:
        run.collect(150)
        run.collect(260)
    finally:
        run.close()
    data = run.dataset
    assert data.num_steps == 260 and data.num_episodes == 2  # a Boxing game lasts ~1,800 steps
    first, second = data.episode(0), data.episode(1)
    assert first.truncated[-1] and not first.terminated.any()
    np.testing.assert_array_equal(first.frames[-1], second.frames[0])  # the game went on


def _spawn(config: ImaginationConfig) -> subprocess.Popen:
    code = (
        "import json, sys\n"
        "from neuralenvs.training.imagination import ImaginationConfig, run_imagination\n"
        "run_imagination(ImaginationConfig(**json.loads(sys.argv[1])), device='cpu', progress=False)\n"
    )
    from dataclasses import asdict

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, json.dumps(asdict(config))], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_a_killed_run_resumes_where_it_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    config = ImaginationConfig.from_budget("smoke", "Boxing", str(out), **QUICK)
    process = _spawn(config)
    progress = out / "progress.json"
    deadline = time.monotonic() + 240
    try:  # kill -9 once epoch 0 is complete and epoch 1 has collected its data
        while not (progress.exists() and json.loads(progress.read_text())["epoch"] >= 1):
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the run never reached epoch 1"
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    at_kill = json.loads(progress.read_text())
    index_at_kill = json.loads((out / "episodes" / "index.json").read_text())
    assert at_kill["real_steps"] == config.real_steps_after(1)

    spent: dict[str, list[int]] = {"real": [], "wm": [], "agent": []}
    original = {name: getattr(ImaginationRun, name) for name in ("collect", "train_world_model", "train_agent")}

    def spy(name: str, key: str, counter):
        def wrapped(self, until: int) -> None:
            spent[key].append(until - counter(self))
            original[name](self, until)
        return wrapped

    monkeypatch.setattr(ImaginationRun, "collect", spy("collect", "real", lambda r: r.dataset.num_steps))
    monkeypatch.setattr(ImaginationRun, "train_world_model",
                        spy("train_world_model", "wm", lambda r: r.trainer.step_in_stage))
    monkeypatch.setattr(ImaginationRun, "train_agent", spy("train_agent", "agent", lambda r: r.agent.num_timesteps))
    result = run_imagination(config, device="cpu", progress=False)

    # what was durable at the kill was kept: only the rest of the schedule ran
    last = config.num_epochs - 1
    assert sum(n for n in spent["real"] if n > 0) == config.real_steps - at_kill["real_steps"]
    assert sum(n for n in spent["wm"] if n > 0) <= config.wm_steps_after(last) - config.wm_steps_after(0)
    assert sum(n for n in spent["agent"] if n > 0) <= config.agent_steps_after(last) - config.agent_steps_after(0)
    index = json.loads((out / "episodes" / "index.json").read_text())
    assert index[: len(index_at_kill)] == index_at_kill
    assert result["real_steps"] == config.real_steps
    assert result["wm_steps_per_stage"] == config.wm_steps_after(last)
    assert result["agent_steps"] >= config.agent_steps_after(last)
    assert result["wall_clock_seconds"] > at_kill["wall_seconds"]  # counted over both processes
    # a finished run returns its stored result without running again
    assert run_imagination(config, device="cpu", progress=False) == result


def test_the_ci_smoke_run_through_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The one smoke run of one game that CI runs: collect, train, dream, evaluate, score."""
    from neuralenvs.cli import main

    out = tmp_path / "grid"
    main(["bench", "atari100k", "--games", "boxing", "--budget", "smoke", "--out", str(out), "--device", "cpu"])
    summary = json.loads((out / "results.json").read_text())
    (result,) = summary["runs"]
    assert result["game"] == "Boxing" and result["real_steps"] == BUDGETS["smoke"]["real_steps"]
    assert result["eval_episodes"] == BUDGETS["smoke"]["eval_episodes"]
    assert result["hns"] == pytest.approx(human_normalized_score("Boxing", result["score"]))
    assert result["score"] == pytest.approx(np.mean(result["returns"]))
    assert (out / "Boxing-diffusion-s0" / "world_model" / "checkpoint" / "weights.safetensors").exists()
    assert list((out / "Boxing-diffusion-s0" / "tensorboard").rglob("events.out.tfevents.*"))
    assert (out / "iqm.png").stat().st_size > 0
    assert "Boxing" in (out / "results.md").read_text()
    assert "HNS" in capsys.readouterr().out


@pytest.mark.slow
def test_two_smoke_runs_on_a_local_ray_cluster(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from neuralenvs.bench.atari100k import grid_configs, run_grid

    configs = grid_configs(["Boxing"], [0, 1], ["diffusion"], "smoke", tmp_path, **QUICK)
    summary = run_grid(configs, tmp_path, ray_address="local")
    assert sorted(r["seed"] for r in summary["runs"]) == [0, 1]
    assert all(r["real_steps"] == QUICK["real_steps"] for r in summary["runs"])
    assert all((tmp_path / f"Boxing-diffusion-s{s}" / "result.json").exists() for s in (0, 1))


@pytest.mark.slow
def test_a_ray_task_that_loses_its_worker_resumes_its_run(tmp_path: Path) -> None:
    """kill -9 the Ray worker mid-run: Ray retries the task and the retry continues the run."""
    pytest.importorskip("ray")
    import threading

    from neuralenvs.bench.atari100k import grid_configs, run_grid

    (config,) = grid_configs(["Boxing"], [0], ["diffusion"], "smoke", tmp_path, **QUICK)
    progress = Path(config.out) / "progress.json"
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(run_grid([config], tmp_path, ray_address="local")))
    thread.start()
    deadline = time.monotonic() + 300
    while not (progress.exists() and json.loads(progress.read_text())["epoch"] >= 1):
        assert thread.is_alive() and time.monotonic() < deadline, "the run never reached epoch 1"
        time.sleep(0.2)
    at_kill = json.loads(progress.read_text())
    # Ray names a worker's process after the task it runs
    killed = subprocess.run(["pkill", "-9", "-f", "ray::_run_one"], check=False).returncode == 0
    thread.join(timeout=600)
    assert killed and not thread.is_alive()
    (result,) = outcome["runs"]
    assert result["real_steps"] == config.real_steps
    assert result["wall_clock_seconds"] > at_kill["wall_seconds"]  # the retry went on from the saved run
