"""The package works installed like any other: built wheels (not editable installs) of the code and
of the shipped checkpoints, and gym.make finds a shipped dream from another folder with no
environment variable. The checkpoints are a data package of their own so that the code's wheel
stays small."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_CODE_WHEEL_BYTES = 40 * 1024 * 1024
MAX_DATA_WHEEL_BYTES = 100 * 1024 * 1024  # PyPI's default limit per file

SCRIPT = """
import gymnasium as gym
import neuralenvs
from neuralenvs.registry import checkpoint_dirs
assert neuralenvs.__file__.startswith({target!r}), neuralenvs.__file__
assert str(checkpoint_dirs()[0]).startswith({target!r}), checkpoint_dirs()
ids = [i for i in neuralenvs.list_envs() if not i.endswith("-real-v0") and i != "neuralenvs/Dream-v0"]
assert ids, "no shipped dream found"
env = gym.make(ids[0])
obs, _ = env.reset(seed=0)
obs, reward, terminated, truncated, _ = env.step(0)
print(ids[0], obs.shape)
"""


def build_wheel(source: Path, out: Path) -> Path:
    # setuptools stages files in source/build and never prunes it: a file deleted since the last
    # build would still ship
    shutil.rmtree(source / "build", ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        check=True, cwd=out.parent,
    )
    (wheel,) = out.glob("*.whl")
    return wheel


@pytest.mark.timeout(600)
def test_built_wheels_find_the_shipped_dreams(tmp_path):
    if not (ROOT / "checkpoints" / "pyproject.toml").is_file():
        pytest.skip("no checkpoints/ data package in this tree")
    code = build_wheel(ROOT, tmp_path / "code")
    data = build_wheel(ROOT / "checkpoints", tmp_path / "data")
    assert code.stat().st_size < MAX_CODE_WHEEL_BYTES
    assert data.stat().st_size < MAX_DATA_WHEEL_BYTES
    code_names = zipfile.ZipFile(code).namelist()
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / "neuralenvs").rglob("*.py")}
    assert sources - set(code_names) == set(), "modules missing from the code's wheel"
    assert not [n for n in code_names if n.endswith(".safetensors")], "weights belong in the data package"
    data_names = zipfile.ZipFile(data).namelist()
    shipped = {Path(n).parent.name for n in data_names if n.endswith("/config.json")}
    assert shipped == {p.name for p in (ROOT / "checkpoints").iterdir() if (p / "config.json").is_file()}
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(code), str(data)],
        check=True, cwd=tmp_path,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "NEURALENVS_CHECKPOINTS"}
    env["PYTHONPATH"] = str(target)  # ahead of the editable installs of this checkout
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(target=str(target))], cwd=elsewhere, env=env,
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(64, 64, 3)" in out.stdout
