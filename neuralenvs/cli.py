"""The ``neuralenvs`` command. Each subcommand imports what it needs only when it runs."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from neuralenvs.errors import NeuralEnvsError
from neuralenvs.utils.memory import reuse_freed_memory

if TYPE_CHECKING:
    from neuralenvs.data import EpisodeDataset


def _write_json(result: dict, path: str | None) -> None:
    from neuralenvs.bench.report import write_json

    print(json.dumps(result, indent=2))
    if path:
        write_json(path, result)


def _json_object(text: str) -> dict:
    """An argparse type: a JSON object such as ``'{"n_steps": 16}'``."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"give a JSON object such as '{{\"n_steps\": 16}}', not {text!r}")
    return value


def cmd_collect(args: argparse.Namespace) -> None:
    from neuralenvs.envs.collect import collect_atari, collect_gym

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


def cmd_train(args: argparse.Namespace) -> None:
    from neuralenvs.training import TrainConfig, train_world_model

    model_config = args.config
    if model_config.endswith(".json"):  # a full config, e.g. a named one with changes
        model_config = json.loads(Path(model_config).read_text())
    data = args.data
    if args.video is not None:  # imported once, next to the run, then trained on like episodes
        from neuralenvs.data.video import import_videos

        data = str(import_videos(args.video, Path(args.out) / "video-episodes").path)
    config = TrainConfig(
        family=args.family, model_config=model_config, data=data, out=args.out,
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        held_out_episodes=args.held_out, save_every_seconds=args.save_every, precision=args.precision,
        game=args.game, segment_length=args.segment_length, reward_fraction=args.reward_fraction,
        end_fraction=args.end_fraction, end_at_freeze_onset=args.end_at_freeze_onset,
        freeze_end_delay=args.freeze_end_delay,
        init_from=args.init_from, reinit=tuple(args.reinit), freeze=tuple(args.freeze),
        stages=tuple(args.stages),
        labelled_data=args.labelled, labelled_steps=args.labelled_steps, teacher=args.teacher,
    )
    path = train_world_model(config, device=args.device)
    print(f"checkpoint written to {path}")


def cmd_fidelity(args: argparse.Namespace) -> None:
    _measure_fidelity(args.checkpoint, args.data, args.held_out, args.windows, args.seed, args.device,
                      args.json, args.record, args.compile)


def _last_episodes(dataset: EpisodeDataset, held_out: int, path: str) -> list[int]:
    """The last ``held_out`` episodes (all of them: a separate test set)."""
    if not 0 < held_out <= dataset.num_episodes:
        raise SystemExit(f"--held-out must be between 1 and the {dataset.num_episodes} episodes of {path}")
    return list(range(dataset.num_episodes - held_out, dataset.num_episodes))


def _measure_fidelity(checkpoint: str, data: str, held_out: int, windows: int, seed: int, device: str | None,
                      json_path: str | None, record: bool, compile: bool | str = False) -> None:
    from neuralenvs.checkpoint import build_world_model, load_checkpoint
    from neuralenvs.data import EpisodeDataset
    from neuralenvs.envs.runtime import compile_for_dreaming, compile_mode
    from neuralenvs.measure.fidelity import FIDELITY_BATCH, measure_fidelity

    model = build_world_model(load_checkpoint(checkpoint), device=device)
    compiled = compile_for_dreaming(model, FIDELITY_BATCH, "fp32", compile)
    dataset = EpisodeDataset(data)
    held_out_episodes = _last_episodes(dataset, held_out, data)
    result = measure_fidelity(model, dataset, held_out_episodes, num_windows=windows, seed=seed, progress=True)
    result["checkpoint"] = str(checkpoint)
    result["data"] = str(data)
    if compiled:
        result["compiled"] = compile_mode(compile)
    _write_json(result, json_path)
    if record:
        from neuralenvs.checkpoint import update_metrics

        update_metrics(checkpoint, fidelity=result)


