"""Record SO-101 pick-and-place demonstrations in the simulation into a LeRobotDataset v3.

Copy-paste (from simulation_code/):

    # 50 scripted-expert episodes, random block positions, no display needed
    python record_dataset.py --input scripted --output-dir ../datasets/so101_pickplace --num-episodes 50
    # keyboard / gamepad teleoperation (display or controller), physical leader arm (mjpython on macOS)
    python record_dataset.py --input keyboard --output-dir ../datasets/my_dataset --task "pick up the red block"
    python record_dataset.py --input gamepad  --output-dir ../datasets/my_dataset --num-episodes 20
    python record_dataset.py --input physical --port /dev/ttyACM0 --output-dir ../datasets/my_dataset

Controls (keyboard / physical): Space starts and stops (saves) an episode, R discards it and resets,
ESC quits. Gamepad: Cross [A], Circle [B], Options [Start]. ``--input scripted`` records whole
episodes with the scripted expert (successful ones only, unless --keep-failed).

What is written (LeRobot's own ``LeRobotDataset.create / add_frame / save_episode / finalize``):
``observation.state`` and ``action`` (6, float32, names ``shoulder_pan.pos`` ... ``gripper.pos``) in
the LeRobot calibrated frame, i.e. body joints in degrees and the gripper in 0..100 (0 closed), the
units of a real SO-101 follower (conversion: ``so101_mujoco_utils.mujoco_to_lerobot``, one place);
``action`` is the absolute joint-position target sent to the simulation at that frame and
``observation.state`` the measured joint angles before it; ``observation.images.camera1|2|3``
(top, wrist, side cameras) as video; ``episode_seed`` (int64, the episode's env reset seed, a plain
column so it survives LeRobot's dataset tools); the task string per frame; robot_type
``so101_follower``. The convention, cameras and per-episode results also go to
``meta/so101_recording.json`` and a dataset card ``README.md`` in the dataset folder.

Frame rate: the simulation steps at 10 Hz (``so101_mujoco_utils.CONTROL_HZ``). ``--fps`` must divide
it (10, 5, 2 or 1): with ``--fps 5`` the simulation still runs at 10 Hz and every 2nd step is a frame,
whose action is the target of the last step of its interval. Other values are refused.

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

import mujoco_rendering  # noqa: F401  (chooses the GL backend before mujoco is imported)

import numpy as np

import durable_dataset as dd
import envs  # registers the env ids
import so101_mujoco_utils as u
import teleop_common as tc

# torchcodec cannot load without system FFmpeg libraries; LeRobot then falls back to PyAV (which is
# what this repo uses) after logging a long traceback. Keep that fallback quiet.
logging.getLogger("lerobot.utils.import_utils").setLevel(logging.ERROR)

INPUTS = ("keyboard", "gamepad", "physical", "scripted")
ROBOT_TYPE = "so101_follower"
#: Sidecar file (inside the dataset's meta/) with the unit convention, cameras and episode seeds.
RECORDING_META = "meta/so101_recording.json"
#: Control steps a scripted episode keeps recording after the first success (the expert keeps
#: lifting), so the data shows the block held rather than ending on the success frame.
POST_SUCCESS_STEPS = 5
#: Default episode length cap of a person's episode in control steps (60 s); a scripted episode is
#: capped by the env registration's ``max_episode_steps`` (envs.MAX_EPISODE_STEPS).
TELEOP_MAX_STEPS = 600
CAMERA_DESCRIPTIONS = {"camera1": "top view (camera_up)", "camera2": "wrist camera (wrist_camera)",
                       "camera3": "side view (camera_side)"}


# ------------------------------------------------------------------------------------------
# Dataset schema and units (one place)
# ------------------------------------------------------------------------------------------

def dataset_features(image_size: int) -> dict:
    """LeRobot feature spec: state/action (6,) float32 with LeRobot motor names, the episode seed
    (1,) int64 (:data:`so101_mujoco_utils.EPISODE_SEED`), and the three cameras as
    ``(image_size, image_size, 3)`` videos."""
    joint = {"dtype": "float32", "shape": (u.NUM_JOINTS,), "names": list(u.LEROBOT_MOTOR_NAMES)}
    features = {u.OBS_STATE: dict(joint), "action": dict(joint),
                u.EPISODE_SEED: {"dtype": "int64", "shape": (1,), "names": None}}
    for key in u.IMAGE_KEYS:
        features[key] = {"dtype": "video", "shape": (image_size, image_size, 3), "names": ["height", "width", "channels"]}
    return features


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


def steps_per_frame(fps: float) -> int:
    """Control steps per recorded frame for ``fps``.

    Raises:
        ValueError: ``fps`` does not divide the 10 Hz control rate (message lists the valid ones).
    """
    k = u.CONTROL_HZ / fps if fps > 0 else 0.0
    if fps <= 0 or fps > u.CONTROL_HZ or abs(k - round(k)) > 1e-9:
        valid = [int(u.CONTROL_HZ // n) for n in range(1, int(u.CONTROL_HZ) + 1) if (u.CONTROL_HZ / n).is_integer()]
        raise ValueError(
            f"--fps {fps} does not divide the simulation's {u.CONTROL_HZ:g} Hz control rate; use one of {valid} "
            "(lower rates record every k-th control step)."
        )
    return int(round(k))


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
            not a LeRobot dataset, or --resume with different features/fps (each message says what
            to do instead).
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
        check_resume_compatible(have, features, args.fps, root)
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
                              dict(fps=int(args.fps), features=features, robot_type=ROBOT_TYPE, use_videos=True))
    return rec, True, new_recording_meta(args)


def stored_seeds(ds) -> list[int]:
    """The distinct ``episode_seed`` values of a LeRobot dataset (empty when it has none)."""
    if u.EPISODE_SEED not in ds.meta.features or ds.meta.total_episodes == 0:
        return []
    from lerobot.datasets import LeRobotDataset

    full = LeRobotDataset(ds.repo_id, root=ds.root)
    return sorted({int(x) for x in full.hf_dataset.with_format("numpy")[u.EPISODE_SEED]})


def check_resume_compatible(meta, features: dict, fps: float, root: Path) -> None:
    """Raise SystemExit naming the first difference between the dataset on disk and this run."""
    if int(meta.fps) != int(fps):
        raise SystemExit(f"--resume: {root} was recorded at {meta.fps} fps, this run asks for {fps}; pass --fps {meta.fps}")
    for key, ft in features.items():
        have = meta.features.get(key)
        if have is None:
            raise SystemExit(f"--resume: {root} has no feature {key!r}; record into a new --output-dir")
        if tuple(have["shape"]) != tuple(ft["shape"]) or have["dtype"] != ft["dtype"]:
            hint = f" (pass --image-size {have['shape'][0]})" if ft["dtype"] == "video" else ""
            raise SystemExit(f"--resume: {key} is {have['dtype']} {tuple(have['shape'])} in {root}, this run "
                             f"records {ft['dtype']} {tuple(ft['shape'])}{hint}")


def new_recording_meta(args) -> dict:
    """The sidecar content for a new dataset (see the module docstring)."""
    return {
        "format": "so101-sim-recording/1",
        "units": {
            "observation.state": "measured joint angles, LeRobot calibrated frame: shoulder_pan..wrist_roll in "
                                 "degrees (zero at mid-range, same sign as MuJoCo), gripper 0..100 (0 closed, 100 open)",
            "action": "absolute joint-position targets in the same units as observation.state",
        },
        "conversion": "so101_mujoco_utils.mujoco_to_lerobot (MuJoCo rad -> dataset) and lerobot_to_mujoco (back)",
        "joint_names": list(u.LEROBOT_MOTOR_NAMES),
        "cameras": {u.OBS_IMAGE_PREFIX + k: f"{CAMERA_DESCRIPTIONS[k]}" for k in u.CAMERAS},
        "control_hz": u.CONTROL_HZ,
        "fps": args.fps,
        "steps_per_frame": steps_per_frame(args.fps),
        "image_size": args.image_size,
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
    cams = "\n".join(f"| `{k}` | video {meta.get('image_size')}x{meta.get('image_size')} RGB | {v} |"
                     for k, v in meta.get("cameras", {}).items())
    return f"""---
