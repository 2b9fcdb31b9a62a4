"""Physical leader arm: LeRobot's real ``SO101Leader`` (use_degrees=True) on a fake Feetech bus.

The fake replaces only the serial link: ``_sync_read`` returns recorded raw register values, and
everything above it (sign decoding, LeRobot's ``_normalize`` with the calibration file, the
leader's ``get_action``) is LeRobot's own code. Expected values are computed here independently
from LeRobot's documented formulas.
"""

import json

import numpy as np
import pytest
from lerobot.motors.feetech import FeetechMotorsBus
from lerobot.motors.motors_bus import get_address

from so101_sim import so101_mujoco_utils as u
from so101_sim import teleop_common as tc
from so101_sim import teleop_physical_arm as tpa

#: A calibration file as `lerobot-calibrate` writes it (values of a real SO-101 leader).
CALIBRATION = {
    "shoulder_pan": {"id": 1, "drive_mode": 0, "homing_offset": -1470, "range_min": 758, "range_max": 3292},
    "shoulder_lift": {"id": 2, "drive_mode": 0, "homing_offset": 157, "range_min": 612, "range_max": 3401},
    "elbow_flex": {"id": 3, "drive_mode": 0, "homing_offset": 1105, "range_min": 853, "range_max": 3100},
    # homing_offset -2047: the fixture's earlier -2061 cannot be stored in the STS3215's 11-bit
    # sign-magnitude register (so101_mujoco_utils.HOMING_OFFSET_RANGE) and is now rejected
    "wrist_flex": {"id": 4, "drive_mode": 0, "homing_offset": -2047, "range_min": 860, "range_max": 3196},
    "wrist_roll": {"id": 5, "drive_mode": 0, "homing_offset": 1684, "range_min": 0, "range_max": 4095},
    "gripper": {"id": 6, "drive_mode": 0, "homing_offset": 1112, "range_min": 2030, "range_max": 3328},
}
MID = {n: (c["range_min"] + c["range_max"]) / 2 for n, c in CALIBRATION.items()}
#: Recorded Present_Position ticks (motor id -> raw), a short leader motion.
RAW_FRAMES = [
    {1: 2025, 2: 612, 3: 3100, 4: 2028, 5: 2047, 6: 2030},
    {1: 2200, 2: 900, 3: 2900, 4: 2100, 5: 2300, 6: 2400},
    {1: 2500, 2: 1500, 3: 2500, 4: 2300, 5: 2600, 6: 3000},
    {1: 1300, 2: 2600, 3: 4000, 4: 1500, 5: 1000, 6: 3328},  # elbow beyond the sim's limit
]


def expected_lerobot(raw: dict) -> np.ndarray:
    """LeRobot's MotorNormMode.DEGREES / RANGE_0_100 formulas (motors_bus.py), written out."""
    out = []
    for name in u.JOINT_NAMES:
        c, v = CALIBRATION[name], raw[CALIBRATION[name]["id"]]
        if name == "gripper":
            out.append((min(c["range_max"], max(c["range_min"], v)) - c["range_min"]) / (c["range_max"] - c["range_min"]) * 100)
        else:
            out.append((v - MID[name]) * 360 / 4095)
    return np.array(out)


class RecordedFeetechBus(FeetechMotorsBus):
    """A FeetechMotorsBus whose serial link is replaced by recorded Present_Position frames."""

    def __init__(self, *args, frames, **kwargs):
        super().__init__(*args, **kwargs)
        self.frames, self.reads, self._open, self.writes = list(frames), 0, False, []

    @property
    def is_connected(self) -> bool:
        return self._open

    def _connect(self, handshake: bool = True) -> None:
        self._open = True

    def set_timeout(self, *args, **kwargs) -> None:
        pass

    def disconnect(self, disable_torque: bool = True) -> None:
        self._open = False

    def _sync_read(self, addr, length, motor_ids, *, num_retry=0, raise_on_error=True, err_msg=""):
        assert (addr, length) == get_address(self.model_ctrl_table, "sts3215", "Present_Position")
        frame = self.frames[min(self.reads, len(self.frames) - 1)]
        self.reads += 1
        return {i: frame[i] for i in motor_ids}, self._comm_success

    def read_calibration(self):  # the motors hold what the file says: no interactive calibration
        return dict(self.calibration)

    def write(self, *args, **kwargs) -> None:
        self.writes.append(args)

    def disable_torque(self, *args, **kwargs) -> None:
        pass

    def configure_motors(self, *args, **kwargs) -> None:
        pass


def fake_leader(tmp_path, frames=RAW_FRAMES):
    calib_dir = tmp_path / "calibration"
    calib_dir.mkdir(exist_ok=True)
    (calib_dir / "my_leader.json").write_text(json.dumps(CALIBRATION))
    leader = tpa.make_leader("/dev/fake-leader", "my_leader", calib_dir)
    assert leader.calibration, "LeRobot did not load the calibration file"
    leader.bus = RecordedFeetechBus(leader.bus.port, leader.bus.motors, calibration=leader.calibration, frames=frames)
    return leader


