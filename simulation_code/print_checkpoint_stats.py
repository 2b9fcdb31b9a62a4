"""Print the training statistics stored in a BC or ReinFlow checkpoint, optionally plot them.

Copy-paste (from simulation_code/):

    python print_checkpoint_stats.py --checkpoint checkpoints/flow_reinflow.pt --plot ../outputs/reinflow_curves.png

Prints the header (model type, kind, iteration, configs) and one row per logged iteration:
env steps, training episodes, training success rate and mean return (stochastic policy), evaluation
success rate and return (deterministic sampler, fixed seeds), sigma, entropy, losses, KL and clip
fraction. ``--plot`` writes a figure of the curves (matplotlib, Agg backend). ``--export-policy
OUT`` writes the policy-only checkpoint of it (checkpoint_io.export_policy: weights, what rebuilds
the policy and the noise head; no optimizer states, critic, history or RNG), for deployment.
``--export-pretrained OUT`` writes it in the ecosystem's form (pretrained_export.py): a SmolVLA/Pi0
checkpoint as a LeRobot ``pretrained_model`` directory (for ``lerobot-eval`` and ``--model-type
lerobot``), the flow policy as ``model.safetensors`` + ``config.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from so101_sim import checkpoint_io as ckio
from so101_sim import cli_args
from so101_sim import policy_registry as pr
from so101_sim.reinflow_rollout import BlockCurriculum

COLUMNS = [("iteration", "it", "{:>4}"), ("env_steps", "env_steps", "{:>9}"), ("episodes", "eps", "{:>4}"),
           ("train_success", "train_succ", "{:>10.0%}"), ("train_return", "train_ret", "{:>9.1f}"),
           ("eval_success", "eval_succ", "{:>9.0%}"), ("eval_return", "eval_ret", "{:>8.1f}"),
           ("sigma", "sigma", "{:>6.3f}"), ("entropy", "entropy", "{:>7.3f}"), ("pg_loss", "pg_loss", "{:>8.4f}"),
           ("v_loss", "v_loss", "{:>7.3f}"), ("approx_kl", "kl", "{:>8.5f}"), ("clipfrac", "clipfr", "{:>6.3f}")]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=cli_args.DefaultsHelpFormatter)
    p.add_argument("--checkpoint", type=cli_args.existing_file, default=str(pr.SHIPPED_CHECKPOINTS["reinflow"]),
                   help="checkpoint (default: the shipped ReinFlow flow policy, %(default)s)")
    p.add_argument("--plot", type=cli_args.output_path, default=None, help="write a PNG of the training curves here")
    p.add_argument("--every", type=cli_args.positive_int, default=1, help="print every N-th iteration row")
    p.add_argument("--export-policy", type=cli_args.output_path, default=None,
                   help="also write the policy-only checkpoint here (for deployment; run it with "
                        "run_reinflow_inference.py --checkpoint OUT)")
    p.add_argument("--export-pretrained", type=cli_args.output_path, default=None,
                   help="also write the policy in the ecosystem's form to this folder: SmolVLA/Pi0 as a LeRobot "
                        "pretrained_model directory (lerobot-eval --policy.path=OUT, run_mujoco_simulation.py "
                        "--model-type lerobot --policy-path OUT), the flow policy as model.safetensors + config.json "
                        "(--model-type flow --policy-path OUT)")
    return p.parse_args(argv)


def _fmt(fmt: str, v) -> str:
    width = len(fmt.format(0))
    if v is None or (isinstance(v, float) and v != v):
        return "-".rjust(width)
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v).rjust(width)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        ckpt = ckio.load(args.checkpoint)
    except ckio.CheckpointError as e:  # unsafe, corrupt, missing, not ours: one line, status 2
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_header(args.checkpoint, ckpt)
    hist = ckpt.history if ckpt.kind == "reinflow" else []
    if hist:
        print(" ".join(h.rjust(len(f.format(0))) for _, h, f in COLUMNS))
        for i, row in enumerate(hist):
            if i % args.every and i != len(hist) - 1:
                continue
            print(" ".join(_fmt(f, row.get(k)) for k, _, f in COLUMNS))
        evals = [(r["iteration"], r["eval_success"]) for r in hist if r.get("eval_success") == r.get("eval_success")
                 and r.get("eval_success") is not None]
        steps = hist[-1].get("env_steps", 0)
        total_eps = sum(r.get("episodes", 0) for r in hist)
        print(f"summary: {len([r for r in hist if not r.get('initial_eval')])} iterations, {steps} env steps, "
              f"{total_eps} training episodes"
              + (f"; eval success first {evals[0][1]:.0%} (it {evals[0][0]}), best {max(e[1] for e in evals):.0%}, "
                 f"last {evals[-1][1]:.0%} (it {evals[-1][0]})" if evals else ""))
    else:
        print("no ReinFlow training history in this checkpoint")
    if args.plot:
        plot(hist, ckpt, args.plot)
        print(f"plot -> {args.plot}")
    if args.export_policy:
        ckio.save(args.export_policy, ckio.export_policy(ckpt))
        print(f"policy-only checkpoint -> {args.export_policy}")
    if args.export_pretrained:
        from so101_sim.pretrained_export import export_pretrained

        export_pretrained(ckpt, args.export_pretrained)
        print(f"{'LeRobot pretrained_model' if ckpt.model_type != 'flow' else 'safetensors + JSON'} -> {args.export_pretrained}")
    return 0


def print_header(path, ckpt: ckio.Checkpoint) -> None:
    """The checkpoint's kind, model type, iteration and configs, its curriculum and BC summary."""
    print(f"checkpoint: {path}")
    print(f"  kind={ckpt.kind} model_type={ckpt.model_type} iteration={ckpt.iteration}")
    print(f"  policy config: {ckpt.policy_config if ckpt.policy_config is not None else ckpt.base_policy}")
    if ckpt.reinflow_config:
        print(f"  reinflow config: {ckpt.reinflow_config}")
        print(f"  noise head: {ckpt.noise_head_config}  critic: {ckpt.critic_config}")
    print(f"  trained from: {ckpt.source or '-'}")
    if ckpt.block_curriculum:
        c = BlockCurriculum.from_state_dict(ckpt.block_curriculum)
        print(f"  block curriculum: {c.bins[0]} distance x {c.bins[1]} angle bins, uniform share {c.uniform}, "
              f"decay {c.decay}; training success per bin {np.round(c.success_estimates(), 2).tolist()}, "
              f"next weights {np.round(c.weights(), 3).tolist()}")
    if ckpt.kind == "bc" and ckpt.history:
        bh, ev = ckpt.history, ckpt.evaluation
        print(f"  BC: {ckpt.data} final flow-matching loss {bh[-1]['loss']:.4f} after {bh[-1]['step'] + 1} steps"
              + (f"; eval success {ev['success_rate']:.0%} over {ev['episodes']} episodes" if ev else ""))


