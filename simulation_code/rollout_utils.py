"""Pieces shared by the scripts that run policies in the simulation.

``run_mujoco_simulation.py`` and ``run_reinflow_inference.py`` keep their episode loop visible;
what both need lives here: the common command-line arguments, the policy factory, the video
writer and the JSON summary.

A *sim policy* is any object with ``name``, ``reset()`` and ``act(obs, env) -> (6,) float32``
joint targets in MuJoCo radians; ``env`` is the (wrapped) ``SO101PickPlaceEnv``, which privileged
policies such as the scripted expert read their state from.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

import so101_mujoco_utils as u

#: Policies ``--model-type`` accepts, and the one used when the flag is absent.
MODEL_TYPES = ("smolvla", "pi0", "scripted")
DEFAULT_MODEL_TYPE = "smolvla"


def add_run_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the episode options shared by the policy-running scripts (episodes, seed, headless,
    video, summary) to ``parser`` and return it."""
    parser.add_argument("--episodes", type=int, default=1, help="number of episodes to run")
    parser.add_argument("--seed", type=int, default=0, help="episode i is reset with seed SEED+i")
    parser.add_argument("--env-id", default="SO101PickPlace-v0",
                        help="registered env id (envs/__init__.py); SO101PickPlaceNoRandom-v0 fixes the block")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="per-episode step cap (default: the registration's max_episode_steps)")
    parser.add_argument("--headless", action="store_true", help="no viewer window (required without a display)")
    parser.add_argument("--video-dir", type=Path, default=None,
                        help="write one mp4 per episode here (episode_000.mp4, ...)")
    parser.add_argument("--video-camera", default=u.CAMERAS["camera3"], choices=sorted(u.CAMERAS.values()),
                        help="camera for the videos")
    parser.add_argument("--summary-json", type=Path, default=None,
                        help="write success rate, mean return and per-episode results here")
    return parser


def make_sim_policy(model_type: str, args: argparse.Namespace, env):
    """Build the sim policy named by ``--model-type`` (see the module docstring).

    Raises:
        ValueError: unknown model type (lists the known ones).
        SystemExit: a VLA type that this checkout cannot run yet, with the reason.
    """
    if model_type == "scripted":
        return ScriptedSimPolicy(env)
    if model_type in ("smolvla", "pi0"):
        raise SystemExit(
            f"--model-type {model_type}: VLA policies are not wired into the simulation yet "
            "(issue #3). Use --model-type scripted."
        )
    raise ValueError(f"Unknown --model-type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")


class ScriptedSimPolicy:
    """The scripted expert as a sim policy (reads the block pose from the env: privileged)."""

    name = "scripted"

    def __init__(self, env):
        from scripted_expert import ScriptedExpert

        self.expert = ScriptedExpert(env.unwrapped.model)

    def reset(self) -> None:
        self.expert.reset()

    def act(self, obs, env) -> np.ndarray:
        return self.expert.act_in_env(env)


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
    """Summary dict of a run: success rate (+95% Wilson CI), mean return/length, seeds, episodes.

    Each episode dict has at least ``seed``, ``return``, ``length``, ``success``.
    """
    n = len(episodes)
    wins = sum(bool(e["success"]) for e in episodes)
    summary = {
        "policy": policy,
        "episodes": n,
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
