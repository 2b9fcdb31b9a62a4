"""Behaviour cloning of the small flow policy on scripted demonstrations.

Copy-paste (from simulation_code/):

    python record_dataset.py --input scripted --output-dir ../datasets/scripted_demos --num-episodes 50 --seed 1000
    python train_flow_bc.py --dataset ../datasets/scripted_demos --steps 3000 \
        --checkpoint ../outputs/flow_bc.pt --eval-episodes 20

The checkpoint defaults to ``outputs/flow_bc.pt`` at the repository root (git-ignored); the shipped
``checkpoints/flow_bc.pt`` is never the default, so a run does not overwrite it.

Without a recorded dataset (development), ``--scripted-episodes N`` generates N demonstrations in
memory from the env and the scripted expert (seeds ``--demo-seed`` + j).

Trains :class:`flow_policy.FlowPolicy` with the flow-matching loss (SmolVLA's convention), Adam
with a cosine schedule, shows a progress bar, and writes one checkpoint atomically (model type
``flow``, ``kind: "bc"``, architecture config, normalisation stats, weights, optimizer state, RNG
states, loss history). ``--eval-episodes N`` evaluates the result on seeds ``--eval-seed`` + i
with the deterministic sampler.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from so101_sim import mujoco_rendering  # noqa: F401  (GL backend before mujoco)

import numpy as np
import torch
from tqdm import tqdm

from so101_sim import checkpoint_io as ckio
from so101_sim import cli_args
from so101_sim import demonstrations as demos
from so101_sim import envs  # registers the env ids
from so101_sim import flow_policy as fp
from so101_sim import so101_mujoco_utils as u


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=cli_args.DefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", type=cli_args.lerobot_dataset_dir, help="LeRobotDataset v3 folder recorded by record_dataset.py")
    src.add_argument("--scripted-episodes", type=cli_args.positive_int, help="generate this many demonstrations in memory instead")
    p.add_argument("--demo-seed", type=int, default=u.SEED_RANGES["demonstrations"][0],
                   help="first seed of in-memory demonstrations (default %(default)s, so101_mujoco_utils.SEED_RANGES)")
    p.add_argument("--max-demo-episodes", type=cli_args.positive_int, default=None, help="use only the first N episodes of the data")
    p.add_argument("--checkpoint", type=cli_args.output_path, default=u.REPO_ROOT / "outputs" / "flow_bc.pt",
                   help="output checkpoint")
    p.add_argument("--steps", type=cli_args.positive_int, default=3000, help="gradient steps")
    p.add_argument("--batch-size", type=cli_args.positive_int, default=256, help="minibatch (frames)")
    p.add_argument("--lr", type=cli_args.positive_float, default=1e-3, help="Adam learning rate (cosine schedule)")
    p.add_argument("--weight-decay", type=cli_args.nonneg_float, default=1e-6, help="Adam weight decay")
    p.add_argument("--seed", type=int, default=0, help="torch seed (init, batches, flow noise)")
    p.add_argument("--chunk-size", type=cli_args.positive_int, default=fp.FlowPolicyConfig.chunk_size,
                   help="actions predicted per chunk")
    p.add_argument("--n-action-steps", type=cli_args.positive_int, default=fp.FlowPolicyConfig.n_action_steps,
                   help="actions executed per chunk")
    p.add_argument("--hidden-dim", type=cli_args.positive_int, default=fp.FlowPolicyConfig.hidden_dim, help="MLP width")
    p.add_argument("--depth", type=cli_args.positive_int, default=fp.FlowPolicyConfig.depth, help="MLP blocks")
    p.add_argument("--num-denoise-steps", type=cli_args.positive_int, default=fp.FlowPolicyConfig.num_denoise_steps, help="K at inference")
    p.add_argument("--action-mode", default="delta", choices=("delta", "absolute"),
                   help="chunk targets relative to the current joints (delta) or absolute")
    p.add_argument("--init-noise-scale", type=cli_args.nonneg_float, default=fp.FlowPolicyConfig.init_noise_scale,
                   help="std of the sampler's start noise at inference (0 = deterministic sampler from x=0)")
    p.add_argument("--eval-episodes", type=cli_args.nonneg_int, default=0, help="evaluate on this many seeded episodes after training")
    p.add_argument("--eval-seed", type=int, default=0, help="first evaluation seed")
    p.add_argument("--env-id", type=cli_args.env_id, default=envs.DEFAULT_ENV_ID,
                   help="env of --scripted-episodes and the evaluation")
    p.add_argument("--threads", type=cli_args.positive_int, default=1, help="torch CPU threads (1 is fastest on a shared 2-core CPU)")
    p.add_argument("-v", "--verbose", action="store_true", help="also print setup details (the OpenGL backend chosen)")
    args = p.parse_args(argv)
    if args.n_action_steps > args.chunk_size:
        p.error(f"argument --n-action-steps: must be <= --chunk-size {args.chunk_size} (got {args.n_action_steps})")
    return args


def load_data(args) -> dict[str, np.ndarray]:
    """Frames (MuJoCo radians) from the dataset or in-memory scripted episodes."""
    if args.dataset is not None:
        data = demos.load_lerobot_demonstrations(str(args.dataset))
    else:
        data = demos.scripted_demonstrations(args.scripted_episodes, args.demo_seed, args.env_id)
    if args.max_demo_episodes is not None:
        keep = np.unique(data["episode_index"])[: args.max_demo_episodes]
        sel = np.isin(data["episode_index"], keep)
        data = {k: v[sel] for k, v in data.items()}
    return data


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.verbose:
        mujoco_rendering.print_backend()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    data = load_data(args)
    n_eps = len(np.unique(data["episode_index"]))
    cfg = fp.FlowPolicyConfig(chunk_size=args.chunk_size, n_action_steps=args.n_action_steps, hidden_dim=args.hidden_dim,
                              depth=args.depth, num_denoise_steps=args.num_denoise_steps, action_mode=args.action_mode,
                              init_noise_scale=args.init_noise_scale)
    chunks = demos.chunk_targets(data["action"], data["episode_index"], cfg.chunk_size)
    stats = fp.compute_norm_stats(data["state"], data["env_state"], chunks, cfg)
    policy = fp.FlowPolicy(cfg, stats)
    n_params = sum(p.numel() for p in policy.model.parameters())
    print(f"data: {n_eps} episodes, {len(chunks)} frames ({time.perf_counter() - t0:.1f} s); policy {n_params/1e3:.0f}k params")

    obs_all = {"observation.state": data["state"], "observation.environment_state": data["env_state"]}
    batch_all = policy.prepare_batch(obs_all)
    chunks_t = torch.as_tensor(chunks)
    opt = torch.optim.AdamW(policy.model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, args.steps), eta_min=args.lr * 0.05)
    policy.model.train()
    history = []
    bar = tqdm(range(args.steps), desc="BC", unit="step")
    ema = None
    for step in bar:
        idx = torch.as_tensor(rng.integers(0, len(chunks), args.batch_size))
        batch = {k: v[idx] for k, v in batch_all.items()}
        loss = policy.flow_matching_loss(batch, chunks_t[idx], generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.model.parameters(), 1.0)
        opt.step()
        sched.step()
        lv = loss.item()
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        if step % 50 == 0 or step == args.steps - 1:
            history.append({"step": step, "loss": ema})
            bar.set_postfix(loss=f"{ema:.4f}")
    policy.model.eval()
    train_time = time.perf_counter() - t0

    ckpt = ckio.Checkpoint(kind="bc", iteration=args.steps, history=history, optimizers={"policy": opt.state_dict()},
                           rng_state={"torch": torch.get_rng_state(), "numpy": rng.bit_generator.state},
                           args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                           source=ckio.portable_source(args.dataset) if args.dataset else "scripted",
                           data={"episodes": int(n_eps), "frames": int(len(chunks))}, **policy.checkpoint_fields())
    if args.eval_episodes:
        ckpt.evaluation = evaluate_checkpoint_policy(policy, args)
    ckio.save(args.checkpoint, ckpt)
    print(f"final loss {ema:.4f}; trained in {train_time:.0f} s; checkpoint -> {args.checkpoint}")
    return 0


def evaluate_checkpoint_policy(policy, args) -> dict:
    """Deterministic-sampler evaluation on seeds eval_seed .. eval_seed + eval_episodes - 1."""
    import gymnasium as gym

    from so101_sim import policy_registry as pr
    from so101_sim import rollout_utils as ru

    seeds = [args.eval_seed + i for i in range(args.eval_episodes)]
    t0 = time.perf_counter()
    env = gym.make(args.env_id, **pr.entry("flow").env_kwargs)
    try:
        eps = [ru.run_episode(env, pr.ChunkPolicy(policy), s) for s in seeds]
    finally:
        env.close()
    rate = float(np.mean([e["success"] for e in eps]))
    ret = float(np.mean([e["return"] for e in eps]))
    print(f"eval: success {rate:.0%} over {len(eps)} episodes, mean return {ret:.1f} ({time.perf_counter() - t0:.0f} s)")
    return {"success_rate": rate, "mean_return": ret, "episodes": len(eps), "seeds": seeds}


if __name__ == "__main__":
    sys.exit(main())
