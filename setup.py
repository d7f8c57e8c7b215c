"""Only the package list lives here (the rest is in pyproject.toml): the shipped checkpoints stay in
checkpoints/ at the repository root and install as the data-only package ``neuralenvs.shipped``,
which ``neuralenvs.registry`` finds through ``importlib.resources`` in any install."""

from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages(include=["neuralenvs", "neuralenvs.*"]), "neuralenvs.shipped"],
    package_dir={"neuralenvs.shipped": "checkpoints"},
)
