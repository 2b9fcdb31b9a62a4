"""Benchmark: does ReinFlow raise the held-out success of the SmolVLA-architecture image policy? (CPU)

Copy-paste (from the repository root):

    .venv/bin/python benchmarks/reinflow_vision.py --out outputs/reinflow_vision --ship

Steps (each one a subprocess running the project's own scripts, from simulation_code/; a step whose
output is already in OUT is skipped, so an interrupted run continues where it stopped):
 1. evaluate the BC start point (``--policy-path``, default the shipped
    ``checkpoints/smolvla_bc/``: camera images + joint state, no block pose) on ``--eval-episodes``
    held-out seeds (0..N-1) through the sampler its ReinFlow checkpoints deploy with
    (``run_reinflow_inference.py --base``): x_0 ~ N(0, I) seeded by the episode seed, then K
    deterministic Euler steps. That is LeRobot's own SmolVLA sampler at ``num_steps`` = K, so the
    exported policy deploys the same way in ``lerobot-eval``;
 2. ReinFlow (``train_reinflow.py --model-type smolvla``) on the cameras with ``--parallel-envs``
    env processes, training only the action expert, projections and noise head (``--trainable``,
    the VLM stays frozen), on the sparse success reward, evaluating every ``--eval-every``
    iterations on ``--monitor-episodes`` monitoring seeds (from 20,000) and keeping the best
    checkpoint by that score (``--keep-best``: model selection never sees the held-out seeds);
 3. evaluate the kept checkpoint on the same held-out seeds with the same sampler;
 4. print BC vs ReinFlow (success, 95% Wilson CI, mean return, env steps, wall time) and success by
    block distance, and write ``OUT/results.json``. ``--ship`` exports the kept checkpoint as a
    LeRobot ``pretrained_model`` folder, ``simulation_code/checkpoints/smolvla_reinflow/``
    (``print_checkpoint_stats.py --export-pretrained``; ``num_steps`` = K), with the results next
    to it, and plots the training curves (``OUT/curves.png``, ``print_checkpoint_stats.py --plot``).

The seeds come from the one table so101_mujoco_utils.SEED_RANGES (held-out, monitoring; ReinFlow's
training episodes are seeded from ``--seed`` and the iteration, in the training range).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from reinflow_flow import PY, ROOT, SIM, run, success_by_distance  # one copy of the step runner and the bands

from so101_sim import so101_mujoco_utils as u  # noqa: E402

TEST_SEED = u.SEED_RANGES["held_out"][0]
MONITOR_SEED = u.SEED_RANGES["monitoring"][0]
SUMMARY_KEYS = ("success_rate", "success_rate_ci95", "mean_return", "mean_length")
#: The ReinFlow settings of the benchmark (extra train_reinflow.py flags; ``--reinflow-args`` replaces them):
#: the lessons of the state-policy benchmark (docs/experiments/2026-11-21-reinflow-flow-findings.md),
#: re-tested here: small ratio clip, sparse success reward, critic warm-up. The chain start stays
#: LeRobot's x_0 ~ N(0, I) (``--init-noise-scale 1``): the exported policy must deploy as trained.
DEFAULT_REINFLOW_ARGS = ("--reward-terms success --reward-scale 0.02 --clip 0.01 --target-kl 0.02 --epochs 4 "
                         "--policy-lr 3e-5 --critic-warmup-iters 2 --critic-extra-epochs 10 --max-episode-steps 100 "
                         "--init-noise-scale 1")


def parse_args(argv=None) -> argparse.Namespace:
    from so101_sim import cli_args

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=cli_args.DefaultsHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "reinflow_vision", help="output folder")
    ap.add_argument("--policy-path", type=Path, default=SIM / "checkpoints" / "smolvla_bc",
                    help="the BC start point: a LeRobot SmolVLA pretrained_model folder")
    ap.add_argument("--eval-episodes", type=int, default=100, help="held-out episodes (seeds 0..N-1), before and after")
    ap.add_argument("--monitor-episodes", type=int, default=30, help=f"monitoring episodes for --keep-best (seeds from {MONITOR_SEED})")
    ap.add_argument("--iterations", type=int, default=36, help="ReinFlow PPO iterations")
    ap.add_argument("--rollout-steps", type=int, default=1500, help="env steps per env per iteration")
    ap.add_argument("--parallel-envs", type=int, default=2, help="env worker processes (one batched policy forward for all)")
    ap.add_argument("--eval-every", type=int, default=4, help="monitoring evaluation every N iterations")
    ap.add_argument("--denoise-steps", "-K", type=int, default=4,
                    help="denoising steps K, in training, in both evaluations and in the export (num_steps)")
    ap.add_argument("--trainable", choices=("expert", "heads"), default="expert",
                    help="what trains besides the noise head (train_reinflow.py --trainable)")
    ap.add_argument("--seed", type=int, default=0, help="train_reinflow.py --seed")
    ap.add_argument("--reinflow-args", default=DEFAULT_REINFLOW_ARGS, help="extra train_reinflow.py flags")
    ap.add_argument("--ship", action="store_true",
                    help="export the kept checkpoint to simulation_code/checkpoints/smolvla_reinflow/ and plot the curves")
    ap.add_argument("--deploy-episodes", type=int, default=10,
                    help="--ship: run the exported folder on this many held-out seeds in our runner and lerobot-eval (0 = skip)")
    ap.add_argument("--ship-dir", type=Path, default=SIM / "checkpoints" / "smolvla_reinflow", help="where --ship writes")
    args = ap.parse_args(argv)
    for use, first, count in (("held_out", TEST_SEED, args.eval_episodes), ("monitoring", MONITOR_SEED, args.monitor_episodes)):
        problem = u.seed_block_problem(use, first, count)
        if problem:
            ap.error(problem)
    if not (args.policy_path / "config.json").is_file():
        ap.error(f"--policy-path {args.policy_path}: no config.json there; pass a LeRobot pretrained_model folder "
                 "(e.g. simulation_code/checkpoints/smolvla_bc)")
    return args


def evaluate(args, out: Path, name: str, source: list[str], times: dict) -> dict:
    """Held-out episodes through run_reinflow_inference.py (``source``: ``--checkpoint F`` or the base
    flags); reuses ``OUT/eval_{name}.json`` when present. Returns its summary."""
    summary = out / f"eval_{name}.json"
    if not summary.is_file():
        times[f"eval_{name}_s"] = run([PY, "run_reinflow_inference.py", "--model-type", "smolvla", *source,
                                       "--episodes", str(args.eval_episodes), "--seed", str(TEST_SEED), "--headless",
                                       "--num-denoise-steps", str(args.denoise_steps), "--summary-json", str(summary)],
                                      out / f"eval_{name}.log")
    return json.loads(summary.read_text())


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    times_file = out / "times.json"  # stage wall times, kept across invocations (a stage done earlier is skipped)
    times = json.loads(times_file.read_text()) if times_file.is_file() else {}
    policy_path = str(args.policy_path.resolve())
    from so101_sim.lerobot_policy import sim_setup

    image_size = sim_setup(policy_path).image_hw[0]  # the checkpoint's camera input (square for SmolVLA)
    before = evaluate(args, out, "bc", ["--policy-path", policy_path, "--base"], times)
    times_file.write_text(json.dumps(times, indent=2))
    ckpt = out / "smolvla_reinflow.pt"
    best = ckpt.with_name(ckpt.stem + "_best" + ckpt.suffix)  # chosen on the monitoring seeds, not the test seeds
    if not ckpt.is_file():
        times["reinflow_s"] = run([PY, "train_reinflow.py", "--model-type", "smolvla", "--policy-path", policy_path,
                                   "--parallel-envs", str(args.parallel_envs), "--iterations", str(args.iterations),
                                   "--rollout-steps", str(args.rollout_steps), "--image-size", str(image_size),
                                   "--denoise-steps", str(args.denoise_steps), "--trainable", args.trainable,
                                   "--eval-every", str(args.eval_every), "--eval-episodes", str(args.monitor_episodes),
                                   "--eval-seed", str(MONITOR_SEED), "--eval-at-start", "--keep-best", "--seed", str(args.seed),
                                   "--device", "cpu", "--no-render", "--quiet", "--checkpoint", str(ckpt),
                                   *args.reinflow_args.split()], out / "reinflow.log")
    times_file.write_text(json.dumps(times, indent=2))
    kept = best if best.is_file() else ckpt
    after = evaluate(args, out, "reinflow", ["--checkpoint", str(kept)], times)
    times_file.write_text(json.dumps(times, indent=2))

    from so101_sim import checkpoint_io as ckio  # safe load: weights_only + allowlist, content hash checked

    hist = ckio.load(ckpt, kind="reinflow", model_type="smolvla").history
    trained = [h for h in hist if not h.get("initial_eval")]
    env_steps = trained[-1]["env_steps"] if trained else 0
    rollout_s = sum(h.get("rollout_s", 0.0) for h in trained)  # the training's own clock (also when stopped and reused)
    iter_s = sum(h.get("iter_s", 0.0) for h in trained)
    kept_row = ckio.load(kept, kind="reinflow", model_type="smolvla").history[-1] if trained else {}
    res = {"before": {k: before[k] for k in SUMMARY_KEYS}, "after": {k: after[k] for k in SUMMARY_KEYS},
           "gain_points": 100 * (after["success_rate"] - before["success_rate"]),
           "kept": {"file": kept.name, "iteration": kept_row.get("iteration"), "monitor_success": kept_row.get("eval_success")},
           "monitoring": [{"iteration": h["iteration"], "success": h["eval_success"]} for h in hist
                          if h.get("eval_success") == h.get("eval_success") and h.get("eval_success") is not None],
           "reinflow_env_steps": env_steps, "reinflow_episodes": sum(h.get("episodes", 0) for h in trained),
           "reinflow_iterations": len(trained), "rollout_s": rollout_s, "update_s": iter_s - rollout_s,
           "reinflow_wall_s": iter_s, "step_seconds": times,
           "wall_time_s": iter_s + sum(v for k, v in times.items() if k.startswith("eval_")), "image_size": image_size,
           "args": {k: str(v) for k, v in vars(args).items()},
           "by_distance": {lab: {"before": [b_s, b_n], "after": [a_s, a_n]} for (lab, b_s, b_n), (_, a_s, a_n)
                           in zip(success_by_distance(before["per_episode"]), success_by_distance(after["per_episode"]))}}
    (out / "results.json").write_text(json.dumps(res, indent=2))
    report(res, args)
    if args.ship:
        ship(args, kept, ckpt, out, res)
    return 0


def report(res: dict, args) -> None:
    """The results table (stdout)."""
    print(f"\n{'':24}{'success':>10}{'95% CI':>14}{'mean return':>13}")
    for name, s in (("BC (smolvla_bc)", res["before"]), ("ReinFlow (kept)", res["after"])):
        lo, hi = s["success_rate_ci95"]
        print(f"{name:24}{s['success_rate']:>10.0%}{f'{lo:.0%}-{hi:.0%}':>14}{s['mean_return']:>13.1f}")
    print("by block distance (successes/episodes, before -> after): " + ", ".join(
        f"{lab} {v['before'][0]}/{v['before'][1]} -> {v['after'][0]}/{v['after'][1]}" for lab, v in res["by_distance"].items()))
    n_it = max(res["reinflow_iterations"], 1)
    print(f"gain {res['gain_points']:+.0f} points on {args.eval_episodes} held-out episodes (K = {args.denoise_steps}); "
          f"kept iteration {res['kept']['iteration']} (monitoring success {res['kept']['monitor_success']:.0%}); ReinFlow "
          f"{res['reinflow_env_steps']} env steps, {res['reinflow_episodes']} episodes, {res['reinflow_iterations']} iterations "
          f"in {res['reinflow_wall_s'] / 60:.0f} min (rollout {res['rollout_s'] / n_it:.0f} s + update and monitoring "
          f"{res['update_s'] / n_it:.0f} s per iteration); wall time with both evaluations {res['wall_time_s'] / 60:.0f} min")


def ship(args, kept: Path, last: Path, out: Path, res: dict) -> None:
    """Export ``kept`` to ``--ship-dir`` (LeRobot pretrained_model + our meta), plot the whole run's
    curves (``last``, the run's final checkpoint, holds every iteration's row), and run
    the exported folder on the first ``--deploy-episodes`` held-out seeds through LeRobot's own
    sampler: our runner (``--model-type lerobot``; torch seeded with the episode seed, so the same
    x_0 draws as the benchmark's sampler) and ``lerobot-eval`` (seeded once per run: the same
    distribution, other draws). The agreement with the benchmark's episodes goes into the results
    file written next to the weights."""
    from vision_bc import evaluate as deployed_eval  # the two evaluators vision_bc.py ships with

    dest = args.ship_dir.resolve()
    if dest.exists():
        shutil.rmtree(dest)
    run([PY, "print_checkpoint_stats.py", "--checkpoint", str(kept), "--export-pretrained", str(dest)], out / "export.log")
    run([PY, "print_checkpoint_stats.py", "--checkpoint", str(last), "--plot", str(out / "curves.png")], out / "plot.log")
    if args.deploy_episodes:
        here = out / "deployed"
        here.mkdir(exist_ok=True)
        if not (here / "vlm").exists():  # lerobot-eval resolves the relative vlm path against its working directory
            (here / "vlm").symlink_to(dest / "vlm")
        ns = argparse.Namespace(eval_episodes=args.deploy_episodes, eval_seed=TEST_SEED,
                                lerobot_eval_episodes=args.deploy_episodes)
        done = here / "eval_ours.json", here / "eval_lerobot" / "eval_info.json"
        if all(f.is_file() for f in done) and (here / "exported_from.txt").read_text() == str(kept):
            ours = json.loads(done[0].read_text())
            theirs = json.loads(done[1].read_text())["per_task"][0]["metrics"]
        else:
            for f in done:
                f.unlink(missing_ok=True)
            ours, theirs = deployed_eval(ns, dest, here, res["step_seconds"])
            (here / "exported_from.txt").write_text(str(kept))
        bench = json.loads((out / "eval_reinflow.json").read_text())["per_episode"]
        same = sum(a["success"] == b["success"] for a, b in zip(ours["per_episode"], bench))
        res["deployed"] = {"episodes": args.deploy_episodes, "ours_success": ours["success_rate"],
                           "lerobot_eval_success": float(np.mean(theirs.get("successes", [np.nan]))),
                           "same_outcome_as_benchmark": same, "seeds": [e["seed"] for e in ours["per_episode"]],
                           "success": [bool(e["success"]) for e in ours["per_episode"]],
                           "returns": [float(e["return"]) for e in ours["per_episode"]]}
        (out / "results.json").write_text(json.dumps(res, indent=2))
        print(f"deployed through LeRobot's sampler, held-out seeds {TEST_SEED}-{TEST_SEED + args.deploy_episodes - 1}: "
              f"our runner {ours['success_rate']:.0%} ({same}/{args.deploy_episodes} episodes with the benchmark's outcome), "
              f"lerobot-eval {res['deployed']['lerobot_eval_success']:.0%}")
    (dest / "reinflow_vision_results.json").write_text(json.dumps(res, indent=2) + "\n")
    print(f"shipped -> {dest} (curves: {out / 'curves.png'})")


if __name__ == "__main__":
    sys.exit(main())
