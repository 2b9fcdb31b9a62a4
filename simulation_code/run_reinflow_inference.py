"""Run a BC or ReinFlow checkpoint in the MuJoCo env (model type auto-detected from the file).

Copy-paste (from simulation_code/):

    python run_reinflow_inference.py --episodes 10 --headless \
        --video-dir ../outputs/reinflow_videos --summary-json ../outputs/reinflow_summary.json

``--checkpoint`` defaults to the shipped ReinFlow policy, simulation_code/checkpoints/flow_reinflow.pt.

Same episode options as run_mujoco_simulation.py (rollout_utils.add_run_args: episodes, seed,
env id, max steps, headless, videos (going on about 1 s after a success), summary JSON with paths
relative to the repository root, report). Episode i is reset with seed SEED+i and the
sampler's noise is seeded with the same number, so every episode is reproducible. The policy
runs the deterministic ODE sampler (the noise head is dropped at deployment) unless
``--stochastic`` samples with the checkpoint's ReinFlow noise head. The first 3 inferences print
debug output (observation, chunk, timing).
"""

from __future__ import annotations

import argparse
import sys
import time

import mujoco_rendering  # noqa: F401  (GL backend before mujoco)

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

import cli_args
import envs  # noqa: F401  (registers the env ids)
import eval_report
import flow_policy as fp
import rollout_utils as ru
import so101_mujoco_utils as u
from reinflow_smolvla import NoiseHead, sample_chain

DEBUG_INFERENCES = 3
#: The shipped ReinFlow flow policy (benchmarks/reinflow_flow.py --ship), the default --checkpoint.
SHIPPED_CHECKPOINT = u.REPO_ROOT / "simulation_code" / "checkpoints" / "flow_reinflow.pt"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=cli_args.DefaultsHelpFormatter)
    p.add_argument("--checkpoint", type=cli_args.existing_file, default=str(SHIPPED_CHECKPOINT),
                   help="BC (train_flow_bc.py) or ReinFlow (train_reinflow.py) checkpoint (default: the shipped "
                        "ReinFlow flow policy, %(default)s)")
    p.add_argument("--model-type", default="auto", choices=("auto", "flow", "smolvla", "pi0"),
                   help="override the model type recorded in the checkpoint (default: auto-detect)")
    p.add_argument("--stochastic", action="store_true", help="sample with the ReinFlow noise head (ReinFlow checkpoints)")
    p.add_argument("--num-denoise-steps", type=cli_args.positive_int, default=None,
                   help="Euler steps K (default: the ReinFlow K, else the policy's)")
    ru.add_run_args(p)
    ru.add_policy_args(p)  # VLA checkpoints: the base policy (default: the path recorded in the checkpoint), ...
    args = p.parse_args(argv)
    if args.model_type != "flow":  # --policy-path: a VLA base (a flow checkpoint holds its whole policy)
        problem = cli_args.policy_path_problem(args.policy_path, "smolvla")
        if problem:
            p.error(problem)
    return args