def cmd_calibrate(args: argparse.Namespace) -> None:
    from neuralenvs.bench.transfer import provenance_chain
    from neuralenvs.checkpoint import build_world_model, load_checkpoint, save_changed
    from neuralenvs.data import EpisodeDataset
    from neuralenvs.measure.heads import calibrate_reward_prior

    checkpoint = load_checkpoint(args.checkpoint)
    model = build_world_model(checkpoint, device="cpu")
    data = EpisodeDataset(args.data)
    held_out = data.num_episodes if args.held_out is None else args.held_out
    episodes = _last_episodes(data, held_out, args.data)
    fitted = calibrate_reward_prior(model, data, episodes)
    # the episodes a training run of this checkpoint held out cost no real steps beyond its data
    held_out_of_training = any(
        run.get("held_out_episodes") == held_out and run.get("real_steps") == data.num_steps
        for run in provenance_chain(checkpoint.config.get("provenance") or {})
    )
    fitted["adds_real_steps"] = 0 if held_out_of_training else fitted["transitions"]
    out = save_changed(checkpoint, model, args.out,
                       reward_prior_calibrated={"data": args.data, "first_episode": episodes[0], **fitted})
    for sign, fit in fitted["signs"].items():
        print(f"reward {sign}: {fit['real']} real in {fitted['transitions']} steps, the head paid "
              f"{fit['expected_before']:.1f} in expectation; logit shift {fit['shift']:+.2f}")
    print(f"wrote {out} ({fitted['adds_real_steps']} real steps added to the dream's budget)")


def cmd_resample(args: argparse.Namespace) -> None:
    from neuralenvs.checkpoint import resample

    settings = {}
    for item in args.set:
        name, _, text = item.partition("=")
        try:
            settings[name] = json.loads(text)
        except ValueError:
            settings[name] = text  # a bare word, e.g. sampler=heun
    out = resample(args.checkpoint, args.out, **settings)
    print(f"wrote {out} with {settings}")
    if args.data:
        _measure_fidelity(str(out), args.data, args.held_out, args.windows, args.seed, args.device, None, record=True)


def cmd_utility(args: argparse.Namespace) -> None:
    from neuralenvs.bench.utility import measure_utility

    result = measure_utility(
        args.checkpoint, algo=args.algo, steps=args.steps, n_envs=args.n_envs, horizon=args.horizon,
        frame_stack=args.frame_stack, episodes=args.episodes, seed=args.seed, device=args.device,
        sample_heads=not args.argmax_heads, run_dir=args.run, precision=args.precision,
        starts_from=args.starts_from, algo_kwargs=args.algo_kwargs, compile=args.compile,
    )
    _write_json(result, args.json)
    if args.record:
        from neuralenvs.checkpoint import update_metrics
        from neuralenvs.registry import resolve_checkpoint

        update_metrics(resolve_checkpoint(args.checkpoint), utility=result)


def cmd_bench_atari100k(args: argparse.Namespace) -> None:
    from neuralenvs.bench.atari100k import grid_configs, run_grid
    from neuralenvs.envs.atari import ATARI100K_GAMES

    games = list(ATARI100K_GAMES) if args.games == ["all"] else args.games
    overrides = {"algo": args.algo, "eval_episodes": args.eval_episodes, "model_config": args.config}
    configs = grid_configs(games, args.seeds, args.families, args.budget, args.out, **overrides)
    summary = run_grid(configs, args.out, ray_address=args.ray, device=args.device)
    for result in summary["runs"]:
        print(f"{result['game']:>14} {result['family']:>9} seed {result['seed']}: score {result['score']:.1f} "
              f"(HNS {result['hns']:.3f}), {result['wall_clock_seconds']:.0f} s on {result['device']}")
    print((Path(args.out) / "results.md").read_text())


def cmd_bench_scores(args: argparse.Namespace) -> None:
    from neuralenvs.bench.scores import aggregate

    scores = json.loads(Path(args.file).read_text())
    _write_json(aggregate(scores), args.json)


def cmd_play(args: argparse.Namespace) -> None:
    from neuralenvs.play import play

    play(args.env_id, fps=args.fps, zoom=args.zoom, record=args.record, max_steps=args.steps, seed=args.seed)


def cmd_list(args: argparse.Namespace) -> None:
    import neuralenvs

    for env_id in neuralenvs.list_envs(args.kind):
        print(env_id)


def _add_fidelity_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--held-out", type=int, default=5,
                   help="the last N episodes of --data are used (all of them for a separate test set)")
    p.add_argument("--windows", type=int, default=128, help="dream rollouts to score")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)


