"""Dreams between two checkpoints of one model: every weight ``(1 - a) * A + a * B``, no training.

Two fine-tunes from the same weights often move little, and the models on the line between them
can trade what each is good at (docs/short_horizons.md: the shipped KungFuMaster dream, which brings
fighters on, against 300 steps more on real context only, which wins the short horizons and never
brings anyone on). Each mix is saved as a checkpoint with A's start bank, config and weight dtype,
and its provenance names both ends and ``a``.

    python benchmarks/weight_mix.py checkpoints/kungfumaster-diffusion runs/kfm-d0-300/checkpoint \
        --fractions 0.1 0.2 --out runs/kfm-mix{percent}
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from neuralenvs.checkpoint import build_world_model, load_checkpoint
from neuralenvs.checkpoint.save import save_changed


def mixed_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    """``(1 - fraction) * a + fraction * b`` for every floating tensor; other tensors must agree."""
    if a.keys() != b.keys():
        raise ValueError(f"the two models' weights differ in names: {sorted(a.keys() ^ b.keys())[:5]}")
    mixed = {}
    for name, wa in a.items():
        wb = b[name]
        if wa.shape != wb.shape:
            raise ValueError(f"{name}: shapes {tuple(wa.shape)} and {tuple(wb.shape)} differ; not the same model")
        if wa.is_floating_point():
            mixed[name] = torch.lerp(wa.float(), wb.float(), fraction).to(wa.dtype)
        elif torch.equal(wa, wb):
            mixed[name] = wa
        else:
            raise ValueError(f"{name}: a non-float tensor that differs between the two cannot be mixed")
    return mixed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="checkpoint at fraction 0 (its start bank and config are kept)")
    parser.add_argument("b", help="checkpoint at fraction 1: the same family and weight shapes")
    parser.add_argument("--fractions", nargs="+", type=float, required=True)
    parser.add_argument("--out", required=True, help="folder per mix; {percent} becomes round(100 * a)")
    args = parser.parse_args()

    first, second = load_checkpoint(args.a), load_checkpoint(args.b)
    if first.family != second.family:
        raise SystemExit(f"the two checkpoints are of different families: {first.family}, {second.family}")
    config_a, config_b = first.config["model_config"], second.config["model_config"]
    differ = sorted(k for k in config_a.keys() | config_b.keys() if config_a.get(k) != config_b.get(k))
    if differ:  # e.g. a training-only setting such as dreamed_context_frames; the weights decide
        print(f"the configs differ in {differ}; the mixes keep {args.a}'s")
    model = build_world_model(first, device="cpu")
    ends = model.state_dict(), build_world_model(second, device="cpu").state_dict()
    for fraction in args.fractions:
        if not 0.0 <= fraction <= 1.0:
            raise SystemExit(f"a fraction is between 0 and 1, got {fraction}")
        model.load_state_dict(mixed_weights(*ends, fraction))
        out = Path(args.out.format(percent=round(100 * fraction)))
        save_changed(first, model, out, mixed={"with": str(second.path), "fraction": fraction})
        print(f"a = {fraction}: {out}")


if __name__ == "__main__":
    main()
