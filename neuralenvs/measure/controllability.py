"""Controllability of a latent-action world model: Genie's delta-t PSNR (Bruce et al. 2024).

From held-out real episodes: start a dream on ``context_frames`` real frames, then dream ``t``
steps twice, once with the latent actions the model's LAM reads from the real frames that followed
and once with latent actions drawn uniformly at random, and compare each dream's frame ``t`` with
the real frame ``t``:

    delta_psnr = PSNR(real_t, dream_t with inferred actions) - PSNR(real_t, dream_t with random actions)

Positive means the latent actions steer the dream towards what really happened; near zero means
the dream ignores them. Genie reports it at ``t = 4``. Both dreams of a window draw their sampling
noise from the same seed, so the difference measures the actions, not the noise.

Works with any model that has ``infer_latent_actions(frames uint8[B, T, H, W, C]) -> long[B, T-1]``,
``step_latent(state, latents long[B], generator)`` and ``config.n_latent`` (the genie family).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from neuralenvs.data import EpisodeDataset
from neuralenvs.measure.fidelity import PSNR_CAP
from neuralenvs.measure.metrics import psnr
from neuralenvs.world_model import WorldModel


def supports_controllability(model: Any) -> bool:
    """Whether ``model`` reads and takes latent actions (see the module docstring)."""
    return callable(getattr(model, "infer_latent_actions", None)) and callable(getattr(model, "step_latent", None))


@torch.no_grad()
def measure_controllability(
    model: WorldModel,
    dataset: EpisodeDataset,
    episodes: list[int],
    t: int = 4,
    num_windows: int = 128,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Delta-t PSNR of ``model`` on ``episodes`` of ``dataset`` (see the module docstring)."""
    if not supports_controllability(model):
        raise TypeError(f"{type(model).__name__} has no latent actions: controllability is for the genie family")
    if t < 1:
        raise ValueError(f"t must be >= 1, got {t}")
    model.eval()
    device = model.device
    k, n_latent = model.context_frames, int(model.config.n_latent)
    rng = np.random.default_rng(seed)
    candidates = [(e, t0) for e in episodes for t0 in range(k - 1, int(dataset.episode_lengths[e]) - t + 1)]
    if not candidates:
        raise ValueError(f"no held-out episode has the {k} context frames and {t} more steps a window needs")
    picks = sorted(rng.choice(len(candidates), size=min(num_windows, len(candidates)), replace=False))
    windows = [candidates[i] for i in picks]
    scores: dict[str, list[float]] = {"inferred": [], "random": []}
    for lo in tqdm(range(0, len(windows), batch_size), desc="controllability", disable=not progress):
        chunk = windows[lo : lo + batch_size]
        clips = np.stack([dataset.episode(e).frames[t0 - k + 1 : t0 + t + 1] for e, t0 in chunk])
        clips_t = torch.from_numpy(clips).to(device)
        inferred = model.infer_latent_actions(clips_t)[:, k - 1 :]  # the t actions after the context
        g = torch.Generator().manual_seed(seed + lo)
        random = torch.randint(0, n_latent, inferred.shape, generator=g).to(device)
        context = clips_t[:, :k]
        no_actions = torch.zeros(len(chunk), k - 1, dtype=torch.long, device=device)
        for name, latents in (("inferred", inferred), ("random", random)):
            state = model.init_state(context, no_actions)
            generator = torch.Generator(device=device).manual_seed(seed + lo)
            for s in range(t):
                state, frames, _, _ = model.step_latent(state, latents[:, s], generator)
            scores[name] += psnr(frames, clips_t[:, -1]).clamp(max=PSNR_CAP).tolist()
    inferred_psnr, random_psnr = np.array(scores["inferred"]), np.array(scores["random"])
    delta = inferred_psnr - random_psnr
    return {
        "t": t,
        "delta_psnr": float(delta.mean()),
        "delta_psnr_stderr": float(delta.std() / math.sqrt(len(delta))),
        "psnr_inferred": float(inferred_psnr.mean()),
        "psnr_random": float(random_psnr.mean()),
        "windows": len(windows),
        "episodes": list(map(int, episodes)),
        "psnr_cap_db": PSNR_CAP,
    }
