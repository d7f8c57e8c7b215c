"""The same agent trained on the real game, swept over games: where can a dream-trained agent win?

    python benchmarks/real_agent_ceiling.py --games KungFuMaster Krull Seaquest Assault Asterix \
        RoadRunner CrazyClimber DemonAttack Boxing --milestones 50000 100000 200000 --episodes 20 \
        --jobs 2 --runs runs/ceiling --out benchmarks/results/real_agent_ceiling.json

``neuralenvs utility`` trains an SB3 agent for N steps in a dream and plays it in the real game. A
dream is at best as good as the real game, so the same algorithm with the same settings
(``neuralenvs.sb3.default_algo_kwargs``), the same observations (64x64 RGB, 4 stacked frames) and
the same episodes and rewards as in a dream (a lost life ends the episode, each reward is its sign)
trained on the real game is the ceiling to read a utility figure against. This script trains that
agent on each game and scores it at each milestone of agent steps over full test-mode games (real,
unclipped score), beside a uniformly random policy on the same seeds.

Each game runs in its own process at one torch thread (``--jobs`` at a time) and keeps its state in
``--runs/<Game>/``: the agent after its latest milestone (saved atomically) and ``result.json``.
A killed sweep rerun with the same arguments resumes from the last milestone each game reached;
a rerun with a later milestone extends the games. The summary ranks the games by the gap between
agent and random at ``--rank-at`` steps, in standard errors of that difference.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

# The candidates named by the sweep's issue: Atari 100k games whose published PPO-at-100k scores are
# far above random; Boxing is the reference the earlier ceiling was measured on.
CANDIDATES = ("KungFuMaster", "Krull", "Seaquest", "Assault", "Asterix", "RoadRunner", "CrazyClimber",
              "DemonAttack", "Boxing")
TRAIN_ENV = {"frame_stack": 4, "train": True, "clip_rewards": True}  # what a dream shows the agent
TEST_ENV = {"frame_stack": 4}  # the real game to game over, unclipped score


def run_game(game: str, milestones: list[int], episodes: int, seed: int, n_envs: int, runs: str) -> dict[str, Any]:
    """Train, or resume, one game's agent through every milestone; returns its result."""
    import torch

    torch.set_num_threads(1)
    from neuralenvs.bench.report import write_json
    from neuralenvs.bench.utility import score_gap
    from neuralenvs.registry import real_env_id
    from neuralenvs.sb3 import (
        PPO,
        default_algo_kwargs,
        describe_algo_kwargs,
        evaluate,
        evaluate_random,
        make_sb3_env,
        save_agent,
    )

    folder = Path(runs) / game
    folder.mkdir(parents=True, exist_ok=True)
    result_path, agent_path = folder / "result.json", folder / "agent.zip"
    real_id = real_env_id(game)
    algo_kwargs = default_algo_kwargs("ppo", n_envs=n_envs)
    settings = {"game": game, "algo": "ppo", "algo_kwargs": describe_algo_kwargs(algo_kwargs), "n_envs": n_envs,
                "seed": seed, "episodes": episodes, "train_env": TRAIN_ENV, "test_env": TEST_ENV}
    result: dict[str, Any] = json.loads(result_path.read_text()) if result_path.exists() else {}
    if result and {k: result.get(k) for k in settings} != settings:
        raise SystemExit(f"{result_path} was made with other settings; use another --runs folder")
    if not result:
        start = time.perf_counter()
        random = evaluate_random(real_id, n_episodes=episodes, seed=seed + 1000, env_kwargs=TEST_ENV)
        result = {**settings, "random": random, "random_seconds": time.perf_counter() - start, "milestones": []}
        write_json(result_path, result, quiet=True)
    vec_env = make_sb3_env(real_id, n_envs, **TRAIN_ENV)
    done = {row["agent_steps"] for row in result["milestones"]}
    if agent_path.exists():
        agent = PPO.load(str(agent_path), env=vec_env, device="cpu")
    else:
        agent = PPO("CnnPolicy", vec_env, seed=seed, device="cpu", **algo_kwargs)
    for milestone in sorted(m for m in milestones if m not in done):
        if agent.num_timesteps > milestone:
            continue  # the saved agent is past it: this milestone was not asked for before
        start = time.perf_counter()
        agent.learn(total_timesteps=milestone - agent.num_timesteps, reset_num_timesteps=False)
        train_seconds = time.perf_counter() - start
        save_agent(agent, agent_path)
        start = time.perf_counter()
        score = evaluate(agent, real_id, n_episodes=episodes, seed=seed + 1000, env_kwargs=TEST_ENV)
        row = {"agent_steps": milestone, "agent": score, "train_seconds": train_seconds,
               "eval_seconds": time.perf_counter() - start, **score_gap(score, result["random"])}
        result["milestones"] = sorted(result["milestones"] + [row], key=lambda r: r["agent_steps"])
        write_json(result_path, result, quiet=True)
        print(f"{game} {milestone} steps: agent {score['mean']:.1f} ± {score['stderr']:.1f}, random "
              f"{result['random']['mean']:.1f} ± {result['random']['stderr']:.1f}, gap "
              f"{row['gap_over_stderr']:.1f} s.e. ({train_seconds:.0f} s training)", flush=True)
    vec_env.close()
    return result


