"""Train a PPO agent entirely inside a dreamed Atari game, then play the real game with it.

    python examples/train_ppo_in_dream.py                 # the shipped KungFuMaster dream, ~5 min on 2 CPU cores
    python examples/train_ppo_in_dream.py --steps 2000000 # far more on a GPU

Steps: (1) load the dream, (2) train PPO in it (dreams of 15 steps started from real game states,
as DIAMOND trains its agent), (3) play real games with the agent and with a random policy on the
same seeds, (4) write a video of the dream and the real game side by side.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import gymnasium as gym
import numpy as np
import torch

import neuralenvs
from neuralenvs.bench.utility import score_gap
from neuralenvs.envs.atari import human_normalized_score
from neuralenvs.sb3 import DREAMS_PER_AGENT, evaluate, evaluate_random, make_sb3_env, train_in_dream

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--env-id", default="neuralenvs/KungFuMaster-diffusion-v0", help="a dreamed gym id")
parser.add_argument("--steps", type=int, default=None, help="dreamed agent steps (default: by device)")
parser.add_argument("--n-envs", type=int, default=DREAMS_PER_AGENT, help="dreams stepped together")
parser.add_argument("--episodes", type=int, default=20, help="real test episodes")
parser.add_argument("--video-steps", type=int, default=300, help="frames in the side-by-side video")
parser.add_argument("--out", default="demo_out")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

on_gpu = torch.cuda.is_available()
# On 2 CPU cores 100k dreamed steps beat random play in KungFuMaster (+9.6 to +12.8 s.e. over five
# PPO seeds in the shipped dream) and in CrazyClimber (+5.9 to +8.5 over three); 40k were not enough
# in CrazyClimber (+0.8 s.e.), and 300k were worse in an earlier KungFuMaster dream (1,073 against
# 1,920 at 100k): docs/transfer.md, sections 5, 6, 12, 19 and 20.
steps = args.steps or (1_000_000 if on_gpu else 100_000)
frame_stack, horizon = 4, 15
game = neuralenvs.game_of(args.env_id)
real_id = neuralenvs.real_env_id(game)
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
print(f"dream {args.env_id} on {'cuda' if on_gpu else 'cpu'}; real game {real_id}")

# 1-2. Train PPO in the dream: n_envs dreams advance together in one batched forward pass.
# Dreams run in bf16 where this machine runs it natively (precision="auto", the default).
dream = make_sb3_env(args.env_id, n_envs=args.n_envs, horizon=horizon, frame_stack=frame_stack, sample_heads=True)
t0 = time.perf_counter()
# PPO with 1,024 dreamed steps between updates, split over the dreams (neuralenvs.sb3's default).
agent = train_in_dream("ppo", dream, total_timesteps=steps, seed=args.seed, progress_bar=True)
train_seconds = time.perf_counter() - t0
agent.save(out / "ppo_in_dream.zip")

# 3. The same agent, unchanged, in the real game; and a random policy for comparison.
real_kwargs = {"frame_stack": frame_stack}
trained = evaluate(agent, real_id, n_episodes=args.episodes, seed=args.seed, env_kwargs=real_kwargs)
random = evaluate_random(real_id, n_episodes=args.episodes, seed=args.seed, env_kwargs=real_kwargs)
print(f"\ntrained for {steps} dreamed steps in {train_seconds:.0f} s")
print(f"{'policy':<22}{'real return (mean ± s.e.)':>28}{'HNS':>8}")
for name, r in (("PPO trained in dream", trained), ("random", random)):
    print(f"{name:<22}{r['mean']:>19.2f} ± {r['stderr']:<6.2f}{human_normalized_score(game, r['mean']):>8.3f}")
gap = score_gap(trained, random)
verdict = "ahead of random beyond the noise" if gap["gap_over_stderr"] > 3 else "NOT clearly ahead of random"
print(f"dream-trained minus random: {gap['gap']:.1f} ± {gap['gap_stderr']:.1f} "
      f"({gap['gap_over_stderr']:.1f} standard errors): {verdict}")

# 4. A video: the dream (left) and the real game (right), the agent playing both.
dream_env = gym.make(args.env_id, frame_stack=frame_stack, horizon=10_000)
real_env = gym.make(real_id, frame_stack=frame_stack)
dream_obs, _ = dream_env.reset(seed=args.seed)
real_obs, _ = real_env.reset(seed=args.seed)
video = cv2.VideoWriter(str(out / "dream_vs_real.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 15, (2 * 256, 256))
for _ in range(args.video_steps):
    frames = [o[..., -3:] for o in (dream_obs, real_obs)]
    side_by_side = np.concatenate([cv2.resize(f, (256, 256), interpolation=cv2.INTER_NEAREST) for f in frames], 1)
    video.write(cv2.cvtColor(side_by_side, cv2.COLOR_RGB2BGR))
    dream_obs, _, d_term, d_trunc, _ = dream_env.step(agent.predict(dream_obs)[0])
    real_obs, _, r_term, r_trunc, _ = real_env.step(agent.predict(real_obs)[0])
    if d_term or d_trunc:
        dream_obs, _ = dream_env.reset()
    if r_term or r_trunc:
        real_obs, _ = real_env.reset()
video.release()
print(f"video of the dream (left) and the real game (right): {out / 'dream_vs_real.mp4'}")
print(f"registered envs: {len(neuralenvs.list_envs())}")
