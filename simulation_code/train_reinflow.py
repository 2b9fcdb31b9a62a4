"""ReinFlow fine-tuning (PPO through the noise-injected denoising chain) in the MuJoCo env.

Copy-paste (from simulation_code/), the small flow policy on a CPU:

    python train_reinflow.py --model-type flow --init-checkpoint checkpoints/flow_bc.pt \
        --parallel-envs 2 --iterations 60
    # -> ../outputs/reinflow/flow_reinflow.pt (+ .csv log, _eval.mp4 video); continue that run
    # exactly where it stopped (its settings are the defaults of a resumed run):
    python train_reinflow.py --resume ../outputs/reinflow/flow_reinflow.pt --iterations 80

The loop (main): set up (setup_run) -> for each iteration: rollout -> advantages -> PPO update ->
log -> evaluate / checkpoint. The rollout: every env of a parallel_envs.RobustVectorEnv (one
process per env, ``--parallel-envs``; a worker that dies, raises, hangs or returns NaN is restarted
and its episode discarded) is reset with seeds derived from (``--seed``, iteration); its workers
wrap the env in so101_gym_env.ChunkActionWrapper, so one vector-env step executes the first
``n_action_steps`` actions of each env's chunk and is one decision; T = ceil(``--rollout-steps`` /
n_action_steps) decisions per env go into a reinflow_rollout.RolloutBuffer preallocated as
(T, N, ...) (noisy chains from reinflow_engine.sample_chain, log-probs, rewards, ends, critic
features, the policy's prepared inputs); then GAE per env (or, with ``--advantage group``, episode
returns minus the mean of their group of episodes from the same block position) and PPO epochs on
the cached inputs (reinflow_engine.ppo_update). What differs per policy family is one backend
object (reinflow_backends.py). The training reward is the sum of the env reward terms named by
``--reward-terms`` (default: all, the env's reward). With ``--block-curriculum`` (flow) the
training block positions are drawn by polar bin, more often where the training success is lower
(reinflow_rollout.BlockCurriculum). Every ``--eval-every`` iterations
the deterministic sampler is evaluated on ``--eval-episodes`` fixed seeds from ``--eval-seed`` on.
Logs: a tqdm bar with the latest success rate, a CSV row per iteration (``--log-csv``), optional TensorBoard
(``--tensorboard DIR``) and W&B (``--wandb``). Checkpoints (``--checkpoint``) hold everything
needed to continue exactly: model type, policy/noise-head/critic configs and weights, optimizer
states, RNG states, iteration and statistics history; written atomically.

``--model-type smolvla`` (the spec's default) and ``pi0`` fine-tune the VLAs through their
adapters on the three-camera observations (reinflow_vla.py: per-model settings, ``--trainable
expert|heads``, checkpoints holding only the trained tensors + the base policy's path; image envs
in parallel_envs.RobustVectorEnv, restarted on worker failure; reinflow_backends.VLABackend); ``accelerate launch
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
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path

from so101_sim import mujoco_rendering  # noqa: F401  (GL backend before mujoco)

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from so101_sim import checkpoint_io as ckio
from so101_sim import cli_args
from so101_sim import envs  # noqa: F401  (registers the env ids)
from so101_sim import parallel_envs
from so101_sim import policy_registry as pr
from so101_sim import reinflow_vla as rv
from so101_sim import rollout_utils as ru
from so101_sim import so101_mujoco_utils as u
from so101_sim.distributed import Distributed, rank_seed
from so101_sim.reinflow_backends import make_backend
from so101_sim.reinflow_engine import ReinFlowAgent, ReinFlowConfig, ppo_update
from so101_sim.reinflow_rollout import BlockCurriculum, RolloutBuffer, collect_rollout
from so101_sim.so101_gym_env import check_reward_terms

#: The model types this script fine-tunes, and the default (policy_registry).
MODEL_TYPES, DEFAULT_MODEL_TYPE = pr.REINFLOW_MODEL_TYPES, pr.DEFAULT_MODEL_TYPE
#: Per-model parser defaults of the flow policy (the VLAs': reinflow_vla.VLA_SETTINGS); the rest
#: are the engine defaults (reinflow_engine.ReinFlowConfig). PPO clip 0.01, not the engine's 0.2:
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
#: The engine's defaults (reinflow_engine.ReinFlowConfig): the algorithm flags' parser defaults.
ENGINE_DEFAULTS = ReinFlowConfig()
#: First env reset seed of the training rollouts (so101_mujoco_utils.SEED_RANGES["training"]):
#: iteration i resets env j with TRAIN_SEED_BASE + (iteration_seed % 10**6) * n_envs + j.
TRAIN_SEED_BASE = u.SEED_RANGES["training"][0]


def model_defaults(model_type: str) -> dict:
    """The parser defaults that differ by ``--model-type``: :data:`FLOW_SETTINGS` or
    reinflow_vla.VLA_SETTINGS (batch size, grad accumulation, policy lr, clip, checkpoint, device,
    gradient checkpointing); the flow policy's batch size, accumulation and lr are the engine's."""
    return dict({"flow": FLOW_SETTINGS, **rv.VLA_SETTINGS}[model_type])


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
            ckpt = ckio.load(path, kind="reinflow")
    except Exception:  # noqa: BLE001  (refused / unreadable: main loads it again and prints the one-line reason)
        return {}, {}
    if model_type is not None and ckpt.model_type != model_type:
        return {}, {}
    _LOADED[str(path)] = ckpt  # main() uses it: the file is read once
    saved_args, cfg = ckpt.args or {}, ckpt.reinflow_config or {}
    fixed = {dest: saved_args[dest] for dest in (*ALGORITHM_FLAGS, *RESUME_FIXED_FLAGS) if dest in saved_args}
    for dest, field in ALGORITHM_FLAGS.items():
        if field in cfg:  # what the resumed run uses (main rebuilds ReinFlowConfig from it)
            value = cfg[field]
            fixed[dest] = 0.0 if value is None and dest in ("target_kl", "reward_clip") else value
    if ckpt.trainable_preset is not None:
        fixed["trainable"] = ckpt.trainable_preset
    cur = ckpt.block_curriculum
    fixed["block_curriculum"] = cur is not None
    if cur is not None:
        fixed.update(curriculum_bins=tuple(cur["bins"]), curriculum_uniform=cur["uniform"], curriculum_decay=cur["decay"])
    defaults = {k: saved_args[k] for k in RESUME_DEFAULT_FLAGS if k in saved_args}
    defaults["checkpoint"] = Path(path)  # a resumed run goes on writing the file it continues
    if ckpt.model_type in MODEL_TYPES:
        defaults["model_type"] = ckpt.model_type
    return fixed, defaults


#: Checkpoints read by :func:`resumed_settings`, by path (so --resume reads the file once).
_LOADED: dict[str, ckio.Checkpoint] = {}


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
    _add_run_args(p.add_argument_group("policy and run"), model_type)
    _add_algorithm_args(p.add_argument_group("algorithm (ReinFlow + PPO)"))
    _add_eval_args(p.add_argument_group("evaluation and logging"))
    rv.add_vla_args(p)
    p.set_defaults(**{**model_defaults(model_type), **(resumed or {})})
    return p


def _add_run_args(g, model_type: str) -> None:
    g.add_argument("--model-type", default=model_type, choices=MODEL_TYPES, help="policy type")
    g.add_argument("--policy-path", default=None, help="base policy: hub id / local dir (VLAs) or BC checkpoint (flow)")
    g.add_argument("--init-checkpoint", default=None,
                   help="BC checkpoint to start from (flow: same as --policy-path; a ReinFlow checkpoint is refused: "
                        "continue its run with --resume)")
    g.add_argument("--resume", default=None,
                   help="ReinFlow checkpoint of the same --model-type to continue exactly (model, optimizers, RNG, "
                        "history), written back to it unless --checkpoint says otherwise; a BC checkpoint is refused: "
                        "start from it with --init-checkpoint")
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
    g.add_argument("--rollout-steps", type=cli_args.positive_int, default=300,
                   help="env steps per env per iteration: ceil(this / n_action_steps) decisions (one executed chunk "
                        "each; a chunk cut by an episode end executes fewer steps)")
    g.add_argument("--env-id", type=cli_args.env_id, default=envs.DEFAULT_ENV_ID, help="registered env id (envs/__init__.py)")
    g.add_argument("--max-episode-steps", type=cli_args.positive_int, default=None, help="override the registration's episode length")
    g.add_argument("--save-every", type=cli_args.positive_int, default=5, help="checkpoint every N iterations (and at the end)")
    g.add_argument("--no-render", action="store_true",
                   help="write no evaluation video (otherwise CHECKPOINT_eval.mp4 goes next to the checkpoint: the final "
                        "policy's deterministic episode on --eval-seed)")
    g.add_argument("--headless", action="store_true", help=argparse.SUPPRESS)  # deprecated: does nothing (warned)
    g.add_argument("--threads", type=cli_args.positive_int, default=1, help="torch CPU threads")
    g.add_argument("--device", help="torch device of the policy: cpu, cuda, mps, or auto (cuda > mps > cpu; VLAs)")


def _add_algorithm_args(a) -> None:
    a.add_argument("--denoise-steps", "-K", type=cli_args.int_range(1, 10), default=ENGINE_DEFAULTS.num_steps, help="K denoising steps (1-10)")
    a.add_argument("--sigma-min", type=cli_args.positive_float, default=ENGINE_DEFAULTS.sigma_min, help="noise-head std lower bound")
    a.add_argument("--sigma-max", type=cli_args.positive_float, default=ENGINE_DEFAULTS.sigma_max, help="noise-head std upper bound")
    a.add_argument("--sigma-max-final", type=cli_args.positive_float, default=None, help="decay sigma_max linearly to this value")
    a.add_argument("--sigma-decay-iters", type=cli_args.positive_int, default=ENGINE_DEFAULTS.sigma_decay_iters,
                   help="iterations of the --sigma-max-final decay")
    a.add_argument("--clip", type=cli_args.positive_float,
                   help="PPO ratio clip; 0.01 for every model type (0.1-0.2 collapses the small flow policy: docs/experiments/ "
                        "\"Findings\")")
    a.add_argument("--gamma", type=cli_args.float_range(0.0, 1.0), default=ENGINE_DEFAULTS.gamma, help="discount per decision (one executed chunk)")
    a.add_argument("--gae-lambda", type=cli_args.float_range(0.0, 1.0), default=ENGINE_DEFAULTS.gae_lambda, help="GAE lambda")
    a.add_argument("--policy-lr", type=cli_args.nonneg_float, default=ENGINE_DEFAULTS.policy_lr, help="policy Adam learning rate")
    a.add_argument("--noise-lr", type=cli_args.nonneg_float, default=ENGINE_DEFAULTS.noise_lr, help="noise-head Adam learning rate")
    a.add_argument("--critic-lr", type=cli_args.nonneg_float, default=ENGINE_DEFAULTS.critic_lr, help="critic Adam learning rate")
    a.add_argument("--epochs", type=cli_args.positive_int, default=ENGINE_DEFAULTS.epochs, help="PPO epochs per iteration")
    a.add_argument("--batch-size", type=cli_args.positive_int, default=ENGINE_DEFAULTS.batch_size, help="PPO minibatch size (decisions)")
    a.add_argument("--grad-accum", type=cli_args.positive_int, default=ENGINE_DEFAULTS.grad_accum, help="minibatches per optimizer step")
    a.add_argument("--ent-coef", type=cli_args.float_range(), default=ENGINE_DEFAULTS.ent_coef, help="entropy-bonus weight")
    a.add_argument("--bc-coef", type=cli_args.nonneg_float, default=ENGINE_DEFAULTS.bc_coef, help="BC regulariser weight toward the pretrained policy")
    a.add_argument("--vf-coef", type=cli_args.nonneg_float, default=ENGINE_DEFAULTS.vf_coef, help="value-loss weight")
    a.add_argument("--target-kl", type=cli_args.float_range(), default=ENGINE_DEFAULTS.target_kl, help="early-stop KL (<= 0 disables)")
    a.add_argument("--max-grad-norm", type=cli_args.positive_float, default=ENGINE_DEFAULTS.max_grad_norm, help="gradient-norm clip")
    a.add_argument("--critic-warmup-iters", type=cli_args.nonneg_int, default=ENGINE_DEFAULTS.critic_warmup_iters,
                   help="first iterations update only the critic")
    a.add_argument("--reward-scale", type=cli_args.float_range(), default=ENGINE_DEFAULTS.reward_scale, help="reward multiplier before GAE")
    a.add_argument("--reward-clip", type=cli_args.float_range(), default=ENGINE_DEFAULTS.reward_clip,
                   help="clip scaled per-decision rewards to +-this (<= 0 disables)")
    a.add_argument("--reward-terms", default="all",
                   help="comma-separated env reward terms that make the training reward (so101_mujoco_utils.REWARD_TERMS), "
                        "e.g. 'success' for a sparse success reward; 'all' = the env's reward (default)")
    a.add_argument("--advantage", choices=("gae", "group"), default="gae",
                   help="gae: GAE with the critic; group: every env runs groups of --group-size consecutive episodes "
                        "from the same block position, and an episode's advantage is its return minus its group's mean "
                        "return (all its decisions share it; groups cut by the rollout end are dropped)")
    a.add_argument("--group-size", type=int, default=ENGINE_DEFAULTS.group_size, help="episodes per block position with --advantage group")
    a.add_argument("--block-curriculum", action="store_true",
                   help="flow: draw training block positions by bin, more often where the training success is lower "
                        "(reinflow_rollout.BlockCurriculum); evaluation stays uniform")
    a.add_argument("--curriculum-bins", type=cli_args.positive_int, nargs=2, default=(4, 3), metavar=("N_DIST", "N_ANGLE"),
                   help="distance x angle bins of the block curriculum (default 4 3)")
    a.add_argument("--curriculum-uniform", type=float, default=0.3,
                   help="share of training episodes still drawn uniformly over the bins (default %(default)s)")
    a.add_argument("--curriculum-decay", type=float, default=0.5,
                   help="weight of older iterations in the per-bin success statistics (default %(default)s)")
    a.add_argument("--critic-extra-epochs", type=cli_args.nonneg_int, default=ENGINE_DEFAULTS.critic_extra_epochs,
                   help="critic-only epochs per iteration after the PPO epochs")
    a.add_argument("--critic-batch-size", type=cli_args.positive_int, default=ENGINE_DEFAULTS.critic_batch_size, help="minibatch of those epochs")
    a.add_argument("--init-noise-scale", type=cli_args.nonneg_float, default=None,
                   help="std s of the chain start x_0 ~ N(0, s^2 I); 0 = start at 0 so that all exploration is the "
                        "learnable noise (default: the base policy's own, 1 for the VLAs)")


def _add_eval_args(e) -> None:
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
            if Distributed.launcher_rank() == 0:
                flag = "--" + dest.replace("_", "-")
                print(f"WARNING (resume): {flag} {getattr(args, dest)!r} ignored: a resumed run keeps its checkpoint's "
                      f"{value!r}; start a new run from a BC checkpoint (--init-checkpoint) to change it", file=sys.stderr)
            setattr(args, dest, value)
    if isinstance(args.curriculum_bins, list):
        args.curriculum_bins = tuple(args.curriculum_bins)
    if args.headless and Distributed.launcher_rank() == 0:
        print("warning: --headless is deprecated and does nothing in train_reinflow.py (training never opens a viewer)",
              file=sys.stderr)
    if args.iterations is None and args.episodes is None:
        args.iterations = 100
    problem = cli_args.policy_path_problem(args.init_checkpoint or args.policy_path, args.model_type,
                                           "--init-checkpoint" if args.init_checkpoint else "--policy-path")
    if problem is None and args.resume is not None:  # a ReinFlow checkpoint file, whatever the model type
        problem = cli_args.policy_path_problem(args.resume, "flow", "--resume")
    problem = problem or cli_args.parallel_envs_problem(args.parallel_envs, make_backend(args).obs_kind,
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


def reinflow_config(args, policy) -> ReinFlowConfig:
    """The engine settings of a new run from the flags (``--target-kl`` / ``--reward-clip`` <= 0:
    off); the chain start scale defaults to the base policy's own."""
    return ReinFlowConfig(
        num_steps=args.denoise_steps, sigma_min=args.sigma_min, sigma_max=args.sigma_max,
        sigma_max_final=args.sigma_max_final, sigma_decay_iters=args.sigma_decay_iters, clip=args.clip,
        gamma=args.gamma, gae_lambda=args.gae_lambda, policy_lr=args.policy_lr, critic_lr=args.critic_lr,
        noise_lr=args.noise_lr, epochs=args.epochs, batch_size=args.batch_size, grad_accum=args.grad_accum,
        ent_coef=args.ent_coef, bc_coef=args.bc_coef, vf_coef=args.vf_coef,
        target_kl=args.target_kl if args.target_kl and args.target_kl > 0 else None,
        max_grad_norm=args.max_grad_norm, critic_warmup_iters=args.critic_warmup_iters, reward_scale=args.reward_scale,
        reward_clip=args.reward_clip if args.reward_clip and args.reward_clip > 0 else None,
        reward_terms=args.reward_terms, advantage=args.advantage, group_size=args.group_size,
        critic_extra_epochs=args.critic_extra_epochs, critic_batch_size=args.critic_batch_size,
        init_noise_scale=float(args.init_noise_scale if args.init_noise_scale is not None
                               else getattr(policy, "init_noise_scale", 1.0)))


