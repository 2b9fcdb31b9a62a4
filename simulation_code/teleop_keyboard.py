"""Keyboard teleoperation of the simulated SO-101 in joint space (pynput).

Copy-paste (from simulation_code/, needs a display): print the commanded joints while you press keys

    python teleop_keyboard.py

Key map (the project spec's "Keyboard Controls"); each held key moves its joint at a
fixed rate (``teleop_common.JOINT_SPEED_RAD_S``):

    Left/Right   shoulder pan left/right
    Up/Down      arm forward/backward: the shoulder lift pitches the upper arm forward/back, like
                 S/W (the spec lists these keys as "shoulder pan forward/backward", but the pan
                 joint only turns left/right)
    W/S          shoulder lift up/down
    I/K          elbow extend/retract
    Z/X          wrist flex down/up
    A/D          wrist roll left/right
    Q/E          gripper open/close
    Space        start/stop recording      R  reset      ESC  quit

Directions, checked with the arm's forward kinematics (robot at the origin facing +y, operator
behind it): shoulder_pan + turns the gripper to the operator's right (+x); shoulder_lift + pitches
the upper arm forward (and the gripper down); elbow_flex - extends the arm; wrist_flex + tips the
gripper down; gripper + opens.

pynput needs a display (X11, macOS, Windows; on Wayland only XWayland windows). Without one,
:class:`KeyboardTeleop` raises ``TeleopUnavailable`` with that message.
"""

from __future__ import annotations

import argparse
import sys
import threading

import numpy as np

from so101_sim import cli_args
from so101_sim import mujoco_rendering
from so101_sim import so101_mujoco_utils as u
from so101_sim import teleop_common as tc

#: key name -> (joint index in JOINT_NAMES, direction +1/-1). Key names are lower-case characters
#: or pynput ``Key`` names ("up", "down", "left", "right").
KEY_BINDINGS: dict[str, tuple[int, int]] = {
    "left": (0, -1),
    "right": (0, +1),
    "up": (1, +1),  # forward
    "down": (1, -1),  # backward
    "w": (1, -1),  # up
    "s": (1, +1),  # down
    "i": (2, -1),  # extend
    "k": (2, +1),  # retract
    "z": (3, +1),  # wrist down
    "x": (3, -1),  # wrist up
    "a": (4, -1),
    "d": (4, +1),
    "q": (5, +1),  # open
    "e": (5, -1),  # close
}
#: key name -> episode-control event (teleop_common.EVENTS).
EVENT_KEYS: dict[str, str] = {"space": tc.EVENT_TOGGLE, "r": tc.EVENT_RESET, "esc": tc.EVENT_QUIT}

KEY_HELP = __doc__.split("fixed rate (``teleop_common.JOINT_SPEED_RAD_S``):\n\n")[1].split("\n\nDirections")[0]


def keys_to_velocity(pressed, speeds=tc.JOINT_SPEED_RAD_S) -> np.ndarray:
    """Pure key -> joint-velocity mapping (no keyboard needed).

    Args:
        pressed: iterable of key names currently held (see :data:`KEY_BINDINGS`; unknown keys are
            ignored, case-insensitive).
        speeds: (6,) rad/s per joint.
    Returns:
        float64 (6,) joint velocities, rad/s, MuJoCo frame. Opposite keys of one joint cancel;
        two keys with the same direction (Up and S) do not add up beyond the joint's speed.
    """
    direction = np.zeros(u.NUM_JOINTS)
    for key in pressed:
        binding = KEY_BINDINGS.get(str(key).lower())
        if binding is not None:
            direction[binding[0]] += binding[1]
    return np.clip(direction, -1.0, 1.0) * np.asarray(speeds, dtype=np.float64)


def key_name(key) -> str | None:
    """pynput key object -> our key name (lower-case char, or the ``Key`` enum name such as
    ``"space"``, ``"up"``, ``"esc"``); None for keys without a name."""
    char = getattr(key, "char", None)
    if char:
        return char.lower()
    name = getattr(key, "name", None)
    return name.lower() if name else None


