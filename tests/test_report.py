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