def env_factory(args, backend, training: bool, n_action_steps: int = 0):
    """A picklable constructor of one env (parallel_envs.make_env) with what the policy observes
    (``backend.env_kwargs()``). ``training``: the training reward (``--reward-terms``), groups of
    episodes per block position (``--advantage group``), the block curriculum and
    ``n_action_steps`` actions per step (so101_gym_env.ChunkActionWrapper); else the env's own
    reward, one action per step (evaluation: returns comparable across runs)."""
    kw = backend.env_kwargs()
    if args.max_episode_steps:
        kw["max_episode_steps"] = args.max_episode_steps
    if not training:  # built in this process: gym.make (envs registered at import)
        return partial(gym.make, args.env_id, **kw)
    return partial(parallel_envs.make_env, args.env_id, reward_terms=rv.training_reward_terms(args),
                   repeat_block=args.group_size if args.advantage == "group" else 1,
                   curriculum_bins=tuple(args.curriculum_bins) if args.block_curriculum else None,
                   chunk=n_action_steps, **kw)


def make_vector_env(args, run: "Run"):
    """``--parallel-envs`` training env processes whose workers are restarted on failure
    (parallel_envs.RobustVectorEnv, same-step autoreset with ``final_obs`` / ``final_info``), each
    executing one action chunk per step. A worker that dies, raises, hangs or returns NaN is
    restarted and its unfinished episode discarded (``infos["discarded"]``)."""
    fn = env_factory(args, run.backend, True, run.policy.n_action_steps)
    return parallel_envs.RobustVectorEnv([fn] * args.parallel_envs, context=args.env_start_method,
                                         restart_seed=900_000_000 + 1_000_003 * run.rank + 101 * int(args.seed))


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