class KeyboardTeleop:
    """Joint-space keyboard input source (see ``teleop_common`` for the interface).

    Args:
        start_listener: start pynput's global key listener (needs a display). ``False`` builds the
            object without any keyboard; feed keys with :meth:`press` / :meth:`release` (tests).
        speeds: (6,) joint speeds, rad/s.
        max_step_rad: safety cap on the change of any target per :meth:`command`.
    Raises:
        TeleopUnavailable: ``start_listener`` and no display, or pynput cannot start.
    """

    def __init__(self, start_listener: bool = True, speeds=tc.JOINT_SPEED_RAD_S,
                 max_step_rad: float = tc.MAX_TARGET_STEP_RAD):
        self.speeds = np.asarray(speeds, dtype=np.float64)
        self.max_step_rad = max_step_rad
        self._lock = threading.Lock()
        self._pressed: set[str] = set()
        self._events: list[str] = []
        self._target = u.home_pose_rad()
        self._listener = None
        if start_listener:
            self._listener = start_key_listener(self.press, self.release)

    # key callbacks (pynput thread) --------------------------------------------------------
    def press(self, name: str | None) -> None:
        """A key went down: held joint keys move their joint; event keys queue their event."""
        if name is None:
            return
        with self._lock:
            if name in EVENT_KEYS and name not in self._pressed:  # ignore auto-repeat
                self._events.append(EVENT_KEYS[name])
            self._pressed.add(name)

    def release(self, name: str | None) -> None:
        """A key went up."""
        with self._lock:
            self._pressed.discard(name)

    # input-source interface ---------------------------------------------------------------
    def reset(self, q_rad) -> None:
        """Continue from joint targets ``q_rad`` (6,), MuJoCo radians."""
        self._target = u.clip_to_joint_limits(q_rad)

    def pressed(self) -> set[str]:
        """Key names held right now (a copy)."""
        with self._lock:
            return set(self._pressed)

    def command(self, dt: float = 1.0 / u.CONTROL_HZ) -> np.ndarray:
        """Advance the targets by the held keys for ``dt`` seconds; returns (6,) float64 MuJoCo
        radians inside the joint limits (a copy)."""
        wanted = tc.integrate_velocity(self._target, keys_to_velocity(self.pressed(), self.speeds), dt)
        self._target = tc.safe_joint_targets(wanted, self._target, self.max_step_rad)
        return self._target.copy()

    def poll_events(self) -> list[str]:
        """Episode-control events since the last call (oldest first)."""
        with self._lock:
            out, self._events = self._events, []
        return out

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None


def start_key_listener(on_press, on_release):
    """Start a pynput keyboard listener calling ``on_press(name)`` / ``on_release(name)`` with
    :func:`key_name` names. Returns the running listener (call ``.stop()``).

    Raises:
        TeleopUnavailable: no display, or pynput cannot connect to it.
    """
    if not mujoco_rendering.has_display():
        raise no_display_error()
    try:
        from pynput import keyboard
    except ImportError as e:  # pynput's X backend could not connect
        raise tc.TeleopUnavailable(f"pynput cannot read the keyboard: {e}") from e
    listener = keyboard.Listener(on_press=lambda k: on_press(key_name(k)), on_release=lambda k: on_release(key_name(k)))
    listener.start()
    return listener


def no_display_error() -> tc.TeleopUnavailable:
    """The error raised when keyboard input needs a display and there is none."""
    return tc.TeleopUnavailable(
        "Keyboard teleoperation needs a display (pynput reads keys through X11/macOS/Windows), and "
        "none was found (DISPLAY/WAYLAND_DISPLAY unset). Run it on a desktop session, use "
        "--input gamepad or --input physical, or record headless with --input scripted."
    )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hz", type=cli_args.positive_float, default=u.CONTROL_HZ, help="print rate (default: the 10 Hz control rate)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        teleop = KeyboardTeleop()
    except tc.TeleopUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(KEY_HELP)
    print("\nCommanded joints (LeRobot units: degrees, gripper 0..100). ESC quits.")
    tc.print_commands(teleop, 1.0 / args.hz, lambda cmd: "  ".join(f"{n}={v:7.1f}" for n, v in zip(u.JOINT_NAMES, cmd))
                      + f"  keys={','.join(sorted(teleop.pressed())) or '-':<12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
