"""Command-line argument validators shared by the entry scripts: a bad value is refused by
argparse itself, before anything is created, with one line that names the flag and what is
allowed, and exit status 2:

    p.add_argument("--episodes", type=cli_args.positive_int, default=1)
    $ python run_mujoco_simulation.py --episodes 0
    run_mujoco_simulation.py: error: argument --episodes: must be an integer >= 1 (got '0')

The ``type=`` validators raise :class:`argparse.ArgumentTypeError` (argparse prints its message
after ``argument --FLAG:``). Checks that need several flags at once (``--parallel-envs`` against
the available memory, a policy path that depends on ``--model-type``, an existing output folder
without ``--resume``) return a message (or None) for the script to pass to ``parser.error``.
Torch- and MuJoCo-free at import (the scripts import mujoco_rendering first).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path


# ---------------------------------------------------------------------- help
class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` formatter of the entry scripts: the description is printed as written, and every
    option with a value shows the default that will run, ``(default: VALUE)``, unless its help
    already says what its default is (``%(default)s`` or the word "default", e.g. "default: the
    checkpoint's"). Flags without a value (``store_true``) and ``None`` defaults ("not set": the
    help says what happens) get nothing appended. The value is the parser's at ``--help`` time,
    so ``set_defaults`` (per-model presets, a resumed run's settings) shows up."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("%(default)" in text or "default" in text.lower() or action.default in (None, argparse.SUPPRESS)
                or (action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction))):
            return text
        return text + " (default: %(default)s)"


# ---------------------------------------------------------------------- numbers
def _bounds_text(lo, hi, lo_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"in [{lo}, {hi}]" if not lo_open else f"in ({lo}, {hi}]"
    if lo is not None:
        return f"> {lo}" if lo_open else f">= {lo}"
    return f"<= {hi}"


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An argparse ``type=`` accepting integers with ``lo <= value <= hi`` (None: unbounded).

    The error reads e.g. ``must be an integer >= 1 (got '0')``."""
    what = "an integer" + ("" if lo is None and hi is None else " " + _bounds_text(lo, hi))

    def parse(text: str) -> int:
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {what} (got {text})") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {what} (got {text})")
        return value

    parse.__name__ = f"int_range({lo}, {hi})"
    return parse


