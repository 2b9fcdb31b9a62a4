"""Image policies trained by stock ``lerobot-train`` on scripted demonstrations, evaluated in the sim
(a benchmark, not a test; issue 16).

    .venv/bin/python benchmarks/vision_bc.py --policy so101_act --out outputs/vision_bc_act
    .venv/bin/python benchmarks/vision_bc.py --policy smolvla --out outputs/vision_bc_smolvla

Steps, each skipped when its output already exists in ``--out`` (so a run can be resumed or
re-evaluated):

1. record ``--demos`` scripted demonstrations (demonstration seeds, successful episodes only;
   ``--demo-noise``: DART noise on the executed targets, clean labels) with
   ``observation.state`` + the ``--cameras`` images as the only policy inputs (no
   ``observation.environment_state``): ``record_dataset.py --input scripted``;
2. train with the stock ``lerobot-train`` CLI: ``--policy act`` (LeRobot's ACT, ResNet18 from
   scratch: torchvision's weights cannot be downloaded offline), ``--policy so101_act`` (the same
   ACT with its ResNet18 cut after ``--backbone-stages`` stages: so101_sim.so101_act_policy, a
   LeRobot policy plugin, small enough to ship) or ``--policy smolvla`` (LeRobot's
   SmolVLA on a small SmolVLM backbone built locally by make_tiny_policies.build_tiny_smolvlm,
   trained from scratch: a flow-matching VLA our SmolVLA adapter loads);
3. evaluate the checkpoint on ``--eval-episodes`` held-out seeds with ``run_mujoco_simulation.py
   --model-type lerobot``, and the first ``--lerobot-eval-episodes`` of them with ``lerobot-eval
   --env.type=so101_pickplace`` (a deterministic policy gives the same outcomes in both);
   Both evaluate ``OUT/policy``: the checkpoint's LeRobot ``pretrained_model`` files (weights in
   ``--weights-dtype``) plus so101_policy_meta.json, and SmolVLA's ``vlm/``. With
   ``--dagger-rounds K``, K DAgger rounds (:func:`dagger_round`) come first: the policy's own
   rollouts, labelled by the expert, are added to the data and the policy is fine-tuned on all;
4. print a table and write ``OUT/results.json``; ``--ship DIR`` copies ``OUT/policy`` there with the
   results as ``vision_bc_results.json``.

``--checkpoint DIR`` skips steps 1-2 and packages and evaluates an already trained policy, e.g. the
shipped ACT deployed with temporal ensembling (``--temporal-ensemble 0.01``):

    .venv/bin/python benchmarks/vision_bc.py --policy act --checkpoint simulation_code/checkpoints/vision_bc \
        --weights-dtype bfloat16 --temporal-ensemble 0.01 --out outputs/vbc_act3_te
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
SIM = REPO / "simulation_code"
BIN = Path(sys.executable).parent
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="disabled", SO101_QUIET_GL="1",
           TOKENIZERS_PARALLELISM="false")
REPO_ID = "local/vision_bc"
ACT_TYPES = ("act", "so101_act")  # LeRobot's ACT and this repo's plugin subclass (so101_sim.so101_act_policy)


def parse_args(argv=None) -> argparse.Namespace:
    from so101_sim import so101_mujoco_utils as u
    from so101_sim.scripted_expert import DESCEND_TOL

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--policy", choices=ACT_TYPES + ("smolvla",), default="so101_act",
                   help="policy type to train: LeRobot's act or smolvla, or so101_act (this repo's plugin: ACT with "
                        "its ResNet18 cut after --backbone-stages stages, small enough to ship)")
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "vision_bc", help="output folder")
    p.add_argument("--demos", type=int, default=50, help="scripted demonstrations to record")
    p.add_argument("--demo-seed", type=int, default=u.SEED_RANGES["demonstrations"][0], help="first demonstration seed")
    p.add_argument("--demo-noise", type=float, default=0.0, metavar="RAD",
                   help="DART: record_dataset.py --expert-noise, the std (radians) of correlated noise on the arm "
                        "targets the demonstrations execute; labels stay the expert's clean targets (0 = none)")
    p.add_argument("--demo-close-tol", type=float, default=DESCEND_TOL, metavar="M",
                   help="record_dataset.py --expert-close-tol for the demonstrations and the DAgger labels: the expert "
                        "closes the jaws once its grasp point is this close (m) to the grasp pose")
    p.add_argument("--image-size", type=int, default=64, help="camera images (pixels, square)")
    p.add_argument("--cameras", default="camera1=camera_up,camera2=wrist_camera", help="dataset camera = sim camera")
    p.add_argument("--steps", type=int, default=2000, help="lerobot-train steps")
    p.add_argument("--batch-size", type=int, default=16, help="lerobot-train batch size")
    p.add_argument("--num-workers", type=int, default=1,
                   help="lerobot-train data-loader workers (video decoding; 1 overlaps it with the update on 2 cores)")
    p.add_argument("--lr", type=float, default=1e-4,
                   help="learning rate (ACT: transformer and backbone; LeRobot's ACT default 1e-5 is for a "
                        "pretrained backbone; SmolVLA: peak of its cosine schedule, warm-up steps/20, decayed to lr/10 at --steps)")
    p.add_argument("--chunk-size", type=int, default=20, help="policy chunk_size (actions predicted per inference)")
    p.add_argument("--n-action-steps", type=int, default=10, help="policy n_action_steps (actions executed per chunk)")
    p.add_argument("--dim-model", type=int, default=256, help="ACT: transformer width")
    p.add_argument("--backbone-stages", type=int, default=2, choices=range(1, 5), metavar="{1,2,3,4}",
                   help="so101_act: ResNet18 stages kept (2: 0.7 M of its 11.2 M parameters, 8x8 features per 64 px "
                        "image; the shipped vision_bc)")
    p.add_argument("--temporal-ensemble", type=float, default=None, metavar="COEFF",
                   help="ACT: deploy with LeRobot's temporal ensembling (temporal_ensemble_coeff COEFF, e.g. the ACT "
                        "paper's 0.01, and n_action_steps 1: a chunk predicted every step, overlapping chunks averaged); "
                        "set in the packaged config, so training is unchanged and an existing --out is re-packaged")
    p.add_argument("--vlm-hidden", type=int, default=256, help="SmolVLA: the local SmolVLM's language-model width")
    p.add_argument("--vlm-layers", type=int, default=4, help="SmolVLA: language-model layers (all used)")
    p.add_argument("--vision-hidden", type=int, default=128, help="SmolVLA: the SigLIP encoder's width (2 layers)")
    p.add_argument("--dagger-rounds", type=int, default=0,
                   help="DAgger rounds after behaviour cloning: each records --dagger-episodes rollouts of the current "
                        "policy labelled by the expert (record_dataset.py --student), adds them to the data and "
                        "fine-tunes the policy on all of it for --dagger-steps lerobot-train steps (0 = none)")
    p.add_argument("--dagger-episodes", type=int, default=100, help="student rollouts recorded per DAgger round")
    p.add_argument("--dagger-steps", type=int, default=1000, help="lerobot-train steps per DAgger round")
    p.add_argument("--dagger-lr", type=float, default=None,
                   help="peak learning rate of the DAgger fine-tuning (default: --lr)")
    p.add_argument("--eval-episodes", type=int, default=100, help="held-out episodes in our runner")
    p.add_argument("--lerobot-eval-episodes", type=int, default=20, help="of those, run again in lerobot-eval")
    p.add_argument("--eval-seed", type=int, default=u.SEED_RANGES["held_out"][0], help="first held-out seed")
    p.add_argument("--weights-dtype", choices=("float32", "bfloat16"), default="float32",
                   help="dtype of the packaged weights (bfloat16 halves the folder; evaluated as packaged)")
    p.add_argument("--checkpoint", type=Path, default=None, metavar="DIR",
                   help="skip recording and training: package and evaluate this LeRobot pretrained_model folder "
                        "(e.g. a shipped one, to re-evaluate it with another --temporal-ensemble or --weights-dtype)")
    p.add_argument("--ship", type=Path, default=None,
                   help="copy the evaluated policy folder (OUT/policy) and results.json here")
    args = p.parse_args(argv)
    if args.checkpoint is not None and not (args.checkpoint / "config.json").is_file():
        p.error(f"--checkpoint {args.checkpoint} is not a LeRobot pretrained_model folder (no config.json)")
    if args.checkpoint is not None and args.dagger_rounds:
        p.error("--checkpoint evaluates a trained policy; DAgger rounds need the run's own data (drop --dagger-rounds)")
    if args.temporal_ensemble is not None and (args.policy not in ACT_TYPES or args.temporal_ensemble < 0):
        p.error("--temporal-ensemble is for --policy act|so101_act and takes a coefficient >= 0 (the ACT paper's: 0.01)")
    if args.policy == "smolvla" and args.image_size % 32:  # SmolVLM: 16 px patches, pixel shuffle by 2
        p.error(f"--policy smolvla needs --image-size a multiple of 32 (got {args.image_size})")
    return args


def run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` with its output in ``log``; returns the wall time (s). Exits with the log's tail on failure."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, env=ENV, stdout=f, stderr=subprocess.STDOUT, cwd=log.parent).returncode
    if rc:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        sys.exit(f"failed ({rc}): {' '.join(cmd)}\n{tail}\n(full log: {log})")
    return time.perf_counter() - t0


def policy_flags(args, out: Path) -> list[str]:
    """lerobot-train's ``--policy.*`` flags for ``args.policy`` (CPU sizes)."""
    common = [f"--policy.chunk_size={args.chunk_size}", f"--policy.n_action_steps={args.n_action_steps}",
              "--policy.push_to_hub=false", "--policy.device=cpu", f"--policy.optimizer_lr={args.lr}"]
    if args.policy in ACT_TYPES:
        stages = [f"--policy.backbone_stages={args.backbone_stages}"] if args.policy == "so101_act" else []
        return [f"--policy.type={args.policy}", *stages, f"--policy.dim_model={args.dim_model}", "--policy.n_heads=8",
                f"--policy.dim_feedforward={4 * args.dim_model}", "--policy.n_encoder_layers=2",
                "--policy.n_decoder_layers=1", "--policy.pretrained_backbone_weights=null",
                f"--policy.optimizer_lr_backbone={args.lr}", *common]
    from so101_sim.make_tiny_policies import build_tiny_smolvlm

    vlm = out / "vlm"
    if not (vlm / "config.json").is_file():
        build_tiny_smolvlm(vlm, image_size=args.image_size, hidden=args.vlm_hidden, layers=args.vlm_layers,
                           vision_hidden=args.vision_hidden, vision_layers=2)
    return ["--policy.type=smolvla", f"--policy.vlm_model_name={vlm}", "--policy.load_vlm_weights=false",
            f"--policy.num_vlm_layers={args.vlm_layers}", f"--policy.resize_imgs_with_padding=[{args.image_size},{args.image_size}]",
            "--policy.train_expert_only=false", "--policy.freeze_vision_encoder=false",
            f"--policy.scheduler_warmup_steps={max(1, args.steps // 20)}", f"--policy.scheduler_decay_steps={args.steps}",
            f"--policy.scheduler_decay_lr={args.lr / 10}", *common]


