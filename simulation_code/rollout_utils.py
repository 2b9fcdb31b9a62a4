"""Pieces shared by the scripts that run policies in the simulation.

The one episode loop, :func:`run_episode` (a *sim policy* from policy_registry: ``reset(seed)``,
``act(obs) -> (6,)`` float32 MuJoCo radians), and :func:`run_episodes` over seeds with videos,
an evaluation report and a progress bar; the common command-line arguments; the video writer;
the JSON summary. Used by run_mujoco_simulation.py, run_reinflow_inference.py, train_reinflow.py
(its evaluation), train_flow_bc.py and the benchmarks.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from so101_sim import cli_args
from so101_sim import envs
from so101_sim import policy_registry as pr
from so101_sim import so101_mujoco_utils as u
from so101_sim import vla_frames

def add_run_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the episode options shared by the policy-running scripts (episodes, seed, headless,
    video, summary) to ``parser`` and return it."""
    parser.add_argument("--episodes", type=cli_args.positive_int, default=1, help="number of episodes to run (>= 1)")
    parser.add_argument("--seed", type=int, default=0, help="episode i is reset with seed SEED+i")
    parser.add_argument("--env-id", type=cli_args.env_id, default=envs.DEFAULT_ENV_ID,
                        help="registered env id (envs/__init__.py); SO101PickPlaceNoRandom-v0 fixes the block")
    parser.add_argument("--max-steps", type=cli_args.positive_int, default=None,
                        help="per-episode step cap (default: the registration's max_episode_steps)")
    parser.add_argument("--headless", action="store_true", help="no viewer window (required without a display)")
    parser.add_argument("--video-dir", type=cli_args.output_path, default=None,
                        help="write one mp4 per episode here (episode_000.mp4, ...)")
    parser.add_argument("--video-camera", default=u.CAMERAS["camera3"], choices=sorted(u.CAMERAS.values()),
                        help="camera for the videos")
    parser.add_argument("--summary-json", type=cli_args.output_path, default=None,
                        help="write success rate, mean return and per-episode results here")
    parser.add_argument("--report", type=cli_args.output_path, default=None,
                        help="write a one-page evaluation report here (report.html + figures + summary.json); "
                             "videos go to REPORT/videos unless --video-dir is given")
    parser.add_argument("-v", "--verbose", action="store_true", help="also print setup details (the OpenGL backend chosen)")
    return parser


