"""Check a recorded LeRobotDataset before training on it.

Copy-paste (from simulation_code/):

    python dataset_stats.py ../datasets/so101_pickplace --steps 20000 --batch-size 64 --plot ../outputs/so101_pickplace_hist.png

Prints: episodes, frames, fps, task strings, camera keys and resolutions; per joint the
min/max/mean/std of ``observation.state`` and ``action``; how often the gripper is commanded
closed; the largest frame-to-frame action jump per joint (within episodes); the spread of the
episodes' start states; and the epochs that ``--steps`` x ``--batch-size`` amount to
(steps x batch / frames). Warnings (lessons from earlier SO-101 training runs):

* a joint with near-zero std (``NEAR_ZERO_STD``): the policy sees a constant and normalisation
  divides by ~0, a cause of "joints predict constants" mode collapse;
* more than ``MAX_EPOCHS`` (7) epochs on a small dataset (< ``SMALL_DATASET_EPISODES`` episodes):
  overfitting; 3-7 epochs is the usual range, the message gives the steps for 5;
* no frame with the gripper closed (nothing to learn a grasp from).

Units are the dataset's own (for this repo's recordings: degrees, gripper 0..100; see
record_dataset.py). Loads with LeRobot's ``LeRobotDataset`` (so a dataset this script reads is one
``lerobot-train`` reads) but never decodes video.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np

from so101_sim import cli_args

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# No video is decoded here; silence LeRobot's torchcodec-unavailable traceback (it falls back to PyAV).
logging.getLogger("lerobot.utils.import_utils").setLevel(logging.ERROR)

#: Std below this (dataset units: degrees or 0..100) counts as "near zero".
NEAR_ZERO_STD = 0.1
#: Epoch budget for small datasets (reference 004: 3-7 epochs for < 500 episodes).
MAX_EPOCHS = 7.0
SMALL_DATASET_EPISODES = 500
TARGET_EPOCHS = 5.0
#: Gripper counts as closed below this value (dataset units; 0..100 gripper: 10 = 10 % open).
GRIPPER_CLOSED_BELOW = 10.0
STATE_KEY, ACTION_KEY = "observation.state", "action"


def load_dataset(path: str | Path, repo_id: str | None = None):
    """Open a local LeRobotDataset folder read-only (PyAV video backend, nothing decoded).

    Raises:
        FileNotFoundError: no ``meta/info.json`` under ``path`` (message names the path).
    """
    path = Path(path)
    if not (path / "meta" / "info.json").is_file():
        raise FileNotFoundError(f"{path} is not a LeRobotDataset folder (no meta/info.json); "
                                "record one with record_dataset.py or pass the dataset root")
    from lerobot.datasets import LeRobotDataset

    return LeRobotDataset(repo_id or f"local/{path.resolve().name}", root=path, video_backend="pyav")


def joint_names(features: dict, key: str) -> list[str]:
    names = features[key].get("names")
    n = int(features[key]["shape"][0])
    if isinstance(names, dict):  # older LeRobot layouts: {"motors": [...]}
        names = next(iter(names.values()))
    return list(names) if names and len(names) == n else [f"{key}[{i}]" for i in range(n)]


def compute_stats(state: np.ndarray, action: np.ndarray, episode_index: np.ndarray, gripper_index: int | None = -1) -> dict:
    """Per-joint statistics from whole-dataset arrays.

    Args:
        state, action: (N, J) float arrays, dataset units.
        episode_index: (N,) int episode of each frame (frames of one episode contiguous, in order).
        gripper_index: column of the gripper (None: no gripper statistics).
    Returns:
        dict with ``state``/``action`` -> {min, max, mean, std} (J,) arrays; ``max_action_jump`` (J,)
        largest |a[t+1] - a[t]| within an episode; ``start_state_std`` (J,) std over episodes of
        their first state; ``gripper_closed_fraction`` (share of frames whose gripper action <
        GRIPPER_CLOSED_BELOW, or None); ``frames``, ``episodes``.
    """
    state, action = np.asarray(state, dtype=np.float64), np.asarray(action, dtype=np.float64)
    ep = np.asarray(episode_index)

    def summary(x):
        return {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0)}

    same_episode = ep[1:] == ep[:-1]
    jumps = np.abs(np.diff(action, axis=0))[same_episode]
    starts = np.r_[True, ~same_episode]
    return {
        "frames": int(len(ep)),
        "episodes": int(len(np.unique(ep))),
        "state": summary(state),
        "action": summary(action),
        "max_action_jump": jumps.max(0) if len(jumps) else np.zeros(action.shape[1]),
        "start_state_std": state[starts].std(0),
        "gripper_closed_fraction": None if gripper_index is None
        else float(np.mean(action[:, gripper_index] < GRIPPER_CLOSED_BELOW)),
    }


def epochs(steps: int, batch_size: int, frames: int) -> float:
    """Passes over the data a training run makes: steps x batch / frames."""
    if frames <= 0:
        raise ValueError("the dataset has no frames")
    return steps * batch_size / frames


def find_warnings(stats: dict, names: list[str], steps: int, batch_size: int) -> list[str]:
    """Human-readable warnings for the lessons in the module docstring (empty list = none)."""
    out = []
    for key in ("state", "action"):
        for name, std in zip(names, stats[key]["std"]):
            if std < NEAR_ZERO_STD:
                out.append(f"{key} joint {name} has near-zero std ({std:.3g} < {NEAR_ZERO_STD}): it barely moves, "
                           "so the policy learns a constant for it and its normalisation divides by ~0")
    n_epochs = epochs(steps, batch_size, stats["frames"])
    if n_epochs > MAX_EPOCHS and stats["episodes"] < SMALL_DATASET_EPISODES:
        good = int(TARGET_EPOCHS * stats["frames"] / batch_size)
        out.append(f"{n_epochs:.1f} epochs (steps {steps} x batch {batch_size} / {stats['frames']} frames) > {MAX_EPOCHS:g} "
                   f"on a small dataset ({stats['episodes']} episodes): likely overfitting; --steps={good} gives "
                   f"{TARGET_EPOCHS:g} epochs")
    if stats["gripper_closed_fraction"] == 0.0:
        out.append(f"the gripper action is never closed (< {GRIPPER_CLOSED_BELOW:g}): no grasp to learn from")
    return out


def format_report(info: dict, stats: dict, names: list[str], steps: int, batch_size: int) -> str:
    """The printed table (see the module docstring)."""
    lines = [
        f"dataset    {info['root']}",
        f"episodes   {stats['episodes']}    frames {stats['frames']}    fps {info['fps']}    "
        f"robot_type {info['robot_type']}    duration {stats['frames'] / info['fps']:.0f} s",
        f"tasks      {'; '.join(repr(t) for t in info['tasks'])}",
        "cameras    " + ", ".join(f"{k} {w}x{h}" for k, (h, w) in info["cameras"].items()) if info["cameras"] else "cameras    none",
        "",
        f"{'joint':<20}{'state min':>10}{'max':>9}{'mean':>9}{'std':>8} |{'action min':>11}{'max':>9}{'mean':>9}"
        f"{'std':>8}{'max jump':>10}{'start std':>10}",
    ]
    s, a = stats["state"], stats["action"]
    for i, name in enumerate(names):
        lines.append(
            f"{name:<20}{s['min'][i]:>10.2f}{s['max'][i]:>9.2f}{s['mean'][i]:>9.2f}{s['std'][i]:>8.2f} |"
            f"{a['min'][i]:>11.2f}{a['max'][i]:>9.2f}{a['mean'][i]:>9.2f}{a['std'][i]:>8.2f}"
            f"{stats['max_action_jump'][i]:>10.2f}{stats['start_state_std'][i]:>10.2f}"
        )
    lines.append("")
    if stats["gripper_closed_fraction"] is not None:
        lines.append(f"gripper closed (action < {GRIPPER_CLOSED_BELOW:g}) in {100 * stats['gripper_closed_fraction']:.1f} % of frames")
    lines.append(f"training: {steps} steps x batch {batch_size} = {epochs(steps, batch_size, stats['frames']):.2f} epochs")
    warns = find_warnings(stats, names, steps, batch_size)
    lines += [f"WARNING: {w}" for w in warns] or ["no warnings"]
    return "\n".join(lines)


def plot_histograms(state: np.ndarray, action: np.ndarray, names: list[str], out: Path) -> Path:
    """Save one histogram per joint (state and action overlaid) to ``out`` (PNG); returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    cols = 3
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for i, name in enumerate(names):
        ax = axes[i // cols][i % cols]
        ax.hist(state[:, i], bins=40, alpha=0.6, label="observation.state")
        ax.hist(action[:, i], bins=40, alpha=0.6, label="action")
        ax.set_title(name)
    for j in range(n, rows * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def analyse(path, repo_id=None, steps: int = 20000, batch_size: int = 64, plot: Path | None = None) -> dict:
    """Load, compute, print-ready: returns {info, stats, names, report, warnings}."""
    ds = load_dataset(path, repo_id)
    meta = ds.meta
    for key in (STATE_KEY, ACTION_KEY):
        if key not in meta.features:
            raise KeyError(f"{path}: no {key!r} feature (has {sorted(meta.features)})")
    cols = ds.hf_dataset.with_format("numpy")[:]
    state, action = np.stack(cols[STATE_KEY]), np.stack(cols[ACTION_KEY])
    names = joint_names(meta.features, ACTION_KEY)
    gripper = next((i for i, n in enumerate(names) if "gripper" in n), None)
    stats = compute_stats(state, action, np.asarray(cols["episode_index"]), gripper)
    info = {
        "root": str(path), "fps": meta.fps, "robot_type": meta.robot_type,
        "tasks": list(meta.tasks.index),
        "cameras": {k: tuple(meta.features[k]["shape"][:2]) for k in meta.camera_keys},
    }
    result = {"info": info, "stats": stats, "names": names,
              "report": format_report(info, stats, names, steps, batch_size),
              "warnings": find_warnings(stats, names, steps, batch_size)}
    if plot is not None:
        result["plot"] = str(plot_histograms(state, action, names, plot))
    return result


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=cli_args.DefaultsHelpFormatter)
    p.add_argument("dataset", type=cli_args.lerobot_dataset_dir, help="LeRobotDataset folder (the --output-dir of record_dataset.py)")
    p.add_argument("--repo-id", default=None, help="repo id to open it under (default: local/<folder name>)")
    p.add_argument("--steps", type=cli_args.positive_int, default=20000, help="planned training steps (default: %(default)s)")
    p.add_argument("--batch-size", type=cli_args.positive_int, default=64, help="planned batch size (default: %(default)s)")
    p.add_argument("--plot", type=cli_args.output_path, default=None, help="save per-joint histograms to this PNG")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = analyse(args.dataset, args.repo_id, args.steps, args.batch_size, args.plot)
    except (FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result["report"])
    if "plot" in result:
        print(f"histograms: {result['plot']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
