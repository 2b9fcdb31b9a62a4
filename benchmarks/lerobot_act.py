"""A LeRobot ACT trained by stock ``lerobot-train`` on a ``record_dataset.py`` recording, evaluated in
the sim by ``lerobot-eval --env.type=so101_pickplace`` and by our runner (``run_mujoco_simulation.py
--model-type lerobot``) on the same held-out seeds (a benchmark, not a test).

    .venv/bin/python benchmarks/lerobot_act.py --out outputs/bench_lerobot_act [--demos 10] [--steps 300]

Steps: (1) record ``--demos`` scripted episodes (demonstration seeds, 3 cameras at ``--image-size``);
(2) ``lerobot-train --policy.type=act`` with small widths (CPU) for ``--steps`` steps;
(3) ``lerobot-eval`` on held-out seeds SEED..SEED+N-1; (4) our runner on the same seeds. Prints a
table (success rate, mean return, wall time, episodes whose returns agree) and writes
``results.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="disabled", SO101_QUIET_GL="1")


def run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` with its output in ``log``; returns the wall time (s). Exits on failure."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, env=ENV, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc:
        sys.exit(f"failed ({rc}): {' '.join(cmd)}; see {log}")
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_lerobot_act", help="output folder")
    p.add_argument("--demos", type=int, default=10, help="scripted demonstrations to record")
    p.add_argument("--steps", type=int, default=300, help="lerobot-train steps")
    p.add_argument("--batch-size", type=int, default=8, help="lerobot-train batch size")
    p.add_argument("--image-size", type=int, default=64, help="camera images (pixels, square)")
    p.add_argument("--episodes", type=int, default=10, help="evaluation episodes")
    p.add_argument("--seed", type=int, default=0, help="first held-out evaluation seed")
    args = p.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    sim = REPO / "simulation_code"
    times = {}
    data, train, ev = out / "data", out / "train", out / "eval"
    if not (data / "meta" / "info.json").is_file():
        times["record_s"] = run([sys.executable, str(sim / "record_dataset.py"), "--input", "scripted", "--output-dir",
                                 str(data), "--num-episodes", str(args.demos), "--image-size", str(args.image_size),
                                 "--repo-id", "local/bench_act", "--overwrite"], out / "record.log")
    ckpt = train / "checkpoints" / f"{args.steps:06d}" / "pretrained_model"
    if not ckpt.is_dir():
        times["train_s"] = run([str(BIN / "lerobot-train"), "--dataset.repo_id=local/bench_act", f"--dataset.root={data}",
                                "--policy.type=act", "--policy.dim_model=128", "--policy.n_heads=4",
                                "--policy.dim_feedforward=512", "--policy.n_encoder_layers=2", "--policy.n_decoder_layers=1",
                                "--policy.chunk_size=20", "--policy.n_action_steps=20",
                                "--policy.pretrained_backbone_weights=null", "--policy.push_to_hub=false",
                                "--policy.device=cpu", f"--steps={args.steps}", f"--batch_size={args.batch_size}",
                                "--num_workers=0", f"--save_freq={args.steps}", "--log_freq=50", "--seed=1",
                                "--wandb.enable=false", f"--output_dir={train}"], out / "train.log")
    h = w = args.image_size
    times["lerobot_eval_s"] = run([str(BIN / "lerobot-eval"), "--env.type=so101_pickplace",
                                   f"--env.observation_height={h}", f"--env.observation_width={w}", f"--policy.path={ckpt}",
                                   f"--eval.n_episodes={args.episodes}", "--eval.batch_size=1", "--policy.device=cpu",
                                   f"--seed={args.seed}", f"--output_dir={ev}"], out / "eval.log")
    times["runner_s"] = run([sys.executable, str(sim / "run_mujoco_simulation.py"), "--model-type", "lerobot",
                             "--policy-path", str(ckpt), "--episodes", str(args.episodes), "--seed", str(args.seed),
                             "--headless", "--summary-json", str(out / "ours.json")], out / "runner.log")
    theirs = json.loads((ev / "eval_info.json").read_text())
    m = theirs["per_task"][0]["metrics"]
    ours = json.loads((out / "ours.json").read_text())["per_episode"]
    agree = sum(abs(a["return"] - b) <= 1e-3 + 1e-4 * abs(b) and a["success"] == s
                for a, b, s in zip(ours, m["sum_rewards"], m["successes"]))
    rows = [("lerobot-eval", np.mean(m["successes"]), np.mean(m["sum_rewards"]), times["lerobot_eval_s"]),
            ("run_mujoco_simulation --model-type lerobot", np.mean([e["success"] for e in ours]),
             np.mean([e["return"] for e in ours]), times["runner_s"])]
    print(f"ACT ({args.steps} lerobot-train steps on {args.demos} scripted demos), held-out seeds "
          f"{args.seed}..{args.seed + args.episodes - 1}")
    print(f"{'evaluator':45s} {'success':>8s} {'mean return':>12s} {'wall s':>8s}")
    for name, sr, ret, t in rows:
        print(f"{name:45s} {sr:8.0%} {ret:12.1f} {t:8.1f}")
    print(f"episodes with the same return and success in both: {agree}/{args.episodes}")
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "times_s": times, "agree": agree,
              "lerobot_eval": {"success": m["successes"], "returns": m["sum_rewards"]},
              "ours": {"success": [e["success"] for e in ours], "returns": [e["return"] for e in ours]}}
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