def train_cmd(args, data: Path, flags: list[str], steps: int, train: Path) -> list[str]:
    """The stock ``lerobot-train`` command: ``flags`` (the policy's), ``steps`` at ``--batch-size``,
    one checkpoint at the end, into ``train``."""
    return [str(BIN / "lerobot-train"), f"--dataset.repo_id={REPO_ID}", f"--dataset.root={data}", *flags,
            f"--steps={steps}", f"--batch_size={args.batch_size}", f"--num_workers={args.num_workers}",
            f"--save_freq={steps}", "--log_freq=100", "--seed=1", "--wandb.enable=false", f"--output_dir={train}"]


def dagger_round(args, r: int, student: Path, data: Path, times: dict) -> Path:
    """DAgger round ``r``: record ``--dagger-episodes`` rollouts of ``student`` (a pretrained_model
    folder, packaged as :func:`package` packages it for evaluation) on the next demonstration
    seeds, each state labelled by the scripted expert
    (``record_dataset.py --student``), appended to ``data``; then fine-tune ``student`` on all of
    ``data`` with ``lerobot-train --policy.path`` for ``--dagger-steps`` steps (peak learning rate
    ``--dagger-lr``, default ``--lr``; SmolVLA's cosine schedule scaled to those steps). Each half is skipped when done
    (``OUT/dagger{r}/recorded.json``, the checkpoint). Returns the new pretrained_model folder."""
    here = args.out / f"dagger{r}"
    here.mkdir(exist_ok=True)
    done = here / "recorded.json"
    if not done.is_file():
        deployed = here / "student"  # the student rolls out as it is evaluated (dtype, temporal ensembling)
        package(student, deployed, args)
        times[f"dagger{r}_record_s"] = run([sys.executable, str(SIM / "record_dataset.py"), "--input", "scripted",
                                            "--output-dir", str(data), "--resume", "--student", str(deployed),
                                            "--num-episodes", str(args.dagger_episodes), "--image-size", str(args.image_size),
                                            "--cameras", args.cameras, "--repo-id", REPO_ID,
                                            "--expert-close-tol", str(args.demo_close_tol)], here / "record.log")
        done.write_text(json.dumps({"student": str(student), "episodes": args.dagger_episodes}) + "\n")
    ckpt = here / "train" / "checkpoints" / f"{args.dagger_steps:06d}" / "pretrained_model"
    if not ckpt.is_dir():
        lr = args.lr if args.dagger_lr is None else args.dagger_lr
        flags = [f"--policy.path={student}", "--policy.push_to_hub=false", "--policy.device=cpu",
                 f"--policy.optimizer_lr={lr}"]
        if args.policy in ACT_TYPES:
            flags.append(f"--policy.optimizer_lr_backbone={lr}")
        else:
            flags += [f"--policy.scheduler_warmup_steps={max(1, args.dagger_steps // 20)}",
                      f"--policy.scheduler_decay_steps={args.dagger_steps}", f"--policy.scheduler_decay_lr={lr / 10}"]
        times[f"dagger{r}_train_s"] = run(train_cmd(args, data, flags, args.dagger_steps, here / "train"), here / "train.log")
    return ckpt


