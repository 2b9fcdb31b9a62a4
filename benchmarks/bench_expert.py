"""Scripted expert success rate on seeded episodes (a benchmark, not a test).

    .venv/bin/python benchmarks/bench_expert.py [--episodes 50] [--seed 0]

Runs the expert on SO101PickPlace-v0 (randomized block) with seeds SEED..SEED+N-1 and on
SO101PickPlaceNoRandom-v0, state-only, and prints success rate, mean return, mean episode length
(control steps at 10 Hz) and wall time per episode; lists the seeds that failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


from so101_sim import mujoco_rendering  # noqa: E402,F401

import gymnasium as gym  # noqa: E402

from so101_sim import envs  # noqa: E402,F401
from so101_sim import policy_registry as pr  # noqa: E402
from so101_sim import rollout_utils as ru  # noqa: E402


def run(env_id: str, episodes: int, seed: int):
    env = gym.make(env_id, **pr.entry("scripted").env_kwargs)
    expert = pr.ScriptedPolicy(env)
    results, t0 = [], time.perf_counter()
    for i in range(episodes):
        ep = ru.run_episode(env, expert, seed + i)
        results.append((seed + i, ep["success"], ep["return"], ep["length"]))
    env.close()
    return results, (time.perf_counter() - t0) / episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=50, help="episodes per env id")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    args = parser.parse_args()
    print(f"| {'env id':<26} | {'seeds':>9} | {'success':>7} | {'mean return':>11} | {'mean steps':>10} | {'s/episode':>9} |")
    print(f"|{'-' * 28}|{'-' * 11}|{'-' * 9}|{'-' * 13}|{'-' * 12}|{'-' * 11}|")
    failures = {}
    for env_id in (envs.DEFAULT_ENV_ID, envs.FIXED_BLOCK_ENV_ID):
        res, per_ep = run(env_id, args.episodes, args.seed)
        n = len(res)
        wins = sum(r[1] for r in res)
        failures[env_id] = [r[0] for r in res if not r[1]]
        print(f"| {env_id:<26} | {args.seed:>4}-{args.seed + n - 1:<4} | {wins / n:7.0%} | "
              f"{sum(r[2] for r in res) / n:11.1f} | {sum(r[3] for r in res) / n:10.1f} | {per_ep:9.2f} |")
    for env_id, seeds in failures.items():
        print(f"failed seeds on {env_id}: {seeds or 'none'}")


if __name__ == "__main__":
    main()