def add_policy_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the VLA options (SmolVLA/Pi0) shared by the policy-running scripts and return ``parser``:
    --policy-path, --camera-map, --task, --frame, --quantize/--no-quantize, --device, --n-action-steps."""
    g = parser.add_argument_group("VLA policies (--model-type smolvla|pi0)")
    g.add_argument("--policy-path", default=None,
                   help="Hugging Face Hub id or local policy directory, or a flow checkpoint file (default: "
                        + ", ".join(f"{k} {e.default_path and repo_path(e.default_path)}" for k, e in pr.POLICIES.items()
                                    if e.default_path)
                        + "; offline tiny VLAs: make_tiny_policies.py --out DIR, then DIR/smolvla)")
    g.add_argument("--camera-map", type=cli_args.camera_map, default=None,
                   help="sim camera -> checkpoint image key, e.g. camera1=front,camera2=wrist (camera1 top "
                        "'camera_up', camera2 'wrist_camera', camera3 'camera_side'); default: recorded in the "
                        "checkpoint, else the keys named camera1..3")
    g.add_argument("--task", type=cli_args.task_string, default=None,
                   help=f"language instruction, one line (default: the checkpoint's recorded training task, else {u.DEFAULT_TASK!r})")
    g.add_argument("--frame", default="auto", choices=vla_frames.FRAME_CHOICES,
                   help="joint frame the checkpoint was trained in: smolvla_absolute (absolute servo degrees + "
                        "reference stats; lerobot/smolvla_base), lerobot_degrees (LeRobot calibrated degrees + the "
                        "checkpoint's stats; fine-tuned on this repo's datasets), mujoco_radians; auto = recorded in "
                        "the checkpoint, else smolvla_absolute for smolvla_base and lerobot_degrees otherwise")
    g.add_argument("--quantize", action=argparse.BooleanOptionalAction, default=None,
                   help="Pi0: 4-bit weights with optimum-quanto (default: on for MPS, off elsewhere; the first "
                        "qint4 run on CPU compiles a C++ extension, 1-2 min)")
    g.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (cuda > mps > cpu)")
    g.add_argument("--n-action-steps", type=cli_args.positive_int, default=None,
                   help="actions executed from each predicted chunk before re-planning (default: the checkpoint's)")
    return parser


class VideoWriter:
    """Writes one mp4 (H.264 via imageio-ffmpeg) at the control rate; frames are (H, W, 3) uint8.

    The file is written under a temporary name and renamed on :meth:`close`, so an interrupted
    run never leaves a truncated video under the final name.
    """

    def __init__(self, path: Path, fps: float = u.CONTROL_HZ):
        import imageio.v2 as imageio

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.stem + ".partial.mp4")
        self._writer = imageio.get_writer(self._tmp, fps=fps, codec="libx264", quality=7,
                                          macro_block_size=1, ffmpeg_log_level="error")
        self.frames = 0

    def append(self, frame: np.ndarray) -> None:
        self._writer.append_data(frame)
        self.frames += 1

    def close(self) -> Path:
        self._writer.close()
        os.replace(self._tmp, self.path)
        return self.path


#: Control steps an evaluation video goes on after a success (1 s at 10 Hz), so the lift is visible.
VIDEO_TAIL_STEPS = int(round(u.CONTROL_HZ))


def record_success_tail(env, video: "VideoWriter | None", action, success: bool, steps: int = VIDEO_TAIL_STEPS) -> int:
    """After an episode ended on a success (the env terminates on it), step the simulation
    ``steps`` more control steps holding the last commanded ``action`` and append each frame to
    ``video``, so the video shows the block held up for about a second. The frames go to the video
    only: the episode's return, length and success are already final, the steps bypass the
    wrappers (time limit, reward) and the policy is not called (its randomness stays untouched).
    Nothing happens without a video, without a success, or once the simulation diverges.

    Returns:
        the number of frames appended.
    """
    if video is None or not success or action is None:
        return 0
    base = env.unwrapped
    n = 0
    for _ in range(steps):
        _, _, _, unstable, _ = base.step(np.asarray(action))
        if unstable:
            break
        video.append(base.render())
        n += 1
    return n


def run_episode(env, policy, seed: int, video: "VideoWriter | None" = None, on_action=None) -> dict:
    """One episode of ``policy`` (a policy_registry sim policy) in ``env``, reset with ``seed``
    (the policy too: its sampler is seeded with it). Frames go to ``video`` (the env's
    ``render_camera``) from the reset on, plus about 1 s after a success
    (:func:`record_success_tail`); ``on_action(action)`` sees each action before it is executed.

    Returns:
        {"seed", "return" (env reward, float), "length" (env steps), "success",
        "sim_unstable" (the simulation diverged; :func:`episode_unstable`), "block_start" (3,)
        list (m, world), "video_tail_frames"}.
    """
    obs, info = env.reset(seed=int(seed))
    policy.reset(int(seed))
    if video is not None:
        video.append(env.unwrapped.render())
    ret, length, success, unstable, done, terminated, action = 0.0, 0, False, False, False, False, None
    while not done:
        action = policy.act(obs)
        if on_action is not None:
            on_action(action)
        obs, reward, terminated, truncated, info = env.step(action)
        ret += float(reward)
        length += 1
        success = success or bool(info["is_success"])
        unstable = episode_unstable(unstable, info)
        done = terminated or truncated
        if video is not None:
            video.append(env.unwrapped.render())
    tail = record_success_tail(env, video, action, bool(terminated and success))  # video only
    return {"seed": int(seed), "return": ret, "length": length, "success": bool(success), "sim_unstable": unstable,
            "block_start": env.unwrapped.initial_block_pos.tolist(), "video_tail_frames": tail}


def run_episodes(env, policy, seeds: list[int], video_dir: Path | None = None, report=None, progress: bool = True,
                 video_camera: str | None = None) -> list[dict]:
    """:func:`run_episode` for each seed, with ``VIDEO_DIR/episode_{i:03d}.mp4`` per episode
    (the ``video_camera``, default the side camera; ``"video"`` in each result, repository-
    relative), each action added to ``report`` (eval_report.EvalReport) and a progress bar with
    the success rate so far (``progress``)."""
    from tqdm import tqdm

    env.unwrapped.render_camera = video_camera or u.CAMERAS["camera3"]
    episodes: list[dict] = []
    bar = tqdm(list(enumerate(seeds)), desc=f"{policy.name} episodes", unit="ep", disable=not progress)
    for i, seed in bar:
        video = VideoWriter(Path(video_dir) / f"episode_{i:03d}.mp4") if video_dir else None
        on_action = (lambda a, i=i: report.add_step(i, a)) if report is not None else None
        ep = run_episode(env, policy, seed, video, on_action)
        ep["video"] = repo_path(video.close()) if video else None
        episodes.append(ep)
        bar.set_postfix(success=f"{sum(e['success'] for e in episodes) / len(episodes):.0%}", ret=f"{ep['return']:.1f}")
    return episodes


def repo_path(path) -> str:
    """``path`` as recorded in summary files: relative to the repository root (POSIX) when it lies
    inside it, else absolute, so a summary names no developer's directory; a relative path that
    does not exist (a Hub id such as ``lerobot/smolvla_base``) is returned unchanged. Inverse:
    :func:`resolve_repo_path`."""
    if not Path(path).is_absolute() and not Path(path).exists():
        return str(path)
    p = Path(path).resolve()
    try:
        return p.relative_to(u.REPO_ROOT).as_posix()
    except ValueError:
        return str(p)


def resolve_repo_path(text) -> Path:
    """A path from a summary file (:func:`repo_path`): a relative one is under the repository root."""
    p = Path(text)
    return p if p.is_absolute() else u.REPO_ROOT / p


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a success rate (fraction in [0, 1])."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarize(episodes: list[dict], policy: str, extra: dict | None = None) -> dict:
    """Summary dict of a run: success rate (+95% Wilson CI), mean return/length, seeds, episodes,
    and ``unstable_episodes``: how many ended because the simulation diverged.

    Each episode dict has at least ``seed``, ``return``, ``length``, ``success``; optional
    ``sim_unstable`` (bool, :func:`episode_unstable`; absent counts as False).
    """
    n = len(episodes)
    wins = sum(bool(e["success"]) for e in episodes)
    summary = {
        "policy": policy,
        "episodes": n,
        "unstable_episodes": sum(bool(e.get("sim_unstable", False)) for e in episodes),
        "success_rate": wins / n if n else 0.0,
        "success_rate_ci95": list(wilson_interval(wins, n)),
        "mean_return": float(np.mean([e["return"] for e in episodes])) if n else 0.0,
        "mean_length": float(np.mean([e["length"] for e in episodes])) if n else 0.0,
        "seeds": [e["seed"] for e in episodes],
        "per_episode": episodes,
    }
    if extra:
        summary.update(extra)
    return summary


def episode_unstable(unstable: bool, info: dict) -> bool:
    """Running "did this episode diverge" flag: ``unstable or info["sim_unstable"]`` (the env's flag,
    so101_gym_env; an info without it counts as stable). The run scripts store it per episode as
    ``sim_unstable`` for :func:`summarize`."""
    return bool(unstable or info.get("sim_unstable", False))


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON via a temporary file and rename, so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, default=_json_default)
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o)}")
