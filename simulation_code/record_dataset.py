"""Record SO-101 pick-and-place demonstrations in the simulation into a LeRobotDataset v3.

Copy-paste (from simulation_code/):

    # 50 scripted-expert episodes, random block positions, no display needed
    python record_dataset.py --input scripted --output-dir ../datasets/so101_pickplace --num-episodes 50
    # keyboard / gamepad teleoperation (display or controller), physical leader arm (mjpython on macOS)
    python record_dataset.py --input keyboard --output-dir ../datasets/my_dataset --task "pick up the red block"
    python record_dataset.py --input gamepad  --output-dir ../datasets/my_dataset --num-episodes 20
    python record_dataset.py --input physical --port /dev/ttyACM0 --output-dir ../datasets/my_dataset
    # the real SO-101's schema (front + wrist cameras 480x640, 30 fps): merges with real datasets
    python record_dataset.py --input scripted --schema so101_follower --output-dir ../datasets/so101_sim_real

Controls (keyboard / physical): Space starts and stops (saves) an episode, R discards it and resets,
ESC quits. Gamepad: Cross [A], Circle [B], Options [Start]. ``--input scripted`` records whole
episodes with the scripted expert (successful ones only, unless --keep-failed).

What is written (LeRobot's own ``LeRobotDataset.create / add_frame / save_episode / finalize``):
``observation.state`` and ``action`` (6, float32, names ``shoulder_pan.pos`` ... ``gripper.pos``) in
the LeRobot calibrated frame, i.e. body joints in degrees and the gripper in 0..100 (0 closed), the
units of a real SO-101 follower (conversion: ``so101_mujoco_utils.mujoco_to_lerobot``, one place);
``action`` is the absolute joint-position target sent to the simulation at that frame and
``observation.state`` the measured joint angles before it; ``observation.images.<name>`` per
``--cameras`` entry as video (default camera1|2|3: top, wrist, side cameras); ``episode_seed``
(int64, the episode's env reset seed, a plain column so it survives LeRobot's dataset tools); the
task string per frame; robot_type ``--robot-type`` (default ``so_follower``, what LeRobot's
``SO101Follower`` reports). The convention, the camera map (dataset name -> MuJoCo camera), the
control rate and per-episode results also go to ``meta/so101_recording.json`` and a dataset card
``README.md`` in the dataset folder.

Real-robot schema: ``--schema so101_follower`` records exactly the features, fps and robot_type that
``lerobot-record --robot.type=so101_follower`` writes with two 640x480 cameras ``front`` and
``wrist`` at 30 fps (:func:`real_robot_features`; front = the top-down ``camera_up``, wrist =
``wrist_camera``; no ``episode_seed`` column, the seeds stay in the sidecar), so the dataset merges
with real ones through ``lerobot.datasets.aggregate.aggregate_datasets``. Explicit flags override
the preset.

Frame rate: ``--fps`` is the simulation's control rate and every control step is a frame (default
10 Hz, ``so101_mujoco_utils.CONTROL_HZ``). The physics step stays 2 ms; at 30 fps a control step is
17, 16, 17, ... physics steps (``so101_mujoco_utils.substep_schedule``). Episode caps keep their
duration in seconds (150 steps at 10 fps = 450 at 30 fps).

No completed episode is ever lost (``durable_dataset.py``): LeRobot writes into a hidden staging
folder beside the dataset, and each saved episode is published into the dataset folder in one atomic
step. So at every instant, even after SIGKILL or a full disk, ``LeRobotDataset(repo_id, root=DIR)``
loads every episode announced as saved, and ``--resume`` appends after them. Ctrl-C, ESC or an error
during episode k discards only that episode. An existing dataset is never overwritten unless
--overwrite (which replaces it only once the first new episode is saved) or appended to with --resume.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from so101_sim import mujoco_rendering  # noqa: F401  (chooses the GL backend before mujoco is imported)

import numpy as np

from so101_sim import durable_dataset as dd
from so101_sim import envs  # registers the env ids
from so101_sim import so101_mujoco_utils as u
from so101_sim import teleop_common as tc
from so101_sim.scripted_expert import DESCEND_TOL

# torchcodec cannot load without system FFmpeg libraries; LeRobot then falls back to PyAV (which is
# what this repo uses) after logging a long traceback. Keep that fallback quiet.
logging.getLogger("lerobot.utils.import_utils").setLevel(logging.ERROR)

INPUTS = ("keyboard", "gamepad", "physical", "scripted")
#: Default ``robot_type`` of a recording: the name LeRobot's ``SO101Follower`` reports
#: (``lerobot.robots.so_follower.SO101Follower.name`` in LeRobot 0.6.1), which ``lerobot-record
#: --robot.type=so101_follower`` writes into meta/info.json. A literal here (importing the class costs
#: seconds: torch); tests/test_real_schema.py checks it against the class. Many older Hub datasets
#: say ``so101_follower``: pass ``--robot-type so101_follower`` to merge with those.
ROBOT_TYPE = "so_follower"
#: Sidecar file (inside the dataset's meta/) with the unit convention, cameras and episode seeds.
RECORDING_META = "meta/so101_recording.json"
#: ``--expert-noise`` (DART, Laskey et al. 2017, "DART: Noise Injection for Robust Imitation
#: Learning"): step-to-step correlation of the noise added to the executed arm targets. An AR(1)
#: process n_t = rho n_(t-1) + sqrt(1 - rho^2) sigma e_t keeps its standard deviation sigma at any
#: rho; 0.8 at 10 Hz (a time constant of ~0.45 s) makes sustained offsets, like a student's drift,
#: rather than jitter the actuators filter out. Scaled to other ``--fps`` by rho ** (10 / fps).
EXPERT_NOISE_RHO = 0.8

#: Control steps at 10 Hz (0.5 s) a scripted episode keeps recording after the first success (the
#: expert keeps lifting), so the data shows the block held rather than ending on the success frame;
#: scaled to the same duration at other ``--fps`` (:func:`steps_at`).
POST_SUCCESS_STEPS = 5
#: Default episode length cap of a person's episode in control steps at 10 Hz (60 s; scaled to the
#: same duration at other ``--fps``); a scripted episode is capped by the env registration's
#: ``max_episode_steps`` (envs.MAX_EPISODE_STEPS, registration.episode_steps).
TELEOP_MAX_STEPS = 600
#: What each MuJoCo camera shows (dataset card, sidecar).
CAMERA_VIEWS = {"camera_up": "top view", "wrist_camera": "wrist camera", "camera_side": "side view"}
#: Default ``--cameras``: dataset image name -> sim camera, the sim's own camera1..3
#: (so101_mujoco_utils.CAMERAS; tests/test_record_dataset.py checks they agree).
SIM_CAMERAS = "camera1=camera_up,camera2=wrist_camera,camera3=camera_side"
#: ``--cameras`` of ``--schema so101_follower``: the names of a two-camera lerobot-record setup;
#: ``front`` is the top-down ``camera_up`` (the scene has no camera facing the robot), ``wrist`` the
#: gripper camera.
REAL_CAMERAS = "front=camera_up,wrist=wrist_camera"
#: Camera size (height, width) of a real SO-101 recording: 640x480 OpenCV cameras.
REAL_IMAGE_HW = (480, 640)
#: Frame rate of a real SO-101 recording (lerobot-record's default ``--dataset.fps``, and the cameras').
REAL_FPS = 30
#: Narrowest camera image a recording accepts, px. LeRobot's AV1 encoder (SVT-AV1, through PyAV)
#: kills the process with SIGFPE on frames narrower than 25 px (measured: 24 wide crashes, 25 works,
#: any height); 32 leaves a margin.
MIN_VIDEO_WIDTH = 32
#: ``--schema`` presets: parser defaults that the explicit flags override. ``sim`` is the default.
SCHEMAS = {
    "sim": {"fps": int(u.CONTROL_HZ), "cameras": SIM_CAMERAS, "image_size": u.IMAGE_SIZE},
    "so101_follower": {"fps": REAL_FPS, "cameras": REAL_CAMERAS, "image_size": f"{REAL_IMAGE_HW[0]}x{REAL_IMAGE_HW[1]}"},
}


# ------------------------------------------------------------------------------------------
# Dataset schema and units (one place)
# ------------------------------------------------------------------------------------------

def dataset_features(image_size=u.IMAGE_SIZE, cameras=None) -> dict:
    """The sim schema's LeRobot feature spec: state/action (6,) float32 with LeRobot motor names, the
    episode seed (1,) int64 (:data:`so101_mujoco_utils.EPISODE_SEED`), and one
    ``observation.images.<name>`` video (height, width, 3) per camera name.

    Args:
        image_size: int (square) or (height, width), pixels.
        cameras: image names (a ``{name: camera}`` map gives its keys); None = camera1..3.
    """
    h, w = u.image_hw(image_size)
    joint = {"dtype": "float32", "shape": (u.NUM_JOINTS,), "names": list(u.LEROBOT_MOTOR_NAMES)}
    features = {u.OBS_STATE: dict(joint), "action": dict(joint),
                u.EPISODE_SEED: {"dtype": "int64", "shape": (1,), "names": None}}
    for name in (u.CAMERAS if cameras is None else cameras):
        features[u.OBS_IMAGE_PREFIX + name] = {"dtype": "video", "shape": (h, w, 3), "names": ["height", "width", "channels"]}
    return features


def real_robot_features(cameras=("front", "wrist"), height: int = REAL_IMAGE_HW[0], width: int = REAL_IMAGE_HW[1]) -> dict:
    """The features ``lerobot-record --robot.type=so101_follower`` writes for an SO-101 follower with
    OpenCV cameras named ``cameras``, each ``height`` x ``width`` pixels, as videos.

    Derived without hardware the way LeRobot's lerobot_record.py does it: an ``SO101Follower`` (its
    constructor opens neither the port nor the cameras; calibration is looked for in a temporary
    folder) gives ``action_features`` / ``observation_features``, which go through
    ``make_default_processors()`` with ``aggregate_pipeline_dataset_features(..., use_videos=True)``
    and ``combine_feature_dicts``. Result (LeRobot 0.6.1): ``action`` and ``observation.state``
    (6,) float32 named ``shoulder_pan.pos`` ... ``gripper.pos``, and per camera
    ``observation.images.<name>`` video (height, width, 3) with ``info: {"is_depth_map": False}``.
    Imports LeRobot's robot and processor modules (seconds: torch).

    Args:
        cameras: camera names (a ``{name: camera}`` map gives its keys), in order.
        height, width: camera image size, pixels.
    """
    import tempfile

    from lerobot.cameras.opencv import OpenCVCameraConfig
    from lerobot.datasets import aggregate_pipeline_dataset_features, create_initial_features
    from lerobot.processor import make_default_processors
    from lerobot.robots.so_follower import SO101Follower, SO101FollowerConfig
    from lerobot.utils.feature_utils import combine_feature_dicts

    cams = {name: OpenCVCameraConfig(index_or_path=i, width=int(width), height=int(height), fps=REAL_FPS)
            for i, name in enumerate(cameras)}
    with tempfile.TemporaryDirectory() as calib:  # the constructor creates/reads its calibration folder
        robot = SO101Follower(SO101FollowerConfig(port="/dev/null", cameras=cams, calibration_dir=Path(calib)))
    teleop_action_processor, _, robot_observation_processor = make_default_processors()
    return combine_feature_dicts(
        aggregate_pipeline_dataset_features(pipeline=teleop_action_processor,
                                            initial_features=create_initial_features(action=robot.action_features),
                                            use_videos=True),
        aggregate_pipeline_dataset_features(pipeline=robot_observation_processor,
                                            initial_features=create_initial_features(observation=robot.observation_features),
                                            use_videos=True),
    )


def features_for(args) -> dict:
    """The feature spec of this run: :func:`real_robot_features` for ``--schema so101_follower``, else
    :func:`dataset_features` (both with ``--cameras`` and ``--image-size``)."""
    if args.schema == "so101_follower":
        return real_robot_features(list(args.cameras), *u.image_hw(args.image_size))
    return dataset_features(args.image_size, args.cameras)


def steps_at(steps_10hz: int, fps: float) -> int:
    """A count of 10 Hz control steps as the same duration in control steps at ``fps`` (>= 1)."""
    return max(1, round(steps_10hz * fps / u.CONTROL_HZ))


def to_dataset_units(q_rad) -> np.ndarray:
    """MuJoCo radians (6,) -> what the dataset stores: float32 LeRobot calibrated units."""
    return u.mujoco_to_lerobot(q_rad).astype(np.float32)


def from_dataset_units(x) -> np.ndarray:
    """Dataset state/action (..., 6) LeRobot units -> float64 MuJoCo radians."""
    return u.lerobot_to_mujoco(np.asarray(x, dtype=np.float32))


def executable_action(target_rad) -> tuple[np.ndarray, np.ndarray]:
    """Round a joint target through the dataset's float32 representation.

    Returns ``(action_for_dataset, target_for_env)``: the float32 LeRobot-unit action and the
    MuJoCo-radian target the simulation actually executes, decoded from it, so that replaying the
    stored actions reproduces the recorded states exactly.
    """
    stored = to_dataset_units(target_rad)
    return stored, from_dataset_units(stored)


# ------------------------------------------------------------------------------------------
# Interruption handling
# ------------------------------------------------------------------------------------------

class GracefulStop:
    """SIGINT/SIGTERM -> ``requested = True`` (checked by the loops between control steps).

    Inside :meth:`critical` (an episode being saved) signals are only noted, so a save is never cut
    in half. Outside it, a second signal raises ``KeyboardInterrupt`` (the saved episodes are
    already published; the ``finally`` only removes the staging folder).
    """

    def __init__(self):
        self.requested = False
        self._in_critical = False
        self._previous = {}

    def install(self) -> "GracefulStop":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.requested and not self._in_critical:
            raise KeyboardInterrupt
        self.requested = True
        when = "after this save" if self._in_critical else "now; the unfinished episode is discarded"
        print(f"\n[record] {signal.Signals(signum).name}: stopping {when}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def critical(self):
        self._in_critical = True
        try:
            yield
        finally:
            self._in_critical = False


# ------------------------------------------------------------------------------------------
# Dataset lifecycle: create / resume / overwrite, recording metadata
# ------------------------------------------------------------------------------------------

def is_lerobot_dataset(path: Path) -> bool:
    return (Path(path) / "meta" / "info.json").is_file()


def quiet_third_party_output() -> None:
    """Keep a recording's output to its own ``[record]`` lines: the SVT-AV1 encoder (LeRobot's AV1
    videos) logs each encoder's settings at info level and warnings about small frames, so
    ``SVT_LOG=1`` (errors only; read when an encoder starts) unless the environment sets SVT_LOG;
    and no ``Map: 100%`` progress bar of the datasets library per saved episode. Called before the
    dataset is opened, unless ``-v``."""
    os.environ.setdefault("SVT_LOG", "1")
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:  # LeRobot without the datasets library: nothing to silence
        pass


def open_dataset(args, features: dict):
    """Open the crash-safe recording at ``args.output_dir`` (new, --overwrite or --resume).

    Returns ``(recording, created, recording_meta)``: a :class:`durable_dataset.DurableRecording`,
    ``created`` True unless resuming, and the sidecar dict (existing episodes' records on resume).
    Nothing appears at ``args.output_dir`` until the first episode is saved.

    Raises:
        SystemExit: the folder exists without --resume/--overwrite, --overwrite on a folder that is
            not a LeRobot dataset, or --resume with different fps, cameras, image size or an explicit
            --robot-type that differs (each message says what to do instead).
    """
    root = Path(args.output_dir)
    dd.recover(root)  # what a killed run may have left beside the dataset
    exists_nonempty = root.exists() and (not root.is_dir() or any(root.iterdir()))
    if exists_nonempty and args.resume:
        if not is_lerobot_dataset(root):
            raise SystemExit(f"--resume: {root} is not a LeRobot dataset (no meta/info.json); pick another --output-dir")
        from lerobot.datasets import LeRobotDatasetMetadata

        have = LeRobotDatasetMetadata(args.repo_id, root=root)
        if u.EPISODE_SEED not in have.features:  # recorded before the seed column existed
            features = {k: v for k, v in features.items() if k != u.EPISODE_SEED}
        check_resume_compatible(have, features, args.fps, root, load_recording_meta(root),
                                args.robot_type if args.robot_type_given else None)
        args.robot_type = have.robot_type  # the dataset's (checked above when given explicitly)
        rec = dd.DurableRecording(root, args.repo_id, "resume")
        meta = load_recording_meta(root)
        if meta is None:  # sidecar dropped by LeRobot's tools: continue after the stored seeds
            stored = stored_seeds(rec.ds)
            meta = dict(new_recording_meta(args), next_seed=max(stored) + 1 if stored else args.seed)
        print(f"[record] resuming {root}: {rec.meta.total_episodes} episodes, {rec.meta.total_frames} frames already")
        return rec, False, meta
    if exists_nonempty and not args.overwrite:
        raise SystemExit(
            f"{root} already exists and is not empty. Pass --resume to append episodes to it, --overwrite to "
            "replace it, or choose another --output-dir."
        )
    if exists_nonempty and not is_lerobot_dataset(root):  # --overwrite
        raise SystemExit(f"--overwrite: refusing to delete {root}: it is not a LeRobot dataset (no meta/info.json)")
    if root.exists() and not exists_nonempty:
        root.rmdir()  # an empty folder: the first published episode creates it
    mode = "overwrite" if exists_nonempty else "create"
    if mode == "overwrite":
        print(f"[record] --overwrite: {root} is replaced when the first new episode is saved")
    rec = dd.DurableRecording(root, args.repo_id, mode,
                              dict(fps=int(args.fps), features=features, robot_type=args.robot_type, use_videos=True))
    return rec, True, new_recording_meta(args)


def stored_seeds(ds) -> list[int]:
    """The distinct ``episode_seed`` values of a LeRobot dataset (empty when it has none)."""
    if u.EPISODE_SEED not in ds.meta.features or ds.meta.total_episodes == 0:
        return []
    from lerobot.datasets import LeRobotDataset

    full = LeRobotDataset(ds.repo_id, root=ds.root)
    return sorted({int(x) for x in full.hf_dataset.with_format("numpy")[u.EPISODE_SEED]})


def check_resume_compatible(meta, features: dict, fps: float, root: Path, sidecar: dict | None = None,
                            robot_type: str | None = None) -> None:
    """Raise SystemExit naming the first difference between the dataset on disk (its LeRobot
    ``meta``) and this run: fps, the set of cameras (the hint gives the dataset's ``--cameras`` from
    its ``sidecar`` when it has one), a feature's dtype/shape (``--image-size`` hint), or
    ``robot_type`` when one is given (None: the dataset's is kept)."""
    if int(meta.fps) != int(fps):
        raise SystemExit(f"--resume: {root} was recorded at {meta.fps} fps, this run asks for {fps}; pass --fps {meta.fps}")
    if robot_type is not None and meta.robot_type != robot_type:
        raise SystemExit(f"--resume: {root} has robot_type {meta.robot_type!r}, this run asks for {robot_type!r}; "
                         f"pass --robot-type {meta.robot_type} (or leave it out)")
    videos = lambda fts: sorted(k for k, ft in fts.items() if ft.get("dtype") == "video")  # noqa: E731
    if videos(meta.features) != videos(features):
        have_map = (sidecar or {}).get("camera_map")
        hint = (f"; pass --cameras {','.join(f'{k}={v}' for k, v in have_map.items())}" if have_map
                else "; record into a new --output-dir")
        raise SystemExit(f"--resume: {root} has the cameras {videos(meta.features)}, this run records "
                         f"{videos(features)}{hint}")
    for key, ft in features.items():
        have = meta.features.get(key)
        if have is None:
            raise SystemExit(f"--resume: {root} has no feature {key!r}; record into a new --output-dir")
        if tuple(have["shape"]) != tuple(ft["shape"]) or have["dtype"] != ft["dtype"]:
            hh, hw = have["shape"][:2] if ft["dtype"] == "video" else (0, 0)
            hint = f" (pass --image-size {hh if hh == hw else f'{hh}x{hw}'})" if ft["dtype"] == "video" else ""
            raise SystemExit(f"--resume: {key} is {have['dtype']} {tuple(have['shape'])} in {root}, this run "
                             f"records {ft['dtype']} {tuple(ft['shape'])}{hint}")


def new_recording_meta(args) -> dict:
    """The sidecar content for a new dataset (see the module docstring): the unit convention,
    ``cameras`` (observation key -> description), ``camera_map`` (dataset image name -> MuJoCo
    camera, what ``SO101PickPlaceEnv(cameras=...)`` takes to run a policy trained on it),
    ``control_hz`` (= ``fps``: every control step is a frame; ``steps_per_frame`` is 1, kept for
    readers of older recordings that subsampled), ``physics_timestep`` (s), ``image_size`` (int, or
    [h, w]) and ``image_hw``, ``schema``, ``robot_type``, the env id and the episode records."""
    return {
        "format": "so101-sim-recording/1",
        "units": {
            "observation.state": "measured joint angles, LeRobot calibrated frame: shoulder_pan..wrist_roll in "
                                 "degrees (zero at mid-range, same sign as MuJoCo), gripper 0..100 (0 closed, 100 open)",
            "action": "absolute joint-position targets in the same units as observation.state",
        },
        "conversion": "so101_mujoco_utils.mujoco_to_lerobot (MuJoCo rad -> dataset) and lerobot_to_mujoco (back)",
        "joint_names": list(u.LEROBOT_MOTOR_NAMES),
        "cameras": {u.OBS_IMAGE_PREFIX + k: f"{CAMERA_VIEWS[v]} ({v})" for k, v in args.cameras.items()},
        "camera_map": dict(args.cameras),
        "control_hz": float(args.fps),
        "physics_timestep": u.PHYSICS_TIMESTEP,
        "fps": args.fps,
        "steps_per_frame": 1,
        "image_size": args.image_size if isinstance(args.image_size, int) else list(args.image_size),
        "image_hw": list(u.image_hw(args.image_size)),
        "schema": args.schema,
        "robot_type": args.robot_type,
        "randomize_block": not args.no_randomize,
        "env_id": env_id_for(args),
        "episodes": [],
        "next_seed": args.seed,
    }


def load_recording_meta(root: Path) -> dict | None:
    """The sidecar dict of the dataset at ``root``, or None when it has none (e.g. after LeRobot's
    dataset tools, which keep only LeRobot's own metadata)."""
    path = Path(root) / RECORDING_META
    return json.loads(path.read_text()) if path.is_file() else None


def write_recording_meta(root: Path, meta: dict, args) -> None:
    """Write the sidecar JSON and the dataset card atomically (temp file + rename)."""
    for rel, text in ((RECORDING_META, json.dumps(meta, indent=2, default=float)), ("README.md", dataset_card(meta, args))):
        path = Path(root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def dataset_card(meta: dict, args) -> str:
    """A short Markdown dataset card: provenance, units, features, how to train."""
    eps = meta.get("episodes", [])
    inputs = sorted({e.get("input", "?") for e in eps}) or [args.input]
    n_frames = sum(e.get("frames", 0) for e in eps)
    h, w = meta.get("image_hw") or u.image_hw(meta.get("image_size", u.IMAGE_SIZE))
    cams = "\n".join(f"| `{k}` | video {h}x{w} (height x width) RGB | {v} |" for k, v in meta.get("cameras", {}).items())
    return f"""---
tags: [LeRobot, so101, simulation, mujoco]
---
# {args.repo_id}

SO-101 pick-and-place demonstrations recorded in the MuJoCo simulation with `record_dataset.py`
(inputs: {', '.join(inputs)}; block {'randomized' if meta.get('randomize_block', True) else 'fixed'}).
{len(eps)} episodes, {n_frames} frames at {meta.get('fps')} fps (simulation control rate {meta.get('control_hz')} Hz).
LeRobotDataset v3, robot_type `{meta.get('robot_type', args.robot_type)}`.

## Units (the LeRobot calibrated frame of a real SO-101 follower)

| feature | contents |
| --- | --- |
| `observation.state` (6, float32) | {meta['units']['observation.state']} |
| `action` (6, float32) | {meta['units']['action']} |
{cams}

Joint order: {', '.join(meta['joint_names'])}. Conversion: {meta['conversion']}.
Each frame's `{u.EPISODE_SEED}` column is its episode's env reset seed; per-episode results: `{RECORDING_META}`.

## Train

```bash
lerobot-train --policy.path=lerobot/smolvla_base --dataset.repo_id={args.repo_id} \\
  --dataset.root=PATH_TO_THIS_FOLDER --batch_size=64 --steps=20000 --output_dir=outputs/train/smolvla_so101
```
"""


# ------------------------------------------------------------------------------------------
# Environment and inputs
# ------------------------------------------------------------------------------------------

def env_id_for(args) -> str:
    return envs.FIXED_BLOCK_ENV_ID if args.no_randomize else envs.DEFAULT_ENV_ID


def make_env(args, viewer: bool):
    """The recording env: control rate ``--fps``, the ``--cameras`` at ``--image-size``, no gym time
    limit (the loops count steps themselves: ``--max-steps``, which defaults to the registration's
    episode length in seconds), ``render_mode="human"`` when ``viewer``."""
    import gymnasium as gym

    return gym.make(env_id_for(args), obs_mode="images", image_size=args.image_size, cameras=args.cameras,
                    control_hz=args.fps, terminate_on_success=False, render_mode="human" if viewer else None,
                    max_episode_steps=10**9, disable_env_checker=True)


def make_source(args):
    """Build the teleop input source named by ``--input`` (keyboard/gamepad/physical), its safety
    cap per control step scaled to ``--fps`` (teleop_common.max_target_step_rad: the same rad/s).

    Raises:
        TeleopUnavailable: the device or display it needs is missing (clear message).
    """
    source = _make_source(args)
    source.max_step_rad = tc.max_target_step_rad(args.fps)
    return source


def _make_source(args):
    if args.input == "keyboard":
        from so101_sim.teleop_keyboard import KeyboardTeleop

        return KeyboardTeleop()
    if args.input == "gamepad":
        from so101_sim.teleop_gamepad import GamepadTeleop

        return GamepadTeleop(layout=args.layout)
    if args.input == "physical":
        from so101_sim.teleop_physical_arm import PhysicalArmTeleop, default_events, make_leader

        if not args.port:
            raise tc.TeleopUnavailable("--input physical needs --port (the leader arm's serial port; "
                                       "find it with `lerobot-find-port`)")
        source = PhysicalArmTeleop(make_leader(args.port, args.leader_id, args.calibration_dir))
        source.connect()
        source.events = default_events()
        return source
    raise ValueError(f"no teleop source for --input {args.input!r}")


def make_frame(q_rad, obs: dict, action_stored: np.ndarray, task: str, seed: int | None,
               image_keys=u.IMAGE_KEYS) -> dict:
    """One dataset frame: the joint angles ``q_rad`` (6,) float64 MuJoCo radians measured with
    ``obs`` (before the action; stored as float32 LeRobot units), the stored action, the episode's
    reset ``seed`` (omitted when None: a dataset without the column), the camera images
    ``image_keys`` of ``obs`` ((H, W, 3) uint8), the task string."""
    frame = {u.OBS_STATE: to_dataset_units(q_rad), "action": action_stored}
    if seed is not None:
        frame[u.EPISODE_SEED] = np.array([seed], np.int64)
    for key in image_keys:
        frame[key] = obs[key]
    frame["task"] = task
    return frame


# ------------------------------------------------------------------------------------------
# Recording loops
# ------------------------------------------------------------------------------------------

class Recorder:
    """Saves/discards episodes of a :class:`durable_dataset.DurableRecording` and keeps the sidecar
    metadata in step with it (written into the staging folder, published with the episode)."""

    def __init__(self, ds, meta: dict, args, stop: GracefulStop):
        self.ds, self.meta, self.args, self.stop = ds, meta, args, stop
        self.root = Path(ds.root)
        self.saved_this_run = 0
        self.with_seed = u.EPISODE_SEED in ds.meta.features
        self.image_keys = [k for k, ft in ds.meta.features.items() if ft.get("dtype") == "video"]

    def add_frame(self, q_rad, obs: dict, action_stored: np.ndarray, seed: int) -> None:
        """Buffer one frame of the current episode (see :func:`make_frame`)."""
        self.ds.add_frame(make_frame(q_rad, obs, action_stored, self.args.task, seed if self.with_seed else None,
                                     self.image_keys))

    def save(self, seed: int, success: bool, frames: int) -> None:
        """Save and publish the buffered episode whole (signals deferred meanwhile).

        Raises:
            durable_dataset.DiskFullError: the disk filled up (every earlier episode is intact).
        """
        t0 = time.perf_counter()
        with self.stop.critical():
            index = self.ds.meta.total_episodes
            record = {"episode_index": index, "seed": seed, "success": bool(success),
                      "frames": frames, "input": self.args.input, "task": self.args.task}
            if self.args.input == "scripted":
                record["expert_noise_rad"] = float(self.args.expert_noise)  # DART; 0 = actions replay the states
                record["expert_close_tol_m"] = float(self.args.expert_close_tol)
                record["executor"] = f"student {self.args.student}" if self.args.student else "expert"

            def sidecar(staging: Path) -> None:
                write_recording_meta(staging, dict(self.meta, episodes=self.meta["episodes"] + [record]), self.args)

            index = self.ds.save_episode(before_publish=sidecar)
            self.meta["episodes"].append(record)
        self.saved_this_run += 1
        print(f"[record] saved episode {index} ({frames} frames, success={success}, "
              f"{time.perf_counter() - t0:.1f} s to encode and publish)", flush=True)

    def discard(self, why: str) -> None:
        if self.ds.discard_episode():
            print(f"[record] discarded the unfinished episode ({why})", flush=True)

    def next_seed(self) -> int:
        seed = int(self.meta.get("next_seed", self.args.seed))
        self.meta["next_seed"] = seed + 1
        return seed


class ExpertNoise:
    """DART noise for ``--expert-noise``: the env executes the expert's target plus correlated
    Gaussian noise on the five arm joints (not the gripper), while the dataset stores the expert's
    clean target as the ``action`` label. The expert reads the measured joints every step, so the
    recorded states include drift away from its path and the labels say how to come back.

    Args:
        sigma: standard deviation of the noise, MuJoCo radians (0 = none).
        fps: control rate, Hz (the correlation :data:`EXPERT_NOISE_RHO` is per 10 Hz step).
        seed: the episode's reset seed: the same episode seed gives the same noise on every run.
    """

    def __init__(self, sigma: float, fps: float, seed: int):
        self.sigma = float(sigma)
        self.rho = EXPERT_NOISE_RHO ** (u.CONTROL_HZ / fps)
        self.rng = np.random.default_rng([int(seed), 0xDA27])
        self.n = np.zeros(u.GRIPPER_INDEX)

    def apply(self, target_rad: np.ndarray) -> np.ndarray:
        """The target to execute: ``target_rad`` (6,) MuJoCo radians plus this step's noise on the
        arm joints, clipped to the joint limits."""
        if self.sigma <= 0:
            return target_rad
        e = self.rng.standard_normal(self.n.shape)
        self.n = self.rho * self.n + np.sqrt(1.0 - self.rho ** 2) * self.sigma * e
        noisy = np.asarray(target_rad, dtype=np.float64).copy()
        noisy[: u.GRIPPER_INDEX] += self.n
        return u.clip_to_joint_limits(noisy)


def load_student(args):
    """The ``--student`` policy (DAgger): a LeRobot ``pretrained_model`` folder loaded as
    ``run_mujoco_simulation.py --model-type lerobot`` loads it (policy_registry), checked to read
    the observation this recording makes.

    Returns:
        a lerobot_policy.LeRobotPolicy: ``reset(seed)``, ``act(obs) -> (6,)`` MuJoCo radians.
    Raises:
        ValueError: the folder cannot be loaded, or its cameras, image size or control rate differ
            from ``--cameras`` / ``--image-size`` / ``--fps`` (the message names both).
    """
    from so101_sim import policy_registry

    try:
        student = policy_registry.load_policy("lerobot", str(args.student))
    except policy_registry.PolicySetupError as e:
        raise ValueError(f"--student {args.student}: {e}") from e
    s = student.setup
    want = {"cameras": dict(args.cameras), "image size": tuple(u.image_hw(args.image_size)), "fps": float(args.fps)}
    have = {"cameras": dict(s.cameras), "image size": tuple(s.image_hw or ()), "fps": float(s.control_hz)}
    wrong = [f"{k} {have[k]} (this recording: {want[k]})" for k in want if have[k] != want[k]]
    if wrong:
        raise ValueError(f"--student {args.student} reads other observations: " + "; ".join(wrong)
                         + ". Record with the student's --cameras/--image-size/--fps")
    return student


def record_scripted(rec: Recorder, env, student=None) -> None:
    """Scripted expert: reset with a fresh seed, act until success (+ POST_SUCCESS_STEPS, scaled to
    ``--fps``) or ``--max-steps``, one frame per control step; keep successful episodes (all with
    --keep-failed). With ``--expert-noise`` the env executes the expert's target plus noise and the
    frame stores the clean target (:class:`ExpertNoise`). With a ``student`` (``--student``,
    :func:`load_student`; DAgger) the env executes the student's action and the frame stores the
    expert's action for the same state, the expert's phases following the student's states; every
    episode is kept, its ``success`` being the student's. Ends with one line: episodes saved and
    failed episodes discarded this run."""
    from so101_sim.scripted_expert import ScriptedExpert

    args = rec.args
    expert = ScriptedExpert(env.unwrapped.model, control_hz=env.unwrapped.control_hz, close_tol=args.expert_close_tol)
    post_success = steps_at(POST_SUCCESS_STEPS, args.fps)
    attempts = discarded = 0
    try:
        while rec.saved_this_run < args.num_episodes:
            if attempts >= 3 * args.num_episodes + 10:
                raise RuntimeError(f"the scripted expert failed too often ({attempts} attempts for "
                                   f"{rec.saved_this_run} successes); check the scene")
            attempts += 1
            seed = rec.next_seed()
            obs, info = env.reset(seed=seed)
            expert.reset()
            noise = ExpertNoise(args.expert_noise, args.fps, seed)
            if student is not None:
                student.reset(seed)
            frames, steps, success_step = 0, 0, None
            while steps < args.max_steps and (success_step is None or steps - success_step < post_success):
                if rec.stop.requested:
                    return
                frame_obs, frame_q = obs, env.unwrapped.joint_positions  # measured before acting
                stored, target = executable_action(expert.act_in_env(env))
                if student is not None:  # DAgger: the student acts, the expert labels
                    target = executable_action(student.act(obs))[1]
                elif noise.sigma > 0:  # DART: execute a perturbed target, store the clean label
                    target = executable_action(noise.apply(target))[1]
                obs, _, _, _, info = env.step(target)
                steps += 1
                if info["is_success"] and success_step is None:
                    success_step = steps
                rec.add_frame(frame_q, frame_obs, stored, seed)
                frames += 1
            success = success_step is not None
            if success or args.keep_failed or student is not None:
                rec.save(seed, success, frames)
            else:
                discarded += 1
                rec.discard(f"seed {seed}: the expert did not succeed in {args.max_steps} steps")
    finally:
        keep = "failed episodes kept: --keep-failed" if args.keep_failed else "--keep-failed keeps them"
        print(f"[record] scripted: {rec.saved_this_run} episodes saved, {discarded} failed episodes discarded "
              f"({attempts} attempts; {keep})", flush=True)


def record_teleop(rec: Recorder, env, source, realtime: bool = True) -> None:
    """A person drives the arm through ``source``; Space/Cross toggles recording, R/Circle discards
    and resets, ESC/Options quits. One control step (1 / ``--fps`` s, in real time unless
    ``realtime=False``) per loop, a frame per step while recording. An episode also ends (and is
    saved) at ``--max-steps``."""
    args = rec.args
    dt = 1.0 / args.fps
    seed = rec.next_seed()
    obs, info = env.reset(seed=seed)
    source.reset(env.unwrapped.joint_positions)
    recording, frames, steps, success = False, 0, 0, False
    print(f"[record] episode {rec.ds.meta.total_episodes}: press start (Space / Cross) to record", flush=True)
    while rec.saved_this_run < args.num_episodes and not rec.stop.requested:
        t0 = time.perf_counter()
        events = source.poll_events()
        if tc.EVENT_QUIT in events:
            print("[record] quit", flush=True)
            return
        do_reset = False
        for ev in events:
            if ev == tc.EVENT_TOGGLE and not recording:
                recording, frames, steps, success = True, 0, 0, False
                print(f"[record] recording episode {rec.ds.meta.total_episodes} ...", flush=True)
            elif ev == tc.EVENT_TOGGLE and recording:
                if frames > 0:
                    rec.save(seed, success, frames)
                else:
                    print("[record] stopped before the first frame; nothing to save", flush=True)
                recording, do_reset = False, True
            elif ev == tc.EVENT_RESET:
                if recording:
                    rec.discard("reset")
                recording, do_reset = False, True
        if do_reset:
            if rec.saved_this_run >= args.num_episodes:
                return
            seed = rec.next_seed()
            obs, info = env.reset(seed=seed)
            source.reset(env.unwrapped.joint_positions)
            print(f"[record] reset; episode {rec.ds.meta.total_episodes}: press start to record", flush=True)
            continue
        frame_obs, frame_q = obs, env.unwrapped.joint_positions  # measured before acting
        stored, target = executable_action(source.command(dt))
        obs, _, _, _, info = env.step(target)
        if recording:
            steps += 1
            if info["is_success"] and not success:
                success = True
                print("[record] success: block lifted; press stop (Space / Cross) to save", flush=True)
        if realtime:
            time.sleep(max(0.0, dt - (time.perf_counter() - t0)))
        if recording:
            rec.add_frame(frame_q, frame_obs, stored, seed)
            frames += 1
            if steps >= args.max_steps:
                print(f"[record] episode reached --max-steps {args.max_steps}; saving", flush=True)
                rec.save(seed, success, frames)
                recording = False
                seed = rec.next_seed()
                obs, info = env.reset(seed=seed)
                source.reset(env.unwrapped.joint_positions)


def finish_folder(rec, saved: int, seconds: float) -> None:
    """After the recording is closed: print where the episodes are (or that none was saved)."""
    root = rec.root
    if not root.is_dir():
        print(f"[record] no episode saved; nothing was written to {root}", flush=True)
        return
    from lerobot.datasets import LeRobotDatasetMetadata

    meta = LeRobotDatasetMetadata(rec.repo_id, root=root)
    print(f"[record] dataset {root}: {meta.total_episodes} episodes, {meta.total_frames} frames "
          f"({saved} saved in {seconds:.0f} s this run)", flush=True)


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------

def build_parser(schema: str = "sim") -> argparse.ArgumentParser:
    """The command line; ``schema`` (a key of :data:`SCHEMAS`) sets the defaults of --fps, --cameras
    and --image-size, so ``--schema so101_follower --help`` shows the preset's values."""
    from so101_sim import cli_args

    p = argparse.ArgumentParser(description=__doc__, formatter_class=cli_args.DefaultsHelpFormatter)
    p.add_argument("--input", required=True, choices=INPUTS, help="who drives the arm")
    p.add_argument("--output-dir", "--output_dir", dest="output_dir", type=cli_args.output_path, default=None,
                   help="dataset folder (LeRobotDataset root); must not exist unless --resume/--overwrite "
                        "(default: <repo>/datasets/so101_<input>)")
    p.add_argument("--task", type=cli_args.task_string, default=u.DEFAULT_TASK,
                   help="language instruction stored verbatim with every frame, one line (any Unicode; a newline is "
                        "refused); use the same string at inference "
                        "(default: %(default)r)")
    p.add_argument("--num-episodes", "--num_episodes", dest="num_episodes", type=cli_args.positive_int, default=50,
                   help="episodes to save in this run (default: %(default)s)")
    p.add_argument("--schema", choices=tuple(SCHEMAS), default="sim",
                   help="feature preset: 'sim' (camera1..3, an episode_seed column) or 'so101_follower': exactly what "
                        f"lerobot-record --robot.type=so101_follower writes with two cameras (--fps {REAL_FPS}, "
                        f"--cameras {REAL_CAMERAS}, --image-size {REAL_IMAGE_HW[0]}x{REAL_IMAGE_HW[1]}, no "
                        "episode_seed column), to merge with real datasets; explicit flags override it "
                        "(default: %(default)s)")
    p.add_argument("--fps", type=cli_args.positive_int, default=int(u.CONTROL_HZ),
                   help="control rate of the simulation = dataset frame rate, Hz, 1-500: every control step is a "
                        "frame; the physics step stays 2 ms (30 fps: 17, 16, 17, ... physics steps per frame) "
                        "(default: %(default)s)")
    p.add_argument("--cameras", type=cli_args.camera_names, default=SIM_CAMERAS,
                   help="dataset cameras NAME=CAMERA,...: observation.images.NAME from the sim camera CAMERA "
                        "(camera_up = top view, wrist_camera, camera_side, or camera1|2|3) (default: %(default)s)")
    p.add_argument("--image-size", type=cli_args.image_size_hw, default=u.IMAGE_SIZE,
                   help=f"camera size in pixels: N (height = width, {MIN_VIDEO_WIDTH}-480) or HxW, e.g. 480x640 (height "
                        f"16-480, width {MIN_VIDEO_WIDTH}-640: the video encoder needs {MIN_VIDEO_WIDTH}) (default: %(default)s)")
    p.add_argument("--robot-type", default=None,
                   help=f"robot_type written to meta/info.json (default: {ROBOT_TYPE!r}, the name LeRobot's "
                        "SO101Follower reports, as lerobot-record --robot.type=so101_follower writes it; many older Hub "
                        "datasets say so101_follower; with --resume: the dataset's)")
    p.add_argument("--port", default=None, help="--input physical: the leader arm's serial port")
    p.add_argument("--leader-id", default="so101_leader", help="--input physical: calibration id of the leader")
    p.add_argument("--calibration-dir", type=Path, default=None,
                   help="--input physical: folder with <leader-id>.json (default: LeRobot's)")
    p.add_argument("--layout", default="auto", choices=("auto", "ds4", "xbox"), help="--input gamepad: button layout")
    p.add_argument("--repo-id", default=None,
                   help="dataset repo id stored in the metadata (default: local/<output_dir name>)")
    p.add_argument("--no-randomize", action="store_true", help="fixed block position (SO101PickPlaceNoRandom-v0)")
    p.add_argument("--seed", type=int, default=u.SEED_RANGES["demonstrations"][0],
                   help="first episode's reset seed; episode seeds count up from it (default %(default)s: "
                        "demonstration seeds, disjoint from the held-out evaluation seeds, so101_mujoco_utils.SEED_RANGES)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="append episodes to the existing dataset at --output-dir")
    g.add_argument("--overwrite", action="store_true", help="delete an existing dataset at --output-dir first")
    p.add_argument("--max-steps", type=cli_args.positive_int, default=None,
                   help="episode length cap in control steps at --fps (= frames) (default: the env registration's "
                        f"episode length in seconds for scripted, {TELEOP_MAX_STEPS // int(u.CONTROL_HZ)} s for teleop: "
                        "150 / 600 steps at 10 fps, 450 / 1800 at 30 fps)")
    p.add_argument("--keep-failed", action="store_true", help="--input scripted: also save episodes the expert failed")
    p.add_argument("--student", type=Path, default=None, metavar="DIR",
                   help="--input scripted, DAgger: a LeRobot pretrained_model folder that reads this recording's cameras; "
                        "the env executes its actions, the expert labels each state, and every episode is kept "
                        "(success = the student's)")
    p.add_argument("--expert-noise", type=cli_args.float_range(0.0, 0.5), default=0.0, metavar="RAD",
                   help="--input scripted: DART noise, standard deviation in radians of correlated Gaussian noise added "
                        "to the arm targets the env executes, while the dataset stores the expert's clean targets as "
                        "labels (0 = none; 0.025 was used for vision_bc; at 0.05 the expert fails most episodes) (default: %(default)s)")
    p.add_argument("--expert-close-tol", type=cli_args.float_range(0.001, 0.03), default=DESCEND_TOL, metavar="M",
                   help="--input scripted: the expert starts closing the jaws once its grasp point is this close (m) to "
                        "the planned grasp pose (scripted_expert.DESCEND_TOL by default; 0.015 still succeeds on every "
                        "probed seed and puts the close where an image policy's ~1 cm error still gets it) "
                        "(default: %(default)s)")
    p.add_argument("--no-viewer", action="store_true", help="teleop: no MuJoCo viewer window")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also print setup details (the OpenGL backend) and the video encoder's and LeRobot's own "
                        "progress output (quiet by default: quiet_third_party_output)")
    p.set_defaults(**SCHEMAS[schema])
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line (``--schema`` first: its preset is the defaults of the rest) and fill
    in the defaults that depend on other flags (output folder, repo id, --max-steps at --fps,
    robot_type). Bad input exits with one argparse error (status 2)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--schema", default="sim")
    schema = pre.parse_known_args(argv)[0].schema
    p = build_parser(schema if schema in SCHEMAS else "sim")  # an unknown one: the full parser refuses it
    args = p.parse_args(argv)
    max_fps = round(1.0 / u.PHYSICS_TIMESTEP)
    if args.fps > max_fps:
        p.error(f"argument --fps: must be at most {max_fps} (one {u.PHYSICS_TIMESTEP * 1e3:g} ms physics step per "
                f"control step; got {args.fps})")
    if args.expert_noise and args.input != "scripted":
        p.error(f"argument --expert-noise: only --input scripted executes noisy targets (got --input {args.input}); "
                "drop --expert-noise")
    if args.expert_close_tol != DESCEND_TOL and args.input != "scripted":
        p.error(f"argument --expert-close-tol: only --input scripted uses the expert (got --input {args.input}); "
                "drop --expert-close-tol")
    if args.student is not None and (args.input != "scripted" or args.expert_noise):
        p.error("argument --student: the expert labels a student's states with --input scripted and no --expert-noise "
                f"(got --input {args.input}, --expert-noise {args.expert_noise:g})")
    h, w = u.image_hw(args.image_size)
    if w < MIN_VIDEO_WIDTH:
        p.error(f"argument --image-size: a recorded video must be at least {MIN_VIDEO_WIDTH} px wide (the AV1 encoder "
                f"crashes on narrower frames), got {h}x{w}")
    if args.output_dir is None:
        args.output_dir = u.REPO_ROOT / "datasets" / f"so101_{args.input}"
    if args.repo_id is None:
        args.repo_id = f"local/{args.output_dir.resolve().name}"
    if args.max_steps is None:
        from so101_sim import registration

        args.max_steps = (registration.episode_steps(env_id_for(args), args.fps) if args.input == "scripted"
                          else steps_at(TELEOP_MAX_STEPS, args.fps))
    args.robot_type_given = args.robot_type is not None
    if not args.robot_type_given:
        args.robot_type = ROBOT_TYPE
    elif not args.robot_type.strip():
        p.error("argument --robot-type: must be a non-empty name, e.g. so_follower")
    problem = output_dir_problem(args)
    if problem:
        p.error(f"argument --output-dir: {problem}")
    return args


def output_dir_problem(args) -> str | None:
    """Why ``--output-dir`` cannot be used as asked (checked before anything is created; open_dataset
    checks again when it opens it), or None."""
    from so101_sim import cli_args

    root = Path(args.output_dir)
    problem = cli_args.output_problem(root)
    if problem is None and root.exists():
        if not root.is_dir():
            problem = f"{root} is a file, not a dataset folder"
        elif any(root.iterdir()) and not (args.resume or args.overwrite):
            problem = (f"{root} already exists and is not empty; pass --resume to append episodes to it, "
                       "--overwrite to delete and re-record it, or choose another --output-dir")
        elif any(root.iterdir()) and not is_lerobot_dataset(root):
            problem = (f"{root} is not a LeRobot dataset (no meta/info.json): "
                       + ("nothing to resume" if args.resume else "refusing to delete it") + "; choose another --output-dir")
    return problem


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.verbose:
        mujoco_rendering.print_backend()
    else:
        quiet_third_party_output()
    source = None
    if args.input != "scripted":  # fail on a missing device before creating anything on disk
        try:
            source = make_source(args)
        except tc.TeleopUnavailable as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    student = None
    if args.student is not None:  # a student that cannot run here fails before anything is written
        try:
            student = load_student(args)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    viewer = args.input != "scripted" and not args.no_viewer and mujoco_rendering.has_display()
    stop = GracefulStop().install()  # before anything is written: a Ctrl-C from here on is graceful
    ds = env = rec = None
    t_start = time.perf_counter()
    try:
        ds, _, meta = open_dataset(args, features_for(args))
        rec = Recorder(ds, meta, args, stop)
        env = make_env(args, viewer)
        print(f"[record] {args.input} -> {ds.root} ({args.repo_id}), task {args.task!r}, {args.fps} fps, "
              f"{args.num_episodes} episodes", flush=True)
        if args.input == "scripted":
            record_scripted(rec, env, student)
        else:
            record_teleop(rec, env, source)
    except dd.DiskFullError as e:
        have = rec.saved_this_run if rec else 0
        print(f"error: {e.strerror}. Every episode saved before it is intact in {args.output_dir} "
              f"({have} saved this run); free some space and run again with --resume to append.", file=sys.stderr)
        return 1
    finally:
        if rec is not None:
            rec.discard("stopped before the episode was saved")  # only whole episodes reach the disk
        if ds is not None:
            ds.close()  # removes the staging folder; the dataset keeps every saved episode
        stop.uninstall()
        if env is not None:
            env.close()
        if source is not None:
            source.close()
    finish_folder(ds, rec.saved_this_run, time.perf_counter() - t_start)
    return 130 if stop.requested else 0


if __name__ == "__main__":
    sys.exit(main())
