"""ReinFlow for the VLAs (SmolVLA, Pi0): per-model settings, trainable presets, delta checkpoints,
activation checkpointing per denoising step.

reinflow_backends.VLABackend (train_reinflow.py) and run_reinflow_inference.py call into this
module for ``--model-type smolvla`` and ``pi0``; the engine (reinflow_engine.py), the rollout
(reinflow_rollout.py) and the several-process hooks (distributed.py) are the same for every policy.

* **Per-model settings** (:data:`VLA_SETTINGS`, the spec's table): SmolVLA minibatch 8, gradient
  accumulation 15, policy lr 5e-6; Pi0 minibatch 2, accumulation 30, lr 2.5e-6, gradient
  checkpointing on; PPO clip 0.01 for both; checkpoint file ``outputs/reinflow/reinflow_checkpoint.pt``
  / ``outputs/reinflow/reinflow_pi0_checkpoint.pt`` under the repository root; device ``auto``.
  train_reinflow.py builds its parser with these as the defaults of ``--model-type`` (so ``--help``
  after ``--model-type pi0`` shows Pi0's); a flag on the command line wins; :func:`describe_settings`
  is the line printed at start.
* **Presets** (``--trainable``): the VLM is always frozen. ``expert``: the action expert
  transformer + action in/out projections + action-time MLP + state projection + noise head;
  ``heads``: only the projections, time MLP and noise head (the adapters'
  ``trainable_parameter_groups``). Everything else has ``requires_grad=False``.
* **Critic**: the engine's separate small MLP on the privileged low-dimensional state (joint
  angles + block pose, ``observation.environment_state``), i.e. an asymmetric actor-critic: the
  actor sees only the three cameras + joint state, the critic (training only, dropped at
  deployment) sees the true block pose. Chosen over a value head on pooled expert features
  because (1) the expert's hidden state depends on the denoising time and noisy action x_t, not
  only on the observation, so it is a poor state summary; (2) values for every decision and its
  bootstrap observation would cost a VLM forward each; (3) the privileged state is exact in
  simulation and the critic never runs on the robot.
* **Checkpoints hold only what changed**: the trainable groups' tensors (by parameter name),
  noise head, critic, optimizer states, RNG, history, plus ``base_policy`` = the path/Hub id it was
  built from, the resolved directory, the Hub revision (snapshot commit) when it came from the
  Hub cache, the frame/camera map/task/n_action_steps used, and a fingerprint of the frozen
  weights. :func:`apply_checkpoint` rebuilds nothing partially: the tensor names must equal the
  preset's parameter names exactly (missing/unexpected/shape-mismatched keys are named) and the
  frozen-weight fingerprint must match the rebuilt base (a different base is refused).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from so101_sim import cli_args
import numpy as np
from so101_sim import so101_mujoco_utils as u
import torch

#: Default folder of train_reinflow.py's checkpoints (and their CSV logs, evaluation videos), all
#: model types: ``outputs/`` at the repository root is git-ignored, so no default overwrites a
#: tracked file.
REINFLOW_OUTPUT_DIR = u.REPO_ROOT / "outputs" / "reinflow"
#: The spec's per-model training settings ("Training Settings Comparison"); train_reinflow.py's
#: parser defaults for ``--model-type smolvla`` / ``pi0``.
VLA_SETTINGS: dict[str, dict[str, Any]] = {
    "smolvla": {"batch_size": 8, "grad_accum": 15, "policy_lr": 5e-6, "gradient_checkpointing": False, "clip": 0.01,
                "checkpoint": REINFLOW_OUTPUT_DIR / "reinflow_checkpoint.pt", "device": "auto"},
    "pi0": {"batch_size": 2, "grad_accum": 30, "policy_lr": 2.5e-6, "gradient_checkpointing": True, "clip": 0.01,
            "checkpoint": REINFLOW_OUTPUT_DIR / "reinflow_pi0_checkpoint.pt", "device": "auto"},
}
PRESETS = ("expert", "heads")


# ---------------------------------------------------------------------- command line
def add_vla_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The VLA-only options of train_reinflow.py (ignored by ``--model-type flow``)."""
    g = parser.add_argument_group("VLAs (--model-type smolvla|pi0)")
    g.add_argument("--trainable", default="expert", choices=PRESETS,
                   help="what trains besides the noise head (VLM always frozen): expert = action expert + "
                        "projections + time MLP; heads = projections + time MLP only (default %(default)s)")
    g.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="recompute each denoising step's activations in backward (the --model-type default: on for "
                        "pi0, off for smolvla)")
    g.add_argument("--image-size", type=cli_args.image_size, default=u.IMAGE_SIZE,
                   help="camera image size (pixels, square, 16-480)")
    g.add_argument("--frame", default="auto", help="joint frame of the base checkpoint (vla_frames.FRAMES; "
                                                   "auto: the recorded one)")
    g.add_argument("--camera-map", type=cli_args.camera_map, default=None, help="sim camera -> checkpoint image key (see run_mujoco_simulation.py)")
    g.add_argument("--task", type=cli_args.task_string, default=None, help="language instruction, one line (default: the checkpoint's training task)")
    g.add_argument("--n-action-steps", type=cli_args.positive_int, default=None, help="actions executed per chunk (default: the checkpoint's)")
    g.add_argument("--env-start-method", default="forkserver", choices=("forkserver", "spawn", "fork"),
                   help="multiprocessing start method of the env workers, all model types (fork hangs after EGL init)")
    return parser


