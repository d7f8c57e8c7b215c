"""The package works installed like any other: a built wheel (not an editable install) carries the
shipped checkpoints, and gym.make finds them from another folder with no environment variable."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_WHEEL_BYTES = 40 * 1024 * 1024

SCRIPT = """
import gymnasium as gym
import neuralenvs
assert neuralenvs.__file__.startswith({target!r}), neuralenvs.__file__
ids = [i for i in neuralenvs.list_envs() if not i.endswith("-real-v0") and i != "neuralenvs/Dream-v0"]
assert ids, "no shipped dream found"
env = gym.make(ids[0])
obs, _ = env.reset(seed=0)
obs, reward, terminated, truncated, _ = env.step(0)
print(ids[0], obs.shape)
"""


@pytest.mark.timeout(600)
def test_a_built_wheel_finds_the_shipped_dreams(tmp_path):
    if not (ROOT / "checkpoints").is_dir():
        pytest.skip("no checkpoints/ in this tree")
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        check=True, cwd=tmp_path,
    )
    (wheel,) = wheels.glob("neuralenvs-*.whl")
    assert wheel.stat().st_size < MAX_WHEEL_BYTES
    names = zipfile.ZipFile(wheel).namelist()
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / "neuralenvs").rglob("*.py")}
    assert sources - set(names) == set(), "modules missing from the wheel"
    shipped = {Path(n).parent.name for n in names if n.startswith("neuralenvs/shipped/") and n.endswith("config.json")}
    assert shipped == {p.name for p in (ROOT / "checkpoints").iterdir() if (p / "config.json").is_file()}
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True, cwd=tmp_path,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "NEURALENVS_CHECKPOINTS"}
    env["PYTHONPATH"] = str(target)  # ahead of the editable install of this checkout
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(target=str(target))], cwd=elsewhere, env=env,
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(64, 64, 3)" in out.stdout