def _add_compile_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE",
                   help="compile the dream with torch.compile (optionally in MODE, e.g. reduce-overhead on a "
                        "GPU; what it gives: docs/speed_levers.md); falls back to eager with a warning where it fails")


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

    p = sub.add_parser("train", help="train a world model on an episode dataset (resumable)")
    p.add_argument("--family", required=True, help="world-model family, e.g. diffusion")
    p.add_argument("--config", default="small", help="named model config (tiny, small, paper) or a config .json")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="episode dataset folder (neuralenvs collect)")
    source.add_argument("--video", metavar="DIR",
                        help="folder of videos (.mp4, .avi) or image sequences, no actions (genie); "
                             "imported once into OUT/video-episodes")
    p.add_argument("--out", required=True, help="run folder; re-running the command resumes it")
    p.add_argument("--steps", type=int, required=True, help="optimizer steps per training stage")
    p.add_argument("--labelled", default=None, metavar="DATA",
                   help="genie: episode dataset whose first --labelled-steps transitions fit the action "
                        "map and the reward/termination heads (without it: latent actions, no heads)")
    p.add_argument("--labelled-steps", type=int, default=5000, help="cap on the labelled transitions used")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--held-out", type=int, default=5, help="last episodes kept out for fidelity")
    p.add_argument("--save-every", type=float, default=300.0, help="seconds between saved states")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--game", default=None, help="game name for the checkpoint (default: from the data)")
    p.add_argument("--segment-length", type=int, default=None, help="transitions per segment (default: the config's)")
    p.add_argument("--reward-fraction", type=float, default=0.0,
                   help="share of segments ending at a rewarded step (for games with rare rewards; e.g. 0.5)")
    p.add_argument("--end-fraction", type=float, default=0.0,
                   help="share of segments holding an episode end (diffusion with rew_balance_ends; e.g. 0.25)")
    p.add_argument("--end-at-freeze-onset", action="store_true",
                   help="a life that ends in a frozen screen ends where the freeze begins (CrazyClimber)")
    p.add_argument("--freeze-end-delay", type=int, default=0, metavar="N",
                   help="with --end-at-freeze-onset: the life ends N steps into the freeze, once a head that "
                        "does not see the next frame has seen it (KungFuMaster: 2)")
    p.add_argument("--init-from", default=None, help="a checkpoint of the same family to fine-tune")
    p.add_argument("--reinit", nargs="*", default=[], help="with --init-from: submodules to start fresh (reward_end)")
    p.add_argument("--freeze", nargs="*", default=[], help="submodules whose weights stay as they are (denoiser)")
    p.add_argument("--teacher", default=None, metavar="CHECKPOINT",
                   help="learn to dream as this checkpoint does (distillation; diffusion, one sampler step): "
                   "a smaller --config, with --init-from the teacher --reinit denoiser --freeze reward_end")
    p.add_argument("--stages", nargs="*", default=[],
                   help="with --init-from: train only these of the family's stages (token: tokenizer, transformer)")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when present)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("fidelity", help="PSNR/SSIM of the dream vs held-out real episodes")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    _add_fidelity_options(p)
    _add_compile_option(p)
    p.add_argument("--json", default=None)
    p.add_argument("--record", action="store_true", help="also store the result in the checkpoint's metrics")
    p.set_defaults(func=cmd_fidelity)

    p = sub.add_parser("utility", help="train an SB3 agent in the dream, score it in the real game")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder or gym id")
    p.add_argument("--algo", default="ppo", help="ppo, a2c or dqn")
    p.add_argument("--steps", type=int, required=True, help="dreamed agent steps")
    p.add_argument("--n-envs", type=int, default=None,
                   help="dreams stepped together (default: neuralenvs.sb3.DREAMS_PER_AGENT)")
    p.add_argument("--horizon", type=int, default=15, help="dream length before a cut (DIAMOND: 15)")
    p.add_argument("--frame-stack", type=int, default=4)
    p.add_argument("--episodes", type=int, default=20, help="real test episodes")
    p.add_argument("--argmax-heads", action="store_true",
                   help="take the most likely reward/termination class instead of sampling it")
    p.add_argument("--algo-kwargs", type=_json_object, default=None, metavar="JSON",
                   help='constructor settings over neuralenvs\' defaults, e.g. \'{"n_steps": 16}\'')
    p.add_argument("--run", default=None, metavar="DIR",
                   help="keep the agent here as it trains (agent.zip); re-running resumes it")
    p.add_argument("--starts-from", default=None, metavar="DATA",
                   help="start half the dreams in windows of this episode dataset, e.g. real play of an agent "
                        "trained in the dream (neuralenvs collect --policy); its steps count as real steps")
    p.add_argument("--device", default=None)
    p.add_argument("--precision", choices=("fp32", "bf16", "auto"), default=None,
                   help="bf16: dream under bf16 autocast (faster with AMX / AVX-512 bf16 and on GPUs); "
                        "auto (the default): bf16 where native")
    _add_compile_option(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument("--record", action="store_true", help="also store the result in the checkpoint's metrics")
    p.set_defaults(func=cmd_utility)

    p = sub.add_parser("bench", help="benchmarks: the Atari 100k grid, score aggregation")
    bench = p.add_subparsers(dest="benchmark", required=True)
    p = bench.add_parser("atari100k", help="imagination runs over games x seeds x families, scored with rliable")
    p.add_argument("--games", nargs="+", default=["Boxing"], help="Atari 100k games, or 'all' for the 26")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--families", nargs="+", default=["diffusion"])
    p.add_argument("--budget", default="smoke", choices=["smoke", "cpu", "cpu-dreamed", "full"],
                   help="smoke: minutes on a CPU (CI); cpu: hours on a CPU; cpu-dreamed: the shipped "
                        "CrazyClimber recipe, about 1.5 hours on 2 CPU cores; full: DIAMOND's schedule (GPU)")
    p.add_argument("--out", default="runs/atari100k", help="grid folder; re-running the command resumes every run")
    p.add_argument("--algo", default=None, help="SB3 agent: ppo (default), a2c, dqn")
    p.add_argument("--config", default=None, help="world-model config (default: the budget's)")
    p.add_argument("--eval-episodes", type=int, default=None, help="final real test episodes (default: the budget's)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run on Ray: no ADDRESS starts a local cluster, 'auto' joins a running one")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when present)")
    p.set_defaults(func=cmd_bench_atari100k)
    p = bench.add_parser("scores", help="mean, median, IQM and optimality gap of a {game: [scores]} JSON")
    p.add_argument("file", help="e.g. a published method's file from neuralenvs/bench/reference/")
    p.add_argument("--json", default=None)
    p.set_defaults(func=cmd_bench_scores)

    p = sub.add_parser("calibrate", help="refit a checkpoint's reward prior on episodes it never trained on")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="episodes kept out of training (not the ones it will be scored on)")
    p.add_argument("--held-out", type=int, default=None,
                   help="use only the last N episodes, those `neuralenvs train --held-out N` kept out (default: all)")
    p.add_argument("--out", required=True, help="the new checkpoint folder")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("resample", help="save a checkpoint again with other dream-time settings (sampler steps, ...)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="the new checkpoint folder")
    p.add_argument("--set", nargs="+", required=True, metavar="NAME=VALUE", help="e.g. num_denoising_steps=1")
    p.add_argument("--data", default=None, help="measure fidelity on this dataset's held-out episodes and record it")
    _add_fidelity_options(p)
    p.set_defaults(func=cmd_resample)

    from neuralenvs.play import DEFAULT_FPS, DEFAULT_ZOOM

    p = sub.add_parser("play", help="play a dream (or the real game) with the keyboard; w/a/s/d move, space fires")
    p.add_argument("env_id", help="a registered id: neuralenvs/<Game>-<family>-v0, or neuralenvs/<Game>-real-v0")
    p.add_argument("--fps", type=int, default=DEFAULT_FPS,
                   help="steps per second; one step is 4 emulator frames (default %(default)s)")
    p.add_argument("--zoom", type=float, default=DEFAULT_ZOOM,
                   help="frame scale in the window and the video (default %(default)s)")
    p.add_argument("--record", default=None, metavar="FILE.mp4", help="also write what was played to this video")
    p.add_argument("--steps", type=int, default=None, help="stop after this many steps (default: until Esc)")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=cmd_play)

    p = sub.add_parser("list", help="list the registered gym ids")
    p.add_argument("--kind", default=None, help="real, diffusion, ...")
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    reuse_freed_memory()  # dreams and PPO updates allocate large tensors many times a second
    try:
        args.func(args)
    except (NeuralEnvsError, ValueError, FileNotFoundError) as error:
        # a wrong argument or file is the user's to fix: say what, without a traceback
        # (NEURALENVS_DEBUG=1 shows it)
        if os.environ.get("NEURALENVS_DEBUG"):
            raise
        parser.exit(2, f"neuralenvs {args.command}: error: {error}\n")


if __name__ == "__main__":
    main()
