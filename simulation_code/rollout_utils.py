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

import cli_args
import so101_mujoco_utils as u

#: Policies ``--model-type`` accepts, and the one used when the flag is absent.
MODEL_TYPES = ("smolvla", "pi0", "scripted", "flow")
#: What each policy type observes (env keyword arguments): the VLAs see the three cameras; the
#: scripted expert reads the simulator directly; the flow policy uses the privileged block pose.
OBS_KWARGS = {
    "smolvla": {"obs_mode": "images"},
    "pi0": {"obs_mode": "images"},
    "scripted": {"obs_mode": "state"},
    "flow": {"obs_mode": "state", "include_env_state": True},
}
DEFAULT_MODEL_TYPE = "smolvla"


def add_run_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the episode options shared by the policy-running scripts (episodes, seed, headless,
    video, summary) to ``parser`` and return it."""
    parser.add_argument("--episodes", type=cli_args.positive_int, default=1, help="number of episodes to run (>= 1)")
    parser.add_argument("--seed", type=int, default=0, help="episode i is reset with seed SEED+i")
    parser.add_argument("--env-id", type=cli_args.env_id, default="SO101PickPlace-v0",
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


#: ``--frame`` values; the same tuple as ``lerobot_vla_adapter.FRAME_CHOICES`` (kept literal here so
#: that the scripted path does not import torch; tests/test_vla_adapters.py checks they agree).
VLA_FRAME_CHOICES = ("auto", "smolvla_absolute", "lerobot_degrees", "mujoco_radians")
#: ``--policy-path`` default per model type (Hugging Face Hub ids).
DEFAULT_POLICY_PATHS = {"smolvla": "lerobot/smolvla_base", "pi0": "lerobot/pi0"}


def add_policy_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the VLA options (SmolVLA/Pi0) shared by the policy-running scripts and return ``parser``:
    --policy-path, --camera-map, --task, --frame, --quantize/--no-quantize, --device, --n-action-steps."""
    g = parser.add_argument_group("VLA policies (--model-type smolvla|pi0)")
    g.add_argument("--policy-path", default=None,
                   help="Hugging Face Hub id or local policy directory (default: lerobot/smolvla_base for smolvla, "
                        "lerobot/pi0 for pi0; offline tiny ones: make_tiny_policies.py --out DIR, then DIR/smolvla)")
    g.add_argument("--camera-map", type=cli_args.camera_map, default=None,
                   help="sim camera -> checkpoint image key, e.g. camera1=front,camera2=wrist (camera1 top "
                        "'camera_up', camera2 'wrist_camera', camera3 'camera_side'); default: recorded in the "
                        "checkpoint, else the keys named camera1..3")
    g.add_argument("--task", type=cli_args.task_string, default=None,
                   help=f"language instruction, one line (default: the checkpoint's recorded training task, else {u.DEFAULT_TASK!r})")
    g.add_argument("--frame", default="auto", choices=VLA_FRAME_CHOICES,
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


class PolicySetupError(Exception):
    """The requested policy cannot be set up; the message says why and what to do (scripts print
    it as one message, without a traceback, and exit with ``exit_code``: 1, or 2 for a checkpoint
    file that is refused, flow_policy.CheckpointError)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def load_vla_policy(model_type: str, args: argparse.Namespace):
    """Load a SmolVLA/Pi0 adapter (:class:`vla_policy_interface.VLAPolicyInterface`) from the
    :func:`add_policy_args` options in ``args`` (missing attributes take their defaults).

    Raises:
        PolicySetupError: weights unavailable offline, wrong checkpoint type, bad camera map/frame,
            quantization impossible (the message comes from the adapter).
    """
    from lerobot_vla_adapter import PolicyLoadError

    if model_type == "smolvla":
        from smolvla_adapter import SmolVLAAdapter as adapter_cls
    elif model_type == "pi0":
        from pi0_adapter import PI0Adapter as adapter_cls
    else:
        raise ValueError(f"{model_type!r} is not a VLA type (smolvla, pi0)")
    get = lambda name, default=None: getattr(args, name, default)  # noqa: E731
    try:
        return adapter_cls.load(get("policy_path") or DEFAULT_POLICY_PATHS[model_type], device=get("device"),
                                frame=get("frame", "auto"), camera_map=get("camera_map"), task=get("task"),
                                quantize=get("quantize"), n_action_steps=get("n_action_steps"))
    except (PolicyLoadError, ValueError, ImportError) as e:
        raise PolicySetupError(str(e)) from e


def make_sim_policy(model_type: str, args: argparse.Namespace, env):
    """Build the sim policy named by ``--model-type`` (see the module docstring).

    Raises:
        ValueError: unknown model type (lists the known ones).
        PolicySetupError: a VLA that cannot be loaded (see :func:`load_vla_policy`), or a flow
            checkpoint that is refused (``exit_code`` 2: flow_policy.load_checkpoint's message).
    """
    if model_type == "scripted":
        return ScriptedSimPolicy(env)
    if model_type in ("smolvla", "pi0"):
        return VLASimPolicy(load_vla_policy(model_type, args))
    if model_type == "flow":  # small flow policy: a BC/ReinFlow checkpoint file (flow_policy.py)
        path = getattr(args, "policy_path", None)
        if not path:
            raise PolicySetupError("--model-type flow needs --policy-path = a flow checkpoint "
                                   "(e.g. checkpoints/flow_reinflow.pt)")
        from flow_policy import CheckpointError, FlowSimPolicy

        try:
            return FlowSimPolicy(path, seed=getattr(args, "seed", 0))
        except CheckpointError as e:  # unsafe, corrupt, missing or not a flow checkpoint
            raise PolicySetupError(str(e), exit_code=2) from e
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            raise PolicySetupError(str(e)) from e
    raise ValueError(f"Unknown --model-type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")


class VLASimPolicy:
    """A :class:`vla_policy_interface.VLAPolicyInterface` as a sim policy: executes
    ``n_action_steps`` of each predicted chunk (the adapter's action queue); needs image
    observations (``obs_mode="images"``)."""

    def __init__(self, adapter):
        self.adapter = adapter
        self.name = adapter.model_type

    def reset(self) -> None:
        self.adapter.reset()

    def act(self, obs, env) -> np.ndarray:
        return self.adapter.select_action(obs)

    def describe(self) -> dict:
        """The adapter's load report (frame, stats, camera map, task, sizes, inferences)."""
        return self.adapter.describe() if hasattr(self.adapter, "describe") else {}


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


def video_recording_env(env, video: "VideoWriter", camera: str | None = None):
    """``env`` wrapped so that every reset and step appends the frame of ``camera`` (default: the
    side camera) to ``video``, and an episode that ends on a success goes on for
    :func:`record_success_tail` frames, for episode loops that are not written out here
    (reinflow_smolvla.evaluate: train_reinflow.py's evaluation video)."""
    import gymnasium as gym

    class _Recording(gym.Wrapper):
        def reset(self, **kwargs):
            out = self.env.reset(**kwargs)
            video.append(self.env.unwrapped.render())
            return out

        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            video.append(self.env.unwrapped.render())
            record_success_tail(self.env, video, action, bool(terminated and info.get("is_success")))
            return obs, reward, terminated, truncated, info

    env.unwrapped.render_camera = camera or u.CAMERAS["camera3"]
    return _Recording(env)


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
