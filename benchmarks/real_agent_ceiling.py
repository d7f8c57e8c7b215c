"""The same agent trained on the real game: what a dream-trained agent could hope for at a budget.

    python benchmarks/real_agent_ceiling.py --game Boxing --milestones 40000 100000 200000 \
        --out benchmarks/results/real_agent_ceiling_boxing.json

``neuralenvs utility`` trains an SB3 agent for N steps in a dream and plays it in the real game. A
dream is at best as good as the real game, so the same algorithm, with the same settings
(``neuralenvs.sb3.default_algo_kwargs``), the same observations (64x64 RGB, 4 stacked frames) and the
same number of steps taken in the real game, is the ceiling to read a utility figure against. This
script trains that agent on ``neuralenvs/<Game>-real-v0`` and scores it (mean and standard error of
full test-mode games) at each milestone, beside a uniformly random policy on the same seeds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from neuralenvs.registry import real_env_id
from neuralenvs.sb3 import ALGORITHMS, default_algo_kwargs, evaluate, evaluate_random, make_sb3_env
from neuralenvs.utils.device import describe_hardware


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="Boxing")
    parser.add_argument("--algo", default="ppo", choices=sorted(ALGORITHMS))
    parser.add_argument("--milestones", type=int, nargs="+", default=[40_000, 100_000, 200_000],
                        help="real steps at which the agent is scored")
    parser.add_argument("--n-envs", type=int, default=16)
    parser.add_argument("--episodes", type=int, default=10, help="real test games per milestone")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args()

    real_id = real_env_id(args.game)
    env_kwargs = {"frame_stack": 4}
    agent = ALGORITHMS[args.algo](
        "CnnPolicy", make_sb3_env(real_id, args.n_envs, **env_kwargs), seed=args.seed, device=args.device,
        **default_algo_kwargs(args.algo),
    )
    random = evaluate_random(real_id, n_episodes=args.episodes, seed=args.seed + 1000, env_kwargs=env_kwargs)
    print(f"random policy: {random['mean']:.2f} ± {random['stderr']:.2f}", flush=True)
    rows, trained, start = [], 0, time.perf_counter()
    for milestone in sorted(args.milestones):
        agent.learn(total_timesteps=milestone - trained, reset_num_timesteps=False, progress_bar=True)
        trained = milestone
        score = evaluate(agent, real_id, n_episodes=args.episodes, seed=args.seed + 1000, env_kwargs=env_kwargs)
        rows.append({"real_steps": milestone, "agent": score, "seconds": time.perf_counter() - start})
        print(f"{milestone} real steps: {score['mean']:.2f} ± {score['stderr']:.2f} "
              f"({rows[-1]['seconds']:.0f} s)", flush=True)
    result = {
        "game": args.game, "algo": args.algo, "algo_kwargs": default_algo_kwargs(args.algo),
        "n_envs": args.n_envs, "episodes": args.episodes, "seed": args.seed, "random": random,
        "milestones": rows, "hardware": describe_hardware(), "torch_threads": torch.get_num_threads(),
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