tags: [LeRobot, so101, simulation, mujoco]
---
# {args.repo_id}

SO-101 pick-and-place demonstrations recorded in the MuJoCo simulation with `record_dataset.py`
(inputs: {', '.join(inputs)}; block {'randomized' if meta.get('randomize_block', True) else 'fixed'}).
{len(eps)} episodes, {n_frames} frames at {meta.get('fps')} fps (simulation control rate {meta.get('control_hz')} Hz).
LeRobotDataset v3, robot_type `{ROBOT_TYPE}`.

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
    """The recording env: camera observations at ``--image-size``, no gym time limit (the loops
    count steps themselves), ``render_mode="human"`` when ``viewer``."""
    import gymnasium as gym

    return gym.make(env_id_for(args), obs_mode="images", image_size=args.image_size,
                    terminate_on_success=False, render_mode="human" if viewer else None,
                    max_episode_steps=10**9, disable_env_checker=True)


def make_source(args):
    """Build the teleop input source named by ``--input`` (keyboard/gamepad/physical).

    Raises:
        TeleopUnavailable: the device or display it needs is missing (clear message).
    """
    if args.input == "keyboard":
        from teleop_keyboard import KeyboardTeleop

        return KeyboardTeleop()
    if args.input == "gamepad":
        from teleop_gamepad import GamepadTeleop

        return GamepadTeleop(layout=args.layout)
    if args.input == "physical":
        from teleop_physical_arm import PhysicalArmTeleop, default_events, make_leader

        if not args.port:
            raise tc.TeleopUnavailable("--input physical needs --port (the leader arm's serial port; "
                                       "find it with `lerobot-find-port`)")
        source = PhysicalArmTeleop(make_leader(args.port, args.leader_id, args.calibration_dir))
        source.connect()
        source.events = default_events()
        return source
    raise ValueError(f"no teleop source for --input {args.input!r}")


