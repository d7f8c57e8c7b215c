"""Every measurement's JSON is written one way: atomically, stamped with how and where it was made.

The stamp (``result["run"]``) holds the command line, the time, the hardware and the versions of the
libraries that decide the figures, so a number read months later says what produced it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from neuralenvs.utils.device import describe_hardware
from neuralenvs.utils.io import atomic_write_text

_VERSIONED = ("neuralenvs", "torch", "gymnasium", "ale-py", "stable-baselines3", "numpy")


def run_stamp() -> dict[str, Any]:
    """The command, time, hardware and library versions of this process."""
    versions = {}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "hardware": describe_hardware(),
        "versions": versions,
    }


def write_json(path: str | os.PathLike[str], result: dict[str, Any], *, quiet: bool = False) -> Path:
    """Write ``result`` with its ``run`` stamp to ``path`` (atomically; folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({**result, "run": run_stamp()}, indent=1, default=str) + "\n")
    if not quiet:
        print(f"wrote {path}")
    return path
