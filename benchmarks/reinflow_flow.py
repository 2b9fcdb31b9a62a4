"""Benchmark: does ReinFlow raise the success rate of a BC flow policy? (CPU, ~29 min)

Copy-paste (from the repository root):

    .venv/bin/python benchmarks/reinflow_flow.py --out outputs/bench_reinflow --ship

Steps (each one a subprocess running the project's own scripts, from simulation_code/):
 1. record scripted demonstrations with record_dataset.py (LeRobotDataset v3; block pose
    reconstructed by replaying the recorded seeds, see demonstrations.load_lerobot_demonstrations);
 2. BC-train the flow policy deliberately short of mastery (30 demos, 1000 steps) with the
    deterministic sampler starting at x_0 = 0 (``--init-noise-scale 0``, see reinflow_engine's
    docstring);
 3. evaluate it on ``--eval-episodes`` held-out seeded randomized episodes (seeds 0..N-1;
    demonstrations use seeds from 5000, ReinFlow training from 1,000,000) with the deterministic
    sampler (run_reinflow_inference.py);
 4. ReinFlow with ``--parallel-envs 2`` (train_reinflow.py) on the sparse success reward, with
    large batches (2 x 6000 env steps, ~230-280 episodes per PPO iteration) and the block-position
    curriculum (``--block-curriculum --curriculum-uniform 0.1``: more training episodes where the
    training success is lower; evaluation stays uniform), evaluating every ``--eval-every``
    iterations on 50 monitoring episodes (seeds from 20,000) and keeping the best checkpoint by
    that score (``--keep-best``: model selection on seeds disjoint from the test seeds);
 5. evaluate the kept policy on the same held-out episodes as in step 3;
 6. print before/after success rates, mean returns, env steps and wall time, and write
    ``OUT/results.json`` (with success by block distance). ``--ship`` copies the two checkpoints
    to simulation_code/checkpoints/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SIM = ROOT / "simulation_code"
PY = sys.executable

from so101_sim import so101_mujoco_utils as u  # noqa: E402
#: Seeds by use come from the one table so101_mujoco_utils.SEED_RANGES: held-out test episodes
#: from its first held-out seed, demonstrations and the monitoring evaluation (the small
#: evaluation train_reinflow.py runs while training, for checkpoint selection) from theirs.
TEST_SEED = u.SEED_RANGES["held_out"][0]
MONITOR_SEED = u.SEED_RANGES["monitoring"][0]
MONITOR_EPISODES = 50


def run(cmd: list[str], log: Path) -> float:
    """Run one step from simulation_code/, tee its output to ``log``; returns seconds.

    Raises:
        SystemExit: the step failed (names the log).
    """
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.run(cmd, cwd=SIM, stdout=f, stderr=subprocess.STDOUT)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"step failed (rc={p.returncode}); see {log}")
    print(f"  ok ({dt:.0f} s)", flush=True)
    return dt


def success_by_distance(per_episode: list[dict], n_bands: int = 4) -> list[tuple[str, int, int]]:
    """(label "0.10-0.15 m", successes, episodes) per block-distance band (the distance bins of
    so101_mujoco_utils.block_bin_edges over BLOCK_DISTANCE_RANGE), from the ``per_episode`` list
    of a run_reinflow_inference.py summary JSON (``block_start`` (3,), world frame, m)."""
    edges = u.block_bin_edges(n_bands, 1)[0]
    band = np.array([u.block_bin(e["block_start"], n_bands, 1) for e in per_episode], int)
    succ = np.array([bool(e["success"]) for e in per_episode])
    return [(f"{edges[k]:.2f}-{edges[k + 1]:.2f} m", int(succ[band == k].sum()), int((band == k).sum()))
            for k in range(n_bands)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_reinflow")
    ap.add_argument("--demos", type=int, default=30, help="scripted demonstrations for BC")
    ap.add_argument("--demo-seed", type=int, default=u.SEED_RANGES["demonstrations"][0])
    ap.add_argument("--bc-steps", type=int, default=1000, help="BC gradient steps")
    ap.add_argument("--eval-episodes", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=48, help="ReinFlow PPO iterations")
    ap.add_argument("--rollout-steps", type=int, default=6000, help="env steps per env per iteration")
    ap.add_argument("--eval-every", type=int, default=4, help="monitoring evaluation every N iterations")
    ap.add_argument("--reinflow-args", default="--reward-terms success --reward-scale 0.02 --policy-lr 3e-5 "
                    "--clip 0.01 --target-kl 0.01 --epochs 5 --batch-size 500 --sigma-min 0.05 --sigma-max 0.15 "
                    "--critic-warmup-iters 3 --critic-extra-epochs 10 --max-episode-steps 60 --block-curriculum "
                    "--curriculum-uniform 0.1",
                    help="extra train_reinflow.py flags")
    ap.add_argument("--ship", action="store_true", help="copy the checkpoints to simulation_code/checkpoints/")
    ap.add_argument("--skip-record", action="store_true", help="reuse OUT/demos")
    args = ap.parse_args(argv)
    for use, first, count in (("held_out", TEST_SEED, args.eval_episodes), ("demonstrations", args.demo_seed, args.demos),
                              ("monitoring", MONITOR_SEED, MONITOR_EPISODES)):
        problem = u.seed_block_problem(use, first, count)
        if problem:  # scripted demos may also use seeds past --demos (failed attempts): a rough bound
            ap.error(problem)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    times = {}
    demos, bc, rl = out / "demos", out / "flow_bc.pt", out / "flow_reinflow.pt"
    if not args.skip_record:
        if demos.exists():
            shutil.rmtree(demos)
        times["record"] = run([PY, "record_dataset.py", "--input", "scripted", "--output_dir", str(demos),
                               "--num_episodes", str(args.demos), "--seed", str(args.demo_seed), "--image-size", "64"],
                              out / "record.log")
    times["bc"] = run([PY, "train_flow_bc.py", "--dataset", str(demos), "--steps", str(args.bc_steps),
                       "--init-noise-scale", "0", "--checkpoint", str(bc)], out / "bc.log")
    ev = ["--episodes", str(args.eval_episodes), "--seed", str(TEST_SEED), "--headless"]
    times["eval_before"] = run([PY, "run_reinflow_inference.py", "--checkpoint", str(bc), *ev,
                                "--summary-json", str(out / "eval_bc.json")], out / "eval_bc.log")
    times["reinflow"] = run([PY, "train_reinflow.py", "--model-type", "flow", "--init-checkpoint", str(bc),
                             "--parallel-envs", "2", "--iterations", str(args.iterations),
                             "--rollout-steps", str(args.rollout_steps), "--eval-every", str(args.eval_every), "--eval-episodes", str(MONITOR_EPISODES),
                             "--keep-best",
                             "--eval-seed", str(MONITOR_SEED), "--no-render", "--quiet", "--checkpoint", str(rl),
                             *args.reinflow_args.split()], out / "reinflow.log")
    best = rl.with_name(rl.stem + "_best" + rl.suffix)  # chosen on the monitoring seeds, not the test seeds
    if best.exists():
        shutil.copy(best, rl)
    times["eval_after"] = run([PY, "run_reinflow_inference.py", "--checkpoint", str(rl), *ev,
                               "--summary-json", str(out / "eval_reinflow.json")], out / "eval_reinflow.log")
    before = json.loads((out / "eval_bc.json").read_text())
    after = json.loads((out / "eval_reinflow.json").read_text())
    from so101_sim import checkpoint_io as ckio  # safe load: weights_only + allowlist, content hash checked

    hist = ckio.load(rl, kind="reinflow", model_type="flow").history
    env_steps = hist[-1]["env_steps"] if hist else 0
    episodes = sum(h.get("episodes", 0) for h in hist)
    wall = time.perf_counter() - t_all
    res = {"before": {k: before[k] for k in ("success_rate", "success_rate_ci95", "mean_return", "mean_length")},
           "after": {k: after[k] for k in ("success_rate", "success_rate_ci95", "mean_return", "mean_length")},
           "gain_points": 100 * (after["success_rate"] - before["success_rate"]),
           "reinflow_env_steps": env_steps, "reinflow_episodes": episodes, "step_seconds": times,
           "wall_time_s": wall, "args": {k: str(v) for k, v in vars(args).items()},
           "by_distance": {lab: {"before": [b_s, b_n], "after": [a_s, a_n]} for (lab, b_s, b_n), (_, a_s, a_n)
                           in zip(success_by_distance(before["per_episode"]), success_by_distance(after["per_episode"]))}}
    (out / "results.json").write_text(json.dumps(res, indent=2))
    print(f"\n{'':24}{'success':>10}{'95% CI':>14}{'mean return':>13}")
    for name, s in (("BC (before)", before), ("ReinFlow (after)", after)):
        lo, hi = s["success_rate_ci95"]
        print(f"{name:24}{s['success_rate']:>10.0%}{f'{lo:.0%}-{hi:.0%}':>14}{s['mean_return']:>13.1f}")
    print("by block distance (successes/episodes, before -> after): " + ", ".join(
        f"{lab} {v['before'][0]}/{v['before'][1]} -> {v['after'][0]}/{v['after'][1]}" for lab, v in res["by_distance"].items()))
    print(f"gain {res['gain_points']:+.0f} points on {args.eval_episodes} held-out episodes; ReinFlow {env_steps} env steps "
          f"({episodes} episodes, {times['reinflow']:.0f} s); total wall time {wall / 60:.1f} min")
    if args.ship:
        dst = SIM / "checkpoints"
        dst.mkdir(exist_ok=True)
        shutil.copy(bc, dst / "flow_bc.pt")
        shutil.copy(rl, dst / "flow_reinflow.pt")
        print(f"shipped -> {dst}/flow_bc.pt, flow_reinflow.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
