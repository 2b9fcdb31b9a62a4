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
``--stochastic`` samples with the checkpoint's ReinFlow noise head. With ``-v`` the first 3
inferences print debug output (observation, chunk, timing).

``--base`` evaluates a VLA as it is, with no checkpoint: ``--model-type smolvla --policy-path DIR
--base`` runs the base policy through the same ChunkPolicy sampler (x_0 seeded by the episode seed,
K Euler steps) a ReinFlow checkpoint of it runs with, so a BC start point and its fine-tuned
checkpoint are compared under one sampler (benchmarks/reinflow_vision.py). The env renders the
cameras at the base checkpoint's input size.

A thin wrapper: the checkpoint becomes a policy_registry.ChunkPolicy, and the run is
run_mujoco_simulation.simulate (the same episode loop, videos, summary and report).
"""

from __future__ import annotations

import argparse
import sys

from so101_sim import mujoco_rendering  # noqa: F401  (GL backend before mujoco)

from so101_sim import cli_args
from so101_sim import checkpoint_io as ckio
from so101_sim import envs  # noqa: F401  (registers the env ids)
from so101_sim import policy_registry as pr
from so101_sim import rollout_utils as ru
from so101_sim import so101_mujoco_utils as u
from so101_sim.run_mujoco_simulation import simulate

#: Inferences printed with ``-v``.
DEBUG_INFERENCES = 3


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=cli_args.DefaultsHelpFormatter)
    p.add_argument("--checkpoint", type=cli_args.existing_file, default=str(pr.SHIPPED_CHECKPOINTS["reinflow"]),
                   help="BC (train_flow_bc.py), ReinFlow (train_reinflow.py) or policy-only checkpoint (default: the "
                        "shipped ReinFlow flow policy, %(default)s)")
    p.add_argument("--model-type", default="auto", choices=("auto", *pr.REINFLOW_MODEL_TYPES),
                   help="the model type the checkpoint must hold (default: the one it records)")
    p.add_argument("--base", action="store_true",
                   help="no checkpoint: evaluate the --policy-path VLA (--model-type smolvla|pi0) as it is, through the "
                        "sampler its ReinFlow checkpoints run with (its BC start point)")
    p.add_argument("--stochastic", action="store_true", help="sample with the ReinFlow noise head (ReinFlow checkpoints)")
    p.add_argument("--num-denoise-steps", type=cli_args.positive_int, default=None,
                   help="Euler steps K (default: the ReinFlow K, else the policy's)")
    ru.add_run_args(p)
    ru.add_policy_args(p)  # VLA checkpoints: the base policy (default: the path recorded in the checkpoint), ...
    args = p.parse_args(argv)
    if args.base and (args.model_type not in ("smolvla", "pi0") or not args.policy_path or args.stochastic):
        p.error("argument --base: needs --model-type smolvla|pi0 and --policy-path DIR, and no --stochastic (a base "
                f"policy has no noise head); got --model-type {args.model_type}, --policy-path {args.policy_path}")
    if args.model_type != "flow":  # --policy-path: a VLA base (a flow checkpoint holds its whole policy)
        problem = cli_args.policy_path_problem(args.policy_path, "smolvla")
        if problem:
            p.error(problem)
    return args


def checkpoint_policy(args, ckpt: ckio.Checkpoint) -> pr.ChunkPolicy:
    """The sim policy of a loaded checkpoint: the flow policy rebuilt from it, or a VLA base with
    the checkpoint's delta applied (reinflow_vla.load_for_inference); the noise head from its
    stored config with ``--stochastic``; K from ``--num-denoise-steps``, else the ReinFlow K.

    Raises:
        policy_registry.PolicySetupError: a VLA base that cannot be loaded or does not match,
            ``--stochastic`` without a noise head, ``--quantize`` with a VLA delta.
    """
    import torch

    torch.set_num_threads(1)
    if ckpt.model_type == "flow":
        from so101_sim.flow_policy import FlowPolicy

        policy = FlowPolicy.from_checkpoint(ckpt)
    else:
        from so101_sim import reinflow_vla as rv

        if args.quantize:
            raise pr.PolicySetupError("--quantize: ReinFlow VLA checkpoints run with float weights (the delta is float)")
        try:
            policy = rv.load_for_inference(ckpt, args)
        except (RuntimeError, ValueError) as e:
            raise pr.PolicySetupError(str(e)) from e
    head = ckpt.build_noise_head(policy.device, getattr(policy, "dtype", torch.float32)) if args.stochastic else None
    if args.stochastic and head is None:
        raise pr.PolicySetupError("--stochastic needs a ReinFlow checkpoint (a BC checkpoint has no noise head)")
    k = args.num_denoise_steps or (ckpt.reinflow_config or {}).get("num_steps") or policy.num_denoise_steps
    name = f"{ckpt.model_type}-{ckpt.kind}" + ("-stochastic" if args.stochastic else "")
    return pr.ChunkPolicy(policy, head, k, name=name, debug=DEBUG_INFERENCES if args.verbose else 0)


def base_policy_run(args) -> int:
    """``--base``: the ``--policy-path`` VLA with no delta as a ChunkPolicy (K = ``--num-denoise-steps``,
    else the policy's), cameras at the checkpoint's input size (lerobot_policy.sim_setup)."""
    from so101_sim import reinflow_vla as rv
    from so101_sim.hub_download import PolicyLoadError
    from so101_sim.lerobot_policy import sim_setup

    try:
        h, w = sim_setup(args.policy_path).image_hw
        image_size = h if h == w else (h, w)
    except PolicyLoadError as e:  # not a local pretrained_model folder (e.g. a hub id): the registry's size
        image_size = u.IMAGE_SIZE
        if args.verbose:
            print(f"[setup] image size: {e}; using {u.IMAGE_SIZE}")
    env_kwargs = dict(pr.entry(args.model_type).env_kwargs, include_env_state=True, image_size=image_size)
    policies: list[pr.ChunkPolicy] = []

    def make_policy(env):
        import torch

        torch.set_num_threads(1)
        policy = rv.load_policy(args.model_type, args.policy_path, device=args.device, frame=args.frame,
                                camera_map=args.camera_map, task=args.task, n_action_steps=args.n_action_steps)
        policy.model.eval()
        policies.append(pr.ChunkPolicy(policy, None, args.num_denoise_steps, name=f"{args.model_type}-base",
                                       debug=DEBUG_INFERENCES if args.verbose else 0))
        return policies[-1]

    return simulate(args, env_kwargs, make_policy, extra=lambda: {
        "policy_path": str(args.policy_path), "checkpoint_kind": "base", "model_type": args.model_type,
        "stochastic": False, "num_denoise_steps": policies[0].num_steps, "inferences": policies[0].inferences})


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.base:
        return base_policy_run(args)
    try:  # any kind of this repo; the model type when --model-type names one
        ckpt = ckio.load(args.checkpoint, model_type=None if args.model_type == "auto" else args.model_type)
    except ckio.CheckpointError as e:  # unsafe, corrupt, missing, a folder, not ours: one line, status 2
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"checkpoint {args.checkpoint}: kind={ckpt.kind}, model_type={ckpt.model_type}, iteration={ckpt.iteration}")
    env_kwargs = dict(pr.entry(ckpt.model_type).env_kwargs, include_env_state=True)
    if ckpt.model_type != "flow":  # the VLAs see the three cameras at the training image size
        env_kwargs["image_size"] = int((ckpt.base_policy or {}).get("image_size") or u.IMAGE_SIZE)
    policies: list[pr.ChunkPolicy] = []

    def make_policy(env):
        policies.append(checkpoint_policy(args, ckpt))
        return policies[-1]

    return simulate(args, env_kwargs, make_policy, extra=lambda: {
        "checkpoint": ru.repo_path(args.checkpoint), "checkpoint_kind": ckpt.kind, "model_type": ckpt.model_type,
        "stochastic": bool(args.stochastic), "num_denoise_steps": policies[0].num_steps,
        "inferences": policies[0].inferences})


if __name__ == "__main__":
    sys.exit(main())