def evaluate(args, ckpt: Path, out: Path, times: dict) -> tuple[dict, dict]:
    """Our runner on the held-out seeds, then lerobot-eval on the first of them: (ours summary, theirs metrics)."""
    ours_json = out / "eval_ours.json"
    times["eval_ours_s"] = run([sys.executable, str(SIM / "run_mujoco_simulation.py"), "--model-type", "lerobot",
                                "--policy-path", str(ckpt), "--episodes", str(args.eval_episodes), "--seed",
                                str(args.eval_seed), "--headless", "--summary-json", str(ours_json)], out / "eval_ours.log")
    ours = json.loads(ours_json.read_text())
    theirs = {}
    if args.lerobot_eval_episodes:
        cams = ",".join(f"{n}={c}" for n, c in ours["policy_info"]["cameras"].items())
        h, w = ours["policy_info"]["image_hw"]
        times["eval_lerobot_s"] = run([str(BIN / "lerobot-eval"), "--env.type=so101_pickplace", f"--env.cameras={cams}",
                                       f"--env.observation_height={h}", f"--env.observation_width={w}",
                                       f"--policy.path={ckpt}", f"--eval.n_episodes={args.lerobot_eval_episodes}",
                                       "--eval.batch_size=1", "--policy.device=cpu", f"--seed={args.eval_seed}",
                                       f"--output_dir={out / 'eval_lerobot'}"], out / "eval_lerobot.log")
        theirs = json.loads((out / "eval_lerobot" / "eval_info.json").read_text())["per_task"][0]["metrics"]
    return ours, theirs


