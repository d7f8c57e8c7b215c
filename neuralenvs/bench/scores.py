"""Atari 100k scores as the field reports them: human-normalized, aggregated with rliable.

Definitions (those of every paper in ``reference/``, see its README):

- human-normalized score (HNS) = (score - random) / (human - random), per game, from the shipped
  ``reference/RANDOM.json`` and ``reference/HUMAN.json`` (the one table of random and human scores;
  ``neuralenvs/envs/atari100k.json`` holds the same numbers and a test checks they agree)
- mean and median: over the games of the per-game mean HNS over seeds (rliable's
  ``aggregate_mean`` / ``aggregate_median`` on a [runs, games] matrix compute exactly that)
- IQM: the 25%-trimmed mean over all (game, seed) HNS values; optimality gap: mean shortfall of
  HNS below 1 over all (game, seed) values
- 95% intervals: rliable's stratified bootstrap (runs resampled within each game), percentile method
- superhuman games: games whose mean HNS is >= 1

Scores are ``{game: [final score per seed, ...]}`` with the game's raw, unclipped score.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from neuralenvs.envs.atari import ATARI100K_GAMES, check_game

__all__ = [
    "DEFAULT_TABLE_METHODS",
    "METRICS",
    "PUBLISHED_METHODS",
    "aggregate",
    "human_normalized",
    "human_score",
    "load_published",
    "plot_iqm",
    "random_score",
    "results_table",
]

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"

PUBLISHED_METHODS: tuple[str, ...] = (
    "SimPLe", "TWM", "IRIS", "DreamerV3", "STORM", "REM", "DeltaIRIS", "DIAMOND", "Simulus",
    "SPR", "EfficientZero",
)
"""Methods whose published per-seed scores ship in ``reference/`` (file ``<method>.json``)."""

DEFAULT_TABLE_METHODS: tuple[str, ...] = ("SimPLe", "IRIS", "DreamerV3", "DIAMOND")
"""The published methods a results table shows by default: the baseline and the world models we follow."""

METRICS: tuple[str, ...] = ("mean", "median", "iqm", "optimality_gap")
_METRIC_TITLES = {"mean": "Mean", "median": "Median", "iqm": "IQM", "optimality_gap": "Optimality gap"}

RLIABLE_DEFAULT_REPS = 50_000


@cache
def _reference_file(name: str) -> dict[str, tuple[float, ...]]:
    path = REFERENCE_DIR / f"{name}.json"
    data = json.loads(path.read_text())
    return {game: tuple(float(s) for s in scores) for game, scores in data.items()}


def _single(name: str, game: str) -> float:
    (value,) = _reference_file(name)[check_game(game)]
    return value


def random_score(game: str) -> float:
    """The uniform random policy's published score: the 0 of human-normalized scores."""
    return _single("RANDOM", game)


def human_score(game: str) -> float:
    """The human tester's published score: the 1 of human-normalized scores."""
    return _single("HUMAN", game)


def human_normalized(game: str, score: float | Sequence[float] | np.ndarray) -> float | np.ndarray:
    """(score - random) / (human - random) for ``game``; a float for a float, an array for an array.

    Raises ValueError naming the valid games when ``game`` is not one of the 26.
    """
    low, high = random_score(game), human_score(game)
    if np.ndim(score) == 0:
        return (float(score) - low) / (high - low)
    return (np.asarray(score, dtype=np.float64) - low) / (high - low)


def _published_name(method: str) -> str:
    by_lower = {m.lower(): m for m in PUBLISHED_METHODS}
    name = by_lower.get(method.lower().replace("-", ""))
    if name is None:
        raise ValueError(f"no published scores for {method!r}; known methods are: {', '.join(PUBLISHED_METHODS)}")
    return name


def load_published(method: str) -> dict[str, list[float]]:
    """Published final scores of ``method`` (one of PUBLISHED_METHODS, any case): {game: [per seed]}."""
    return {game: list(scores) for game, scores in _reference_file(_published_name(method)).items()}


def _canonical_scores(scores: Mapping[str, Iterable[float]]) -> dict[str, np.ndarray]:
    """Games in canonical spelling and benchmark order, scores as finite float arrays."""
    if not scores:
        raise ValueError("no scores given: expected {game: [final score per seed, ...]} with at least one game")
    out: dict[str, np.ndarray] = {}
    for game, values in scores.items():
        name = check_game(game)
        if name in out:
            raise ValueError(f"game {name!r} is given twice (as {game!r} and under another spelling)")
        array = np.asarray(list(values), dtype=np.float64)
        if array.ndim != 1 or array.size == 0:
            raise ValueError(f"{name}: expected a non-empty list of per-seed scores, got {values!r}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name}: scores must be finite, got {array.tolist()}")
        out[name] = array
    return {game: out[game] for game in ATARI100K_GAMES if game in out}