def make_frame(q_rad, obs: dict, action_stored: np.ndarray, task: str, seed: int | None) -> dict:
    """One dataset frame: the joint angles ``q_rad`` (6,) float64 MuJoCo radians measured with
    ``obs`` (before the action; stored as float32 LeRobot units), the stored action, the episode's
    reset ``seed`` (omitted when None: a dataset recorded without the column), the three camera
    images of ``obs``, the task string."""
    frame = {u.OBS_STATE: to_dataset_units(q_rad), "action": action_stored}
    if seed is not None:
        frame[u.EPISODE_SEED] = np.array([seed], np.int64)
    for key in u.IMAGE_KEYS:
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

    def add_frame(self, q_rad, obs: dict, action_stored: np.ndarray, seed: int) -> None:
        """Buffer one frame of the current episode (see :func:`make_frame`)."""
        self.ds.add_frame(make_frame(q_rad, obs, action_stored, self.args.task, seed if self.with_seed else None))

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


def record_scripted(rec: Recorder, env, k: int) -> None:
    """Scripted expert: reset with a fresh seed, act until success (+ POST_SUCCESS_STEPS) or
    ``--max-steps``; keep successful episodes (all with --keep-failed)."""
    from scripted_expert import ScriptedExpert

    args = rec.args
    expert = ScriptedExpert(env.unwrapped.model)
    attempts = 0
    while rec.saved_this_run < args.num_episodes:
        if attempts >= 3 * args.num_episodes + 10:
            raise RuntimeError(f"the scripted expert failed too often ({attempts} attempts for "
                               f"{rec.saved_this_run} successes); check the scene")
        attempts += 1
        seed = rec.next_seed()
        obs, info = env.reset(seed=seed)
        expert.reset()
        frames, steps, success_step = 0, 0, None
        while steps < args.max_steps and (success_step is None or steps - success_step < POST_SUCCESS_STEPS):
            if rec.stop.requested:
                return
            frame_obs, frame_q = obs, env.unwrapped.joint_positions  # measured before acting
            for _ in range(k):  # k control steps per frame; the frame's action is the last target
                stored, target = executable_action(expert.act_in_env(env))
                obs, _, _, _, info = env.step(target)
                steps += 1
                if info["is_success"] and success_step is None:
                    success_step = steps
            rec.add_frame(frame_q, frame_obs, stored, seed)
            frames += 1
        success = success_step is not None
        if success or args.keep_failed:
            rec.save(seed, success, frames)
        else:
            rec.discard(f"seed {seed}: the expert did not succeed in {args.max_steps} steps")


