"""Mirror a physical SO-101 leader arm in the simulation (LeRobot's ``SO101Leader``).

Copy-paste (from simulation_code/; ``mjpython`` instead of ``python`` on macOS for the viewer):

    python teleop_physical_arm.py --port /dev/ttyACM0 --id my_leader

Reads the leader through LeRobot's own ``SO101Leader`` with ``use_degrees=True`` (body joints in
calibrated degrees, gripper 0..100: the LeRobot calibrated frame, see so101_mujoco_utils), converts
to MuJoCo radians with ``so101_mujoco_utils.lerobot_to_mujoco`` and drives the simulated arm at the
10 Hz control rate. Safety: every target is clipped to the joint limits and moves at most
``teleop_common.MAX_TARGET_STEP_RAD`` per control step, so a leader held far from the simulated arm
(or a bad reading) makes the sim catch up smoothly instead of jumping.

Calibration: LeRobot's file ``<calibration-dir>/<id>.json`` (default directory
``~/.cache/huggingface/lerobot/calibration/teleoperators/so_leader``, or ``$HF_LEROBOT_CALIBRATION``).
Without it, LeRobot runs its interactive calibration on connect (or run ``lerobot-calibrate
--teleop.type=so101_leader --teleop.port=PORT --teleop.id=ID`` first). Find the port with
``lerobot-find-port``.

Episode control while recording (``record_dataset.py --input physical``): Space / R / ESC on the
keyboard when a display is available, otherwise Enter / ``r`` + Enter / ``q`` + Enter in the terminal.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from so101_sim import mujoco_rendering
from so101_sim import so101_mujoco_utils as u
from so101_sim import teleop_common as tc

DEFAULT_LEADER_ID = "so101_leader"


def leader_action_to_lerobot(action: dict[str, float]) -> np.ndarray:
    """``SO101Leader.get_action()`` dict -> (6,) float64 in LeRobot calibrated units, in
    ``JOINT_NAMES`` order.

    Raises:
        KeyError: a ``<joint>.pos`` key is missing (the message lists the keys received).
    """
    try:
        return np.array([float(action[k]) for k in u.LEROBOT_MOTOR_NAMES])
    except KeyError as e:
        raise KeyError(f"Leader action lacks {e}; got keys {sorted(action)}; expected {list(u.LEROBOT_MOTOR_NAMES)}") from e


def leader_action_to_mujoco(action: dict[str, float]) -> np.ndarray:
    """``SO101Leader.get_action()`` dict (degrees, gripper 0..100) -> (6,) float64 MuJoCo radians,
    not yet clipped or rate-limited (see :func:`teleop_common.safe_joint_targets`)."""
    return u.lerobot_to_mujoco(leader_action_to_lerobot(action))


def make_leader(port: str, leader_id: str = DEFAULT_LEADER_ID, calibration_dir: str | Path | None = None):
    """Build (not connect) LeRobot's ``SO101Leader`` with ``use_degrees=True``.

    Args:
        port: serial port of the leader's controller board (``/dev/ttyACM0``, ``/dev/tty.usbmodem...``,
            ``COM3``).
        leader_id: calibration id (the file is ``<calibration_dir>/<id>.json``).
        calibration_dir: None = LeRobot's default directory.

    An existing calibration file is validated with ``so101_mujoco_utils.load_calibration`` (the
    same check as ``offsets_from_calibration``) before LeRobot reads it; a missing file is left to
    LeRobot (it calibrates interactively on connect).

    Raises:
        TeleopUnavailable: the calibration file is invalid; the message names the file, the joint
            and the field (e.g. a ``homing_offset`` outside -2047..2047, ``range_min > range_max``).
    """
    from lerobot.teleoperators.so_leader import SO101Leader, SO101LeaderConfig
    from lerobot.utils.constants import HF_LEROBOT_CALIBRATION, TELEOPERATORS

    folder = Path(calibration_dir) if calibration_dir else HF_LEROBOT_CALIBRATION / TELEOPERATORS / SO101Leader.name
    path = folder / f"{leader_id}.json"
    if path.is_file():  # LeRobot's Teleoperator.__init__ loads this same path
        try:
            u.load_calibration(path)
        except ValueError as e:
            raise tc.TeleopUnavailable(f"{e} (or delete the file to calibrate again on connect)") from e
    cfg = SO101LeaderConfig(port=port, id=leader_id, use_degrees=True,
                            calibration_dir=Path(calibration_dir) if calibration_dir else None)
    return SO101Leader(cfg)


def default_events():
    """Episode-control events for physical mode: the keyboard (Space/R/ESC, pynput) with a
    display, else the terminal (:class:`teleop_common.StdinEvents`)."""
    if mujoco_rendering.has_display():
        from so101_sim.teleop_keyboard import KeyboardTeleop

        try:
            return KeyboardTeleop()
        except tc.TeleopUnavailable as e:
            print(f"warning: {e}; using terminal controls", file=sys.stderr)
    print(tc.StdinEvents.HELP)
    return tc.StdinEvents()


class PhysicalArmTeleop:
    """Input source that mirrors a physical leader arm (see ``teleop_common`` for the interface).

    Args:
        leader: a LeRobot teleoperator with ``connect(calibrate)``, ``get_action()`` and
            ``disconnect()`` (normally :func:`make_leader`; tests pass one whose motors bus is a fake).
        events: object with ``poll_events()`` / ``close()`` for Space/R/ESC; None = no events.
        max_step_rad: safety cap on the change of any target per control step (rad).
    """

    def __init__(self, leader, events=None, max_step_rad: float = tc.MAX_TARGET_STEP_RAD):
        self.leader = leader
        self.events = events
        self.max_step_rad = max_step_rad
        self._target = u.home_pose_rad()
        self.last_raw_rad: np.ndarray | None = None

    def connect(self, calibrate: bool = True) -> None:
        """Open the serial port (LeRobot ``connect``; runs its interactive calibration when the
        motors and the calibration file disagree and ``calibrate``).

        Raises:
            TeleopUnavailable: the port cannot be opened (message names the port and the fix).
        """
        try:
            self.leader.connect(calibrate=calibrate)
        except ConnectionError as e:
            port = getattr(getattr(self.leader, "config", None), "port", "?")
            raise tc.TeleopUnavailable(
                f"Cannot open the SO-101 leader arm on port {port!r}: {str(e).strip()} "
                "Check the USB cable and power, find the port with `lerobot-find-port`, and pass it with --port."
            ) from e

    def read_rad(self) -> np.ndarray:
        """One reading of the leader, (6,) float64 MuJoCo radians (unclipped)."""
        self.last_raw_rad = leader_action_to_mujoco(self.leader.get_action())
        return self.last_raw_rad

    # input-source interface ---------------------------------------------------------------
    def reset(self, q_rad) -> None:
        """Continue from joint targets ``q_rad`` (6,), MuJoCo radians: after an env reset the
        simulated arm walks from there to the leader's pose at the safety rate."""
        self._target = u.clip_to_joint_limits(q_rad)

    def command(self, dt: float = 1.0 / u.CONTROL_HZ) -> np.ndarray:
        """Read the leader; return the safe (6,) float64 MuJoCo-radian targets (``dt`` unused:
        the leader gives positions, not velocities)."""
        self._target = tc.safe_joint_targets(self.read_rad(), self._target, self.max_step_rad)
        return self._target.copy()

    def poll_events(self) -> list[str]:
        return self.events.poll_events() if self.events is not None else []

    def close(self) -> None:
        if self.events is not None:
            self.events.close()
        if getattr(self.leader, "is_connected", False):
            self.leader.disconnect()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", required=True, help="leader arm serial port (find it with lerobot-find-port)")
    parser.add_argument("--id", default=DEFAULT_LEADER_ID, help="leader calibration id (default: %(default)s)")
    parser.add_argument("--calibration-dir", type=Path, default=None,
                        help="folder holding <id>.json (default: LeRobot's calibration folder)")
    parser.add_argument("--no-viewer", action="store_true", help="only print the joints (no MuJoCo window)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    viewer = not args.no_viewer and mujoco_rendering.has_display()
    try:
        teleop = PhysicalArmTeleop(make_leader(args.port, args.id, args.calibration_dir))
        teleop.connect()
    except tc.TeleopUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from so101_sim.so101_gym_env import SO101PickPlaceEnv

    env = SO101PickPlaceEnv(render_mode="human" if viewer else None, obs_mode="state", randomize_block=False,
                            terminate_on_success=False)
    env.reset(seed=0)
    teleop.reset(env.joint_positions)
    dt = 1.0 / u.CONTROL_HZ
    print("Mirroring the leader arm at 10 Hz; Ctrl-C quits. Joints: leader -> sim (LeRobot units)")
    try:
        while True:
            t0 = time.perf_counter()
            target = teleop.command(dt)
            env.step(target)
            lead = u.mujoco_to_lerobot(teleop.last_raw_rad)
            sim = u.mujoco_to_lerobot(env.joint_positions)
            print("\r" + "  ".join(f"{n[:8]}={a:6.1f}->{b:6.1f}" for n, a, b in zip(u.JOINT_NAMES, lead, sim)),
                  end="", flush=True)
            time.sleep(max(0.0, dt - (time.perf_counter() - t0)))
    except KeyboardInterrupt:
        pass
    finally:
        print()
        teleop.close()
        env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
