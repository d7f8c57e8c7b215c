"""Imports point one way: a lower layer of the package never imports a higher one, even inside a
function. Each unit (a subpackage or a top-level module of ``neuralenvs``) has a layer; an import
from one unit to another must go to a strictly lower layer."""

import ast
from pathlib import Path

import neuralenvs

# bottom to top: data, nn, models, envs, training, bench, cli, with the
# remaining units placed where their imports put them
LAYERS = [
    "errors", "utils", "world_model",
    "data", "nn", "models", "checkpoint", "envs", "registry", "play", "sb3", "measure",
    "training", "bench", "__init__", "cli",
]
PACKAGE = Path(neuralenvs.__file__).parent


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports() -> list[tuple[str, str, str]]:
    """(importing file, importing unit, imported unit) for every ``neuralenvs`` import."""
    found = []
    for file in sorted(PACKAGE.rglob("*.py")):
        rel = file.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                if target == "neuralenvs" or target.startswith("neuralenvs."):
                    found.append((str(rel), unit_of(module), unit_of(target)))
    return found


def test_every_unit_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and any(p.glob("*.py"))}
    units = modules | packages
    assert units - set(LAYERS) == set(), "give the new unit a place in LAYERS"


def test_imports_point_down():
    up = [
        f"{file}: {src} -> {dst}"
        for file, src, dst in imports()
        if src != dst and LAYERS.index(dst) >= LAYERS.index(src)
    ]
    assert up == [], "imports that point up or sideways:\n" + "\n".join(up)


def test_the_check_sees_an_upward_import():
    assert LAYERS.index("bench") > LAYERS.index("training")
    assert ("neuralenvs/training/trainer", "training", "checkpoint") in imports()