def detect_model_type(ckpt: dict) -> str:
    """Model type recorded in a checkpoint ("flow", "smolvla", "pi0").

    Raises:
        ValueError: the checkpoint records none.
    """
    mt = ckpt.get("model_type")
    if mt not in ("flow", "smolvla", "pi0"):
        raise ValueError(f"checkpoint records no known model_type (got {mt!r})")
    return mt


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    if args.verbose:
        mujoco_rendering.print_backend()
    if not args.headless and not mujoco_rendering.has_display():
        print("No display found: add --headless (videos still work with --video-dir).", file=sys.stderr)
        return 2
    try:
        ckpt = fp.load_checkpoint(args.checkpoint)  # any kind and model type of this repo
    except fp.CheckpointError as e:  # unsafe, corrupt, missing, a folder, not ours: one line, status 2
        print(f"error: {e}", file=sys.stderr)
        return 2
    detected = detect_model_type(ckpt)
    model_type = detected if args.model_type == "auto" else args.model_type
    kind = ckpt.get("kind", "?")
    print(f"checkpoint {args.checkpoint}: kind={kind}, model_type={detected}"
          + (f" (overridden: {model_type})" if model_type != detected else "")
          + f", iteration={ckpt.get('iteration', 0)}")
    if model_type == "flow":
        policy = fp.FlowPolicy.from_checkpoint(ckpt)
    else:  # SmolVLA / Pi0: rebuild the base from the recorded path (or --policy-path), apply the delta strictly
        import reinflow_vla as rv

        if args.quantize:
            raise SystemExit("--quantize: ReinFlow VLA checkpoints run with float weights (the delta is float)")
        if ckpt.get("model_type") != model_type:
            raise SystemExit(f"--model-type {model_type}: the checkpoint holds a {detected} delta")
        policy = rv.load_for_inference(ckpt, args)
    head = None
    k = args.num_denoise_steps or policy.num_denoise_steps
    if kind == "reinflow":
        k = args.num_denoise_steps or ckpt["reinflow_config"]["num_steps"]
        nh = ckpt["noise_head_config"]
        head = NoiseHead(nh["hidden_dim"], nh["action_dim"], nh["sigma_min"], nh["sigma_max"], nh["width"],
                         nh.get("detach_features", True))
        head.to(policy.device, getattr(policy, "dtype", torch.float32))  # float64 for the flow policy
        fp.strict_load_state_dict(head, ckpt["noise_head_state"], "noise head")
        head.eval()
    if args.stochastic and head is None:
        raise SystemExit("--stochastic needs a ReinFlow checkpoint (a BC checkpoint has no noise head)")

    make_kwargs = {"obs_mode": "state", "include_env_state": True, "render_mode": None if args.headless else "human"}
    if model_type != "flow":  # the VLAs see the three cameras at the training image size
        make_kwargs.update(obs_mode="images", image_size=int(ckpt["base_policy"].get("image_size") or u.IMAGE_SIZE))
    if args.max_steps is not None:
        make_kwargs["max_episode_steps"] = args.max_steps
    env = gym.make(args.env_id, **make_kwargs)
    env.unwrapped.render_camera = args.video_camera
    name = f"{model_type}-{kind}" + ("-stochastic" if args.stochastic else "")

    if args.report and not args.video_dir:
        args.video_dir = args.report / "videos"
    report = eval_report.EvalReport()
    episodes, n_inf = [], 0
    t0 = time.perf_counter()
    bar = tqdm(range(args.episodes), desc=f"{name} episodes", unit="ep")
    try:
        for i in bar:
            seed = args.seed + i
            gen = torch.Generator().manual_seed(seed)
            obs, info = env.reset(seed=seed)
            video = ru.VideoWriter(args.video_dir / f"episode_{i:03d}.mp4") if args.video_dir else None
            if video:
                video.append(env.unwrapped.render())
            ep_return, length, success, done, unstable, terminated, a = 0.0, 0, False, False, False, False, None
            while not done:
                t_inf = time.perf_counter()
                batch = policy.prepare_batch({kk: np.asarray(v)[None] for kk, v in obs.items()})
                s = sample_chain(policy, head, batch, k, deterministic=not args.stochastic, generator=gen)
                chunk = policy.to_mujoco_actions(s.x, batch)[0]
                if n_inf < DEBUG_INFERENCES:
                    print(f"[debug inference {n_inf}] episode {i} step {length}: state(rad)={np.round(obs[u.OBS_STATE], 3)} "
                          f"block(m)={np.round(obs[u.OBS_ENV_STATE][:3], 3)} K={k} "
                          f"{'sigma=%.3f ' % s.sigma_mean if args.stochastic else ''}"
                          f"chunk[0](rad)={np.round(chunk[0], 3)} chunk[{policy.n_action_steps - 1}]="
                          f"{np.round(chunk[policy.n_action_steps - 1], 3)} ({1e3 * (time.perf_counter() - t_inf):.1f} ms)")
                n_inf += 1
                for a in chunk[: policy.n_action_steps]:
                    report.add_step(i, a)
                    obs, reward, terminated, truncated, info = env.step(a)
                    ep_return += reward
                    length += 1
                    success = success or info["is_success"]
                    unstable = ru.episode_unstable(unstable, info)
                    done = terminated or truncated
                    if video:
                        video.append(env.unwrapped.render())
                    if done:
                        break
            tail = ru.record_success_tail(env, video, a, bool(terminated and success))  # video only
            episodes.append({"seed": seed, "return": ep_return, "length": length, "success": bool(success),
                             "sim_unstable": unstable, "block_start": env.unwrapped.initial_block_pos.tolist(),
                             "video": ru.repo_path(video.close()) if video else None, "video_tail_frames": tail})
            rate = sum(e["success"] for e in episodes) / len(episodes)
            bar.set_postfix(success=f"{rate:.0%}", ret=f"{ep_return:.1f}")
    finally:
        env.close()
    summary = ru.summarize(episodes, name, {
        "env_id": args.env_id, "control_hz": u.CONTROL_HZ, "wall_time_s": time.perf_counter() - t0,
        "checkpoint": ru.repo_path(args.checkpoint), "checkpoint_kind": kind, "model_type": model_type,
        "stochastic": bool(args.stochastic), "num_denoise_steps": k, "inferences": n_inf,
    })
    eval_report.finish_run(args, summary, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