def plot(hist: list[dict], ckpt: ckio.Checkpoint, out: Path) -> None:
    """2x2 figure: success rates, returns, sigma/entropy, losses/KL against iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key):
        pts = [(r["iteration"], r[key]) for r in hist if r.get(key) is not None and r[key] == r[key]]
        return ([p[0] for p in pts], [p[1] for p in pts])

    fig, ax = plt.subplots(2, 2, figsize=(11, 7))
    for key, lab in (("train_success", "train (stochastic)"), ("eval_success", "eval (deterministic)")):
        ax[0, 0].plot(*series(key), marker="o" if key == "eval_success" else None, label=lab)
    ax[0, 0].set_ylabel("success rate")
    ax[0, 0].set_ylim(-0.02, 1.02)
    for key, lab in (("train_return", "train"), ("eval_return", "eval")):
        ax[0, 1].plot(*series(key), marker="o" if key == "eval_return" else None, label=lab)
    ax[0, 1].set_ylabel("episode return")
    ax[1, 0].plot(*series("sigma"), label="sigma (mean)")
    ax[1, 0].plot(*series("sigma_max"), "--", label="sigma_max")
    ax[1, 0].set_ylabel("sigma (normalised action units)")
    for key in ("pg_loss", "v_loss", "approx_kl", "clipfrac"):
        ax[1, 1].plot(*series(key), label=key)
    ax[1, 1].set_yscale("symlog", linthresh=1e-4)
    for a in ax.flat:
        a.set_xlabel("iteration")
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8)
    fig.suptitle(f"{ckpt.model_type} {ckpt.kind} checkpoint, iteration {ckpt.iteration}")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