def _packaged_as(ckpt: Path, args) -> dict:
    """What identifies a packaged folder (recorded in its so101_policy_meta.json): the source
    checkpoint (relative to the repository when inside it), the weights' dtype and the ensembling."""
    from so101_sim.rollout_utils import repo_path

    return {"weights_dtype": args.weights_dtype, "source_checkpoint": repo_path(ckpt),
            "temporal_ensemble_coeff": args.temporal_ensemble}


def package(ckpt: Path, dest: Path, args) -> None:
    """Write the deployable policy folder ``dest`` from the lerobot-train checkpoint ``ckpt``: its
    ``pretrained_model`` files (weights cast to ``--weights-dtype``; LeRobot loads them into its
    float32 parameters), SmolVLA's ``vlm/`` folder (config.vlm_model_name points at it), and the
    so101_policy_meta.json our runner reads (frame, camera map, task; the source checkpoint relative
    to the repository when inside it; ``--temporal-ensemble`` in the config). Both evaluators run this
    folder, so the reported success is that of the files shipped."""
    from so101_sim import so101_mujoco_utils as u
    from so101_sim import vla_frames

    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(ckpt, dest, ignore=shutil.ignore_patterns("train_config.json", "vision_bc_results.json"))
    if args.weights_dtype != "float32":
        import torch
        from safetensors.torch import load_file, save_file

        weights = load_file(dest / "model.safetensors")
        save_file({k: (v.to(getattr(torch, args.weights_dtype)) if v.is_floating_point() else v)
                   for k, v in weights.items()}, dest / "model.safetensors", metadata={"format": "pt"})
    if args.temporal_ensemble is not None:  # a deployment choice (ACTConfig: needs n_action_steps 1)
        cfg = json.loads((dest / "config.json").read_text())
        cfg.update(temporal_ensemble_coeff=args.temporal_ensemble, n_action_steps=1)
        (dest / "config.json").write_text(json.dumps(cfg, indent=4) + "\n")
    cams = dict(item.split("=", 1) for item in args.cameras.split(","))
    extra = _packaged_as(ckpt, args)
    if args.policy == "smolvla":  # config and tokenizer point at vlm/ (resolved against the folder by our loaders)
        from so101_sim.pretrained_export import bundle_local_vlm

        bundle_local_vlm(dest, str(args.out / "vlm"))
        extra["note"] = "config.vlm_model_name is the vlm/ folder next to this file"
    sim_key = {v: k for k, v in u.CAMERAS.items()}
    vla_frames.write_policy_meta(dest, "lerobot_degrees", task=u.DEFAULT_TASK,
                                 camera_map={(c if c in u.CAMERAS else sim_key[c]): u.OBS_IMAGE_PREFIX + n
                                             for n, c in cams.items()},
                                 cameras={n: u.CAMERAS.get(c, c) for n, c in cams.items()}, **extra)


