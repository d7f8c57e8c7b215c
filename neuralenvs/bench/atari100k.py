"""The Atari 100k grid: games x seeds x families, each an imagination run, scored as the field does.

In-process by default, one run after another. With Ray (``ray_address``: ``"local"`` starts a
cluster on this machine, anything else is passed to ``ray.init``), every run is one task; a GPU
is requested per task when the cluster has GPUs. A task whose worker dies is retried by Ray and
the retry resumes the run from its folder (each run is resumable, see
:mod:`neuralenvs.training.imagination`), so on a multi-machine cluster ``out`` must be on storage
every node sees.

The grid's folder::

    runs/atari100k/
      <Game>-<family>-s<seed>/   one imagination run each
      results.json               every run's result, and the aggregate per family
      results.md                 per-game and aggregate tables beside the published methods
      iqm.png                    IQM with 95% intervals, ours beside the published methods
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from neuralenvs.bench.report import write_json
from neuralenvs.training.imagination import ImaginationConfig, run_imagination
from neuralenvs.utils.io import atomic_write_text

__all__ = ["grid_configs", "run_grid", "summarize"]


def grid_configs(
    games: Sequence[str], seeds: Sequence[int], families: Sequence[str], budget: str, out: str | Path,
    **overrides: Any,
) -> list[ImaginationConfig]:
    """One config per (game, family, seed), each in its own folder under ``out``."""
    from neuralenvs.envs.atari import check_game

    configs = []
    for game in games:
        name = check_game(game)
        for family in families:
            for seed in seeds:
                folder = Path(out) / f"{name}-{family}-s{seed}"
                configs.append(
                    ImaginationConfig.from_budget(budget, name, str(folder), family=family, seed=seed, **overrides)
                )
    return configs


def _run_one(config: ImaginationConfig, device: str | None) -> dict[str, Any]:
    return run_imagination(config, device=device, progress=False)


def _run_on_ray(configs: list[ImaginationConfig], address: str, device: str | None) -> list[dict[str, Any]]:
    try:
        import ray
    except ImportError as error:
        raise ImportError("--ray needs Ray: pip install 'neuralenvs[distributed]'") from error

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=None if address == "local" else address, log_to_driver=False)
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        task = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0, max_retries=3)(_run_one)
        return ray.get([task.remote(config, device) for config in configs])
    finally:
        if started_here:
            ray.shutdown()


def run_grid(
    configs: list[ImaginationConfig], out: str | Path, *, ray_address: str | None = None,
    device: str | None = None, progress: bool = True,
) -> dict[str, Any]:
    """Run every config (or finish it: finished runs return their stored result), then
    :func:`summarize`."""
    if ray_address is None:
        results = [run_imagination(config, device=device, progress=progress) for config in configs]
    else:
        results = _run_on_ray(configs, ray_address, device)
    return summarize(results, out)


def summarize(results: list[dict[str, Any]], out: str | Path) -> dict[str, Any]:
    """Aggregate per family (rliable, over the games run), write ``results.json``, the tables
    beside the published methods and the IQM plot."""
    from neuralenvs.bench.scores import aggregate, load_published, plot_iqm, results_table

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scores: dict[str, dict[str, list[float]]] = {}
    for result in results:
        method = f"neuralenvs-{result['family']} ({result['budget']})"
        scores.setdefault(method, {}).setdefault(result["game"], []).append(float(result["score"]))
    games = sorted({result["game"] for result in results})
    aggregates = {method: aggregate(per_game) for method, per_game in scores.items()}
    summary = {"runs": results, "aggregate": aggregates, "games": games}
    write_json(out / "results.json", summary, quiet=True)  # stamped with device, versions, command
    atomic_write_text(out / "results.md", results_table(scores, games=games) + "\n")
    published = {name: aggregate({g: load_published(name)[g] for g in games}) for name in ("IRIS", "DIAMOND")}
    plot_iqm({**published, **aggregates}, out / "iqm.png")
    return summary