def iteration_seed(seed: int, iteration: int) -> int:
    """Seed of everything random in ``iteration`` (env resets, chains, minibatches)."""
    return (seed * 1_000_003 + iteration * 7919 + 17) % (2**31 - 1)


def train_reset_seeds(it_seed: int, n_envs: int) -> list[int]:
    """Reset seeds of the ``n_envs`` training envs in the iteration seeded ``it_seed``: consecutive
    blocks from :data:`TRAIN_SEED_BASE`, inside so101_mujoco_utils.SEED_RANGES["training"]."""
    return [TRAIN_SEED_BASE + it_seed % 1_000_000 * n_envs + j for j in range(n_envs)]


# ---------------------------------------------------------------------- the run
class Loggers:
    """The per-iteration sinks: the CSV (``--log-csv``, rank 0), TensorBoard and W&B (optional)."""

    def __init__(self, args, is_main: bool):
        self.csv = (args.log_csv or args.checkpoint.with_suffix(".csv")) if is_main else None
        self.fresh = args.resume is None
        self.tb = self.wb = None
        if args.tensorboard and is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise SystemExit(f"--tensorboard needs the tensorboard package ({exc}); pip install tensorboard") from exc
            self.tb = SummaryWriter(str(args.tensorboard))
        if args.wandb and is_main:
            try:
                import wandb
            except ImportError as exc:
                raise SystemExit(f"--wandb needs the wandb package ({exc}); pip install wandb") from exc
            self.wb = wandb.init(project=args.wandb_project, config=saved_args(args))

    def log(self, row: dict) -> None:
        step = row["iteration"]
        if self.csv is not None:
            write_csv_row(self.csv, row, fresh=self.fresh)
            self.fresh = False
        numbers = {k: v for k, v in row.items() if isinstance(v, (int, float)) and v == v}
        if self.tb is not None:
            for k, v in numbers.items():
                self.tb.add_scalar(k, v, step)
        if self.wb is not None:
            self.wb.log(numbers, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wb is not None:
            self.wb.finish()


@dataclass
class Run:
    """Everything one training run holds between iterations (set up by :func:`setup_run`)."""

    args: argparse.Namespace
    backend: object
    policy: object
    agent: ReinFlowAgent
    curriculum: BlockCurriculum | None
    dist: Distributed | None
    rank: int
    is_main: bool
    source: str
    loggers: Loggers
    start_it: int = 0
    history: list = field(default_factory=list)
    total_episodes: int = 0
    total_env_steps: int = 0
    discarded: int = 0
    restarts: int = 0
    best_success: float = -1.0
    latest_success: float = float("nan")

    @property
    def best_path(self) -> Path:
        c = self.args.checkpoint
        return c.with_name(c.stem + "_best" + c.suffix)


def saved_args(args) -> dict:
    """The run's flags as stored in a checkpoint (paths as strings; private attributes dropped)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not k.startswith("_")}


def load_resume(args) -> ckio.Checkpoint | None:
    """The ``--resume`` checkpoint (read once: parse_args already read it), of this model type.

    Raises:
        checkpoint_io.CheckpointError: refused (unsafe, corrupt, another kind or model type).
    """
    if not args.resume:
        return None
    ckpt = _LOADED.get(str(args.resume))
    if ckpt is not None and ckpt.model_type == args.model_type:
        return ckpt
    return ckio.load(args.resume, kind="reinflow", model_type=args.model_type,
                     hint=f"--resume continues a train_reinflow.py run of the same --model-type; to start one from a "
                          f"BC checkpoint pass it as --init-checkpoint {args.resume}")


def setup_run(args) -> Run:
    """Processes, seeds, the policy (backend), the ReinFlow config and agent, a resumed run's
    state, the curriculum and the loggers.

    Raises:
        checkpoint_io.CheckpointError: a refused ``--resume`` / ``--init-checkpoint``.
    """
    dist = Distributed(cpu=args.device == "cpu" or not torch.cuda.is_available()) if Distributed.requested() else None
    rank, is_main = (dist.rank, dist.is_main) if dist is not None else (0, True)
    args._is_main = is_main
    if dist is not None:
        args.device = str(dist.device)
        print(f"[rank {rank}/{dist.world_size}] device {args.device}, env seeds offset by rank")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed % (2**32))
    random.seed(args.seed)
    resume = load_resume(args)
    backend = make_backend(args)
    policy = backend.load_policy(resume)
    if resume is not None:  # parse_args made the checkpoint's algorithm settings this run's values
        cfg = ReinFlowConfig(**{f.name: resume.reinflow_config[f.name] for f in fields(ReinFlowConfig)
                                if f.name in resume.reinflow_config})
        print("resume: algorithm settings from the checkpoint")
        for msg in resume_run_differences(args, resume.args or {}):
            print(f"WARNING (resume): {msg}", file=sys.stderr)
    else:
        cfg = reinflow_config(args, policy)
    agent = ReinFlowAgent(policy, cfg, critic_input_dim(args, backend), **backend.agent_options())
    backend.prepare_agent(agent, policy, resume, is_main)
    curriculum = None
    if args.block_curriculum:
        curriculum = (BlockCurriculum.from_state_dict(resume.block_curriculum) if resume and resume.block_curriculum
                      else BlockCurriculum(args.curriculum_bins, args.curriculum_uniform, args.curriculum_decay))
    run = Run(args, backend, policy, agent, curriculum, dist, rank, is_main,
              source=ckio.portable_source(args.init_checkpoint or args.policy_path or ""), loggers=Loggers(args, is_main))
    if resume is not None:
        agent.load_checkpoint(resume)
        ckio.set_rng_states(resume.rng_state)
        run.start_it, run.history, run.source = int(resume.iteration), list(resume.history), resume.source
        print(f"resumed {args.resume} at iteration {run.start_it} ({len(run.history)} logged iterations)")
    run.total_episodes = sum(h.get("episodes", 0) for h in run.history)
    run.total_env_steps = run.history[-1]["env_steps"] if run.history else 0
    evals = [h for h in run.history if h.get("eval_success") is not None and h["eval_success"] == h["eval_success"]]
    run.latest_success = evals[-1]["eval_success"] if evals else float("nan")
    run.best_success = max((h["eval_success"] for h in evals if not h.get("initial_eval")), default=-1.0)
    n_params = sum(p.numel() for p in policy.model.parameters())
    print(f"{args.model_type} policy {n_params/1e3:.0f}k params, K={cfg.num_steps}, chunk={policy.chunk_size}, "
          f"n_action_steps={policy.n_action_steps}, sigma=[{cfg.sigma_min}, {cfg.sigma_max}], envs={args.parallel_envs}")
    return run


def critic_input_dim(args, backend) -> int:
    """Size of reinflow_engine.critic_features for the training env's observation space: the
    joint state plus the privileged block pose (every backend's envs include it)."""
    kw = dict(backend.env_kwargs(), obs_mode="state")  # the critic reads no images
    env = gym.make(args.env_id, **kw)
    space = env.observation_space
    env.close()
    return sum(int(np.prod(space[k].shape)) for k in (u.OBS_STATE, u.OBS_ENV_STATE) if k in space.spaces)


# ---------------------------------------------------------------------- one iteration
def rollout(run: Run, vec, it: int, gen: torch.Generator, it_seed: int):
    """Iteration ``it``'s rollout: the seeded reset (a new group of episodes with ``--advantage
    group``; the curriculum's bin weights), ``ceil(--rollout-steps / n_action_steps)`` decisions
    per env into a fresh (T, N, ...) buffer, then the curriculum update.

    Returns:
        (buffer, the episodes that ended, rollout stats, the bin weights used or None).
    """
    args, n = run.args, run.args.parallel_envs
    run.agent.eval_mode()
    weights = run.curriculum.weights() if run.curriculum is not None else None
    obs, _ = vec.reset(seed=train_reset_seeds(it_seed, n), options=None if weights is None else {"block_bin_weights": weights})
    buffer = RolloutBuffer(math.ceil(args.rollout_steps / run.policy.n_action_steps), n, run.agent.critic.config["input_dim"])
    _, episodes, stats = collect_rollout(vec, run.agent, buffer, obs, gen, run.policy.n_action_steps)
    if run.curriculum is not None:
        run.curriculum.update([e.bin for e in episodes], [e.success for e in episodes])
    run.discarded += stats["discarded"]
    return buffer, episodes, stats, weights


def advantages(run: Run, buffer: RolloutBuffer):
    """The critic's input statistics (every rank's), values, GAE (or group) advantages and the
    flattened data of the update (equal decision counts across ranks). Returns (data, values)."""
    agent, cfg, dist = run.agent, run.agent.cfg, run.dist
    feats = torch.as_tensor(buffer.feats.transpose(1, 0, 2)[buffer.valid.T])  # valid decisions, env-major
    agent.critic.norm.update(feats if dist is None else dist.gather_cat(feats))
    d = buffer.feats.shape[-1]
    values = agent.values(torch.as_tensor(buffer.feats.reshape(-1, d))).reshape(buffer.T, buffer.N)
    next_values = agent.values(torch.as_tensor(buffer.next_feats.reshape(-1, d))).reshape(buffer.T, buffer.N)
    adv, ret = buffer.gae(values, next_values, cfg)
    keep = buffer.valid
    if cfg.advantage == "group":  # baseline: mean return of the episodes from the same block position
        keep, adv = buffer.group_advantages(cfg.group_size, cfg)
    data = buffer.flatten(keep, adv, ret)
    if dist is not None:  # same number of decisions (minibatches, optimizer steps) on every rank
        data = dist.equalize(data)
    return data, values[buffer.valid]


def iteration_row(run: Run, it: int, episodes, stats: dict, data, values, upd: dict, sigma_max: float, weights) -> dict:
    """The logged statistics of iteration ``it`` (one CSV row; totals over all ranks, so
    ``--episodes`` stops every rank together)."""
    dist = run.dist
    run.total_episodes += len(episodes) if dist is None else round(dist.mean_scalar(len(episodes)) * dist.world_size)
    run.total_env_steps += stats["env_steps"] if dist is None else round(dist.mean_scalar(stats["env_steps"]) * dist.world_size)
    mean = lambda xs: float(np.mean(xs)) if len(xs) else float("nan")  # noqa: E731
    row = {"iteration": it + 1, "env_steps": run.total_env_steps, "episodes": len(episodes),
           "total_episodes": run.total_episodes, "decisions": len(data),
           "train_success": mean([e.success for e in episodes]), "train_return": mean([e.ret for e in episodes]),
           "train_length": mean([e.length for e in episodes]), "sigma_max": sigma_max,
           "sigma_sampled": stats["sigma_sampled"], "value_mean": mean(values), "adv_std": float(data.advantages.std()),
           **{k: upd[k] for k in ("pg_loss", "v_loss", "entropy", "bc_loss", "approx_kl", "clipfrac", "sigma",
                                  "epochs", "ratio_check", "policy_updated", "early_stop")},
           "eval_success": float("nan"), "eval_return": float("nan")}
    if run.discarded:
        row["discarded_episodes"] = run.discarded
    if weights is not None:  # history only (not the CSV): the bin weights this rollout used
        row["block_weights"] = [float(w) for w in weights]
    return row


def evaluate(run: Run, iteration: int, video: Path | None = None) -> dict:
    """The deterministic sampler (K = the ReinFlow K) on ``--eval-episodes`` episodes from
    ``--eval-seed`` (rollout_utils.run_episode, a policy_registry.ChunkPolicy), in the env's own
    reward; with ``video``, the first episode is filmed there (the side camera)."""
    args = run.args
    env = env_factory(args, run.backend, training=False)()
    policy = pr.ChunkPolicy(run.agent.policy, num_steps=run.agent.cfg.num_steps)
    seeds = [args.eval_seed + i for i in range(args.eval_episodes if video is None else 1)]
    try:
        if video is not None:
            env.unwrapped.render_camera = u.CAMERAS["camera3"]
            writer = ru.VideoWriter(video)
            eps = [ru.run_episode(env, policy, seeds[0], writer)]
            writer.close()
        else:
            eps = [ru.run_episode(env, policy, s) for s in seeds]
    finally:
        env.close()
    return {"eval_success": float(np.mean([e["success"] for e in eps])), "eval_return": float(np.mean([e["return"] for e in eps])),
            "eval_iteration": iteration, "eval_unstable": sum(bool(e["sim_unstable"]) for e in eps)}


def save(run: Run, iteration: int, path: Path | None = None) -> None:
    """Write the run's checkpoint (rank 0 only): a checkpoint_io.Checkpoint of kind "reinflow"
    with the backend's policy fields and the agent's, history, RNG states and flags."""
    if not run.is_main:
        return
    fields_ = {**run.agent.checkpoint_fields(), **run.backend.policy_fields(run.policy, run.agent)}
    ckio.save(path or run.args.checkpoint, ckio.Checkpoint(
        kind="reinflow", iteration=iteration, history=run.history, rng_state=ckio.rng_states(), source=run.source,
        args=saved_args(run.args), block_curriculum=run.curriculum.state_dict() if run.curriculum else None, **fields_))


def log_eval_save(run: Run, it: int, end_it: int, row: dict) -> None:
    """Evaluate every ``--eval-every`` iterations and at the end (rank 0; with ``--keep-best``
    the best so far on the monitoring seeds goes to CHECKPOINT_best.pt), append the row to the
    history and the loggers, and checkpoint every ``--save-every`` iterations and at the end."""
    args, t0 = run.args, row.pop("_t0")
    if args.eval_every and args.eval_episodes and run.is_main and ((it + 1) % args.eval_every == 0 or it + 1 == end_it):
        row.update(evaluate(run, it + 1))
        run.latest_success = row["eval_success"]
        if args.keep_best and row["eval_success"] > run.best_success:
            run.best_success = row["eval_success"]
            run.history.append(row)
            save(run, it + 1, run.best_path)
            run.history.pop()
    row["iter_s"] = time.perf_counter() - t0
    row["wall_s"] = (run.history[-1].get("wall_s", 0.0) if run.history else 0.0) + row["iter_s"]
    run.history.append(row)
    run.loggers.log(row)
    if (it + 1) % args.save_every == 0 or it + 1 == end_it:
        save(run, it + 1)


def progress(run: Run, end_it: int):
    """The iterations still to run, with a tqdm bar (rank 0, not ``--quiet``)."""
    return tqdm(range(run.start_it, end_it), initial=run.start_it, total=run.args.iterations, desc="ReinFlow", unit="it",
                disable=run.args.quiet or not run.is_main)


def show(bar, run: Run, row: dict) -> None:
    fmt = lambda v, f: format(v, f) if v == v else "-"  # noqa: E731
    bar.set_postfix(eval=fmt(run.latest_success, ".0%"), train=fmt(row["train_success"], ".0%"),
                    ret=fmt(row["train_return"], ".0f"), kl=fmt(row["approx_kl"], ".3f"))


def finish(run: Run, vec, t_start: float) -> None:
    """The evaluation video (unless ``--no-render``), the restart warning and the result line."""
    args = run.args
    if run.is_main and not args.no_render:
        video = args.checkpoint.with_name(args.checkpoint.stem + "_eval.mp4")
        evaluate(run, len(run.history), video)
        print(f"evaluation video (seed {args.eval_seed}, deterministic) -> {video}")
    if run.discarded:
        print(f"WARNING: {run.discarded} episodes discarded after env worker restarts ({vec.restarts} restarts)",
              file=sys.stderr)
    final_it = len([h for h in run.history if not h.get("initial_eval")])
    print(f"done: {final_it} iterations, {run.total_episodes} training episodes, {run.total_env_steps} env steps, "
          f"{time.perf_counter() - t_start:.0f} s; latest eval success {run.latest_success:.0%}; checkpoint -> "
          f"{args.checkpoint}" + ("" if run.is_main else f" (rank {run.rank}: written by rank 0)"))


def main(argv=None) -> int:
    args = parse_args(argv)
    if Distributed.launcher_rank() == 0:
        if args.verbose:
            mujoco_rendering.print_backend()
        line = make_backend(args).settings_line()  # the per-model settings this run uses (VLAs)
        if line:
            print(line)
    try:  # a refused checkpoint (unsafe, corrupt, wrong kind or model type): one line, status 2
        run = setup_run(args)
    except ckio.CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.eval_at_start and run.start_it == 0 and args.eval_episodes and run.is_main:
        ev = evaluate(run, 0)
        run.latest_success = ev["eval_success"]
        run.history.append({"iteration": 0, "env_steps": 0, "episodes": 0, **ev, "initial_eval": True})
        print(f"initial eval: success {ev['eval_success']:.0%}, return {ev['eval_return']:.1f}")
    vec = make_vector_env(args, run)
    end_it = args.iterations if args.iterations is not None else 10**9
    t_start = time.perf_counter()
    try:
        bar = progress(run, end_it)
        for it in bar:
            if args.episodes is not None and run.total_episodes >= args.episodes:
                break
            t0 = time.perf_counter()
            it_seed = iteration_seed(rank_seed(args.seed, run.rank), it)  # rank 0: args.seed
            gen = torch.Generator().manual_seed(it_seed)
            sigma_max = run.agent.set_iteration(it)
            buffer, episodes, stats, weights = rollout(run, vec, it, gen, it_seed)
            data, values = advantages(run, buffer)
            t_roll = time.perf_counter() - t0
            upd = ppo_update(run.agent, data, it, gen, dist=run.dist)
            row = iteration_row(run, it, episodes, stats, data, values, upd, sigma_max, weights)
            row.update(rollout_s=t_roll, _t0=t0)
            log_eval_save(run, it, end_it, row)
            show(bar, run, row)
        save(run, len([h for h in run.history if not h.get("initial_eval")]))
    finally:
        vec.close()
        run.loggers.close()
    finish(run, vec, t_start)
    if run.dist is not None:
        run.dist.barrier()
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