def package_if_stale(ckpt: Path, dest: Path, args) -> bool:
    """:func:`package` ``ckpt`` into ``dest`` unless ``dest`` already holds it in ``--weights-dtype``
    with ``--temporal-ensemble`` (its so101_policy_meta.json names the source checkpoint, dtype and
    coefficient), so a reused ``--out`` never evaluates stale weights or settings (another dtype or
    ensembling, or the checkpoint before a DAgger round). Returns whether it packaged."""
    meta = dest / "so101_policy_meta.json"
    packaged = json.loads(meta.read_text()) if meta.is_file() else {}
    want = _packaged_as(ckpt, args)
    if {k: packaged.get(k) for k in want} == want:
        return False
    package(ckpt, dest, args)
    return True


def main(argv=None) -> None:
    args = parse_args(argv)
    out = args.out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data, train = out / "data", out / "train"
    ckpt = (args.checkpoint.resolve() if args.checkpoint else
            train / "checkpoints" / f"{args.steps:06d}" / "pretrained_model")
    times: dict[str, float] = {}
    stages = tqdm(total=3, desc="vision_bc", unit="stage")
    if not args.checkpoint and not (data / "meta" / "info.json").is_file():
        stages.set_postfix_str(f"recording {args.demos} demos")
        times["record_s"] = run([sys.executable, str(SIM / "record_dataset.py"), "--input", "scripted", "--output-dir",
                                 str(data), "--num-episodes", str(args.demos), "--image-size", str(args.image_size),
                                 "--cameras", args.cameras, "--seed", str(args.demo_seed), "--repo-id", REPO_ID,
                                 "--expert-noise", str(args.demo_noise), "--expert-close-tol", str(args.demo_close_tol),
                                 "--overwrite"], out / "record.log")
    stages.update()
    if not ckpt.is_dir():
        stages.set_postfix_str(f"lerobot-train {args.policy} {args.steps} steps (progress: {train.parent / 'train.log'})")
        times["train_s"] = run(train_cmd(args, data, policy_flags(args, out), args.steps, train), out / "train.log")
    stages.update()
    for r in range(1, args.dagger_rounds + 1):
        stages.set_postfix_str(f"DAgger round {r}/{args.dagger_rounds}")
        ckpt = dagger_round(args, r, ckpt, data, times)
    policy = out / "policy"
    package_if_stale(ckpt, policy, args)
    stages.set_postfix_str("evaluating")
    ours, theirs = evaluate(args, policy, out, times)
    stages.update()
    stages.close()
    report(args, ours, theirs, times, out)
    if args.ship:
        dest = args.ship.resolve()
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(policy, dest)
        shutil.copy(out / "results.json", dest / "vision_bc_results.json")
        print(f"shipped {policy} -> {args.ship} (with vision_bc_results.json)")


