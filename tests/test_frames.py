"""Coordinate frames: MuJoCo radians, LeRobot calibrated units, SmolVLA degrees, calibration files."""

import json

import numpy as np
import pytest

from so101_sim import so101_mujoco_utils as u
from so101_sim.so101_mujoco_utils import mujoco

RNG = np.random.default_rng(0)


def random_joints(n=100):
    lo, hi = u.JOINT_LIMITS_RAD
    return RNG.uniform(lo, hi, (n, 6))


def test_lerobot_round_trip_and_hand_values():
    q = random_joints()
    np.testing.assert_allclose(u.lerobot_to_mujoco(u.mujoco_to_lerobot(q)), q, atol=1e-12)
    # body joints: plain degrees; gripper: 0 at the lower (closed) limit, 100 at the upper
    x = u.mujoco_to_lerobot([np.pi / 2, -np.pi / 4, 0.0, 0.1, -1.0, u.JOINT_LIMITS_RAD[0, 5]])
    np.testing.assert_allclose(x[:5], [90.0, -45.0, 0.0, np.degrees(0.1), np.degrees(-1.0)])
    assert x[5] == pytest.approx(0.0)
    assert u.mujoco_to_lerobot([0, 0, 0, 0, 0, u.JOINT_LIMITS_RAD[1, 5]])[5] == pytest.approx(100.0)
    mid = u.JOINT_LIMITS_RAD[:, 5].mean()
    assert u.mujoco_to_lerobot([0, 0, 0, 0, 0, mid])[5] == pytest.approx(50.0)


def test_smolvla_frame_round_trip_and_offsets():
    q = random_joints()
    np.testing.assert_allclose(u.smolvla_degrees_to_mujoco(u.mujoco_to_smolvla_degrees(q)), q, atol=1e-12)
    np.testing.assert_allclose(u.mujoco_to_smolvla_degrees(np.zeros(6)), [0, 120, 110, 57, -27, 12])
    z = u.normalize_state_for_smolvla(q)
    np.testing.assert_allclose(u.unnormalize_action_from_smolvla(u.normalize_action_for_smolvla(q)), q, atol=1e-12)
    # z-score computed by hand for one joint
    assert z[0, 1] == pytest.approx((np.degrees(q[0, 1]) + 120 - 119.944) / 52.411)


def test_reset_pose_check_normalized_state_at_mujoco_zero_is_near_zero():
    # reference 000: MuJoCo zero = LeRobot calibration pose -> normalized SmolVLA state ~ 0
    z = u.normalize_state_for_smolvla(np.zeros(6))
    assert np.all(np.abs(z) < 0.1), z


def test_offsets_from_calibration_worked_example(tmp_path):
    calib = {  # the calibration file of reference 000
        "shoulder_pan": {"id": 1, "drive_mode": 0, "homing_offset": -1399, "range_min": 874, "range_max": 2979},
        "shoulder_lift": {"id": 2, "drive_mode": 0, "homing_offset": -766, "range_min": 970, "range_max": 3048},
        "elbow_flex": {"id": 3, "drive_mode": 0, "homing_offset": 1011, "range_min": 1005, "range_max": 3219},
        "wrist_flex": {"id": 4, "drive_mode": 0, "homing_offset": -877, "range_min": 908, "range_max": 3076},
        "wrist_roll": {"id": 5, "drive_mode": 0, "homing_offset": 1512, "range_min": 736, "range_max": 3961},
        "gripper": {"id": 6, "drive_mode": 0, "homing_offset": 943, "range_min": 2046, "range_max": 2053},
    }
    path = tmp_path / "follower.json"
    path.write_text(json.dumps(calib))
    off = u.offsets_from_calibration(path)
    assert off.shape == (6,)
    assert off[1] == pytest.approx(112.7, abs=0.05)  # (2048 - 766) * 360 / 4096
    expected = [(2048 + calib[j]["homing_offset"]) * 360 / 4096 for j in u.JOINT_NAMES]
    np.testing.assert_allclose(off, expected)


@pytest.mark.parametrize(
    "content, match",
    [
        ("not json", "not valid JSON"),
        (json.dumps({"shoulder_pan": {"homing_offset": 1}}), "no entry for joint 'shoulder_lift'"),
        (json.dumps({j: {"id": 1, "drive_mode": 0, "homing_offset": "x", "range_min": 0, "range_max": 4095}
                     for j in u.JOINT_NAMES}), "joint 'shoulder_pan', field 'homing_offset' must be an integer"),
        (json.dumps({j: {"homing_offset": 1} for j in u.JOINT_NAMES}), "joint 'shoulder_pan', field 'id' is missing"),
        (json.dumps([1, 2]), "JSON object"),
    ],
)
def test_malformed_calibration_files_raise_clear_errors(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        u.offsets_from_calibration(path)


def test_missing_calibration_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="lerobot-calibrate|calibration"):
        u.offsets_from_calibration(tmp_path / "nope.json")


def test_home_pose_signs_give_the_folded_rest_pose():
    """Sign check joint by joint: LeRobot's rest pose (lift -100, elbow +90, wrist_flex +66) must be
    the folded arm resting near the table in MuJoCo. With any sign flipped the arm stretches out
    or goes through the table."""
    model = u.load_model()
    data = mujoco.MjData(model)
    ids = u.SceneIds.from_model(model)
    data.qpos[ids.qpos_adr] = u.home_pose_rad()
    mujoco.mj_forward(model, data)
    grasp = data.site_xpos[ids.gripper_site].copy()
    assert np.linalg.norm(grasp[:2]) < 0.2 and 0.0 < grasp[2] < 0.06
    arm_bodies = [model.body(n).id for n in ("upper_arm", "lower_arm", "wrist", "gripper")]
    assert all(data.xpos[b][2] > 0 for b in arm_bodies)
    for j in (1, 2, 3):  # flipping a pitch joint's sign must move the gripper far from the rest spot
        q = u.home_pose_rad()
        q[j] = -q[j]
        data.qpos[ids.qpos_adr] = q
        mujoco.mj_forward(model, data)
        assert np.linalg.norm(data.site_xpos[ids.gripper_site] - grasp) > 0.05
    assert u.mujoco_to_lerobot(u.home_pose_rad())[5] == pytest.approx(1.0)
