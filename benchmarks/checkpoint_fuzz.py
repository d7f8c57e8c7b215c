"""Fuzz checkpoint loading: damage each file of a saved checkpoint many times and tabulate outcomes.

Every case damages one file (1-8 random bytes changed, or the file cut at a random length, zero
included), or in the structured modes writes a well-formed file with wrong contents, then runs
``load_checkpoint`` and ``build_world_model``. Outcomes per file and mode:

    clean_error      CheckpointError (the wanted answer to damage)
    verified_load    loaded, and the model, start bank and sealed config equal what was saved
    accepted_load    loaded in a resealed mode (checksums recomputed after the damage, so the file
                     is "genuine" and only its well-formedness can be judged)
    unverified_load  loaded, but differs from what was saved            -> failure
    other_exception  an exception other than CheckpointError escaped    -> failure
    timeout          a case ran over --time-limit seconds               -> failure

Usage:
    python benchmarks/checkpoint_fuzz.py --cases 500
    python benchmarks/checkpoint_fuzz.py --cases 100 --family diffusion --config small

Prints the table, writes JSON to --out, and exits with status 1 if any case failed.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the toy family and the fuzzer live with the tests

import checkpoint_toy  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import neuralenvs.models  # noqa: E402
from neuralenvs.bench.report import write_json  # noqa: E402
from neuralenvs.checkpoint import FORMAT_VERSION  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=200, help="damaged-byte cases per file (default 200)")
    parser.add_argument(
        "--reseal-cases", type=int, default=None, help="resealed cases per non-card file (default: --cases)"
    )
    parser.add_argument(
        "--structured-cases",
        type=int,
        default=None,
        help="well-formed-but-wrong cases for config.json and starts.npz (default: --cases)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--family",
        default=checkpoint_toy.TOY_FAMILY,
        help=f"{checkpoint_toy.TOY_FAMILY!r} (a tiny built-in model) or a registered family name",
    )
    parser.add_argument("--config", default="small", help="named config for a real family")
    parser.add_argument("--obs-shape", default="64,64,3", help="H,W,C for a real family (the toy uses 8,8,3)")
    parser.add_argument("--num-actions", type=int, default=4)
    parser.add_argument(
        "--time-limit", type=float, default=30.0, help="seconds per case before it counts as failed"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "checkpoint_fuzz.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.family == checkpoint_toy.TOY_FAMILY:
        neuralenvs.models.FAMILIES.setdefault(checkpoint_toy.TOY_FAMILY, checkpoint_toy.TOY_ENTRY)
        obs_shape: tuple[int, int, int] = (8, 8, 3)
        model = checkpoint_toy.make_toy_model(args.seed, obs_shape, args.num_actions)
    else:
        h, w, c = (int(x) for x in args.obs_shape.split(","))
        obs_shape = (h, w, c)
        torch.manual_seed(args.seed)
        model = neuralenvs.models.build_model(args.family, args.config, obs_shape, args.num_actions)
    frames, actions = checkpoint_toy.make_starts(
        args.seed, 4, model.context_frames, obs_shape, args.num_actions
    )

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="neuralenvs-fuzz-") as workdir:
        reference = checkpoint_toy.save_reference(Path(workdir) / "reference", model, frames, actions)
        sizes = {name: len(data) for name, data in reference.files.items()}
        report = checkpoint_toy.run_fuzz(
            reference,
            Path(workdir) / "cases",
            cases_per_file=args.cases,
            seed=args.seed,
            reseal_cases_per_file=args.cases if args.reseal_cases is None else args.reseal_cases,
            structured_cases=args.cases if args.structured_cases is None else args.structured_cases,
            time_limit=args.time_limit,
        )
    elapsed = time.perf_counter() - started

    print(f"checkpoint fuzz: family {args.family}, file sizes {sizes}, seed {args.seed}")
    print(report.table())
    print(f"{elapsed:.1f} s in all")
    for failure in report.failures[:20]:
        print("FAILED:", failure)

    result = {
        "benchmark": "checkpoint_fuzz",
        "format_version": FORMAT_VERSION,
        "family": args.family,
        "config": args.config if args.family != checkpoint_toy.TOY_FAMILY else "default",
        "obs_shape": list(obs_shape),
        "num_actions": args.num_actions,
        "seed": args.seed,
        "file_sizes": sizes,
        "wall_clock_seconds": elapsed,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
        "passed": not report.failures,
        **report.as_json(),
    }
    write_json(args.out, result)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
