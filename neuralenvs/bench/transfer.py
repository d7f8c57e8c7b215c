"""Dream-to-real transfer set beside the same agent trained on the real game.

A dream agent's real score means little alone. Model-based RL is judged against two real-game agents
of the same algorithm and settings (``benchmarks/real_agent_ceiling.py`` trains them):

- the one trained for as many *agent* steps as the dream agent: the ceiling of a perfect dream.
  ``utility_ratio = (dream agent - random) / (real agent - random)``, each against the random play
  scored beside it (1.0: the dream is as good as the game for this agent; 0: no better than random);
- the one trained on as many *real* steps as built the dream: the sample-efficiency comparison that
  model-based RL exists for (SimPLe and DIAMOND beat it on most games).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from neuralenvs.bench.utility import score_gap


def provenance_chain(provenance: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A checkpoint's provenance, then that of the run it was fine-tuned from (``base``), and so on."""
    chain, node = [], provenance
    while node:
        chain.append(node)
        node = node.get("base")
    return chain


def dream_budget(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """What it took to build a dream, from its checkpoint's provenance: the world-model steps and
    seconds of the run and of every run it was fine-tuned from, and the real steps of its training
    data plus any that its reward prior was fitted on outside them (``neuralenvs calibrate``)."""
    chain = provenance_chain(provenance)
    calibrated = provenance.get("reward_prior_calibrated") or {}
    return {
        "real_steps": max(int(p.get("real_steps") or 0) for p in chain) + int(calibrated.get("adds_real_steps", 0)),
        "world_model_steps": sum(int(p.get("training_steps") or 0) for p in chain),
        "world_model_seconds": round(sum(float(p.get("wall_clock_seconds") or 0) for p in chain), 1),
        "world_model_hardware": provenance.get("hardware"),
        "runs": len(chain),
    }


def _milestone(ceiling: Mapping[str, Any], agent_steps: int) -> Mapping[str, Any] | None:
    """The real agent's milestone nearest ``agent_steps`` within 5% (a dream built from 101,471 real
    steps is compared with the agent of 100k real steps), or None."""
    rows: Sequence[Mapping[str, Any]] = ceiling.get("milestones") or []
    near = [r for r in rows if abs(r["agent_steps"] - agent_steps) <= 0.05 * agent_steps]
    return min(near, key=lambda r: abs(r["agent_steps"] - agent_steps)) if near else None


def _real_agent_row(dream: Mapping[str, Any], ceiling: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    real_gap = row["agent"]["mean"] - ceiling["random"]["mean"]
    dream_gap = dream["agent"]["mean"] - dream["random"]["mean"]
    return {
        "agent_steps": row["agent_steps"],
        "real_agent": {"mean": row["agent"]["mean"], "stderr": row["agent"]["stderr"],
                       "n_episodes": row["agent"].get("n_episodes")},
        "real_random": {"mean": ceiling["random"]["mean"], "stderr": ceiling["random"]["stderr"]},
        "utility_ratio": dream_gap / real_gap if real_gap > 0 else None,
        "dream_agent_vs_real_agent": score_gap(dream["agent"], row["agent"]),
    }


def compare_to_real_agents(
    utility: Mapping[str, Any], ceiling: Mapping[str, Any], real_steps: int, budget: Mapping[str, Any]
) -> dict[str, Any]:
    """The transfer record of one dream: its agent against random play and against the real-game
    agents of ``ceiling`` (one game's ``real_agent_ceiling`` result) at the dream agent's steps and
    at the ``real_steps`` that built the dream, with the whole ``budget`` that produced it."""
    if utility.get("game") != ceiling.get("game"):
        raise ValueError(f"the utility is for {utility.get('game')!r} but the real agents for {ceiling.get('game')!r}")
    record: dict[str, Any] = {
        "game": utility["game"],
        "dream_agent": {k: utility["agent"][k] for k in ("mean", "stderr", "n_episodes")},
        "random": {k: utility["random"][k] for k in ("mean", "stderr", "n_episodes")},
        "dream_agent_vs_random": score_gap(utility["agent"], utility["random"]),
        "budget": dict(budget),
    }
    for key, steps in (("same_agent_steps", int(utility["dream_steps"])), ("same_real_steps", int(real_steps))):
        row = _milestone(ceiling, steps)
        record[key] = None if row is None else _real_agent_row(utility, ceiling, row)
    return record


def utility_seed(utility: Mapping[str, Any]) -> int | None:
    """The agent's seed of a ``neuralenvs utility`` result; results written before it was stored
    carry it only in their command line."""
    if utility.get("seed") is not None:
        return int(utility["seed"])
    found = re.search(r"--seed[ =](\d+)", (utility.get("run") or {}).get("command", ""))
    return int(found.group(1)) if found else None


def across_seeds(utilities: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One dream's agents over several seeds: each seed's real score beside random play, and the
    mean over seeds with its standard error *across seeds* (the seed, not the 30 real games, is
    where most of the spread is: five PPO seeds in one KungFuMaster dream scored 1,767 to 3,583)."""
    if not utilities:
        raise ValueError("no utility results to summarise")
    games = {u["game"] for u in utilities}
    if len(games) != 1:
        raise ValueError(f"utility results of several games: {sorted(games)}")
    seeds = [utility_seed(u) for u in utilities]
    if None not in seeds and len(set(seeds)) != len(seeds):
        raise ValueError(f"a seed appears twice: {seeds}")
    rows = [
        {"seed": seed, "agent": {k: u["agent"][k] for k in ("mean", "stderr")},
         "random": {k: u["random"][k] for k in ("mean", "stderr")},
         "gap_over_stderr": u["agent_vs_random"]["gap_over_stderr"]}
        for seed, u in zip(seeds, utilities, strict=True)
    ]
    means = [r["agent"]["mean"] for r in rows]
    spread = statistics.stdev(means) / math.sqrt(len(means)) if len(means) > 1 else math.nan
    return {
        "game": games.pop(),
        "dream_steps": sorted({int(u["dream_steps"]) for u in utilities}),
        "seeds": rows,
        "agent_mean": statistics.fmean(means),
        "agent_mean_stderr_across_seeds": spread,
        "random_mean": statistics.fmean(r["random"]["mean"] for r in rows),
    }