def describe_settings(args: argparse.Namespace) -> str:
    """The line train_reinflow.py prints at start for a VLA: each :data:`VLA_SETTINGS` value in
    ``args``, marked ``(default)`` where it equals the ``--model-type`` default, plus the preset and
    image size.

    Raises:
        ValueError: ``args.model_type`` is not a VLA.
    """
    if args.model_type not in VLA_SETTINGS:
        raise ValueError(f"{args.model_type!r} has no VLA settings")
    parts = [f"{k}={getattr(args, k)}{' (default)' if getattr(args, k) == v else ''}"
             for k, v in VLA_SETTINGS[args.model_type].items()]
    return (f"[reinflow {args.model_type}] settings: " + ", ".join(parts)
            + f", trainable={args.trainable}, image_size={args.image_size}")


# ---------------------------------------------------------------------- policies
#: Appended to the offline message of train_reinflow.py (no VLA weights cached, no Hub): training
#: that needs no download at all.
OFFLINE_TRAINING_HINT = ("To train offline on a CPU with no download, use the small flow policy and its shipped BC "
                         "checkpoint (from simulation_code/):\n"
                         "  python train_reinflow.py --model-type flow --init-checkpoint checkpoints/flow_bc.pt "
                         "--parallel-envs 2 --iterations 60")


def load_policy(model_type: str, path: str | None, *, device: str | None = "auto", frame: str = "auto",
                camera_map=None, task: str | None = None, n_action_steps: int | None = None,
                gradient_checkpointing: bool | None = None, verbose: bool = True, offline_hint: str = "",
                frame_source: str | None = None, camera_map_source: str | None = None):
    """Load the base VLA (float weights, never quantized: they train) through the registry
    (policy_registry.load_policy; default path: its entry's). ``frame_source`` /
    ``camera_map_source``: where a non-default ``frame`` / ``camera_map`` came from when not from
    the command line (printed and recorded; vla_frames.resolve_frame).

    Raises:
        SystemExit: the adapter cannot load it (offline without weights, wrong type, ...), with
            the adapter's message (plus ``offline_hint`` when the weights are unavailable offline).
    """
    from so101_sim import policy_registry as pr
    from so101_sim.hub_download import PolicyUnavailableOffline

    try:
        return pr.load_policy(model_type, path, device=device, frame=frame or "auto", camera_map=camera_map, task=task,
                              quantize=False, n_action_steps=n_action_steps, gradient_checkpointing=gradient_checkpointing,
                              debug_inferences=0, verbose=verbose, frame_source=frame_source,
                              camera_map_source=camera_map_source)
    except pr.PolicySetupError as e:
        hint = f"\n{offline_hint}" if offline_hint and isinstance(e.__cause__, PolicyUnavailableOffline) else ""
        raise SystemExit(f"--model-type {model_type}: {e}{hint}") from e


