"""The ``neuralenvs`` command. Each subcommand imports what it needs only when it runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _write_json(result: dict, path: str | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")


def cmd_collect(args: argparse.Namespace) -> None:
    from neuralenvs.data.collect import collect_atari, collect_gym

    if (args.game is None) == (args.env_id is None):
        sys.exit("neuralenvs collect: give exactly one of --game GAME or --env-id ENV_ID")
    if args.game is not None:
        summary = collect_atari(
            args.game, args.out, args.steps, policy=args.policy, seed=args.seed,
            frame_stack=args.frame_stack, algo=args.algo,
        )
    else:
        summary = collect_gym(
            args.env_id, args.out, args.steps, policy=args.policy, seed=args.seed,
            size=args.size, algo=args.algo,
        )
    _write_json(summary, args.json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuralenvs", description="Learned world models as Gymnasium environments."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("collect", help="collect real episodes into a dataset (resumable)")
    p.add_argument("--game", help="an Atari 100k game, e.g. Pong")
    p.add_argument("--env-id", help="any Gymnasium env id with image observations")
    p.add_argument("--steps", type=int, required=True,
                   help="collect until the dataset holds this many steps (re-run to resume)")
    p.add_argument("--out", required=True, help="dataset folder (created or appended to)")
    p.add_argument("--policy", default="random", help="'random' or the path of an SB3 .zip")
    p.add_argument("--algo", default="ppo", help="SB3 algorithm of --policy (ppo, a2c, dqn)")
    p.add_argument("--frame-stack", type=int, default=1, help="frames stacked for --policy (Atari)")
    p.add_argument("--size", type=int, default=64, help="frame size for --env-id datasets")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the summary to this JSON file")
    p.set_defaults(func=cmd_collect)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
