"""What every teleoperation input shares: episode-control events, joint speeds, the safety limiter.

An *input source* (``teleop_keyboard.KeyboardTeleop``, ``teleop_gamepad.GamepadTeleop``,
``teleop_physical_arm.PhysicalArmTeleop``) is any object with:

* ``reset(q_rad)``: start from the joint targets ``q_rad`` (6,), MuJoCo radians (after an env reset);
* ``command(dt) -> (6,) float64``: the next joint-position targets, MuJoCo radians, already passed
  through :func:`safe_joint_targets` (inside the joint limits, change per step capped);
* ``poll_events() -> list[str]``: the episode-control events since the last call, each one of
  :data:`EVENTS` (``"toggle"`` = start/stop recording, ``"reset"``, ``"quit"``);
* ``close()``.

``record_dataset.py`` drives the simulation with it; each module's standalone mode prints it.
"""

from __future__ import annotations

import os
import queue
import sys
import threading

import numpy as np

from so101_sim import so101_mujoco_utils as u

#: Episode-control events (spec: Space/Cross = toggle, R/Circle = reset, ESC/Options = quit).
EVENT_TOGGLE = "toggle"
EVENT_RESET = "reset"
EVENT_QUIT = "quit"
EVENTS = (EVENT_TOGGLE, EVENT_RESET, EVENT_QUIT)

#: Joint speed of a held key / full stick deflection, rad/s, in JOINT_NAMES order. Chosen so one
#: 10 Hz control step moves a body joint 3-5 degrees (fine enough to line up a grasp) and the
#: gripper crosses its 1.92 rad range in about 0.8 s.
JOINT_SPEED_RAD_S = np.array([0.6, 0.6, 0.6, 0.8, 1.2, 2.5])

#: Largest change of any joint target per control step, radians (safety cap for inputs that come
#: from hardware or from a person; ~2.5 rad/s at 10 Hz, above JOINT_SPEED_RAD_S x 0.1 s so it never
#: slows keyboard or gamepad control and only bites on sudden jumps, e.g. a leader arm that is far
#: from the simulated arm when recording starts).
MAX_TARGET_STEP_RAD = 0.25


def max_target_step_rad(control_hz: float) -> float:
    """The safety cap per control step at ``control_hz`` (Hz): :data:`MAX_TARGET_STEP_RAD` at the
    default 10 Hz, scaled so the cap is the same joint speed in rad/s at any rate (a third at 30 Hz)."""
    return MAX_TARGET_STEP_RAD * u.CONTROL_HZ / float(control_hz)


class TeleopUnavailable(RuntimeError):
    """An input device (display, keyboard, gamepad, serial port) is missing; the message says
    what is missing and how to fix it."""


def safe_joint_targets(target_rad, previous_rad, max_step_rad: float = MAX_TARGET_STEP_RAD) -> np.ndarray:
    """Safety limiter for anything that drives the simulation from a person or hardware.

    Args:
        target_rad: requested joint targets (6,), MuJoCo radians.
        previous_rad: the targets commanded at the previous control step (6,), MuJoCo radians.
        max_step_rad: the largest allowed change per joint per control step, radians (> 0).
    Returns:
        float64 (6,): ``target`` moved at most ``max_step_rad`` from ``previous`` per joint, then
        clipped to ``so101_mujoco_utils.JOINT_LIMITS_RAD``.
    Raises:
        ValueError: wrong shape, NaN/inf in ``target_rad``, or ``max_step_rad <= 0``.
    """
    target = np.asarray(target_rad, dtype=np.float64)
    previous = np.asarray(previous_rad, dtype=np.float64)
    if target.shape != (u.NUM_JOINTS,) or previous.shape != (u.NUM_JOINTS,):
        raise ValueError(f"joint targets must have shape ({u.NUM_JOINTS},), got {target.shape} and {previous.shape}")
    if not np.all(np.isfinite(target)):
        raise ValueError(f"joint targets contain NaN/inf: {target}; check the input device reading")
    if max_step_rad <= 0:
        raise ValueError(f"max_step_rad must be > 0, got {max_step_rad}")
    stepped = previous + np.clip(target - previous, -max_step_rad, max_step_rad)
    return u.clip_to_joint_limits(stepped)


def integrate_velocity(target_rad, velocity_rad_s, dt: float) -> np.ndarray:
    """Joint-velocity teleop (keyboard, gamepad): ``target + velocity * dt`` clipped to the joint
    limits. Shapes (6,), radians and rad/s; ``dt`` in seconds. Returns float64 (6,)."""
    return u.clip_to_joint_limits(np.asarray(target_rad, dtype=np.float64) + np.asarray(velocity_rad_s) * dt)


class StdinEvents:
    """Episode control from the terminal, for machines without a display (e.g. a physical leader
    arm over SSH): Enter = start/stop, ``r`` + Enter = reset, ``q`` + Enter = quit.

    A daemon thread reads lines from ``stream`` (default ``sys.stdin``) into a queue;
    :meth:`poll_events` drains it without blocking.
    """

    HELP = "terminal controls: Enter = start/stop recording, r + Enter = reset, q + Enter = quit"

    def __init__(self, stream=None):
        self._stream = stream if stream is not None else sys.stdin
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="stdin-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for line in self._stream:
            word = line.strip().lower()
            if word in ("q", "quit", "exit", "esc"):
                self._queue.put(EVENT_QUIT)
                return
            self._queue.put(EVENT_RESET if word in ("r", "reset") else EVENT_TOGGLE)
        self._queue.put(EVENT_QUIT)  # end of input (Ctrl-D) quits

    def poll_events(self) -> list[str]:
        """Events typed since the last call (list of :data:`EVENTS` strings, oldest first)."""
        out = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        """Nothing to release (the reader thread is a daemon)."""


def hide_pygame_banner() -> None:
    """Silence pygame's import banner (set before the first ``import pygame``)."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")


def print_commands(teleop, dt: float, status_line) -> None:
    """Standalone mode of a teleop input: from the home pose, every ``dt`` seconds poll its events
    (reset -> home pose, quit -> stop), integrate its command and print ``status_line(cmd)`` on one
    line, where ``cmd`` (6,) is the commanded pose in LeRobot units (degrees, gripper 0..100).
    Ctrl-C stops too; the teleop is closed in any case."""
    import time

    teleop.reset(u.home_pose_rad())
    try:
        while True:
            t0 = time.perf_counter()
            events = teleop.poll_events()
            if EVENT_QUIT in events:
                break
            if EVENT_RESET in events:
                teleop.reset(u.home_pose_rad())
            cmd = u.mujoco_to_lerobot(teleop.command(dt))
            print(f"\r{status_line(cmd)} {' '.join(events)}   ", end="", flush=True)
            time.sleep(max(0.0, dt - (time.perf_counter() - t0)))
    except KeyboardInterrupt:
        pass
    finally:
        teleop.close()
        print()