def load_training_policy(args, ckpt=None):
    """The VLA to fine-tune: the base from ``--policy-path`` (or, on ``--resume``, the path recorded
    in the checkpoint), with ``args.gradient_checkpointing`` (LeRobot's switch, plus
    :func:`enable_step_checkpointing`), and, on resume, the checkpoint's trainable tensors applied
    strictly (its preset wins over ``--trainable``, with a message).

    Raises:
        SystemExit: the base cannot be loaded, or the resume checkpoint is not a VLA delta one.
    """
    base = (ckpt.base_policy if ckpt is not None else None) or {}
    if ckpt is not None and ckpt.base_policy is None:
        raise SystemExit(f"--resume: {args.resume} is not a {args.model_type} ReinFlow checkpoint")
    path = args.policy_path or base.get("path")
    frame, cmap = args.frame if args.frame != "auto" else base.get("frame", "auto"), args.camera_map or base.get("camera_map")
    recorded = "recorded in the resumed ReinFlow checkpoint"
    policy = load_policy(args.model_type, path, device=args.device, frame=frame, camera_map=cmap,
                         task=args.task or base.get("task"), n_action_steps=args.n_action_steps or base.get("n_action_steps"),
                         gradient_checkpointing=args.gradient_checkpointing, verbose=getattr(args, "_is_main", True),
                         offline_hint=OFFLINE_TRAINING_HINT,
                         frame_source=recorded if args.frame == "auto" and base.get("frame") else None,
                         camera_map_source=recorded if not args.camera_map and base.get("camera_map") else None)
    if ckpt is not None:
        if ckpt.trainable_preset != args.trainable:
            print(f"resume: --trainable {ckpt.trainable_preset} (from the checkpoint; {args.trainable} ignored)")
            args.trainable = ckpt.trainable_preset
        apply_checkpoint(policy, ckpt)
    if args.gradient_checkpointing:
        enable_step_checkpointing(policy)
    policy.model.eval()
    return policy


def _checkpointed_denoise_step(self, prefix, x_t, t):
    inner = super(type(self), self).denoise_step
    if not torch.is_grad_enabled():
        return inner(prefix, x_t, t)
    return torch.utils.checkpoint.checkpoint(inner, prefix, x_t, t, use_reentrant=False)


def enable_step_checkpointing(policy) -> None:
    """Activation checkpointing per denoising step: while gradients are on, every
    ``policy.denoise_step`` runs under ``torch.utils.checkpoint`` (non-reentrant), so backward
    keeps one step's expert activations at a time instead of K (the ReinFlow update runs the model
    in eval mode, where LeRobot's own ``gradient_checkpointing`` switch is inactive). Same values
    and gradients (tests/test_reinflow_vla.py).

    Implemented by switching ``policy`` to a subclass of its own class (not an instance closure),
    so a ``copy.deepcopy`` of the policy (the BC reference) runs its *own* weights."""
    if getattr(policy, "_step_checkpointing", False):
        return
    base = type(policy)
    policy.__class__ = type(f"StepCheckpointed{base.__name__}", (base,),
                            {"denoise_step": _checkpointed_denoise_step, "_step_checkpointing": True,
                             "__module__": base.__module__})


# ---------------------------------------------------------------------- delta checkpoints
def trainable_names(policy, groups: dict[str, list[torch.nn.Parameter]]) -> dict[str, list[str]]:
    """{group: [parameter names in ``policy.model``]} for the given groups."""
    by_id = {id(p): n for n, p in policy.model.named_parameters()}
    return {g: [by_id[id(p)] for p in ps] for g, ps in groups.items()}


def frozen_fingerprint(policy, trainable: set[str], n: int = 4096) -> dict[str, float]:
    """{name: float64 sum of the first ``n`` elements} of every *frozen* parameter: identifies the
    base weights a delta checkpoint belongs to (cheap; compared with a tolerance)."""
    return {name: float(p.detach().flatten()[:n].double().sum().cpu())
            for name, p in policy.model.named_parameters() if name not in trainable}