def report(args, ours: dict, theirs: dict, times: dict, out: Path) -> None:
    """Print the results table and write ``OUT/results.json``."""
    eps = ours["per_episode"]
    k = len(theirs.get("successes", []))
    agree = sum(abs(a["return"] - b) <= 1e-3 + 1e-4 * abs(b) and a["success"] == s
                for a, b, s in zip(eps, theirs.get("sum_rewards", []), theirs.get("successes", [])))
    lo, hi = ours["success_rate_ci95"]
    dagger = (f", then {args.dagger_rounds} DAgger round(s) of {args.dagger_episodes} rollouts + {args.dagger_steps} steps"
              if args.dagger_rounds else "")
    te = f", temporal ensembling {args.temporal_ensemble:g}" if args.temporal_ensemble is not None else ""
    if args.checkpoint:
        print(f"\n{args.policy}: the trained policy {args.checkpoint}, weights {args.weights_dtype}{te}")
    else:
        print(f"\n{args.policy}: {args.demos} demos (expert noise {args.demo_noise:g} rad, close within {args.demo_close_tol * 1e3:g} mm), "
              f"{args.steps} lerobot-train steps{dagger}, {args.image_size} px, cameras {args.cameras}{te}")
    print(f"{'evaluator':40s} {'episodes':>8s} {'success':>8s} {'95% CI':>13s} {'mean return':>12s} {'wall s':>8s}")
    print(f"{'run_mujoco_simulation --model-type lerobot':40s} {len(eps):8d} {ours['success_rate']:8.0%} "
          f"{f'{lo:.0%}-{hi:.0%}':>13s} {ours['mean_return']:12.1f} {times.get('eval_ours_s', 0):8.0f}")
    if k:
        print(f"{'lerobot-eval --env.type=so101_pickplace':40s} {k:8d} {np.mean(theirs['successes']):8.0%} {'':>13s} "
              f"{np.mean(theirs['sum_rewards']):12.1f} {times.get('eval_lerobot_s', 0):8.0f}")
        print(f"the first {k} episodes: same return and success in both evaluators in {agree}/{k}")
    print("times: " + ", ".join(f"{key} {v:.0f}" for key, v in times.items()))
    results = {"args": {k: str(v) for k, v in vars(args).items()}, "times_s": times,
               "ours": {"success_rate": ours["success_rate"], "ci95": ours["success_rate_ci95"],
                        "mean_return": ours["mean_return"], "seeds": ours["seeds"],
                        "success": [e["success"] for e in eps], "returns": [e["return"] for e in eps]},
               "lerobot_eval": {"success": theirs.get("successes"), "returns": theirs.get("sum_rewards"), "agree": agree}}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
