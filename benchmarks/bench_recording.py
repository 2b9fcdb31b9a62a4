"""What crash-safe recording costs per episode: LeRobot's writer alone vs ``durable_dataset``.

Writes the same synthetic episodes (record_dataset.py's features: state, action, episode seed and
three camera videos) once through plain ``LeRobotDataset.create / add_frame / save_episode /
finalize`` (which loses everything on SIGKILL) and once through
``durable_dataset.DurableRecording`` (finalize + publish + resume after every episode), and prints
the mean time per episode of each and the difference.

    .venv/bin/python benchmarks/bench_recording.py --episodes 20 --frames 40 --image-size 96
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


from so101_sim import durable_dataset as dd  # noqa: E402
from so101_sim import record_dataset as rd  # noqa: E402
from so101_sim import so101_mujoco_utils as u  # noqa: E402


def frames(n: int, size: int, seed: int):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size, size, 3), np.uint8)
    for i in range(n):
        f = {u.OBS_STATE: rng.normal(size=6).astype(np.float32), "action": rng.normal(size=6).astype(np.float32),
             u.EPISODE_SEED: np.array([seed], np.int64), "task": u.DEFAULT_TASK}
        for key in u.IMAGE_KEYS:
            f[key] = np.roll(base, i, axis=1)  # moving content, so the encoder has work to do
        yield f


def run(kind: str, root: Path, episodes: int, n_frames: int, size: int) -> list[float]:
    from lerobot.datasets import LeRobotDataset

    kwargs = dict(fps=10, features=rd.dataset_features(size), robot_type=rd.ROBOT_TYPE, use_videos=True)
    if kind == "plain":
        ds = LeRobotDataset.create(repo_id="local/bench", root=root, **kwargs)
    else:
        ds = dd.DurableRecording(root, "local/bench", "create", kwargs)
    times = []
    for ep in range(episodes):
        for f in frames(n_frames, size, ep):
            ds.add_frame(f)
        t0 = time.perf_counter()
        if kind == "plain":
            ds.save_episode(parallel_encoding=False)
        else:
            ds.save_episode()
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    ds.finalize() if kind == "plain" else ds.close()
    times[-1] += time.perf_counter() - t0  # plain LeRobot pays its metadata flush at the end
    assert LeRobotDataset("local/bench", root=root).num_episodes == episodes
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=20, help="episodes per writer (default %(default)s)")
    p.add_argument("--frames", type=int, default=40, help="frames per episode (default %(default)s)")
    p.add_argument("--image-size", type=int, default=96, help="camera size in pixels (default %(default)s)")
    args = p.parse_args()
    import datasets

    datasets.disable_progress_bars()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("plain", "durable"):
            t = run(kind, Path(tmp) / kind / "ds", args.episodes, args.frames, args.image_size)
            rows.append((kind, 1000 * np.mean(t), 1000 * np.median(t), 1000 * t[-1]))
            shutil.rmtree(Path(tmp) / kind)
    print(f"\n{args.episodes} episodes x {args.frames} frames, 3 cameras {args.image_size}x{args.image_size}")
    print(f"{'writer':<10}{'mean ms/episode':>18}{'median':>10}{'last (incl. close)':>20}")
    for kind, mean, med, last in rows:
        print(f"{kind:<10}{mean:>18.0f}{med:>10.0f}{last:>20.0f}")
    print(f"crash safety costs {rows[1][1] - rows[0][1]:+.0f} ms per episode on average")


if __name__ == "__main__":
    main()