def float_range(lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type=`` accepting finite floats with ``lo <= value <= hi`` (``lo < value``
    with ``lo_open``; None: unbounded). NaN and infinities are refused."""
    what = "a finite number" + ("" if lo is None and hi is None else " " + _bounds_text(lo, hi, lo_open))

    def parse(text: str) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {what} (got {text})") from None
        below = lo is not None and (value <= lo if lo_open else value < lo)
        if not math.isfinite(value) or below or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {what} (got {text})")
        return value

    parse.__name__ = f"float_range({lo}, {hi})"
    return parse


#: Integers >= 1 (counts: episodes, steps, iterations, batch sizes, envs).
positive_int = int_range(1)
#: Integers >= 0 (0 has a meaning: "never", "none").
nonneg_int = int_range(0)
#: Finite floats > 0 (rates, learning rates).
positive_float = float_range(0.0, lo_open=True)
#: Finite floats >= 0 (coefficients, noise scales).
nonneg_float = float_range(0.0)
#: Square camera images: at least 16 px, at most 480 px (the scene's offscreen buffer height,
#: ``<global offheight>`` in model/scene.xml).
image_size = int_range(16, 480)
#: Largest camera image width, px (``<global offwidth>`` in model/scene.xml).
IMAGE_MAX_WIDTH = 640


def image_size_hw(text: str) -> int | tuple[int, int]:
    """An argparse ``type=`` for a square or rectangular camera size: ``N`` (height = width, 16-480,
    as :data:`image_size`) returns the int N; ``HxW`` (e.g. ``480x640``, height 16-480, width
    16-640, the scene's offscreen buffer) returns ``(H, W)``. One error message for anything else."""
    what = (f"must be an integer in [16, 480] (a square) or HxW with H in [16, 480] and W in "
            f"[16, {IMAGE_MAX_WIDTH}], e.g. 480x640 (got {text})")
    parts = str(text).strip().lower().split("x")
    try:
        values = [int(v) for v in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(what) from None
    if len(values) == 1 and 16 <= values[0] <= 480:
        return values[0]
    if len(values) == 2 and 16 <= values[0] <= 480 and 16 <= values[1] <= IMAGE_MAX_WIDTH:
        return values[0], values[1]
    raise argparse.ArgumentTypeError(what)


# ---------------------------------------------------------------------- strings
def task_string(text: str) -> str:
    """An argparse ``type=`` for ``--task``: a non-empty single line, stored verbatim (any
    Unicode is fine); newlines and other control characters are refused (a task is one line of a
    LeRobot dataset's task table and of the VLA prompt, whose processors append their own newline)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a non-empty instruction")
    bad = next((c for c in text if c in "\r\n" or (ord(c) < 32 and c != "\t") or ord(c) == 127), None)
    if bad is not None:
        what = "a newline" if bad in "\r\n" else f"the control character {bad!r}"
        raise argparse.ArgumentTypeError(f"must be a single line of text (got {what} in {text!r})")
    return text


def env_id(text: str) -> str:
    """An argparse ``type=`` for ``--env-id``: a Gymnasium id registered after importing ``envs``
    (the SO-101 ids, envs/__init__.py)."""
    from so101_sim import envs
    import gymnasium as gym

    if text not in gym.registry:
        raise argparse.ArgumentTypeError(f"unknown env id {text!r}; the SO-101 ids are {', '.join(envs.MAX_EPISODE_STEPS)}")
    return text


def camera_map(text: str) -> str:
    """An argparse ``type=`` for ``--camera-map``: checks the syntax (``camera1=key,...`` or a
    JSON object) and that every simulation camera named exists; returns the text unchanged (the
    checkpoint's image keys are checked when the policy loads, vla_frames.resolve_camera_map)."""
    from so101_sim import so101_mujoco_utils as u

    s = text.strip()
    if not s:
        return text
    if s.startswith("{"):
        try:
            spec = json.loads(s)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(f"invalid JSON ({e})") from None
        if not isinstance(spec, dict):
            raise argparse.ArgumentTypeError("the JSON must be an object {sim camera: checkpoint image key}")
        sources = list(spec)
    else:
        sources = []
        for item in filter(None, (p.strip() for p in s.split(","))):
            if "=" not in item:
                raise argparse.ArgumentTypeError(f"entry {item!r} must look like camera1=<checkpoint image key>")
            sources.append(item.split("=", 1)[0].strip())
    for src in sources:
        name = src[len(u.OBS_IMAGE_PREFIX):] if src.startswith(u.OBS_IMAGE_PREFIX) else src
        if name not in u.CAMERAS:
            cams = ", ".join(f"{k} ({v})" for k, v in u.CAMERAS.items())
            raise argparse.ArgumentTypeError(f"the simulation has no camera {src!r}; its cameras are {cams}")
    return text


def camera_names(text: str) -> dict[str, str]:
    """An argparse ``type=`` for a recording's cameras, ``name=camera,...`` (e.g.
    ``front=camera_up,wrist=wrist_camera``): dataset image name (``observation.images.<name>``) ->
    simulation camera, a MuJoCo camera name (camera_up, wrist_camera, camera_side) or a sim key
    camera1|2|3. Returns ``{name: MuJoCo camera name}`` in the given order
    (so101_mujoco_utils.resolve_cameras). Refused: no entry, an entry without ``=``, a repeated
    name, a bad name or an unknown camera (the message lists the cameras)."""
    from so101_sim import so101_mujoco_utils as u

    pairs = {}
    for item in filter(None, (p.strip() for p in str(text).split(","))):
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"entry {item!r} must look like <name>=<camera>, e.g. front=camera_up")
        name, cam = (x.strip() for x in item.split("=", 1))
        if name in pairs:
            raise argparse.ArgumentTypeError(f"camera name {name!r} is given twice")
        pairs[name] = cam
    if not pairs:
        raise argparse.ArgumentTypeError("needs at least one <name>=<camera> entry, e.g. front=camera_up")
    try:
        return u.resolve_cameras(pairs)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# ---------------------------------------------------------------------- paths
def existing_file(text: str) -> Path:
    """An argparse ``type=`` for an input file that must exist (a checkpoint, ...)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder, not a file")
    return path


def is_lerobot_dataset(path: Path) -> bool:
    """True if ``path`` looks like a LeRobotDataset root (has ``meta/info.json``)."""
    return (Path(path) / "meta" / "info.json").is_file()


def lerobot_dataset_dir(text: str) -> Path:
    """An argparse ``type=`` for a local LeRobotDataset folder (one with ``meta/info.json``, as
    record_dataset.py writes)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such dataset folder: {text}")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a dataset folder")
    if not is_lerobot_dataset(path):
        raise argparse.ArgumentTypeError(f"{text} is not a LeRobot dataset (no meta/info.json)")
    return path


def output_problem(path: Path) -> str | None:
    """Why ``path`` (a file or folder to write) cannot be created, or None: the nearest existing
    ancestor must be a folder this process can write to (``a_file/out`` cannot be created). An
    existing ``path`` is fine (a folder is written into, a file replaced) if its folder is writable."""
    path = Path(path)
    if path.exists():  # an existing folder is written into, an existing file replaced (via its folder)
        parent = path if path.is_dir() else path.parent
    else:
        parent = path.parent
        while not parent.exists():
            parent = parent.parent
    if not parent.is_dir():
        return f"cannot create {path}: {parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create {path}: the folder {parent} is not writable"
    return None


def output_path(text: str) -> Path:
    """An argparse ``type=`` for a file or folder to write (checkpoint, summary, video folder):
    refused when it cannot be created (:func:`output_problem`); nothing is created here."""
    problem = output_problem(Path(text))
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return Path(text)




def policy_path_problem(path: str | None, model_type: str, flag: str = "--policy-path") -> str | None:
    """Why ``path`` (the value of ``flag``) cannot name a policy of ``model_type``, or None. The flow
    policy (and any ``--resume``) needs an existing checkpoint file or flow export folder; the VLAs and
    ``lerobot`` an existing local folder or a Hub id (``owner/name``; whether it is downloadable is
    checked when it loads)."""
    if path is None:
        return None
    p = Path(path)
    if model_type == "flow":
        if not p.exists():
            return f"argument {flag}: no such checkpoint file: {path}"
        if p.is_dir():
            from so101_sim.pretrained_export import is_flow_pretrained

            return None if is_flow_pretrained(p) else (
                f"argument {flag}: {path} is a folder, not a checkpoint file (.pt) or a flow policy export "
                "(print_checkpoint_stats.py --export-pretrained)")
        return None
    from so101_sim import policy_registry
    from so101_sim.hub_download import REPO_ID

    if model_type in (*policy_registry.VLA_MODEL_TYPES, "lerobot") and not p.exists() and not (
            REPO_ID.match(str(path)) and not str(path).startswith(".")):
        return (f"argument {flag}: {path} is neither an existing local folder nor a Hugging Face Hub id "
                "(owner/name)")
    return None


# ---------------------------------------------------------------------- parallel env workers
#: Memory of one env worker process (parallel_envs.RobustVectorEnv) in MB, by observation mode.
#: Measured as the PSS (psutil ``memory_full_info().pss``) of each worker of a 2-worker
#: RobustVectorEnv of SO101PickPlace-v0 after a reset and 30 steps (Linux x86-64, mujoco 3.x,
#: Python 3.12): state observations (the flow policy) ~965 MB, three 256-px cameras (the VLAs)
#: ~1120 MB (64 px: ~1085 MB); USS ~870 / ~980 MB. Most of it is the MuJoCo scene build
#: (so101_mujoco_utils.build_scene_spec + compile, ~1.3 GB RSS in one process), not the
#: observations, so the image size barely matters. Rounded up.
WORKER_MEMORY_MB = {"state": 1000, "images": 1150}


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (psutil elsewhere); None if neither works."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001  (no psutil / unsupported platform: no memory check)
        return None


def parallel_envs_problem(n: int, obs_mode: str, available: int | None = None, flag: str = "--parallel-envs",
                          processes: int = 1) -> str | None:
    """Why ``n`` env workers with ``obs_mode`` ("state" or "images") per training process, in
    ``processes`` processes on this machine (accelerate ranks), do not fit in the available memory
    (``available`` bytes, default :func:`available_memory_bytes`), or None. The estimate is
    ``n`` x ``processes`` x :data:`WORKER_MEMORY_MB`; the training processes come on top."""
    per = WORKER_MEMORY_MB[obs_mode]
    avail = available_memory_bytes() if available is None else available
    if avail is None:
        return None
    need = n * processes * per * 1e6
    if need <= avail:
        return None
    most = int(avail // (per * 1e6 * processes))
    ranks = "" if processes == 1 else f" in each of {processes} processes"
    return (f"argument {flag}: {n} workers{ranks} need about {need / 1e9:.1f} GB ({per} MB per {obs_mode} env worker) "
            f"but {avail / 1e9:.1f} GB is available; use at most {most}")


def warn_if_more_workers_than_cpus(n: int, flag: str = "--parallel-envs") -> None:
    """Print one warning line (stderr) when ``n`` exceeds the CPU count: the workers then share
    cores and an iteration gets no faster (not an error)."""
    cpus = os.cpu_count() or 1
    if n > cpus:
        print(f"warning: {flag} {n} is more than the {cpus} CPUs of this machine; workers will share cores",
              file=sys.stderr)


__all__ = ["DefaultsHelpFormatter", "IMAGE_MAX_WIDTH", "WORKER_MEMORY_MB", "available_memory_bytes", "camera_map",
           "camera_names", "env_id", "existing_file", "float_range", "image_size", "image_size_hw", "int_range",
           "is_lerobot_dataset", "lerobot_dataset_dir", "nonneg_float", "nonneg_int", "output_path", "output_problem",
           "parallel_envs_problem", "policy_path_problem", "positive_float", "positive_int", "task_string",
           "warn_if_more_workers_than_cpus"]