def _hub_revision(policy_dir: str) -> str | None:
    parts = Path(policy_dir).resolve().parts
    if "snapshots" in parts and parts.index("snapshots") + 1 < len(parts):
        return parts[parts.index("snapshots") + 1]
    return None


def base_policy_info(policy, path: str | None, trainable: set[str], image_size: int) -> dict:
    """What a delta checkpoint records about its base (see the module docstring)."""
    info = policy.describe() if hasattr(policy, "describe") else {}
    from so101_sim import policy_registry as pr

    return {"path": str(path or pr.entry(policy.model_type).default_path), "resolved_dir": str(policy.policy_dir),
            "revision": _hub_revision(str(policy.policy_dir)), "frame": policy.frame,
            "camera_map": dict(policy.camera_map), "task": policy.task, "n_action_steps": policy.n_action_steps,
            "chunk_size": policy.chunk_size, "image_size": int(image_size),
            "num_parameters": int(sum(p.numel() for p in policy.model.parameters())),
            "frozen_fingerprint": frozen_fingerprint(policy, trainable), "stats_source": info.get("stats_source")}


def checkpoint_fields(policy, preset: str, groups: dict, base_info: dict, reference=None) -> dict:
    """The policy fields of a VLA checkpoint_io.Checkpoint: model type, preset, the trainable
    tensors only (``policy_state``, by parameter name, CPU copies), ``base_policy`` and, with a BC
    regulariser, the ``reference`` policy's trainable tensors only (``reference_state``: its
    frozen rest *is* the base), so the checkpoint stays a delta."""
    names = trainable_names(policy, groups)

    def delta(model):
        params = dict(model.named_parameters())
        return {n: params[n].detach().cpu().clone() for ns in names.values() for n in ns}

    return {"model_type": policy.model_type, "trainable_preset": preset, "trainable_groups": names,
            "base_policy": base_info, "policy_state": delta(policy.model),
            "reference_state": delta(reference.model) if reference is not None else None}


def apply_checkpoint(policy, ckpt, check_base: bool = True) -> dict[str, list[torch.nn.Parameter]]:
    """Load a delta checkpoint's trainable tensors into a freshly built base policy, strictly.

    Sets the checkpoint's preset on ``policy`` (``trainable_parameter_groups``) and returns its
    groups.

    Raises:
        RuntimeError: the checkpoint's tensors do not match the preset's parameters of this model
            (missing / unexpected / shape-mismatched names, all listed; nothing is loaded), or the
            frozen base weights differ from the ones it was trained on (parameters listed).
        ValueError: not a VLA delta checkpoint, or for another model type.
    """
    if ckpt.base_policy is None or ckpt.trainable_preset is None:
        raise ValueError("not a VLA ReinFlow checkpoint (no trainable-delta fields)")
    if ckpt.model_type != policy.model_type:
        raise ValueError(f"checkpoint model_type {ckpt.model_type!r} vs policy {policy.model_type!r}")
    groups = policy.trainable_parameter_groups(ckpt.trainable_preset)
    names = {n for ns in trainable_names(policy, groups).values() for n in ns}
    params = dict(policy.model.named_parameters())
    state = ckpt.policy_state
    missing, unexpected = sorted(names - set(state)), sorted(set(state) - names)
    shape = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(params[k].shape)}"
                   for k in names & set(state) if tuple(state[k].shape) != tuple(params[k].shape))
    if missing or unexpected or shape:
        parts = [f"missing keys {missing}" if missing else "", f"unexpected keys {unexpected}" if unexpected else "",
                 f"shape mismatches {shape}" if shape else ""]
        raise RuntimeError(f"{policy.model_type} ReinFlow checkpoint does not match the base model "
                           f"({'; '.join(p for p in parts if p)}); nothing was loaded")
    if check_base:
        want = ckpt.base_policy.get("frozen_fingerprint") or {}
        have = frozen_fingerprint(policy, names)
        bad = sorted(k for k in set(want) | set(have)
                     if k not in want or k not in have or not np.isclose(want[k], have[k], rtol=1e-4, atol=1e-4))
        if bad:
            raise RuntimeError(f"the base policy {policy.info.get('policy_path')} is not the one this checkpoint was "
                               f"trained on ({ckpt.base_policy.get('path')}): {len(bad)} frozen tensors "
                               f"differ, e.g. {bad[:5]}; nothing was loaded")
    with torch.no_grad():
        for n in names:
            params[n].copy_(state[n].to(params[n].device, params[n].dtype))
    return groups