def record_teleop(rec: Recorder, env, source, k: int, realtime: bool = True) -> None:
    """A person drives the arm through ``source``; Space/Cross toggles recording, R/Circle discards
    and resets, ESC/Options quits. An episode also ends (and is saved) at ``--max-steps``."""
    args = rec.args
    dt = 1.0 / u.CONTROL_HZ
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
        for _ in range(k):
            stored, target = executable_action(source.command(dt))
            obs, _, _, _, info = env.step(target)
            if recording:
                steps += 1
                if info["is_success"] and not success:
                    success = True
                    print("[record] success: block lifted; press stop (Space / Cross) to save", flush=True)
            if realtime:
                time.sleep(max(0.0, dt - (time.perf_counter() - t0)))
                t0 = time.perf_counter()
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

def parse_args(argv=None) -> argparse.Namespace:
    import cli_args

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
    p.add_argument("--fps", type=cli_args.positive_int, default=int(u.CONTROL_HZ),
                   help="dataset frame rate; must divide the 10 Hz control rate (default: %(default)s)")
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
    p.add_argument("--image-size", type=cli_args.image_size, default=u.IMAGE_SIZE,
                   help="camera height = width in pixels, 16-480 (default: %(default)s)")
    p.add_argument("--max-steps", type=cli_args.positive_int, default=None,
                   help="episode length cap in 10 Hz control steps (default: the env registration's episode length "
                        f"for scripted, {TELEOP_MAX_STEPS} for teleop)")
    p.add_argument("--keep-failed", action="store_true", help="--input scripted: also save episodes the expert failed")
    p.add_argument("--no-viewer", action="store_true", help="teleop: no MuJoCo viewer window")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also print setup details (the OpenGL backend) and the video encoder's and LeRobot's own "
                        "progress output (quiet by default: quiet_third_party_output)")
    args = p.parse_args(argv)
    if args.output_dir is None:
        args.output_dir = u.REPO_ROOT / "datasets" / f"so101_{args.input}"
    if args.repo_id is None:
        args.repo_id = f"local/{args.output_dir.resolve().name}"
    if args.max_steps is None:
        import envs

        args.max_steps = envs.MAX_EPISODE_STEPS[env_id_for(args)] if args.input == "scripted" else TELEOP_MAX_STEPS
    try:
        steps_per_frame(args.fps)
    except ValueError as e:
        p.error(str(e))
    # the output folder, before anything is created (open_dataset checks again when it opens it)
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
    if problem:
        p.error(f"argument --output-dir: {problem}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.verbose:
        mujoco_rendering.print_backend()
    else:
        quiet_third_party_output()
    k = steps_per_frame(args.fps)
    source = None
    if args.input != "scripted":  # fail on a missing device before creating anything on disk
        try:
            source = make_source(args)
        except tc.TeleopUnavailable as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    viewer = args.input != "scripted" and not args.no_viewer and mujoco_rendering.has_display()
    stop = GracefulStop().install()  # before anything is written: a Ctrl-C from here on is graceful
    ds = env = rec = None
    t_start = time.perf_counter()
    try:
        ds, _, meta = open_dataset(args, dataset_features(args.image_size))
        rec = Recorder(ds, meta, args, stop)
        env = make_env(args, viewer)
        print(f"[record] {args.input} -> {ds.root} ({args.repo_id}), task {args.task!r}, {args.fps} fps, "
              f"{args.num_episodes} episodes", flush=True)
        if args.input == "scripted":
            record_scripted(rec, env, k)
        else:
            record_teleop(rec, env, source, k)
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
