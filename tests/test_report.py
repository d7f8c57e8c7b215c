"""Measurement JSON: written atomically with the stamp that says how and where it was made."""

from __future__ import annotations

import json
from pathlib import Path

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
