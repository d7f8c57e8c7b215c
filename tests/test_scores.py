"""Atari 100k scores: human normalization and rliable aggregates reproduce the published figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neuralenvs.bench.scores import (
    PUBLISHED_METHODS,
    aggregate,
    human_normalized,
    human_score,
    load_published,
    plot_iqm,
    random_score,
    results_table,
)
from neuralenvs.envs import atari
from neuralenvs.envs.atari import ATARI100K_GAMES

REPS = 500  # enough to check the intervals' shape; the published figures are point estimates

# mean and median HNS as given in the reference README (to the decimals it gives them)
PUBLISHED_MEAN_MEDIAN = {
    "SimPLe": (0.33, 0.13),
    "TWM": (0.96, 0.51),
    "IRIS": (1.046, 0.289),
    "DreamerV3": (1.124, 0.485),
    "STORM": (1.222, 0.425),
    "REM": (1.222, 0.280),
    "DeltaIRIS": (1.383, 0.594),
    "DIAMOND": (1.459, 0.373),
    "Simulus": (1.645, 0.982),
    "EfficientZero": (1.943, 1.090),
}


@pytest.fixture(scope="module")
def diamond() -> dict:
    return aggregate(load_published("DIAMOND"), reps=REPS)


def test_diamond_reproduces_its_published_aggregates(diamond):
    assert round(diamond["mean"]["value"], 3) == 1.459
    assert round(diamond["median"]["value"], 3) == 0.373
    assert round(diamond["iqm"]["value"], 3) == 0.641
    assert diamond["superhuman_games"] == 11
    assert diamond["games"] == list(ATARI100K_GAMES) and diamond["n_games"] == 26 and diamond["n_runs"] == 5
    assert diamond["notes"] == []
    json.dumps(diamond)  # plain JSON, as results files need


@pytest.mark.parametrize("method", sorted(PUBLISHED_MEAN_MEDIAN))
def test_published_mean_and_median_match_the_reference(method):
    mean, median = PUBLISHED_MEAN_MEDIAN[method]
    decimals = len(str(mean).split(".")[1])
    result = aggregate(load_published(method), reps=10)
    assert round(result["mean"]["value"], decimals) == mean
    assert round(result["median"]["value"], decimals) == pytest.approx(median)


def test_median_is_over_per_game_means_not_over_all_runs(diamond):
    # rliable's aggregate_median takes the median of per-game means, the papers' definition;
    # the median over all (game, seed) values would be 0.338 for DIAMOND
    per_game = np.array(list(diamond["per_game_hns"].values()))
    assert diamond["median"]["value"] == pytest.approx(np.median(per_game))
    all_runs = np.concatenate([human_normalized(g, s) for g, s in load_published("DIAMOND").items()])
    assert abs(np.median(all_runs) - diamond["median"]["value"]) > 0.01


def test_intervals_contain_point_estimates(diamond):
    for metric in ("mean", "median", "iqm", "optimality_gap"):
        low, high = diamond[metric]["ci"]
        assert low < diamond[metric]["value"] < high, metric
    assert 0.55 < diamond["iqm"]["ci"][0] and diamond["iqm"]["ci"][1] < 0.75


def test_bootstrap_is_seeded_and_leaves_global_rng_alone():
    scores = load_published("IRIS")
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = aggregate(scores, reps=200, seed=1)
    assert np.array_equal(np.random.get_state()[1], before)
    assert aggregate(scores, reps=200, seed=1)["iqm"] == a["iqm"]
    assert aggregate(scores, reps=200, seed=2)["iqm"]["ci"] != a["iqm"]["ci"]


def test_random_is_zero_and_human_is_one_on_every_game():
    for game in ATARI100K_GAMES:
        assert human_normalized(game, random_score(game)) == 0.0
        assert human_normalized(game, human_score(game)) == pytest.approx(1.0)
    np.testing.assert_allclose(human_normalized("Pong", [-20.7, 14.6, -3.05]), [0.0, 1.0, 0.5])


def test_kungfumaster_random_score_is_not_krulls():
    assert random_score("KungFuMaster") == 258.5
    assert random_score("Krull") == 1598.0
    assert human_normalized("KungFuMaster", 22736.3) == pytest.approx(1.0)


def test_env_score_table_agrees_with_the_reference_files():
    # neuralenvs/envs/atari100k.json (the real envs') must hold the same numbers as RANDOM/HUMAN.json
    ref = Path(__file__).resolve().parents[1] / "neuralenvs" / "bench" / "reference"
    random_ref = json.loads((ref / "RANDOM.json").read_text())
    human_ref = json.loads((ref / "HUMAN.json").read_text())
    assert sorted(random_ref) == sorted(human_ref) == sorted(ATARI100K_GAMES)
    for game in ATARI100K_GAMES:
        assert [atari.random_score(game)] == random_ref[game], game
        assert [atari.human_score(game)] == human_ref[game], game


def test_unknown_game_and_method_raise():
    with pytest.raises(ValueError, match="unknown Atari 100k game 'Pongg'.*valid names are: .*Pong"):
        human_normalized("Pongg", 1.0)
    with pytest.raises(ValueError, match="unknown Atari 100k game"):
        aggregate({"NotAGame": [1.0, 2.0]}, reps=10)
    with pytest.raises(ValueError, match="known methods are: .*DIAMOND"):
        load_published("MuZero")


def test_unequal_seed_counts_and_empty_scores_raise():
    with pytest.raises(ValueError, match="same number of runs.*Boxing: 3.*Pong: 2"):
        aggregate({"Pong": [1.0, 2.0], "Boxing": [1.0, 2.0, 3.0]}, reps=10)
    with pytest.raises(ValueError, match="no scores"):
        aggregate({}, reps=10)
    with pytest.raises(ValueError, match="non-empty"):
        aggregate({"Pong": []}, reps=10)
    with pytest.raises(ValueError, match="finite"):
        aggregate({"Pong": [float("nan")]}, reps=10)


def test_partial_game_set_is_aggregated_over_its_games_and_says_so():
    result = aggregate({"pong": [-20.7, 14.6]}, reps=REPS)  # HNS 0 and 1
    assert result["games"] == ["Pong"] and result["n_runs"] == 2
    assert result["mean"]["value"] == pytest.approx(0.5)
    assert result["optimality_gap"]["value"] == pytest.approx(0.5)
    assert "1 of the 26" in result["notes"][0]
    single = aggregate({"Pong": [0.0], "Boxing": [10.0]}, reps=REPS)
    assert single["mean"]["ci"][0] == single["mean"]["ci"][1] == pytest.approx(single["mean"]["value"])
    assert any("one run per game" in note for note in single["notes"])


def test_every_published_method_loads_all_games():
    assert "SPR" in PUBLISHED_METHODS and "DIAMOND" in PUBLISHED_METHODS
    for method in PUBLISHED_METHODS:
        scores = load_published(method)
        assert sorted(scores) == sorted(ATARI100K_GAMES), method
    assert len(load_published("spr")["Pong"]) == 100
    assert len(load_published("EfficientZero")["Pong"]) == 1


def test_results_table_puts_our_runs_beside_published():
    ours = {"neuralenvs-diffusion": {"Pong": [-20.7, 14.6], "Boxing": [10.1, 14.1]}}  # mean HNS .5 and 1
    table = results_table(ours, methods=("SimPLe", "DIAMOND"), reps=100)
    rows = table.splitlines()
    assert "| Game | Random | Human | SimPLe | DIAMOND | neuralenvs-diffusion |" in rows
    boxing = next(r for r in rows if r.startswith("| Boxing |"))
    assert boxing.endswith("| 12.1 |")  # mean of our two seeds
    assert "over 2 games (Boxing, Pong)" in table
    ours_row = next(r for r in rows if r.startswith("| neuralenvs-diffusion |"))
    assert "| 2 | 0.750 [" in ours_row  # mean HNS of (0 + 1) / 2 and 1
    diamond_row = next(r for r in rows if r.startswith("| DIAMOND | 5 |"))
    # DIAMOND aggregated over the same two games, not its 26-game figure of 1.459
    expected = aggregate({g: load_published("DIAMOND")[g] for g in ("Pong", "Boxing")}, reps=10)
    assert diamond_row.split(" | ")[2].startswith(f"{expected['mean']['value']:.3f} [")
    with pytest.raises(ValueError, match="no scores for Alien"):
        results_table(ours, games=["Alien", "Pong"], reps=10)


def test_plot_iqm_writes_a_png(tmp_path, diamond):
    ours = aggregate({"Pong": [0.0, 5.0], "Boxing": [3.0, 4.0]}, reps=REPS)
    path = plot_iqm({"DIAMOND": diamond, "ours": ours}, tmp_path / "sub" / "iqm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000
