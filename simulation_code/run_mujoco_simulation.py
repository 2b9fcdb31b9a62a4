r"""Run a policy on the SO-101 pick-up task and report its success rate.

Copy-paste (from simulation_code/):

    python run_mujoco_simulation.py --model-type scripted --episodes 10 --headless \
        --video-dir ../outputs/videos --summary-json ../outputs/summary.json

Prints a progress bar over episodes and one result line; writes one mp4 per episode
(``--video-dir``; after a success the video goes on for about 1 s, holding the last action, so
the lift is visible: the reported length, return and success end at the success), a JSON
summary (``--summary-json``; paths in it are relative to the repository root) and, with
``--report DIR``, a one-page HTML evaluation report with an animated preview of each episode
(eval_report.py). Episode i uses seed SEED+i, so a run is
reproducible. ``--model-type smolvla`` (default) and ``pi0`` run the VLAs, ``scripted`` the
scripted expert.

VLAs (options: ``--policy-path --camera-map --task --frame --quantize/--no-quantize --device
--n-action-steps``; docs/vla.md):

    python run_mujoco_simulation.py --headless                      # lerobot/smolvla_base
    python run_mujoco_simulation.py --model-type pi0 --headless     # lerobot/pi0
    python make_tiny_policies.py --out ../outputs/tiny_policies     # offline, random weights
    python run_mujoco_simulation.py --model-type pi0 --policy-path ../outputs/tiny_policies/pi0 \
        --headless --max-steps 20 --video-dir ../outputs/tiny_pi0

Without the weights cached and without the Hub, it prints one message (what to download, how)
and exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
import time

import mujoco_rendering  # noqa: F401  (chooses the GL backend before mujoco is imported)

import gymnasium as gym
from tqdm import tqdm

import cli_args
import envs  # noqa: F401  (registers the env ids)
import eval_report
import rollout_utils as ru
import so101_mujoco_utils as u


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=cli_args.DefaultsHelpFormatter)
    parser.add_argument("--model-type", default=ru.DEFAULT_MODEL_TYPE, choices=ru.MODEL_TYPES,
                        help="policy to run (default: %(default)s)")
    ru.add_run_args(parser)
    ru.add_policy_args(parser)
    args = parser.parse_args(argv)
    problem = cli_args.policy_path_problem(args.policy_path, args.model_type)
    if problem:
        parser.error(problem)
    return args


def _portable_info(info: dict) -> dict:
    """A VLA load report for the summary: its local paths relative to the repository root."""
    return {k: (ru.repo_path(v) if k in ("policy_path", "policy_dir") and v else v) for k, v in info.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.verbose:
        mujoco_rendering.print_backend()
    if not args.headless and not mujoco_rendering.has_display():  # before the scene is built
        print("No display found: add --headless (videos still work with --video-dir).", file=sys.stderr)
        return 2
    make_kwargs = {"render_mode": None if args.headless else "human"}
    if args.max_steps is not None:
        make_kwargs["max_episode_steps"] = args.max_steps
    make_kwargs.update(ru.OBS_KWARGS[args.model_type])
    env = gym.make(args.env_id, **make_kwargs)
    env.unwrapped.render_camera = args.video_camera
    try:
        policy = ru.make_sim_policy(args.model_type, args, env)
    except ru.PolicySetupError as e:
        env.close()
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code  # 2: a refused checkpoint file (flow_policy.CheckpointError)

    if args.report and not args.video_dir:
        args.video_dir = args.report / "videos"
    report = eval_report.EvalReport()
    episodes = []
    t0 = time.perf_counter()
    bar = tqdm(range(args.episodes), desc=f"{policy.name} episodes", unit="ep")
    try:
        for i in bar:
            seed = args.seed + i
            obs, info = env.reset(seed=seed)
            policy.reset()
            video = ru.VideoWriter(args.video_dir / f"episode_{i:03d}.mp4") if args.video_dir else None
            if video:
                video.append(env.unwrapped.render())
            ep_return, length, success, done, unstable, terminated = 0.0, 0, False, False, False, False
            while not done:
                action = policy.act(obs, env)
                report.add_step(i, action)
                obs, reward, terminated, truncated, info = env.step(action)
                ep_return += reward
                length += 1
                success = success or info["is_success"]
                unstable = ru.episode_unstable(unstable, info)
                done = terminated or truncated
                if video:
                    video.append(env.unwrapped.render())
            tail = ru.record_success_tail(env, video, action, bool(terminated and success))  # video only
            episodes.append({
                "seed": seed, "return": ep_return, "length": length, "success": bool(success),
                "sim_unstable": unstable, "block_start": env.unwrapped.initial_block_pos.tolist(),
                "video": ru.repo_path(video.close()) if video else None, "video_tail_frames": tail,
            })
            rate = sum(e["success"] for e in episodes) / len(episodes)
            bar.set_postfix(success=f"{rate:.0%}", ret=f"{ep_return:.1f}")
    finally:
        env.close()
    summary = ru.summarize(episodes, policy.name, {
        "env_id": args.env_id, "control_hz": u.CONTROL_HZ, "wall_time_s": time.perf_counter() - t0,
        **({"policy_info": _portable_info(policy.describe())} if hasattr(policy, "describe") else {}),
    })
    eval_report.finish_run(args, summary, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