def table(results: list[dict[str, Any]], milestones: list[int]) -> str:
    """Markdown: per game, random and the agent at each milestone (mean ± s.e., gap in s.e.)."""
    head = "| game | random | " + " | ".join(f"PPO {m // 1000}k (gap/s.e.)" for m in milestones) + " |"
    lines = [head, "|---" * (2 + len(milestones)) + "|"]
    for r in results:
        by_steps = {row["agent_steps"]: row for row in r["milestones"]}
        cells = []
        for m in milestones:
            row = by_steps.get(m)
            cells.append("–" if row is None else
                         f"{row['agent']['mean']:.1f} ± {row['agent']['stderr']:.1f} ({row['gap_over_stderr']:.1f})")
        lines.append(f"| {r['game']} | {r['random']['mean']:.1f} ± {r['random']['stderr']:.1f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", nargs="+", default=list(CANDIDATES))
    parser.add_argument("--milestones", type=int, nargs="+", default=[50_000, 100_000, 200_000],
                        help="agent steps (real steps, for this agent) at which it is scored")
    parser.add_argument("--rank-at", type=int, default=100_000, help="milestone the games are ranked at")
    parser.add_argument("--n-envs", type=int, default=16)
    parser.add_argument("--episodes", type=int, default=20, help="real test games per milestone")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="games trained at once, one process each")
    parser.add_argument("--runs", default="runs/ceiling", help="folder of the per-game agents and results")
    parser.add_argument("--out", default=None, help="JSON summary to write")
    parser.add_argument("--summary-only", action="store_true",
                        help="summarise the games' results so far without training (e.g. while a sweep runs)")
    args = parser.parse_args()

    from neuralenvs.bench.report import write_json
    from neuralenvs.envs.atari import check_game

    games = [check_game(g) for g in args.games]
    jobs = [(g, args.milestones, args.episodes, args.seed, args.n_envs, args.runs) for g in games]
    if args.summary_only:  # what the games' folders hold so far; trains nothing
        paths = [Path(args.runs) / g / "result.json" for g in games]
        results = [json.loads(p.read_text()) for p in paths if p.exists()]
    elif args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(run_game, *zip(*jobs, strict=True)))
    else:
        results = [run_game(*job) for job in jobs]
    ranked = sorted(
        (r for r in results if any(row["agent_steps"] == args.rank_at for row in r["milestones"])),
        key=lambda r: -next(row["gap_over_stderr"] for row in r["milestones"] if row["agent_steps"] == args.rank_at),
    )
    milestones = sorted(set(args.milestones))
    print(table(results, milestones))
    print(f"ranked by gap / s.e. at {args.rank_at} steps: {', '.join(r['game'] for r in ranked)}")
    if args.out:
        write_json(args.out, {"rank_at": args.rank_at, "ranked": [r["game"] for r in ranked], "games": results,
                              "table": table(results, milestones), "torch_threads": 1})


if __name__ == "__main__":
    main()
