"""The commands that the README and docs/ show still parse, so none goes stale.

Every line of a fenced ``bash`` block that runs ``neuralenvs ...``, ``python benchmarks/...`` or
``python examples/...`` is parsed by the command's own argument parser (nothing is run: the parser
stops it as soon as its arguments are accepted). The README's Python blocks run for real, with their
training budgets cut to a few steps. The commands themselves are run at full size by ``make demo``,
the CLI tests and the benchmarks.
"""

from __future__ import annotations

import argparse
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

from neuralenvs.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)


def fenced_blocks(language: str) -> list[tuple[str, str]]:
    """(page name, block text) for every fenced block of ``language``."""
    return [
        (page.name, body) for page in PAGES for lang, body in FENCE.findall(page.read_text()) if lang == language
    ]


def shown_commands() -> list[tuple[str, list[str]]]:
    commands = []
    for page, block in fenced_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv and (argv[0] == "neuralenvs" or (argv[0] == "python" and argv[1:] and argv[1].endswith(".py"))):
                commands.append((page, argv))
    return commands


class _Parsed(Exception):
    """Raised by the patched parser once a script's arguments are accepted."""


def test_the_pages_show_commands() -> None:
    pages = {page for page, _ in shown_commands()}
    assert "README.md" in pages and len(shown_commands()) >= 10


def _command_id(value: object) -> str:
    return " ".join(value)[:60] if isinstance(value, list) else str(value)


@pytest.mark.parametrize(("page", "argv"), shown_commands(), ids=_command_id)
def test_a_shown_command_parses(page: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    if argv[0] == "neuralenvs":
        args = build_parser().parse_args(argv[1:])  # exits (fails the test) on a stale flag
        assert callable(args.func), f"{page}: {' '.join(argv)} names no command"
        return
    script = ROOT / argv[1]
    assert script.is_file(), f"{page} shows {argv[1]}, which does not exist"
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, args: list[str] | None = None, namespace=None):
        parse(self, args, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(sys, "argv", [str(script), *argv[2:]])
    with pytest.raises(_Parsed):
        runpy.run_path(str(script), run_name="__main__")


# The README's Python blocks at a size that runs in seconds: each budget shown there, cut down.
SMALLER = {"learn(100_000)": "learn(64)", "n_episodes=20": "n_episodes=1", "num_envs=64": "num_envs=2",
           "n_envs=32": "n_envs=2",
           'PPO("CnnPolicy", venv)': 'PPO("CnnPolicy", venv, n_steps=4, batch_size=16)',
           'train_in_dream("ppo", venv, 100_000)':
               'train_in_dream("ppo", venv, 64, algo_kwargs={"n_steps": 4, "batch_size": 8})'}


@pytest.mark.usefixtures("single_torch_thread")
@pytest.mark.parametrize("index", range(len([b for p, b in fenced_blocks("python") if p == "README.md"])))
def test_a_readme_python_block_runs(index: int) -> None:
    block = [b for p, b in fenced_blocks("python") if p == "README.md"][index]
    for shown, smaller in SMALLER.items():
        block = block.replace(shown, smaller)
    exec(compile(block, f"README.md python block {index}", "exec"), {})
