"""Does a narrower image encoder for the agent speed up training in a dream, and does the agent
still learn as well? (issue 16: PPO's update is a third of the imagination loop.)

    python benchmarks/narrow_policy.py speed --dream neuralenvs/KungFuMaster-diffusion-v0 \
        --out benchmarks/results/narrow_policy_speed.json
    python benchmarks/narrow_policy.py utility --dream neuralenvs/KungFuMaster-diffusion-v0 --seed 0 \
        --out benchmarks/results/utility_kungfumaster_narrow_seed0.json

``speed`` trains PPO in 32 dreams for ``--steps`` agent steps with SB3's NatureCNN (32 / 64 / 64
channels, 512 features: the package's default) and with :class:`NarrowCNN` (half the channels and
features), alternated in one process, and prints the imagination loop's transitions/s of each.
``utility`` is ``neuralenvs utility`` (100k dreamed steps, 30 real games) with the narrow encoder,
for comparison with the default's figures at the same seed (docs/transfer_agent.md, section 19).
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from neuralenvs.bench.report import write_json
from neuralenvs.utils.device import describe_hardware
from neuralenvs.utils.memory import reuse_freed_memory


class NarrowCNN(BaseFeaturesExtractor):
    """NatureCNN's three convolutions (8x8 stride 4, 4x4 stride 2, 3x3 stride 1) and linear layer
    with ``width`` times its channels and ``features_dim`` features (NatureCNN: 512), fed
    channels-last like the package's encoder."""

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 256, width: float = 0.5) -> None:
        super().__init__(observation_space, features_dim)
        c1, c2 = int(32 * width), int(64 * width)
        self.cnn = nn.Sequential(
            nn.Conv2d(observation_space.shape[0], c1, 8, stride=4), nn.ReLU(),
            nn.Conv2d(c1, c2, 4, stride=2), nn.ReLU(),
            nn.Conv2d(c2, c2, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_flatten = self.cnn(torch.as_tensor(observation_space.sample()[None]).float()).shape[1]
        self.linear = nn.Sequential(nn.Linear(n_flatten, features_dim), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.linear(self.cnn(observations.contiguous(memory_format=torch.channels_last)))


NARROW = {"policy_kwargs": {"features_extractor_class": NarrowCNN}}


def loop_speed(dream: str, steps: int, rounds: int) -> dict:
    from neuralenvs.sb3 import make_sb3_env, train_in_dream

    rates: dict[str, list[float]] = {"NatureCNN": [], "NarrowCNN": []}
    for _ in range(rounds):
        for name, kwargs in (("NatureCNN", None), ("NarrowCNN", NARROW)):
            venv = make_sb3_env(dream, n_envs=32, horizon=15, frame_stack=4)
            t0 = time.perf_counter()
            train_in_dream("ppo", venv, steps, seed=0, algo_kwargs=kwargs)
            rates[name].append(steps / (time.perf_counter() - t0))
            venv.close()
    medians = {name: statistics.median(r) for name, r in rates.items()}
    for name, r in rates.items():
        print(f"{name:10s} {' / '.join(f'{x:.0f}' for x in r)} transitions/s, median {medians[name]:.0f}")
    print(f"narrow over default: {medians['NarrowCNN'] / medians['NatureCNN']:.2f}x")
    return {"dream": dream, "steps": steps, "transitions_per_second": rates, "median": medians,
            "ratio": medians["NarrowCNN"] / medians["NatureCNN"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["speed", "utility"])
    parser.add_argument("--dream", default="neuralenvs/KungFuMaster-diffusion-v0")
    parser.add_argument("--steps", type=int, default=None, help="agent steps (speed: 8192; utility: 100k)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    reuse_freed_memory()
    print(f"cpu ({describe_hardware()}), {torch.get_num_threads()} threads")
    if args.mode == "speed":
        result = loop_speed(args.dream, args.steps or 8192, args.rounds)
    else:
        from neuralenvs.bench.utility import measure_utility

        result = measure_utility(args.dream, steps=args.steps or 100_000, episodes=args.episodes, seed=args.seed,
                                 precision="bf16", algo_kwargs=NARROW)
        print(f"agent {result['agent']['mean']:.0f} ± {result['agent']['stderr']:.0f}, "
              f"random {result['random']['mean']:.0f} ± {result['random']['stderr']:.0f}")
    result["hardware"] = describe_hardware()
    write_json(args.out, result)


if __name__ == "__main__":
    main()
