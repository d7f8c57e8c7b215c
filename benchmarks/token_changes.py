"""How many of a token dream's tokens change each step, and how many transformer calls a frame takes.

    python benchmarks/token_changes.py neuralenvs/Boxing-token-v0 \
        --out benchmarks/results/token_changes_boxing.json

At temperature 0 a token dream of at most ``draft_max_batch`` dreams guesses that each new frame
repeats the last one and checks the guesses (``TokenWorldModel._greedy_frame``): a frame then takes
at most one transformer call more than it has changed tokens, and a batch as many as its most
changed dream needs, where the one-token loop takes one per token. This dreams ``--dreams`` dreams
for ``--steps`` steps from the checkpoint's start bank under random actions and reports, per step:
the tokens that changed from the frame before (mean, and the share of frames with none) and the
transformer calls of the batch (counted around the GPT's ``feed``; the loop's count beside it).
Counts, not timings: they do not depend on the machine.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from neuralenvs.bench.report import write_json
from neuralenvs.envs.runtime import dreaming
from neuralenvs.envs.starts import DeviceStarts
from neuralenvs.registry import load_world_model_and_starts


def count_changes(checkpoint: str, dreams: int, steps: int, seed: int = 0) -> dict:
    model, starts, _ = load_world_model_and_starts(checkpoint)
    if model.family != "token":
        raise SystemExit(f"{checkpoint} is a {model.family} dream: this counts a token dream's tokens")
    model.eval()
    calls = []
    feed = model.gpt.feed
    model.gpt.feed = lambda *args, **kwargs: calls.append(1) or feed(*args, **kwargs)
    bank = DeviceStarts(starts, model.context_frames, 1, model.device)
    index = torch.as_tensor(bank.sample(dreams, np.random.default_rng(seed)))
    g = torch.Generator().manual_seed(seed)
    changed, calls_per_step = [], []
    rows = torch.arange(dreams)
    with dreaming(model, "fp32"):
        state = model.init_state(bank.frames[index], bank.actions[index])
        for _ in range(steps):
            before = state.tokens[rows, state.num_frames - 1]
            calls.clear()
            state = model.step(state, torch.randint(0, model.num_actions, (dreams,), generator=g), g).state
            calls_per_step.append(len(calls))
            changed.append((state.tokens[rows, state.num_frames - 1] != before).sum(dim=1))
    changed = torch.stack(changed).float()
    histogram = torch.bincount(changed.long().flatten(), minlength=model.tokens_per_frame + 1)
    cfg = model.config
    return {
        "dream": checkpoint,
        "dreams": dreams,
        "steps": steps,
        "tokens_per_frame": model.tokens_per_frame,
        "temperature": cfg.temperature,
        "checks_guesses": cfg.temperature == 0 and dreams <= cfg.draft_max_batch,
        "changed_tokens_mean": float(changed.mean()),
        "frames_unchanged_share": float((changed == 0).float().mean()),
        "changed_tokens_histogram": histogram.tolist(),
        "calls_per_step_mean": float(np.mean(calls_per_step)),
        "loop_calls_per_step": model.tokens_per_frame,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dream", help="a token dream's id or checkpoint folder")
    parser.add_argument("--dreams", type=int, nargs="+", default=[1, 16], help="batch sizes to count at")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="benchmarks/results/token_changes.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for dreams in args.dreams:
        row = count_changes(args.dream, dreams, args.steps, args.seed)
        rows.append(row)
        print(f"{args.dream} x {dreams}: {row['changed_tokens_mean']:.2f} of {row['tokens_per_frame']} tokens changed "
              f"a step, {100 * row['frames_unchanged_share']:.0f}% of frames none; "
              f"{row['calls_per_step_mean']:.1f} transformer calls a step "
              f"({'checking guesses' if row['checks_guesses'] else 'one token a call'}; the loop: "
              f"{row['loop_calls_per_step']})")
    write_json(args.out, {"rows": rows})


if __name__ == "__main__":
    main()
