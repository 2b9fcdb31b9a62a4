"""ReinFlow fine-tuning (PPO through the noise-injected denoising chain) in the MuJoCo env.

Copy-paste (from simulation_code/), the small flow policy on a CPU:

    python train_reinflow.py --model-type flow --init-checkpoint checkpoints/flow_bc.pt \
        --parallel-envs 2 --iterations 60
    # -> ../outputs/reinflow/flow_reinflow.pt (+ .csv log, _eval.mp4 video); continue that run
    # exactly where it stopped (its settings are the defaults of a resumed run):
    python train_reinflow.py --resume ../outputs/reinflow/flow_reinflow.pt --iterations 80

One iteration = every env of a parallel_envs.RobustVectorEnv (one process per env, ``--parallel-envs``;
a worker that dies, raises, hangs or returns NaN is restarted and its episode discarded) is reset with seeds derived from (``--seed``, iteration) and stepped ``--rollout-steps`` times;
each policy decision samples a K-step noisy chain (reinflow_smolvla.sample_chain), executes the
first ``n_action_steps`` actions of the chunk and stores the chain; then GAE over decisions (or,
with ``--advantage group``, episode returns minus the mean of their group of episodes from the same
block position) and PPO epochs (reinflow_smolvla.ppo_update). The training reward is the sum of
the env reward terms named by ``--reward-terms`` (default: all, the env's reward). With
``--block-curriculum`` (flow) the training block positions are drawn by polar bin, more often where
the training success is lower (so101_gym_env.BlockCurriculum). Every ``--eval-every`` iterations
the deterministic sampler is evaluated on ``--eval-episodes`` fixed seeds from ``--eval-seed`` on.
Logs: a tqdm bar with the latest success rate, a CSV row per iteration (``--log-csv``), optional TensorBoard
(``--tensorboard DIR``) and W&B (``--wandb``). Checkpoints (``--checkpoint``) hold everything
needed to continue exactly: model type, policy/noise-head/critic configs and weights, optimizer
states, RNG states, iteration and statistics history; written atomically.

``--model-type smolvla`` (the spec's default) and ``pi0`` fine-tune the VLAs through their
adapters on the three-camera observations (reinflow_vla.py: per-model settings, ``--trainable
expert|heads``, checkpoints holding only the trained tensors + the base policy's path; image envs
in parallel_envs.RobustVectorEnv, restarted on worker failure); ``accelerate launch
--num_processes P train_reinflow.py ...`` runs P ranks with all-reduced gradients (docs/distributed.md, "ReinFlow
for SmolVLA and Pi0"). The flow policy needs ``--init-checkpoint`` or ``--policy-path`` (a BC
checkpoint from train_flow_bc.py).

Outputs: everything defaults under ``outputs/reinflow/`` at the repository root (git-ignored):
the checkpoint (``--checkpoint``; per model type, see below), its CSV log next to it
(``CHECKPOINT.csv``) and, unless ``--no-render``, an evaluation video next to it
(``CHECKPOINT_eval.mp4``): the final policy's deterministic episode on the first evaluation seed
(``--eval-seed``; the first episode of the last evaluation when that ran at the end), continued
about 1 s after a success so the lift is visible. Training never opens a viewer.

Defaults depend on ``--model-type`` (batch size, gradient accumulation, learning rate, PPO clip,
checkpoint file, device; docs/reinflow.md, "Per-model settings") and, with ``--resume``, on the run being
continued: its algorithm settings, run shape (env, seed, envs, rollout steps, episode length),
evaluation and VLA settings become the defaults. ``--help`` shows the values that will run for
the ``--model-type`` / ``--resume`` on the same command line, e.g. ``train_reinflow.py
--model-type flow --help``. Flags on the command line win, except that a resumed run keeps its checkpoint's
algorithm settings and ``--trainable`` (a differing flag is reported and ignored); a run-shape
flag that differs from the checkpoint's gets a warning.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import time
from dataclasses import fields
from functools import partial
from pathlib import Path

import mujoco_rendering  # noqa: F401  (GL backend before mujoco)

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

import cli_args
import envs  # noqa: F401  (registers the env ids)
import flow_policy as fp
import parallel_envs
import so101_mujoco_utils as u
from so101_gym_env import BlockCurriculum, check_reward_terms
import reinflow_vla as rv
import rollout_utils as ru
from reinflow_smolvla import (ReinFlowAgent, ReinFlowConfig, RolloutBatch, compute_gae, critic_features, evaluate,
                              group_relative_advantages, ppo_update)

MODEL_TYPES = ("smolvla", "pi0", "flow")
#: ``--model-type`` when none is given (the spec's).
DEFAULT_MODEL_TYPE = "smolvla"
#: Per-model parser defaults of the flow policy (the VLAs': reinflow_vla.VLA_SETTINGS); the rest
#: are the engine defaults (reinflow_smolvla.ReinFlowConfig). PPO clip 0.01, not the engine's 0.2:
#: docs/experiments/2026-11-21-reinflow-flow-findings.md, a clip of 0.1-0.2 collapses the small flow policy (one update took a 55%
#: policy to 0%), 0.01 keeps the updates inside the trust region.
FLOW_SETTINGS = {"clip": 0.01, "checkpoint": rv.REINFLOW_OUTPUT_DIR / "flow_reinflow.pt", "device": "cpu",
                 "gradient_checkpointing": False}
#: Algorithm flags (dest -> ReinFlowConfig field): a resumed run keeps the checkpoint's values.
ALGORITHM_FLAGS = {"denoise_steps": "num_steps", **{k: k for k in (
    "sigma_min", "sigma_max", "sigma_max_final", "sigma_decay_iters", "clip", "gamma", "gae_lambda", "policy_lr",
    "noise_lr", "critic_lr", "epochs", "batch_size", "grad_accum", "ent_coef", "bc_coef", "vf_coef", "target_kl",
    "max_grad_norm", "critic_warmup_iters", "reward_scale", "reward_clip", "reward_terms", "advantage", "group_size",
    "critic_extra_epochs", "critic_batch_size", "init_noise_scale")}}
#: Further settings a resumed run keeps (with the algorithm flags and the block curriculum): a
#: flag that differs is reported and ignored.
RESUME_FIXED_FLAGS = ("trainable",)
#: Settings whose stored value (the checkpoint's ``args``) is the default of a resumed run; a flag
#: wins (the run-shape ones, RUN_SHAPE_FLAGS, with a warning when they differ).
RESUME_DEFAULT_FLAGS = ("env_id", "max_episode_steps", "parallel_envs", "rollout_steps", "seed", "save_every",
                        "eval_every", "eval_episodes", "eval_seed", "gradient_checkpointing", "image_size", "frame",
                        "camera_map", "task", "n_action_steps")
#: First env reset seed of the training rollouts (so101_mujoco_utils.SEED_RANGES["training"]):
#: iteration i resets env j with TRAIN_SEED_BASE + (iteration_seed % 10**6) * n_envs + j.
TRAIN_SEED_BASE = u.SEED_RANGES["training"][0]


def model_defaults(model_type: str) -> dict:
    """The parser defaults that differ by ``--model-type``: :data:`FLOW_SETTINGS` or
    reinflow_vla.VLA_SETTINGS (batch size, grad accumulation, policy lr, clip, checkpoint, device,
    gradient checkpointing); the flow policy's batch size, accumulation and lr are the engine's."""
    return dict(FLOW_SETTINGS if model_type == "flow" else rv.VLA_SETTINGS[model_type])


def resumed_settings(path, model_type: str | None = None) -> tuple[dict, dict]:
    """The settings of the run stored in the ReinFlow checkpoint ``path``, as parser defaults:
    ``(fixed, defaults)``. ``fixed``: the algorithm settings (its ``reinflow_config``, by flag
    dest), ``trainable`` and the block curriculum, which a resumed run keeps; ``defaults``:
    ``model_type`` and the :data:`RESUME_DEFAULT_FLAGS` stored in its ``args``, which flags may
    change. ``({}, {})`` when ``path`` is None, not a readable ReinFlow checkpoint (train_reinflow
    reports why when it loads it), or one of another model type than ``model_type``."""
    if not path:
        return {}, {}
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. a legacy file's "loads unchecked": said again when main loads it
            ckpt = fp.load_checkpoint(path, kind="reinflow")
    except Exception:  # noqa: BLE001  (refused / unreadable: main loads it again and prints the one-line reason)
        return {}, {}
    if model_type is not None and ckpt.get("model_type") != model_type:
        return {}, {}
    saved_args, cfg = ckpt.get("args") or {}, ckpt.get("reinflow_config") or {}
    fixed = {dest: saved_args[dest] for dest in (*ALGORITHM_FLAGS, *RESUME_FIXED_FLAGS) if dest in saved_args}
    for dest, field in ALGORITHM_FLAGS.items():
        if field in cfg:  # what the resumed run uses (main rebuilds ReinFlowConfig from it)
            value = cfg[field]
            fixed[dest] = 0.0 if value is None and dest in ("target_kl", "reward_clip") else value
    if "trainable_preset" in ckpt:
        fixed["trainable"] = ckpt["trainable_preset"]
    cur = ckpt.get("block_curriculum")
    fixed["block_curriculum"] = cur is not None
    if cur is not None:
        fixed.update(curriculum_bins=tuple(cur["bins"]), curriculum_uniform=cur["uniform"], curriculum_decay=cur["decay"])
    defaults = {k: saved_args[k] for k in RESUME_DEFAULT_FLAGS if k in saved_args}
    if ckpt.get("model_type") in MODEL_TYPES:
        defaults["model_type"] = ckpt["model_type"]
    return fixed, defaults


def _help_description(model_type: str, resume) -> str:
    here = (f"Defaults shown below: those of --model-type {model_type}"
            + (f" and of the run stored in --resume {resume}" if resume else "")
            + ". They depend on --model-type; another's: train_reinflow.py --model-type "
            + ("smolvla" if model_type == "flow" else "flow") + " --help.")
    return __doc__ + "\n" + here


def build_parser(model_type: str = DEFAULT_MODEL_TYPE, resumed: dict | None = None, add_help: bool = True,
                 resume=None) -> argparse.ArgumentParser:
    """The full parser, with the defaults of ``model_type`` (:func:`model_defaults`) and, for a
    resumed run, ``resumed`` (:func:`resumed_settings`, both dicts merged) on top, so that
    ``--help`` shows the values that will run."""
    p = argparse.ArgumentParser(description=_help_description(model_type, resume), add_help=add_help,
                                formatter_class=cli_args.DefaultsHelpFormatter)
    d = ReinFlowConfig()
    g = p.add_argument_group("policy and run")
    g.add_argument("--model-type", default=model_type, choices=MODEL_TYPES, help="policy type")
    g.add_argument("--policy-path", default=None, help="base policy: hub id / local dir (VLAs) or BC checkpoint (flow)")
    g.add_argument("--init-checkpoint", default=None,
                   help="BC checkpoint to start from (flow: same as --policy-path; a ReinFlow checkpoint is refused: "
                        "continue its run with --resume)")
    g.add_argument("--resume", default=None,
                   help="ReinFlow checkpoint of the same --model-type to continue exactly (model, optimizers, RNG, "
                        "history); a BC checkpoint is refused: start from it with --init-checkpoint")
    g.add_argument("--checkpoint", type=cli_args.output_path, default=None,
                   help="checkpoint to write (its CSV log and evaluation video go next to it)")
    g.add_argument("--iterations", type=cli_args.positive_int, default=None,
                   help="stop after this many PPO iterations (total, incl. resumed; 100 when neither this nor --episodes "
                        "is given)")
    g.add_argument("--episodes", type=cli_args.positive_int, default=None, help="alternatively stop after this many training episodes (total)")
    g.add_argument("--seed", type=int, default=0, help="seeds env resets, sampling noise, minibatches")
    g.add_argument("--parallel-envs", type=cli_args.positive_int, default=2,
                   help="env worker processes (parallel_envs.RobustVectorEnv: a failed worker is restarted); refused "
                        "when they would not fit in the available memory (about 1 GB each, cli_args.WORKER_MEMORY_MB)")
    g.add_argument("--rollout-steps", type=cli_args.positive_int, default=300, help="env steps per env per iteration")
    g.add_argument("--env-id", type=cli_args.env_id, default="SO101PickPlace-v0", help="registered env id (envs/__init__.py)")
    g.add_argument("--max-episode-steps", type=cli_args.positive_int, default=None, help="override the registration's episode length")
    g.add_argument("--save-every", type=cli_args.positive_int, default=5, help="checkpoint every N iterations (and at the end)")
    g.add_argument("--no-render", action="store_true",
                   help="write no evaluation video (otherwise CHECKPOINT_eval.mp4 goes next to the checkpoint: the final "
                        "policy's deterministic episode on --eval-seed)")
    g.add_argument("--headless", action="store_true", help=argparse.SUPPRESS)  # deprecated: does nothing (warned)
    g.add_argument("--threads", type=cli_args.positive_int, default=1, help="torch CPU threads")
    g.add_argument("--device", help="torch device of the policy: cpu, cuda, mps, or auto (cuda > mps > cpu; VLAs)")
    a = p.add_argument_group("algorithm (ReinFlow + PPO)")
    a.add_argument("--denoise-steps", "-K", type=cli_args.int_range(1, 10), default=d.num_steps, help="K denoising steps (1-10)")
    a.add_argument("--sigma-min", type=cli_args.positive_float, default=d.sigma_min, help="noise-head std lower bound")
    a.add_argument("--sigma-max", type=cli_args.positive_float, default=d.sigma_max, help="noise-head std upper bound")
    a.add_argument("--sigma-max-final", type=cli_args.positive_float, default=None, help="decay sigma_max linearly to this value")
    a.add_argument("--sigma-decay-iters", type=cli_args.positive_int, default=d.sigma_decay_iters,
                   help="iterations of the --sigma-max-final decay")
    a.add_argument("--clip", type=cli_args.positive_float,
                   help="PPO ratio clip; 0.01 for every model type (0.1-0.2 collapses the small flow policy: docs/experiments/ "
                        "\"Findings\")")
    a.add_argument("--gamma", type=cli_args.float_range(0.0, 1.0), default=d.gamma, help="discount per decision (one executed chunk)")
    a.add_argument("--gae-lambda", type=cli_args.float_range(0.0, 1.0), default=d.gae_lambda, help="GAE lambda")
    a.add_argument("--policy-lr", type=cli_args.nonneg_float, default=d.policy_lr, help="policy Adam learning rate")
    a.add_argument("--noise-lr", type=cli_args.nonneg_float, default=d.noise_lr, help="noise-head Adam learning rate")
    a.add_argument("--critic-lr", type=cli_args.nonneg_float, default=d.critic_lr, help="critic Adam learning rate")
    a.add_argument("--epochs", type=cli_args.positive_int, default=d.epochs, help="PPO epochs per iteration")
    a.add_argument("--batch-size", type=cli_args.positive_int, default=d.batch_size, help="PPO minibatch size (decisions)")
    a.add_argument("--grad-accum", type=cli_args.positive_int, default=d.grad_accum, help="minibatches per optimizer step")
    a.add_argument("--ent-coef", type=cli_args.float_range(), default=d.ent_coef, help="entropy-bonus weight")
    a.add_argument("--bc-coef", type=cli_args.nonneg_float, default=d.bc_coef, help="BC regulariser weight toward the pretrained policy")
    a.add_argument("--vf-coef", type=cli_args.nonneg_float, default=d.vf_coef, help="value-loss weight")
    a.add_argument("--target-kl", type=cli_args.float_range(), default=d.target_kl, help="early-stop KL (<= 0 disables)")
    a.add_argument("--max-grad-norm", type=cli_args.positive_float, default=d.max_grad_norm, help="gradient-norm clip")
    a.add_argument("--critic-warmup-iters", type=cli_args.nonneg_int, default=d.critic_warmup_iters,
                   help="first iterations update only the critic")
    a.add_argument("--reward-scale", type=cli_args.float_range(), default=d.reward_scale, help="reward multiplier before GAE")
    a.add_argument("--reward-clip", type=cli_args.float_range(), default=d.reward_clip,
                   help="clip scaled per-decision rewards to +-this (<= 0 disables)")
    a.add_argument("--reward-terms", default="all",
                   help="comma-separated env reward terms that make the training reward (so101_mujoco_utils.REWARD_TERMS), "
                        "e.g. 'success' for a sparse success reward; 'all' = the env's reward (default)")
    a.add_argument("--advantage", choices=("gae", "group"), default="gae",
                   help="gae: GAE with the critic; group: every env runs groups of --group-size consecutive episodes "
                        "from the same block position, and an episode's advantage is its return minus its group's mean "
                        "return (all its decisions share it; groups cut by the rollout end are dropped)")
    a.add_argument("--group-size", type=int, default=d.group_size, help="episodes per block position with --advantage group")
    a.add_argument("--block-curriculum", action="store_true",
                   help="flow: draw training block positions by bin, more often where the training success is lower "
                        "(so101_gym_env.BlockCurriculum); evaluation stays uniform")
    a.add_argument("--curriculum-bins", type=cli_args.positive_int, nargs=2, default=(4, 3), metavar=("N_DIST", "N_ANGLE"),
                   help="distance x angle bins of the block curriculum (default 4 3)")
    a.add_argument("--curriculum-uniform", type=float, default=0.3,
                   help="share of training episodes still drawn uniformly over the bins (default %(default)s)")
    a.add_argument("--curriculum-decay", type=float, default=0.5,
                   help="weight of older iterations in the per-bin success statistics (default %(default)s)")
    a.add_argument("--critic-extra-epochs", type=cli_args.nonneg_int, default=d.critic_extra_epochs,
                   help="critic-only epochs per iteration after the PPO epochs")
    a.add_argument("--critic-batch-size", type=cli_args.positive_int, default=d.critic_batch_size, help="minibatch of those epochs")
    a.add_argument("--init-noise-scale", type=cli_args.nonneg_float, default=None,
                   help="std s of the chain start x_0 ~ N(0, s^2 I); 0 = start at 0 so that all exploration is the "
                        "learnable noise (default: the base policy's own, 1 for the VLAs)")
    e = p.add_argument_group("evaluation and logging")
    e.add_argument("--eval-every", type=cli_args.nonneg_int, default=5, help="evaluate every N iterations (0 = never)")
    e.add_argument("--eval-episodes", type=cli_args.nonneg_int, default=20, help="0 = no evaluation")
    e.add_argument("--eval-seed", type=int, default=u.SEED_RANGES["monitoring"][0],
                   help="first seed of the fixed evaluation episodes (default %(default)s: monitoring seeds, disjoint "
                        "from the held-out test seeds, so101_mujoco_utils.SEED_RANGES)")
    e.add_argument("--eval-at-start", action="store_true", help="also evaluate before the first iteration")
    e.add_argument("--keep-best", action="store_true",
                   help="also keep the checkpoint with the best evaluation success so far as CHECKPOINT_best.pt "
                        "(model selection on the --eval-seed episodes: keep them disjoint from your test seeds)")
    e.add_argument("--log-csv", type=cli_args.output_path, default=None, help="CSV of per-iteration statistics (default: next to the checkpoint)")
    e.add_argument("--tensorboard", type=cli_args.output_path, default=None, help="TensorBoard log dir (needs the tensorboard package)")
    e.add_argument("--wandb", action="store_true", help="log to Weights & Biases (needs wandb)")
    e.add_argument("--wandb-project", default="so101-reinflow", help="W&B project")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.add_argument("-v", "--verbose", action="store_true", help="also print setup details (the OpenGL backend chosen)")
    rv.add_vla_args(p)
    p.set_defaults(**{**model_defaults(model_type), **(resumed or {})})
    return p


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line in two stages: ``--model-type`` and ``--resume`` first (with the full
    parser, so abbreviations resolve the same way), then the full parser built with that model
    type's defaults and, on ``--resume``, the stored run's (:func:`build_parser`); ``--help`` comes
    from the second. A resumed run's algorithm settings that a flag tries to change are reported on
    stderr and kept (the run continues with its checkpoint's, as its optimizer states require)."""
    first = build_parser(add_help=False)
    first.set_defaults(model_type=None)
    known, _ = first.parse_known_args(argv)
    fixed, defaults = resumed_settings(known.resume, known.model_type)
    model_type = known.model_type or defaults.get("model_type") or DEFAULT_MODEL_TYPE
    p = build_parser(model_type, {**defaults, **fixed}, resume=known.resume if fixed or defaults else None)
    args = p.parse_args(argv)
    for dest, value in fixed.items():
        if hasattr(args, dest) and not _same(getattr(args, dest), value):
            if rv.Distributed.launcher_rank() == 0:
                flag = "--" + dest.replace("_", "-")
                print(f"WARNING (resume): {flag} {getattr(args, dest)!r} ignored: a resumed run keeps its checkpoint's "
                      f"{value!r}; start a new run from a BC checkpoint (--init-checkpoint) to change it", file=sys.stderr)
            setattr(args, dest, value)
    if isinstance(args.curriculum_bins, list):
        args.curriculum_bins = tuple(args.curriculum_bins)
    if args.headless and rv.Distributed.launcher_rank() == 0:
        print("warning: --headless is deprecated and does nothing in train_reinflow.py (training never opens a viewer)",
              file=sys.stderr)
    if args.iterations is None and args.episodes is None:
        args.iterations = 100
    problem = cli_args.policy_path_problem(args.init_checkpoint or args.policy_path, args.model_type,
                                           "--init-checkpoint" if args.init_checkpoint else "--policy-path")
    if problem is None and args.resume is not None:  # a ReinFlow checkpoint file, whatever the model type
        problem = cli_args.policy_path_problem(args.resume, "flow", "--resume")
    problem = problem or cli_args.parallel_envs_problem(args.parallel_envs, "state" if args.model_type == "flow" else "images",
                                                        processes=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if problem:
        p.error(problem)
    cli_args.warn_if_more_workers_than_cpus(args.parallel_envs)
    if args.group_size < 2:
        p.error(f"--group-size must be >= 2 (a group baseline needs two episodes), got {args.group_size}")
    if args.block_curriculum and args.model_type != "flow":
        p.error("--block-curriculum is implemented for --model-type flow (state envs) only")
    if args.block_curriculum:
        try:
            BlockCurriculum(args.curriculum_bins, args.curriculum_uniform, args.curriculum_decay)
        except ValueError as e:
            p.error(f"--block-curriculum: {e}")
    terms = rv.training_reward_terms(args)
    if terms is not None:
        try:
            check_reward_terms(terms)
        except ValueError as e:
            p.error(f"--reward-terms: {e}")
    return args


def reinflow_config(args) -> ReinFlowConfig:
    return ReinFlowConfig(
        num_steps=args.denoise_steps, sigma_min=args.sigma_min, sigma_max=args.sigma_max,
        sigma_max_final=args.sigma_max_final, sigma_decay_iters=args.sigma_decay_iters, clip=args.clip,
        gamma=args.gamma, gae_lambda=args.gae_lambda, policy_lr=args.policy_lr, critic_lr=args.critic_lr,
        noise_lr=args.noise_lr, epochs=args.epochs, batch_size=args.batch_size, grad_accum=args.grad_accum,
        ent_coef=args.ent_coef, bc_coef=args.bc_coef, vf_coef=args.vf_coef,
        target_kl=args.target_kl if args.target_kl and args.target_kl > 0 else None,
        max_grad_norm=args.max_grad_norm, critic_warmup_iters=args.critic_warmup_iters, reward_scale=args.reward_scale,
        reward_clip=args.reward_clip if args.reward_clip and args.reward_clip > 0 else None,
        reward_terms=args.reward_terms, advantage=args.advantage, group_size=args.group_size)


def load_base_policy(args, ckpt: dict | None):
    """The policy to fine-tune: from the resume checkpoint, a BC checkpoint, or a VLA adapter.

    Raises:
        SystemExit: missing path, or a VLA type whose adapter cannot run here (with the reason).
        flow_policy.CheckpointError: the flow ``--init-checkpoint`` / ``--policy-path`` is not a flow
            BC checkpoint (e.g. a ReinFlow one: continue that with --resume), or is unsafe/corrupt.
    """
    if args.model_type == "flow":
        if ckpt is not None:
            return fp.FlowPolicy.from_checkpoint(ckpt, device=args.device)
        path = args.init_checkpoint or args.policy_path
        if path is None:
            raise SystemExit("--model-type flow needs --init-checkpoint (or --policy-path) = a BC checkpoint from "
                             "train_flow_bc.py, or --resume")
        bc = fp.load_checkpoint(path, kind="bc", model_type="flow",
                                hint=f"--init-checkpoint / --policy-path start a ReinFlow run from a BC checkpoint; "
                                     f"to continue a ReinFlow run pass it as --resume {path}")
        return fp.FlowPolicy.from_checkpoint(bc, device=args.device)
    return rv.load_training_policy(args, ckpt)  # SmolVLA / Pi0 through their adapters (reinflow_vla.py)


def make_env_fn(args, training: bool = True):
    """A picklable constructor of one env: the training reward (``--reward-terms``) when
    ``training``, else the env's own reward (evaluation: returns comparable across runs)."""
    if args.model_type != "flow":  # VLAs: evaluation only (training envs: reinflow_vla.make_vector_env)
        return partial(gym.make, args.env_id, **rv.env_kwargs(args))
    terms = rv.training_reward_terms(args) if training else None
    repeat = args.group_size if training and args.advantage == "group" else 1
    kw = {"obs_mode": "state", "include_env_state": True}
    if args.max_episode_steps:
        kw["max_episode_steps"] = args.max_episode_steps
    bins = tuple(args.curriculum_bins) if training and args.block_curriculum else None
    return partial(parallel_envs.make_env, args.env_id, reward_terms=terms, repeat_block=repeat,
                   curriculum_bins=bins, **kw)


def make_vector_env(args, rank: int = 0):
    """``--parallel-envs`` env processes with same-step autoreset (``final_obs`` / ``final_info`` in
    infos) whose workers are restarted on failure (parallel_envs.RobustVectorEnv), for every model
    type: the flow policy's state envs, the VLAs' image envs. A worker that dies, raises, hangs
    or returns NaN is restarted and its unfinished episode discarded (``infos["discarded"]``).
    For the flow policy this gives bit-identical results to the ``AsyncVectorEnv`` /
    ``SyncVectorEnv`` used before (same Gymnasium worker function, same seeds)."""
    return rv.make_vector_env(args, rank, env_fn=make_env_fn(args) if args.model_type == "flow" else None)


def portable_source(source) -> str:
    """The base policy as recorded in a checkpoint's ``bc_source``: a local file or folder inside
    the repository as a path relative to the repository root (so101_mujoco_utils.REPO_ROOT), so a
    shipped checkpoint names no developer's directory; an existing path outside the repository
    as an absolute path; anything else (a Hub id, "") unchanged, as a string."""
    path = Path(source)
    if str(source) and path.exists():
        try:
            return path.resolve().relative_to(u.REPO_ROOT).as_posix()
        except ValueError:
            return str(path.resolve())
    return str(source)


def decision_rewards(per_env: list[dict], cfg: ReinFlowConfig) -> np.ndarray:
    """(T,) float64 training rewards of one env's decisions: the raw reward summed over the
    executed chunk, times ``cfg.reward_scale``, clipped to +-``cfg.reward_clip`` (if set)."""
    r = np.array([d["reward"] for d in per_env], np.float64) * cfg.reward_scale
    return r if cfg.reward_clip is None else np.clip(r, -cfg.reward_clip, cfg.reward_clip)


def group_advantages(decisions: list[list[dict]], ep_count: np.ndarray, group_size: int,
                     cfg: ReinFlowConfig) -> tuple[np.ndarray, np.ndarray]:
    """Group-relative advantages (``--advantage group``) for one iteration's rollout.

    Env i's episodes k = 0, 1, ... come in groups of ``group_size`` from the same block position
    (RepeatBlockWrapper, restarted by the seeded reset of every iteration), so episode k of env i
    belongs to group (i, k // group_size). An episode's return is the sum of its scaled and
    clipped per-decision rewards (as in GAE); its advantage is that return minus the mean return
    of the episodes of its group (reinflow_smolvla.group_relative_advantages), shared by all its
    decisions. Only complete groups are kept.

    Args:
        decisions: per env, its decisions in time order (dicts with "reward" (raw, summed over the
            executed chunk) and "episode" (the env's episode index)).
        ep_count: (n_envs,) episodes each env finished in this rollout.
    Returns:
        (keep (N,) bool over the flattened decisions, advantages (N_kept,) float64).
    """
    keep, dec_episode, ep_groups, ep_returns = [], [], [], []
    for i, per_env in enumerate(decisions):
        complete = (int(ep_count[i]) // group_size) * group_size  # episodes of complete groups
        r = decision_rewards(per_env, cfg)
        ep = np.array([d["episode"] for d in per_env], int)
        totals = np.bincount(ep, weights=r, minlength=complete) if len(ep) else np.zeros(complete)
        keep.append(ep < complete)
        dec_episode.append(len(ep_returns) + ep[ep < complete])  # row of the decision's episode below
        ep_groups.extend(i * 1_000_000 + k // group_size for k in range(complete))
        ep_returns.extend(totals[:complete])
    ep_adv = group_relative_advantages(np.array(ep_groups, int), np.array(ep_returns, np.float64))
    return np.concatenate(keep), ep_adv[np.concatenate(dec_episode).astype(int)]


#: Run-shape flags that are not algorithm settings (so not restored by --resume) but change what
#: the continued run trains on; a resumed run that sets them differently gets a warning.
RUN_SHAPE_FLAGS = ("env_id", "max_episode_steps", "parallel_envs", "rollout_steps", "seed")


def resume_run_differences(args, saved_args: dict) -> list[str]:
    """Messages for each :data:`RUN_SHAPE_FLAGS` flag whose value differs from the one stored in
    the checkpoint being resumed (``saved_args``: the checkpoint's ``args``); [] if none differ
    or the checkpoint stores no args."""
    out = []
    for k in RUN_SHAPE_FLAGS:
        if k in saved_args and saved_args[k] != getattr(args, k):
            flag = "--" + k.replace("_", "-")
            out.append(f"{flag} is {getattr(args, k)!r} here but was {saved_args[k]!r} in the checkpoint's run; "
                       f"pass {flag} {saved_args[k]} to continue the same run")
    return out


def write_eval_video(agent, env_fn, seed: int, path: Path) -> Path:
    """The evaluation video (train_reinflow.py without ``--no-render``): the agent's deterministic
    episode on ``seed`` (the same episode as evaluation episode ``seed`` of reinflow_smolvla.evaluate)
    in an env from ``env_fn``, filmed by the side camera, going on about 1 s after a success
    (rollout_utils.record_success_tail); written to ``path`` (mp4). Returns ``path``."""
    video = ru.VideoWriter(path)
    try:
        evaluate(agent, lambda: ru.video_recording_env(env_fn(), video), [seed])
    finally:
        video.close()
    return path


def iteration_seed(seed: int, iteration: int) -> int:
    """Seed of everything random in ``iteration`` (env resets, chains, minibatches)."""
    return (seed * 1_000_003 + iteration * 7919 + 17) % (2**31 - 1)


def train_reset_seeds(it_seed: int, n_envs: int) -> list[int]:
    """Reset seeds of the ``n_envs`` training envs in the iteration seeded ``it_seed``: consecutive
    blocks from :data:`TRAIN_SEED_BASE`, inside so101_mujoco_utils.SEED_RANGES["training"]."""
    return [TRAIN_SEED_BASE + it_seed % 1_000_000 * n_envs + j for j in range(n_envs)]


def rng_states() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_states(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])


def _obs_at(obs: dict, i: int) -> dict:
    return {k: np.array(v[i]) for k, v in obs.items()}


def _stack_obs(items: list[dict]) -> dict:
    return {k: np.stack([o[k] for o in items]) for k in items[0]}


def main(argv=None) -> int:
    args = parse_args(argv)
    if rv.Distributed.launcher_rank() == 0:
        if args.verbose:
            mujoco_rendering.print_backend()
        if args.model_type != "flow":  # the per-model settings this run uses (parser defaults unless flagged)
            print(rv.describe_settings(args))
    dist = rv.Distributed(cpu=args.device == "cpu" or not torch.cuda.is_available()) if rv.Distributed.requested() else None
    rank, is_main = (dist.rank, dist.is_main) if dist is not None else (0, True)
    args._is_main = is_main
    if dist is not None:
        args.device = str(dist.device)
        print(f"[rank {rank}/{dist.world_size}] device {args.device}, env seeds offset by rank")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed % (2**32))
    random.seed(args.seed)

    try:  # a refused checkpoint (unsafe, corrupt, wrong kind or model type): one line, status 2
        ckpt = fp.load_checkpoint(args.resume, kind="reinflow", model_type=args.model_type,
                                  hint=f"--resume continues a train_reinflow.py run of the same --model-type; to start "
                                       f"one from a BC checkpoint pass it as --init-checkpoint {args.resume}"
                                  ) if args.resume else None
        policy = load_base_policy(args, ckpt)
    except fp.CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if ckpt is not None and ckpt.get("reinflow_config"):
        cfg = ReinFlowConfig(**{f.name: ckpt["reinflow_config"][f.name] for f in fields(ReinFlowConfig)
                                if f.name in ckpt["reinflow_config"]})
        # parse_args made the checkpoint's algorithm settings (and block curriculum) this run's values
        print("resume: algorithm settings from the checkpoint")
        for msg in resume_run_differences(args, ckpt.get("args") or {}):
            print(f"WARNING (resume): {msg}", file=sys.stderr)
    else:
        cfg = reinflow_config(args)
        cfg.critic_extra_epochs, cfg.critic_batch_size = args.critic_extra_epochs, args.critic_batch_size
        cfg.init_noise_scale = float(args.init_noise_scale if args.init_noise_scale is not None
                                     else getattr(policy, "init_noise_scale", 1.0))
    curriculum = None
    if args.block_curriculum:
        curriculum = (BlockCurriculum.from_state_dict(ckpt["block_curriculum"]) if ckpt and ckpt.get("block_curriculum")
                      else BlockCurriculum(args.curriculum_bins, args.curriculum_uniform, args.curriculum_decay))
    probe = gym.make(args.env_id, obs_mode="state", include_env_state=True)
    critic_dim = critic_features({k: v[None] for k, v in probe.reset(seed=0)[0].items()}).shape[1]
    probe.close()
    agent = ReinFlowAgent(policy, cfg, critic_dim, **({} if args.model_type == "flow" else {"preset": args.trainable}))
    if args.model_type != "flow":
        vla_groups = policy.trainable_parameter_groups(args.trainable)
        vla_base = rv.base_policy_info(policy, args.policy_path or (ckpt or {}).get("base_policy", {}).get("path"),
                                       {n for ns in rv.trainable_names(policy, vla_groups).values() for n in ns},
                                       args.image_size)
        agent.ratio_chunk = max(1, cfg.batch_size)  # no 1024-image forward passes
        if is_main:
            print(f"[reinflow {args.model_type}] trainable ({args.trainable}): {rv.describe_trainable(policy, vla_groups)}; "
                  "critic: MLP on the privileged low-dim state (joints + block pose)")
    if ckpt is not None and ckpt.get("kind") == "reinflow":
        agent.load_state_dict(ckpt)
        if args.model_type != "flow":
            rv.restore_reference(agent, ckpt)
        set_rng_states(ckpt["rng_state"])
        start_it, history = int(ckpt["iteration"]), list(ckpt.get("history", []))
        bc_source = ckpt.get("bc_source")
        print(f"resumed {args.resume} at iteration {start_it} ({len(history)} logged iterations)")
    else:
        start_it, history = 0, []
        bc_source = portable_source(args.init_checkpoint or args.policy_path or "")
    total_episodes = sum(h.get("episodes", 0) for h in history)
    total_env_steps = history[-1]["env_steps"] if history else 0
    n_params = sum(p.numel() for p in policy.model.parameters())
    print(f"{args.model_type} policy {n_params/1e3:.0f}k params, K={cfg.num_steps}, chunk={policy.chunk_size}, "
          f"n_action_steps={policy.n_action_steps}, sigma=[{cfg.sigma_min}, {cfg.sigma_max}], envs={args.parallel_envs}")

    log_csv = args.log_csv or args.checkpoint.with_suffix(".csv")
    tb = wb = None
    if args.tensorboard and is_main:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise SystemExit(f"--tensorboard needs the tensorboard package ({exc}); pip install tensorboard") from exc
        tb = SummaryWriter(str(args.tensorboard))
    if args.wandb and is_main:
        try:
            import wandb
        except ImportError as exc:
            raise SystemExit(f"--wandb needs the wandb package ({exc}); pip install wandb") from exc
        wb = wandb.init(project=args.wandb_project, config=vars(args))

    eval_seeds = [args.eval_seed + i for i in range(args.eval_episodes)]
    eval_env_fn = make_env_fn(args, training=False)
    last_eval = next((h for h in reversed(history) if h.get("eval_success") == h.get("eval_success")
                      and h.get("eval_success") is not None), None)
    latest_success = last_eval["eval_success"] if last_eval else float("nan")

    def run_eval(iteration: int) -> dict:
        eps = evaluate(agent, eval_env_fn, eval_seeds)
        return {"eval_success": float(np.mean([e["success"] for e in eps])),
                "eval_return": float(np.mean([e["return"] for e in eps])), "eval_iteration": iteration,
                "eval_unstable": sum(bool(e.get("sim_unstable")) for e in eps)}  # diverged episodes (history)

    def save(iteration: int, path: Path | None = None) -> None:
        if not is_main:
            return
        out = (policy.checkpoint_fields() if args.model_type == "flow"
               else rv.checkpoint_fields(policy, args.trainable, vla_groups, vla_base))
        out.update(agent.state_dict())
        if args.model_type != "flow":  # the BC reference is the base: store only its trainable tensors
            rv.strip_reference(out, agent, policy, vla_groups)
        out.update(kind="reinflow", iteration=iteration, history=history, rng_state=rng_states(),
                   bc_source=bc_source, args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()})
        if curriculum is not None:
            out["block_curriculum"] = curriculum.state_dict()
        fp.save_checkpoint(path or args.checkpoint, out)

    best_path = args.checkpoint.with_name(args.checkpoint.stem + "_best" + args.checkpoint.suffix)
    best_success = max((h["eval_success"] for h in history if h.get("eval_success") == h.get("eval_success")
                        and h.get("eval_success") is not None and not h.get("initial_eval")), default=-1.0)

    if args.eval_at_start and start_it == 0 and args.eval_episodes and is_main:
        ev = run_eval(0)
        latest_success = ev["eval_success"]
        history.append({"iteration": 0, "env_steps": 0, "episodes": 0, **ev, "initial_eval": True})
        print(f"initial eval: success {ev['eval_success']:.0%}, return {ev['eval_return']:.1f}")

    vec = make_vector_env(args, rank)
    n_discarded = 0
    n_envs = args.parallel_envs
    n_exec = policy.n_action_steps
    t_start = time.perf_counter()
    end_it = args.iterations if args.iterations is not None else 10**9
    bar = tqdm(range(start_it, end_it), initial=start_it, total=args.iterations, desc="ReinFlow", unit="it",
               disable=args.quiet or not is_main)
    try:
        for it in bar:
            if args.episodes is not None and total_episodes >= args.episodes:
                break
            t_it = time.perf_counter()
            sigma_max = agent.set_iteration(it)
            it_seed = iteration_seed(rv.rank_seed(args.seed, rank), it)  # rank 0: args.seed
            gen = torch.Generator().manual_seed(it_seed)
            agent.eval_mode()

            # ---------------------------------------------------------- rollout
            # a seeded reset also starts a new group of episodes (--advantage group)
            # --block-curriculum: this iteration's bin weights, from the training success so far
            block_weights = curriculum.weights() if curriculum is not None else None
            obs, _ = vec.reset(seed=train_reset_seeds(it_seed, n_envs),
                               options=None if block_weights is None else {"block_bin_weights": block_weights})
            ep_count = np.zeros(n_envs, int)
            queues: list[list[np.ndarray]] = [[] for _ in range(n_envs)]
            open_dec: list[dict | None] = [None] * n_envs
            decisions: list[list[dict]] = [[] for _ in range(n_envs)]
            ep_ret = np.zeros(n_envs)
            ep_len = np.zeros(n_envs, int)
            finished: list[dict] = []
            sig_means = []
            for _step in range(args.rollout_steps):
                need = [i for i in range(n_envs) if not queues[i]]
                if need:
                    sub = {k: v[need] for k, v in obs.items()}
                    chunks, sample = agent.act(sub, gen)
                    sig_means.append(sample.sigma_mean)
                    for j, i in enumerate(need):
                        open_dec[i] = {"obs": _obs_at(obs, i), "chain": sample.chain[j], "log_prob": sample.log_prob[j],
                                       "reward": 0.0, "episode": int(ep_count[i])}
                        queues[i] = list(chunks[j][:n_exec])
                actions = np.stack([queues[i].pop(0) for i in range(n_envs)])
                obs, reward, term, trunc, infos = vec.step(actions)
                ep_ret += reward
                ep_len += 1
                for i in np.flatnonzero(infos.get("discarded", ())):  # env worker restarted: drop its episode
                    rv.discard_episode(i, decisions, queues, open_dec, ep_ret, ep_len)
                    n_discarded += 1
                for i in range(n_envs):
                    dec = open_dec[i]
                    if dec is None:  # discarded just above
                        continue
                    dec["reward"] += float(reward[i])
                    if term[i] or trunc[i]:
                        final_info = infos["final_info"]
                        success = bool(final_info["is_success"][i]) if "is_success" in final_info else bool(term[i])
                        dec.update(terminated=bool(term[i]), end=True, next_obs=dict(infos["final_obs"][i]))
                        decisions[i].append(dec)
                        finished.append({"return": float(ep_ret[i]), "length": int(ep_len[i]), "success": success,
                                         "bin": int(final_info["block_bin"][i]) if curriculum is not None else -1})
                        ep_ret[i], ep_len[i] = 0.0, 0
                        ep_count[i] += 1
                        queues[i], open_dec[i] = [], None
                    elif not queues[i]:
                        dec.update(terminated=False, end=False, next_obs=_obs_at(obs, i))
                        decisions[i].append(dec)
                        open_dec[i] = None
            for i in range(n_envs):  # rollout cut: bootstrap from the current observation
                if open_dec[i] is not None:
                    open_dec[i].update(terminated=False, end=True, next_obs=_obs_at(obs, i))
                    decisions[i].append(open_dec[i])

            if curriculum is not None:
                curriculum.update([f["bin"] for f in finished], [f["success"] for f in finished])

            # ---------------------------------------------------------- advantages
            flat = [d for per_env in decisions for d in per_env]
            all_obs = _stack_obs([d["obs"] for d in flat])
            feats = critic_features(all_obs)
            agent.critic.norm.update(feats if dist is None else dist.gather_cat(feats))
            values = agent.values(all_obs)
            next_values = agent.values(_stack_obs([d["next_obs"] for d in flat]))
            adv_parts, ret_parts, pos = [], [], 0
            for per_env in decisions:
                n = len(per_env)
                adv, ret = compute_gae(decision_rewards(per_env, cfg), values[pos:pos + n], next_values[pos:pos + n],
                                       np.array([d["terminated"] for d in per_env]), np.array([d["end"] for d in per_env]),
                                       cfg.gamma, cfg.gae_lambda)
                adv_parts.append(adv)
                ret_parts.append(ret)
                pos += n
            advantages, returns = np.concatenate(adv_parts), np.concatenate(ret_parts)
            if args.advantage == "group":  # baseline: mean return of the episodes from the same block position
                keep, advantages = group_advantages(decisions, ep_count, args.group_size, cfg)
                idx = np.flatnonzero(keep)
                all_obs = {k: v[idx] for k, v in all_obs.items()}
                feats, flat = feats[idx], [flat[j] for j in idx]
                returns = returns[idx]
            data = RolloutBatch(all_obs, torch.stack([d["chain"] for d in flat]), torch.stack([d["log_prob"] for d in flat]),
                                torch.as_tensor(advantages, dtype=torch.float32),
                                torch.as_tensor(returns, dtype=torch.float32))
            t_roll = time.perf_counter() - t_it

            # ---------------------------------------------------------- PPO update
            if dist is not None:  # same number of decisions (minibatches, optimizer steps) on every rank
                data, feats = dist.equalize(data, feats)
            upd = ppo_update(agent, data, it, gen, feats, dist=dist)

            # ---------------------------------------------------------- log / eval / save
            # several ranks: totals over all ranks (the same on every rank, so --episodes stops them together)
            total_episodes += len(finished) if dist is None else round(dist.mean_scalar(len(finished)) * dist.world_size)
            total_env_steps += args.rollout_steps * n_envs * (1 if dist is None else dist.world_size)
            row = {"iteration": it + 1, "env_steps": total_env_steps, "episodes": len(finished),
                   "total_episodes": total_episodes, "decisions": len(data),
                   "train_success": float(np.mean([f["success"] for f in finished])) if finished else float("nan"),
                   "train_return": float(np.mean([f["return"] for f in finished])) if finished else float("nan"),
                   "train_length": float(np.mean([f["length"] for f in finished])) if finished else float("nan"),
                   "sigma_max": sigma_max, "sigma_sampled": float(np.mean(sig_means)) if sig_means else float("nan"),
                   "value_mean": float(values.mean()), "adv_std": float(data.advantages.std()),
                   **{k: upd[k] for k in ("pg_loss", "v_loss", "entropy", "bc_loss", "approx_kl", "clipfrac", "sigma",
                                          "epochs", "ratio_check", "policy_updated", "early_stop")},
                   "rollout_s": t_roll, "iter_s": 0.0, "wall_s": 0.0}
            if n_discarded:
                row["discarded_episodes"] = n_discarded
            if block_weights is not None:  # history only (not the CSV): the bin weights this rollout used
                row["block_weights"] = [float(w) for w in block_weights]
            if args.eval_every and args.eval_episodes and is_main and ((it + 1) % args.eval_every == 0 or it + 1 == end_it):
                ev = run_eval(it + 1)
                latest_success = ev["eval_success"]
                row.update(ev)
                if args.keep_best and ev["eval_success"] > best_success:
                    best_success = ev["eval_success"]
                    history.append(row)
                    save(it + 1, best_path)  # the best so far on the monitoring seeds, not the test seeds
                    history.pop()
            else:
                row.update(eval_success=float("nan"), eval_return=float("nan"))
            row["iter_s"] = time.perf_counter() - t_it
            row["wall_s"] = (history[-1].get("wall_s", 0.0) if history else 0.0) + row["iter_s"]
            history.append(row)
            if is_main:
                write_csv_row(log_csv, row, fresh=(it == 0 and args.resume is None))
            if tb is not None:
                for k, v in row.items():
                    if isinstance(v, (int, float)) and v == v:
                        tb.add_scalar(k, v, it + 1)
            if wb is not None:
                wb.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=it + 1)
            bar.set_postfix(eval=f"{latest_success:.0%}" if latest_success == latest_success else "-",
                            train=f"{row['train_success']:.0%}" if row["train_success"] == row["train_success"] else "-",
                            ret=f"{row['train_return']:.0f}" if row["train_return"] == row["train_return"] else "-",
                            kl=f"{upd['approx_kl']:.3f}" if upd["approx_kl"] == upd["approx_kl"] else "-")
            if (it + 1) % args.save_every == 0 or it + 1 == end_it:
                save(it + 1)
        final_it = len([h for h in history if not h.get("initial_eval")])
        save(final_it)
    finally:
        vec.close()
        if tb is not None:
            tb.close()
        if wb is not None:
            wb.finish()
    if is_main and not args.no_render:
        video = write_eval_video(agent, eval_env_fn, args.eval_seed,
                                 args.checkpoint.with_name(args.checkpoint.stem + "_eval.mp4"))
        print(f"evaluation video (seed {args.eval_seed}, deterministic) -> {video}")
    if getattr(args, "debug_state_dir", None) is not None:  # tests: this rank's weights
        rv.write_debug_state(args.debug_state_dir, rank, policy, agent)
    if n_discarded:
        print(f"WARNING: {n_discarded} episodes discarded after env worker restarts ({vec.restarts} restarts)",
              file=sys.stderr)
    print(f"done: {final_it} iterations, {total_episodes} training episodes, {total_env_steps} env steps, "
          f"{time.perf_counter() - t_start:.0f} s; latest eval success {latest_success:.0%}; checkpoint -> {args.checkpoint}"
          + ("" if is_main else f" (rank {rank}: written by rank 0)"))
    if dist is not None:
        dist.barrier()
    return 0


CSV_FIELDS = ["iteration", "env_steps", "episodes", "total_episodes", "decisions", "train_success", "train_return",
              "train_length", "eval_success", "eval_return", "sigma_max", "sigma_sampled", "sigma", "entropy", "pg_loss",
              "v_loss", "bc_loss", "approx_kl", "clipfrac", "epochs", "early_stop", "ratio_check", "policy_updated",
              "value_mean", "adv_std", "rollout_s", "iter_s", "wall_s"]


def write_csv_row(path: Path, row: dict, fresh: bool) -> None:
    """Append one iteration to the CSV (header when the file is new or ``fresh``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = fresh or not path.exists()
    with open(path, "w" if new else "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items() if k in CSV_FIELDS})


if __name__ == "__main__":
    sys.exit(main())