def test_leader_readings_go_through_lerobot_normalization(tmp_path):
    leader = fake_leader(tmp_path)
    teleop = tpa.PhysicalArmTeleop(leader)
    teleop.connect()
    for raw in RAW_FRAMES:
        action = leader.get_action()
        assert sorted(action) == sorted(u.LEROBOT_MOTOR_NAMES)
        got = tpa.leader_action_to_lerobot(action)
        np.testing.assert_allclose(got, expected_lerobot(raw), atol=1e-9)
        np.testing.assert_allclose(tpa.leader_action_to_mujoco(action), u.lerobot_to_mujoco(expected_lerobot(raw)))
    teleop.close()
    assert not leader.is_connected


def test_mid_range_is_mujoco_zero_and_gripper_range(tmp_path):
    raw = {c["id"]: int(round(MID[n])) for n, c in CALIBRATION.items()}
    raw[6] = CALIBRATION["gripper"]["range_min"]
    leader = fake_leader(tmp_path, [raw])
    leader.connect()
    q = tpa.leader_action_to_mujoco(leader.get_action())
    np.testing.assert_allclose(q[:5], 0.0, atol=np.radians(360 / 4095))  # within one tick of zero
    assert q[5] == pytest.approx(u.JOINT_LIMITS_RAD[0, 5])  # gripper 0 = closed = lower limit


def test_mirroring_is_clamped_and_rate_limited(tmp_path):
    leader = fake_leader(tmp_path, [RAW_FRAMES[3]])  # a pose far from home, partly beyond the sim's limits
    teleop = tpa.PhysicalArmTeleop(leader, max_step_rad=0.1)
    teleop.connect()
    home = u.home_pose_rad()
    teleop.reset(home)
    prev, targets = home, []
    for _ in range(80):
        q = teleop.command()
        assert np.all(np.abs(q - prev) <= 0.1 + 1e-12)
        assert np.all(q >= u.JOINT_LIMITS_RAD[0]) and np.all(q <= u.JOINT_LIMITS_RAD[1])
        prev = q
        targets.append(q)
    want = u.clip_to_joint_limits(u.lerobot_to_mujoco(expected_lerobot(RAW_FRAMES[3])))
    np.testing.assert_allclose(targets[-1], want, atol=1e-9)  # converged onto the (clipped) leader pose
    assert np.any(u.lerobot_to_mujoco(expected_lerobot(RAW_FRAMES[3])) > u.JOINT_LIMITS_RAD[1])  # clamping was needed


def test_record_dataset_physical_end_to_end(tmp_path, monkeypatch):
    """record_dataset.py --input physical with the fake leader: the stored actions are the leader's
    pose in LeRobot units once the sim has caught up."""
    from so101_sim import record_dataset as rd

    leader = fake_leader(tmp_path, [RAW_FRAMES[1]])
    monkeypatch.setattr(tpa, "make_leader", lambda *a, **k: leader)

    class Script:
        calls = 0

        def poll_events(self):
            Script.calls += 1
            return {1: [tc.EVENT_TOGGLE], 13: [tc.EVENT_TOGGLE], 14: [tc.EVENT_QUIT]}.get(Script.calls, [])

        def close(self):
            pass

    monkeypatch.setattr(tpa, "default_events", lambda: Script())
    root = tmp_path / "physical"
    assert rd.main(["--input", "physical", "--port", "/dev/fake-leader", "--output_dir", str(root), "--image-size", "32",
                    "--num_episodes", "3", "--repo-id", "local/physical", "--no-viewer"]) == 0
    from lerobot.datasets import LeRobotDataset

    ds = LeRobotDataset("local/physical", root=root, video_backend="pyav")
    assert ds.num_episodes == 1 and ds.num_frames == 12
    action = np.stack(ds.hf_dataset.with_format("numpy")[:]["action"])
    want = rd.to_dataset_units(u.clip_to_joint_limits(u.lerobot_to_mujoco(expected_lerobot(RAW_FRAMES[1]))))
    np.testing.assert_allclose(action[-1], want, atol=1e-3)
    assert not leader.is_connected  # released at the end


def test_physical_port_error_is_clear(tmp_path):
    calib_dir = tmp_path / "c"
    calib_dir.mkdir()
    (calib_dir / "x.json").write_text(json.dumps(CALIBRATION))
    teleop = tpa.PhysicalArmTeleop(tpa.make_leader(str(tmp_path / "no-such-port"), "x", calib_dir))
    with pytest.raises(tc.TeleopUnavailable, match="lerobot-find-port"):
        teleop.connect()
