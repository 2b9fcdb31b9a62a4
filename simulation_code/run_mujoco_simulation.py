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
reproducible. ``--model-type smolvla`` (default) and ``pi0`` run the VLAs, ``flow`` the small
flow policy (default: the shipped ReinFlow checkpoint), ``scripted`` the scripted expert, and
``lerobot`` any LeRobot policy checkpoint (ACT, Diffusion, ...: ``--policy-path DIR``, e.g. a
``lerobot-train`` run's ``checkpoints/NNNNNN/pretrained_model``; the env gets the cameras, image
size and rate it was trained with; docs/lerobot.md); the table of types is policy_registry.POLICIES.

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

from so101_sim import mujoco_rendering  # noqa: F401  (chooses the GL backend before mujoco is imported)

import gymnasium as gym

from so101_sim import cli_args
from so101_sim import envs  # noqa: F401  (registers the env ids)
from so101_sim import eval_report
from so101_sim import policy_registry as pr
from so101_sim import rollout_utils as ru


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=cli_args.DefaultsHelpFormatter)
    parser.add_argument("--model-type", default=pr.DEFAULT_MODEL_TYPE, choices=pr.MODEL_TYPES,
                        help="policy to run: " + "; ".join(f"{k}: {e.description}" for k, e in pr.POLICIES.items()))
    ru.add_run_args(parser)
    ru.add_policy_args(parser)
    args = parser.parse_args(argv)
    if args.model_type == "lerobot" and not args.policy_path:
        parser.error("--model-type lerobot needs --policy-path: a LeRobot checkpoint directory "
                     "(e.g. OUT/checkpoints/000100/pretrained_model of lerobot-train) or a Hub id")
    problem = cli_args.policy_path_problem(args.policy_path, args.model_type)
    if problem:
        parser.error(problem)
    return args


def _portable_info(info: dict) -> dict:
    """A VLA load report for the summary: its local paths relative to the repository root."""
    return {k: (ru.repo_path(v) if k in ("policy_path", "policy_dir") and v else v) for k, v in info.items()}


def simulate(args, env_kwargs: dict, make_policy, extra=None) -> int:
    """The run both run_mujoco_simulation.py and run_reinflow_inference.py do: the display check
    (before the scene is built), the env (``gym.make(args.env_id, **env_kwargs)``, the viewer
    unless ``--headless``), the sim policy ``make_policy(env)`` (policy_registry), ``--episodes``
    episodes from ``--seed`` (rollout_utils.run_episodes), then the summary JSON and report
    (eval_report.finish_run) with ``extra()`` (a callable, called after the episodes) in the summary. Returns the exit status (2: no
    display, or a refused checkpoint; 1: a policy that cannot be set up)."""
    if args.verbose:
        mujoco_rendering.print_backend()
    if not args.headless and not mujoco_rendering.has_display():  # before the scene is built
        print("No display found: add --headless (videos still work with --video-dir).", file=sys.stderr)
        return 2
    kwargs = dict(env_kwargs, render_mode=None if args.headless else "human")
    if args.max_steps is not None:
        kwargs["max_episode_steps"] = args.max_steps
    env = gym.make(args.env_id, **kwargs)
    try:
        policy = make_policy(env)
    except pr.PolicySetupError as e:
        env.close()
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code  # 2: a refused checkpoint file (checkpoint_io.CheckpointError)
    if args.report and not args.video_dir:
        args.video_dir = args.report / "videos"
    report = eval_report.EvalReport()
    t0 = time.perf_counter()
    try:
        episodes = ru.run_episodes(env, policy, [args.seed + i for i in range(args.episodes)], args.video_dir, report,
                                   video_camera=args.video_camera)
    finally:
        env.close()
    info = {"policy_info": _portable_info(policy.describe())} if hasattr(policy, "describe") else {}
    summary = ru.summarize(episodes, policy.name, {"env_id": args.env_id, "control_hz": env.unwrapped.control_hz,
                                                   "wall_time_s": time.perf_counter() - t0, **info, **(extra() if extra else {})})
    eval_report.finish_run(args, summary, report)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        env_kwargs = pr.sim_env_kwargs(args.model_type, args)
    except pr.PolicySetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return simulate(args, env_kwargs, lambda env: pr.make_sim_policy(args.model_type, args, env))


if __name__ == "__main__":
    sys.exit(main())