def load_for_inference(ckpt, args) -> Any:
    """Rebuild the base VLA from the path recorded in ``ckpt`` (or ``args.policy_path``) with the
    recorded frame / camera map / task / n_action_steps (flags override), then apply the delta.

    Raises:
        SystemExit: the base cannot be loaded; RuntimeError/ValueError: see :func:`apply_checkpoint`.
    """
    base = ckpt.base_policy
    get = lambda name: getattr(args, name, None)
    frame = get("frame")
    recorded = "recorded in the ReinFlow checkpoint"
    policy = load_policy(ckpt.model_type, get("policy_path") or base["path"], device=get("device") or "auto",
                         frame=base["frame"] if frame in (None, "auto") else frame,
                         camera_map=get("camera_map") or base.get("camera_map"), task=get("task") or base.get("task"),
                         n_action_steps=get("n_action_steps") or base.get("n_action_steps"), verbose=True,
                         frame_source=recorded if frame in (None, "auto") and base.get("frame") else None,
                         camera_map_source=recorded if not get("camera_map") and base.get("camera_map") else None)
    apply_checkpoint(policy, ckpt)
    # the chain start the run trained with (ReinFlowConfig.init_noise_scale): deployment samples the same x_0
    policy.init_noise_scale = float((ckpt.reinflow_config or {}).get("init_noise_scale", policy.init_noise_scale))
    for p in policy.model.parameters():
        p.requires_grad_(False)
    policy.model.eval()
    return policy


# ---------------------------------------------------------------------- environments
def training_reward_terms(args) -> tuple[str, ...] | None:
    """``--reward-terms`` ("all" or comma-separated names of so101_mujoco_utils.REWARD_TERMS) as
    a tuple of names, or None for the env's own reward (every term)."""
    spec = getattr(args, "reward_terms", "all")
    return None if spec in (None, "", "all") else tuple(t.strip() for t in spec.split(",") if t.strip())


def env_kwargs(args, camera_map: dict[str, str] | None = None) -> dict:
    """gym.make kwargs of the image env used for VLA training/evaluation: the cameras at
    ``--image-size`` plus the privileged block pose (for the critic only). ``camera_map``: the
    policy's ``{sim camera (camera1|2|3): checkpoint key}``; only those cameras are rendered (under
    their usual ``observation.images.cameraN`` keys), else all three (so101_mujoco_utils.CAMERAS)."""
    kw = {"obs_mode": "images", "image_size": int(args.image_size), "include_env_state": True}
    if camera_map:
        kw["cameras"] = {cam: u.CAMERAS[cam] for cam in u.CAMERAS if cam in camera_map}
    return kw


def describe_trainable(policy, groups: dict) -> str:
    """One line: parameter counts per trainable group and frozen."""
    counts = {g: sum(p.numel() for p in ps) for g, ps in groups.items()}
    total = sum(p.numel() for p in policy.model.parameters())
    frozen = total - sum(counts.values())
    return ", ".join(f"{g} {c / 1e6:.2f}M" for g, c in counts.items()) + f", frozen {frozen / 1e6:.2f}M"


__all__ = [
    "PRESETS",
    "VLA_SETTINGS",
    "OFFLINE_TRAINING_HINT",
    "REINFLOW_OUTPUT_DIR",
    "add_vla_args",
    "apply_checkpoint",
    "describe_settings",
    "base_policy_info",
    "checkpoint_fields",
    "enable_step_checkpointing",
    "env_kwargs",
    "load_for_inference",
    "load_policy",
    "load_training_policy",
]
