"""Does a dream follow the agent's actions, and does it pay only for what the real game pays for?

    python benchmarks/action_response.py runs/cc-sigma-1step/checkpoint --skip-response \
        --policies random DOWN UP UP,DOWN UP,UP,UP,DOWN NOOP --precision bf16 \
        --out benchmarks/results/policy_rewards_crazyclimber_1step.json
    python benchmarks/action_response.py checkpoints/crazyclimber-diffusion --skip-response --policies \
        --prefix UP,UP,UP,DOWN --repeats 1 2 5 --final DOWN --precision bf16

Two measurements against the real game (``neuralenvs.bench.action_response``): the next frame of
every action from the same real state, real against dreamed (the dream's action effect beside the
real one, and how often a dreamed frame is nearest its own action's real frame); and the rate of
rewarded steps that scripted action cycles earn over an agent's dream length (``--horizon``) from
the same real states, in the real game and in the dream. A dream that ignores actions, or pays for
a cycle the game does not, teaches an agent nothing that transfers, however right its reward head
is on real frames.
"""

from __future__ import annotations

import argparse
import time

import torch

from neuralenvs.bench.action_response import action_response, agent_rewards, policy_rewards, prefix_rewards
from neuralenvs.bench.report import write_json
from neuralenvs.envs.collect import load_sb3_agent
from neuralenvs.registry import load_world_model_and_starts


def _row(row: dict) -> str:
    return (f"real {row['real_rewarded_per_step']:.3f} ± {row['real_se']:.3f}, dream "
            f"{row['dream_rewarded_per_step']:.3f} ± {row['dream_se']:.3f}, correlation across states "
            f"{row['correlation_across_states']:.2f}")


def _print_policy_rewards(summary: dict, states: int) -> None:
    print(f"rewarded steps per step over {summary['horizon']} steps from the same {states} real states:")
    for name, row in summary["policies"].items():
        print(f"{name:>20s}: {_row(row)}")
    print(f"the dream ranks the policies as the game does: {summary['order_agrees']} (rank correlation "
          f"{summary['rank_correlation']:.2f}); it over-pays a policy by at most {summary['largest_overpay']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint folder or gym id")
    parser.add_argument("--states", type=int, default=100, help="real states at which every action is tried")
    parser.add_argument("--policies", nargs="*", default=["random"],
                        help="'random' or comma-separated action names, e.g. UP,UP,UP,DOWN")
    parser.add_argument("--reward-states", type=int, default=64, help="real states the policies are played from")
    parser.add_argument("--horizon", type=int, default=15,
                        help="steps each policy is played (the agent's dream length)")
    parser.add_argument("--shorter-horizons", type=int, nargs="*", default=[],
                        help="also score the first N steps of the same plays, for each N: the longest dream "
                             "that still ranks the policies as the game does is the one to train an agent in")
    parser.add_argument("--prefix", default=None,
                        help="an action cycle (e.g. UP,UP,UP,DOWN) played --repeats times before --final: is "
                             "--final rewarded after it, in the game and in the dream?")
    parser.add_argument("--repeats", type=int, nargs="*", default=[1, 2, 5])
    parser.add_argument("--final", default="DOWN")
    parser.add_argument("--agent", default=None, metavar="ZIP",
                        help="an SB3 agent (e.g. a utility run's agent.zip): its own play from the same real states, "
                             "in the game and in the dream")
    parser.add_argument("--agent-algo", default="ppo", help="SB3 algorithm of --agent")
    parser.add_argument("--frame-stack", type=int, default=4, help="frames the agent sees")
    parser.add_argument("--skip-response", action="store_true", help="only the policy rewards")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model, _, config = load_world_model_and_starts(args.checkpoint, device=args.device)
    game = config["game"]
    start = time.perf_counter()
    result: dict = {"checkpoint": args.checkpoint}
    if not args.skip_response:
        result["action_response"] = response = action_response(model, game, states=args.states, seed=args.seed)
        print(f"{game}, {response['states']} states: action effect (mean pairwise MSE of next frames) real "
              f"{response['real_action_effect']:.2f}, dream {response['dream_action_effect']:.2f} "
              f"(ratio {response['effect_ratio']:.2f}); dreamed frame nearest its own action's real frame "
              f"{response['own_action_hit_rate']:.2f} (chance {response['chance_hit_rate']:.2f})")
    if args.policies:
        rewards = policy_rewards(model, game, args.policies, states=args.reward_states, horizon=args.horizon,
                                 seed=args.seed, precision=args.precision, shorter_horizons=args.shorter_horizons)
        for summary in [*rewards.get("by_horizon", {}).values(), rewards]:
            _print_policy_rewards(summary, args.reward_states)
        result["policy_rewards"] = rewards
    if args.agent:
        agent = load_sb3_agent(args.agent, args.agent_algo)
        result["agent_rewards"] = row = agent_rewards(
            model, game, lambda obs: agent.predict(obs, deterministic=False)[0], args.frame_stack,
            states=args.reward_states, horizon=args.horizon, seed=args.seed, precision=args.precision)
        print(f"the agent over {args.horizon} steps from the same {args.reward_states} real states: {_row(row)}")
    if args.prefix:
        result["prefix_rewards"] = prefix = prefix_rewards(
            model, game, args.prefix, args.repeats, args.final, states=args.reward_states, seed=args.seed,
            precision=args.precision)
        print(f"P({args.final} rewarded) after ({args.prefix}) x m, and mean |pixel change| per step on the way:")
        for m, row in prefix["repeats"].items():
            print(f"m={m:>3s} ({row['states']} states): real {row['real_rewarded']:.3f}, dream "
                  f"{row['dream_rewarded']:.3f}; change real {row['real_change']:.2f}, dream {row['dream_change']:.2f}")
    result["seconds"] = time.perf_counter() - start
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
