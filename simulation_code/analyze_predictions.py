r"""Per-joint analysis of a policy's predictions on a recorded dataset (mode-collapse diagnostics).

Copy-paste (from simulation_code/):

    python analyze_predictions.py --policy-path ../outputs/train/my_smolvla/checkpoints/last/pretrained_model \
        --model-type smolvla --dataset ../datasets/so101_pickplace --split-episodes 10 --out ../outputs/analysis

Runs the policy offline over the dataset's recorded observations (not the simulator), compares the
first action of each predicted chunk with the recorded action per joint, in the dataset's units
(LeRobot calibrated degrees; gripper 0..100), separately for a train and a validation split by
episode (the last ``--split-episodes`` episodes are validation). Writes to ``--out``:

    timeseries_val.png / timeseries_train.png   ground truth vs prediction per joint, a few episodes
    scatter_val.png / scatter_train.png         prediction vs ground truth per joint, with R^2
    error_histograms.png                        per-joint prediction errors (validation)
    statistics.json                             per split and joint: mean/max absolute error, R^2,
                                                prediction std, ground-truth std, mode-collapse flags
    predictions.npz                             val_pred, val_gt, val_obs, train_pred, train_gt,
                                                train_obs (N x 6, dataset units), episode indices

and prints a table, the joints flagged as collapsed (prediction std far below the ground truth's,
or R^2 near zero while the joint moves) and the likely causes the data can confirm (known causes
of "joints predict constants"): near-zero std in the normalization stats, little motion of
that joint in the data, a camera-key or task-string mismatch between checkpoint and dataset.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from so101_sim import mujoco_rendering  # noqa: F401

import numpy as np
from tqdm import tqdm

from so101_sim import cli_args
from so101_sim import policy_registry as pr
from so101_sim import rollout_utils as ru
from so101_sim import so101_mujoco_utils as u

#: A joint is "collapsed" when its prediction std is below this fraction of the ground truth's,
#: or when R^2 < COLLAPSE_R2 while the ground truth moves (std > MOVING_STD, dataset units).
COLLAPSE_STD_RATIO = 0.3
COLLAPSE_R2 = 0.1
MOVING_STD = 1.0
#: Normalization std below this (dataset units) makes the normalized target explode or vanish.
TINY_NORM_STD = 1e-2
#: A joint that moves less than this (std, dataset units) in the data gives MSE little to learn.
LITTLE_MOTION_STD = 2.0


def r2_score(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column: 1 - SS_res / SS_tot; (N, J) -> (J,).
    A constant ground-truth column gives nan."""
    ss_res = ((gt - pred) ** 2).sum(axis=0)
    ss_tot = ((gt - gt.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.nan)


def joint_statistics(gt: np.ndarray, pred: np.ndarray) -> dict[str, list]:
    """Per-joint error statistics, (N, 6) arrays in dataset units -> dict of 6-lists."""
    err = pred - gt
    r2 = r2_score(gt, pred)
    pred_std, gt_std = pred.std(axis=0), gt.std(axis=0)
    collapsed = [
        bool(g > MOVING_STD and (p < COLLAPSE_STD_RATIO * g or (np.isfinite(r) and r < COLLAPSE_R2)))
        for p, g, r in zip(pred_std, gt_std, r2)
    ]
    return {
        "mean_abs_error": np.abs(err).mean(axis=0).tolist(),
        "max_abs_error": np.abs(err).max(axis=0).tolist(),
        "r2": [None if not np.isfinite(x) else float(x) for x in r2],
        "pred_std": pred_std.tolist(),
        "gt_std": gt_std.tolist(),
        "collapsed": collapsed,
    }


def dataset_frames(dataset, episodes: list[int]):
    """Yield (episode, row index, frame dict) for the chosen episodes, in order."""
    cols = dataset.hf_dataset.with_format("numpy")
    ep_index = np.asarray(cols["episode_index"])
    for ep in episodes:
        for i in np.nonzero(ep_index == ep)[0]:
            yield ep, int(i), dataset[int(i)]


def replayed_env_states(dataset) -> np.ndarray:
    """(N, 7) block pose per dataset row for datasets without ``observation.environment_state``
    (what the privileged flow policy needs), reconstructed by replaying each recorded episode
    from its stored seed (demonstrations.load_lerobot_demonstrations)."""
    from so101_sim import demonstrations

    demo = demonstrations.load_lerobot_demonstrations(str(dataset.root))
    cols = dataset.hf_dataset.with_format("numpy")
    order = np.lexsort((np.asarray(cols["frame_index"]), np.asarray(cols["episode_index"])))
    by_row = np.empty_like(demo["env_state"])
    by_row[order] = demo["env_state"]
    return by_row


def to_env_observation(frame: dict, image_keys: list[str]) -> dict:
    """A dataset frame (LeRobot units, CHW float images) -> an env-style observation
    (state in MuJoCo radians, HWC uint8 images), which every policy of the interface takes."""
    obs = {u.OBS_STATE: u.lerobot_to_mujoco(np.asarray(frame[u.OBS_STATE], dtype=np.float64)).astype(np.float32)}
    for key in image_keys:
        img = np.asarray(frame[key], dtype=np.float32)
        obs[key] = (np.clip(img.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)
    if u.OBS_ENV_STATE in frame:
        obs[u.OBS_ENV_STATE] = np.asarray(frame[u.OBS_ENV_STATE], dtype=np.float32)
    return obs


def predict_split(policy, dataset, episodes: list[int], task: str | None, seed: int, desc: str,
                  env_states: np.ndarray | None = None):
    """Predict the first action of a chunk at every frame of ``episodes``.

    Returns (pred, gt, obs, episode) arrays: (N, 6) predictions and ground truth in dataset units,
    (N, 6) observed states in dataset units, (N,) episode indices.
    """
    import torch

    image_keys = [k for k in dataset.meta.camera_keys]
    preds, gts, obss, eps = [], [], [], []
    gen = torch.Generator().manual_seed(seed)
    frames = dataset_frames(dataset, episodes)
    total = int(sum((np.asarray(dataset.hf_dataset.with_format("numpy")["episode_index"]) == e).sum() for e in episodes))
    for ep, row, frame in tqdm(frames, total=total, desc=desc, unit="frame"):
        obs = to_env_observation(frame, image_keys)
        if env_states is not None:
            obs[u.OBS_ENV_STATE] = env_states[row]
        noise = policy.sample_noise(1, generator=gen) if hasattr(policy, "sample_noise") else None
        kwargs = {"noise": noise} if noise is not None else {}
        chunk = policy.predict_action_chunk(obs, task or frame.get("task"), **kwargs)
        preds.append(u.mujoco_to_lerobot(np.asarray(chunk[0], dtype=np.float64)))
        gts.append(np.asarray(frame["action"], dtype=np.float64))
        obss.append(np.asarray(frame[u.OBS_STATE], dtype=np.float64))
        eps.append(ep)
    shape = (0, u.NUM_JOINTS)
    return (np.array(preds).reshape(shape if not preds else (-1, 6)), np.array(gts).reshape(shape if not gts else (-1, 6)),
            np.array(obss).reshape(shape if not obss else (-1, 6)), np.array(eps, dtype=int))


def _policy_action_std(policy) -> np.ndarray | None:
    """The checkpoint's action normalization std in dataset units, (6,), when the policy exposes
    one (LeRobot adapters: the postprocessor's unnormalizer stats; the flow policy: its stats)."""
    post = getattr(policy, "postprocessor", None)
    for step in getattr(post, "steps", []) or []:
        stats = getattr(step, "stats", None) or {}
        std = stats.get("action", {}).get("std") if isinstance(stats, dict) else None
        if std is not None:
            return np.asarray(std.detach().cpu() if hasattr(std, "detach") else std, dtype=np.float64)[: u.NUM_JOINTS]
    return None


def likely_causes(joint: int, dataset, policy) -> list[str]:
    """Causes the data can confirm for a collapsed ``joint`` (strings for the report)."""
    causes = []
    name = u.JOINT_NAMES[joint]
    norm_std = _policy_action_std(policy)
    if norm_std is not None and norm_std.size > joint and norm_std[joint] < TINY_NORM_STD:
        causes.append(f"{name}: the checkpoint's action normalization std is {norm_std[joint]:.2g} "
                      "(near zero): the normalized target is degenerate")
    stats = dataset.meta.stats.get("action", {})
    if "std" in stats and float(np.asarray(stats["std"])[joint]) < LITTLE_MOTION_STD:
        causes.append(f"{name}: the joint barely moves in the data (action std "
                      f"{float(np.asarray(stats['std'])[joint]):.2f}); MSE is minimised by its mean")
    return causes


def checkpoint_mismatches(dataset, policy) -> list[str]:
    """Camera-key and task-string mismatches between the checkpoint and the dataset.

    Cameras: the sim-side keys the policy's camera map reads (``camera1..3``) must be the dataset's
    camera keys. Task: the checkpoint's recorded training task must be one of the dataset's tasks.
    """
    out = []
    camera_map = getattr(policy, "camera_map", None) or {}
    wanted = sorted(u.OBS_IMAGE_PREFIX + k.split(".")[-1] for k in camera_map)
    cams = sorted(dataset.meta.camera_keys)
    if camera_map and cams and sorted(set(wanted)) != cams:
        out.append(f"camera keys differ: the checkpoint's camera map reads {wanted}, the dataset has {cams} "
                   "(check --camera-map and the rename_map used for training)")
    trained = (getattr(policy, "info", None) or {}).get("training_task")
    tasks = list(getattr(dataset.meta.tasks, "index", dataset.meta.tasks))
    if trained and tasks and trained not in tasks:
        out.append(f"task string differs: checkpoint trained on {trained!r}, dataset tasks {tasks}")
    return out


def _plots(out: Path, splits: dict, show_episodes: int = 3) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = [" (deg)"] * 5 + [" (0..100)"]
    for split, (pred, gt, _obs, eps, stats) in splits.items():
        if not len(pred):
            continue
        fig, axes = plt.subplots(2, 3, figsize=(13, 6))
        for ep in list(dict.fromkeys(eps.tolist()))[:show_episodes]:
            sel = eps == ep
            for j, ax in enumerate(axes.flat):
                line = ax.plot(gt[sel, j], lw=1.5, label=f"ep {ep} ground truth")[0]
                ax.plot(pred[sel, j], "--", color=line.get_color(), lw=1.2, label=f"ep {ep} predicted")
        for j, ax in enumerate(axes.flat):
            ax.set_title(u.JOINT_NAMES[j] + units[j], fontsize=9)
            ax.set_xlabel("frame")
        axes[0, 0].legend(fontsize=7)
        fig.suptitle(f"{split}: ground truth (solid) vs predicted (dashed)")
        fig.tight_layout()
        fig.savefig(out / f"timeseries_{split}.png", dpi=90)
        plt.close(fig)

        fig, axes = plt.subplots(2, 3, figsize=(12, 7.5))
        for j, ax in enumerate(axes.flat):
            ax.scatter(gt[:, j], pred[:, j], s=4, alpha=0.5)
            lo, hi = float(min(gt[:, j].min(), pred[:, j].min())), float(max(gt[:, j].max(), pred[:, j].max()))
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            r2 = stats["r2"][j]
            flag = "  COLLAPSED" if stats["collapsed"][j] else ""
            ax.set_title(f"{u.JOINT_NAMES[j]}: R^2 = {r2:.3f}{flag}" if r2 is not None else u.JOINT_NAMES[j],
                         fontsize=9, color="red" if flag else "black")
            ax.set_xlabel("ground truth" + units[j])
            ax.set_ylabel("predicted")
        fig.tight_layout()
        fig.savefig(out / f"scatter_{split}.png", dpi=90)
        plt.close(fig)

    pred, gt = splits["val"][0], splits["val"][1]
    if len(pred):
        fig, axes = plt.subplots(2, 3, figsize=(12, 6))
        for j, ax in enumerate(axes.flat):
            ax.hist(pred[:, j] - gt[:, j], bins=40)
            ax.set_title(f"{u.JOINT_NAMES[j]} error{units[j]}", fontsize=9)
        fig.suptitle("validation prediction errors (predicted - ground truth)")
        fig.tight_layout()
        fig.savefig(out / "error_histograms.png", dpi=90)
        plt.close(fig)


def analyze(policy, dataset, out_dir, episodes: list[int] | None = None, split_episodes: int | None = None,
            task: str | None = None, seed: int = 0, make_plots: bool = True) -> dict:
    """Run the analysis (see the module docstring) and write its files; returns statistics.json's dict.

    Args:
        policy: any object with ``predict_action_chunk(observation, task) -> (chunk, 6)`` MuJoCo
            radians (every :class:`flow_matching_policy.FlowMatchingPolicy` has it).
        dataset: a ``LeRobotDataset`` recorded by this repo (LeRobot units).
        episodes: episode indices to use (default: all).
        split_episodes: how many of the last chosen episodes form the validation split
            (default: 20%, at least 1 when there are 2 or more episodes).

    Raises:
        ValueError: an episode index not in the dataset.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    all_eps = list(range(dataset.num_episodes))
    episodes = all_eps if episodes is None else list(episodes)
    bad = [e for e in episodes if e not in all_eps]
    if bad:
        raise ValueError(f"episodes {bad} are not in the dataset (it has episodes 0..{dataset.num_episodes - 1})")
    if split_episodes is None:
        split_episodes = max(1, round(0.2 * len(episodes))) if len(episodes) > 1 else 0
    val_eps = episodes[len(episodes) - split_episodes:] if split_episodes else []
    train_eps = [e for e in episodes if e not in val_eps]
    env_states = None
    if getattr(policy, "model_type", None) == "flow" and u.OBS_ENV_STATE not in dataset.features:
        env_states = replayed_env_states(dataset)
    splits = {}
    for name, eps in (("train", train_eps), ("val", val_eps)):
        pred, gt, obs, ep_idx = predict_split(policy, dataset, eps, task, seed, desc=f"{name} frames",
                                              env_states=env_states)
        stats = joint_statistics(gt, pred) if len(pred) else None
        splits[name] = (pred, gt, obs, ep_idx, stats)
    np.savez(out / "predictions.npz", **{f"{k}_{n}": splits[k][i] for k in splits for i, n in
                                         enumerate(("pred", "gt", "obs", "episode"))})
    ref = splits["val"][4] or splits["train"][4]
    collapsed = [j for j in range(u.NUM_JOINTS) if ref and ref["collapsed"][j]]
    causes = [c for j in collapsed for c in likely_causes(j, dataset, policy)] + checkpoint_mismatches(dataset, policy)
    result = {
        "units": "LeRobot calibrated degrees; gripper 0..100",
        "joints": list(u.JOINT_NAMES),
        "train_episodes": train_eps,
        "val_episodes": val_eps,
        "train": splits["train"][4],
        "val": splits["val"][4],
        "collapsed_joints": [u.JOINT_NAMES[j] for j in collapsed],
        "likely_causes": causes,
        "thresholds": {"collapse_std_ratio": COLLAPSE_STD_RATIO, "collapse_r2": COLLAPSE_R2, "moving_std": MOVING_STD},
    }
    ru.write_json_atomic(out / "statistics.json", result)
    if make_plots:
        _plots(out, splits)
    return result


def print_table(result: dict) -> None:
    for split in ("train", "val"):
        s = result[split]
        if not s:
            continue
        print(f"\n{split} ({len(result[split + '_episodes'])} episodes)")
        print(f"| {'joint':<14} | {'mean |err|':>10} | {'max |err|':>9} | {'R^2':>6} | {'pred std':>8} | {'gt std':>7} | collapsed |")
        for j, name in enumerate(result["joints"]):
            r2 = s["r2"][j]
            print(f"| {name:<14} | {s['mean_abs_error'][j]:10.2f} | {s['max_abs_error'][j]:9.2f} | "
                  f"{(f'{r2:.3f}' if r2 is not None else '  n/a'):>6} | {s['pred_std'][j]:8.2f} | "
                  f"{s['gt_std'][j]:7.2f} | {'YES' if s['collapsed'][j] else 'no':>9} |")
    if result["collapsed_joints"]:
        print(f"\nmode collapse suspected on: {', '.join(result['collapsed_joints'])}")
    for cause in result["likely_causes"]:
        print(f"  likely cause: {cause}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=cli_args.DefaultsHelpFormatter)
    p.add_argument("--model-type", required=True, choices=pr.REINFLOW_MODEL_TYPES,
                   help="policy type (policy_registry.POLICIES; the flow policy needs --policy-path)")
    p.add_argument("--dataset", required=True, type=cli_args.lerobot_dataset_dir, help="LeRobotDataset root folder (recorded by record_dataset.py)")
    p.add_argument("--repo-id", default=None, help="dataset repo id (default: local/<folder name>; never contacted)")
    p.add_argument("--episodes", type=cli_args.nonneg_int, nargs="+", default=None, help="episode indices to analyse (default: all)")
    p.add_argument("--split-episodes", type=cli_args.nonneg_int, default=None,
                   help="number of the last chosen episodes used as validation (default: 20%%)")
    p.add_argument("--out", type=cli_args.output_path, default=u.REPO_ROOT / "outputs" / "analysis", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the policy's initial noise")
    ru.add_policy_args(p)
    args = p.parse_args(argv)
    problem = cli_args.policy_path_problem(args.policy_path, args.model_type)
    if problem:
        p.error(problem)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from lerobot.datasets import LeRobotDataset

    if not (args.dataset / "meta" / "info.json").is_file():
        print(f"{args.dataset} is not a LeRobotDataset folder (no meta/info.json); record one with record_dataset.py",
              file=sys.stderr)
        return 2
    if args.model_type == "flow" and not args.policy_path:
        print("--model-type flow needs --policy-path (a flow checkpoint .pt)", file=sys.stderr)
        return 2
    try:
        options = pr.vla_options(args) if args.model_type in pr.VLA_MODEL_TYPES else {}
        policy = pr.load_policy(args.model_type, args.policy_path, **options)
    except pr.PolicySetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code  # 2: a refused checkpoint file
    dataset = LeRobotDataset(args.repo_id or f"local/{args.dataset.name}", root=args.dataset)
    result = analyze(policy, dataset, args.out, args.episodes, args.split_episodes, args.task, args.seed)
    print_table(result)
    print(f"\nwrote {args.out}/statistics.json, predictions.npz and the figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