def _hns_matrix(scores: Mapping[str, Iterable[float]]) -> tuple[list[str], np.ndarray]:
    """The [num_runs, num_games] HNS matrix rliable expects, and its games in column order.

    rliable's stratified bootstrap resamples runs within each game of a rectangular matrix, so
    every game must have the same number of runs. Padding by resampling would invent runs and
    narrow the intervals, so unequal counts are an error.
    """
    per_game = _canonical_scores(scores)
    counts = {game: len(values) for game, values in per_game.items()}
    if len(set(counts.values())) > 1:
        listing = ", ".join(f"{game}: {n}" for game, n in counts.items())
        raise ValueError(
            "every game needs the same number of runs (seeds) for rliable's stratified bootstrap; "
            f"got {listing}. Finish the missing runs or leave out the extra ones."
        )
    games = list(per_game)
    matrix = np.stack([human_normalized(game, per_game[game]) for game in games], axis=1)
    return games, matrix


def _all_metrics(matrix: np.ndarray) -> np.ndarray:
    from rliable import metrics

    return np.array([
        metrics.aggregate_mean(matrix),
        metrics.aggregate_median(matrix),
        metrics.aggregate_iqm(matrix),
        metrics.aggregate_optimality_gap(matrix),
    ])


def aggregate(
    scores: Mapping[str, Iterable[float]],
    *,
    reps: int = RLIABLE_DEFAULT_REPS,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Mean, median, IQM and optimality gap of the HNS of ``scores``, with stratified-bootstrap intervals.

    Aggregates over the games given (one game is fine; ``games`` in the result says which, and a
    note says when they are not all 26, as such figures are not comparable with published
    26-game aggregates). Every game needs the same number of runs. The result is plain JSON::

        {"games": [...], "n_games": 26, "n_runs": 5, "reps": 50000, "seed": 0, "confidence": 0.95,
         "mean": {"value": 1.459, "ci": [low, high]}, "median": {...}, "iqm": {...},
         "optimality_gap": {...}, "superhuman_games": 11, "per_game_hns": {game: mean HNS}, "notes": [...]}

    The four metrics share one bootstrap (one ``get_interval_estimates`` call, as rliable's own
    examples do). rliable 1.2's ``StratifiedBootstrap`` draws from NumPy's global random state
    and ignores ``random_state``, so ``seed`` seeds that global state for the call and the previous
    state is restored afterwards (not thread-safe). With one run per game there is nothing to
    resample and the intervals collapse onto the point estimates.
    """
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    from rliable import library

    games, matrix = _hns_matrix(scores)
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        points, intervals = library.get_interval_estimates(
            {"scores": matrix}, _all_metrics, reps=reps, confidence_interval_size=confidence
        )
    finally:
        np.random.set_state(saved)
    point, (low, high) = points["scores"], intervals["scores"]

    per_game = matrix.mean(axis=0)
    result: dict[str, Any] = {
        "games": games,
        "n_games": len(games),
        "n_runs": int(matrix.shape[0]),
        "reps": int(reps),
        "seed": int(seed),
        "confidence": float(confidence),
    }
    for i, name in enumerate(METRICS):
        result[name] = {"value": float(point[i]), "ci": [float(low[i]), float(high[i])]}
    result["superhuman_games"] = int(np.sum(per_game >= 1.0))
    result["per_game_hns"] = {game: float(h) for game, h in zip(games, per_game, strict=True)}
    notes = []
    if len(games) < len(ATARI100K_GAMES):
        notes.append(
            f"aggregated over {len(games)} of the {len(ATARI100K_GAMES)} Atari 100k games; "
            "not comparable with published 26-game aggregates"
        )
    if matrix.shape[0] == 1:
        notes.append("one run per game: the stratified bootstrap has nothing to resample, intervals are points")
    result["notes"] = notes
    return result


def _fmt_score(value: float) -> str:
    return f"{value:,.1f}" if abs(value) < 1e5 else f"{value:,.0f}"


def _fmt_metric(entry: Mapping[str, Any]) -> str:
    low, high = entry["ci"]
    return f"{entry['value']:.3f} [{low:.3f}, {high:.3f}]"


def results_table(
    ours: Mapping[str, Mapping[str, Iterable[float]]],
    methods: Sequence[str] = DEFAULT_TABLE_METHODS,
    games: Sequence[str] | None = None,
    *,
    reps: int = RLIABLE_DEFAULT_REPS,
    seed: int = 0,
) -> str:
    """Markdown: a per-game table of mean raw scores and an aggregate table, ours beside published.

    ``ours`` is ``{method name: {game: [score per seed]}}``. Every method, published or ours, is
    aggregated over the same games, so a run that covers a few games is compared fairly: by
    default the games that every one of ``ours`` covers (all 26 when ``ours`` is empty). The best
    mean raw score per game among the methods is in bold.
    """
    names = list(dict.fromkeys(_published_name(m) for m in methods))
    ours_canon = {name: _canonical_scores(per_game) for name, per_game in ours.items()}
    clash = set(names) & set(ours_canon)
    if clash:
        raise ValueError(f"our method names {sorted(clash)} clash with published ones; rename them")
    if games is None:
        covered = set(ATARI100K_GAMES)
        for per_game in ours_canon.values():
            covered &= set(per_game)
        chosen = [g for g in ATARI100K_GAMES if g in covered]
        if not chosen:
            raise ValueError("our methods share no game; pass `games` explicitly")
    else:
        wanted = {check_game(g) for g in games}
        chosen = [g for g in ATARI100K_GAMES if g in wanted]
        if not chosen:
            raise ValueError("`games` is empty")
    for name, per_game in ours_canon.items():
        missing = [g for g in chosen if g not in per_game]
        if missing:
            raise ValueError(f"{name} has no scores for {', '.join(missing)}")

    columns: dict[str, dict[str, np.ndarray]] = {}
    for name in names:
        per_game = load_published(name)
        columns[name] = {g: np.asarray(per_game[g], dtype=np.float64) for g in chosen}
    for name, per_game in ours_canon.items():
        columns[name] = {g: per_game[g] for g in chosen}

    lines = [
        f"### Per game: mean raw score over seeds ({len(chosen)} of {len(ATARI100K_GAMES)} games)",
        "",
        "| Game | Random | Human | " + " | ".join(columns) + " |",
        "|---|---:|---:|" + "---:|" * len(columns),
    ]
    for game in chosen:
        means = {name: float(col[game].mean()) for name, col in columns.items()}
        best = max(means.values())
        cells = [f"**{_fmt_score(v)}**" if v == best else _fmt_score(v) for v in means.values()]
        lines.append(f"| {game} | {_fmt_score(random_score(game))} | {_fmt_score(human_score(game))} | "
                     + " | ".join(cells) + " |")

    which = "all 26 games" if len(chosen) == len(ATARI100K_GAMES) else ", ".join(chosen)
    lines += [
        "",
        f"### Aggregate human-normalized scores over {len(chosen)} games ({which})",
        "",
        f"Point estimate [95% stratified-bootstrap interval, rliable, {reps} reps]; "
        "optimality gap: lower is better.",
        "",
        "| Method | Runs per game | " + " | ".join(_METRIC_TITLES[m] for m in METRICS) + " | Superhuman games |",
        "|---|---:|" + "---|" * len(METRICS) + "---:|",
    ]
    for name, per_game in columns.items():
        agg = aggregate(per_game, reps=reps, seed=seed)
        cells = " | ".join(_fmt_metric(agg[m]) for m in METRICS)
        lines.append(f"| {name} | {agg['n_runs']} | {cells} | {agg['superhuman_games']} |")
    return "\n".join(lines)


def plot_iqm(results: Mapping[str, Mapping[str, Any]], path: str | Path, *, metric: str = "iqm") -> Path:
    """Save a horizontal interval plot (PNG) of one metric, default IQM, with its intervals.

    ``results`` is ``{method: aggregate(...) result}``. Methods are sorted by the point estimate;
    those not in PUBLISHED_METHODS (ours) are drawn in another colour. Uses matplotlib's object
    API with the Agg canvas, so no display and no global pyplot state are involved.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if not results:
        raise ValueError("nothing to plot: `results` is empty")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    order = sorted(results, key=lambda name: results[name][metric]["value"])
    values = np.array([results[name][metric]["value"] for name in order])
    lows = np.array([results[name][metric]["ci"][0] for name in order])
    highs = np.array([results[name][metric]["ci"][1] for name in order])
    colors = ["tab:gray" if name in PUBLISHED_METHODS else "tab:red" for name in order]
    game_counts = sorted({results[name]["n_games"] for name in order})

    fig = Figure(figsize=(6.5, 0.45 * len(order) + 1.4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    y = np.arange(len(order))
    ax.barh(y, highs - lows, left=lows, height=0.55, color=colors, alpha=0.35)
    ax.scatter(values, y, color=colors, marker="|", s=250, linewidths=2.5, zorder=3)
    ax.set_yticks(y, order)
    ax.set_xlabel(f"{_METRIC_TITLES[metric]} of human-normalized score (95% stratified-bootstrap CI)")
    games = "/".join(str(n) for n in game_counts)
    ax.set_title(f"Atari 100k, {games} game{'s' if game_counts != [1] else ''}")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    left, right = ax.get_xlim()
    if metric != "optimality_gap" and left <= 1.0 <= right:
        ax.axvline(1.0, color="black", lw=0.8, ls="--")
        ax.text(1.0, 1.0, " human", transform=ax.get_xaxis_transform(), va="bottom", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path
