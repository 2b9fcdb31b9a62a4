"""Gamepad teleop with SDL's dummy drivers and synthetic pygame events: no controller needed."""

import os
import subprocess
import sys

import numpy as np
import pytest

from so101_sim import so101_mujoco_utils as u
from so101_sim import teleop_common as tc
from so101_sim import teleop_gamepad as tg

J = {n: i for i, n in enumerate(u.JOINT_NAMES)}
S = tc.JOINT_SPEED_RAD_S


def test_dead_zone_and_triggers():
    assert tg.apply_dead_zone(0.05, 0.1) == 0.0 and tg.apply_dead_zone(-0.099, 0.1) == 0.0
    assert tg.apply_dead_zone(0.1, 0.1) == pytest.approx(0.0)  # continuous at the edge
    assert tg.apply_dead_zone(1.0, 0.1) == pytest.approx(1.0) and tg.apply_dead_zone(-1.0, 0.1) == pytest.approx(-1.0)
    assert tg.apply_dead_zone(0.55, 0.1) == pytest.approx(0.5)
    assert tg.apply_dead_zone(3.0) == pytest.approx(1.0)  # clipped
    assert tg.trigger_amount(-1.0) == 0.0 and tg.trigger_amount(1.0) == 1.0 and tg.trigger_amount(0.0) == 0.5


@pytest.mark.parametrize("axes,buttons,joint,sign", [
    ({"left_x": 1.0}, (), "shoulder_pan", 1), ({"left_x": -1.0}, (), "shoulder_pan", -1),
    ({"left_y": -1.0}, (), "shoulder_lift", 1),  # stick pushed away (up = -1): forward
    ({"right_x": 1.0}, (), "wrist_roll", 1), ({"right_y": -1.0}, (), "wrist_flex", 1),
    ({}, ("l1",), "elbow_flex", 1), ({}, ("r1",), "elbow_flex", -1),  # L1 retract, R1 extend
    ({"l2": 1.0}, (), "gripper", -1), ({"r2": 1.0}, (), "gripper", 1),  # L2 close, R2 open
])
def test_stick_button_map(axes, buttons, joint, sign):
    v = tg.gamepad_velocity(axes, buttons)
    expected = np.zeros(6)
    expected[J[joint]] = sign * S[J[joint]]
    np.testing.assert_allclose(v, expected)


def test_at_rest_nothing_moves():
    np.testing.assert_array_equal(tg.gamepad_velocity({}, ()), np.zeros(6))
    # drift inside the dead zone, triggers released
    v = tg.gamepad_velocity({"left_x": 0.08, "left_y": -0.05, "right_x": 0.09, "l2": -1.0, "r2": -0.95}, ())
    np.testing.assert_array_equal(v, np.zeros(6))


def test_layout_detection():
    assert tg.detect_layout("PS4 Controller").name == "ds4"
    assert tg.detect_layout("Sony Interactive Entertainment Wireless Controller").name == "ds4"
    assert tg.detect_layout("DualSense Wireless Controller").name == "ds4"
    assert tg.detect_layout("Xbox 360 Controller").name == "xbox"
    assert tg.detect_layout("Generic X-Box pad").name == "xbox"
    assert tg.detect_layout("Some USB gamepad").name == "xbox"
    # the spec's buttons exist in both layouts
    for layout in tg.LAYOUTS.values():
        assert set(layout.buttons) == {"toggle", "reset", "quit", "l1", "r1"}
        assert set(layout.axes) == {"left_x", "left_y", "right_x", "right_y", "l2", "r2"}


def test_no_controller_is_a_clear_error():
    if tg.list_controllers():
        pytest.skip("a real controller is connected")
    with pytest.raises(tc.TeleopUnavailable, match="No gamepad detected"):
        tg.GamepadTeleop()


def post(pygame, etype, **kw):
    pygame.event.post(pygame.event.Event(etype, joy=0, instance_id=0, **kw))


@pytest.mark.parametrize("layout", ["ds4", "xbox"])
def test_synthetic_events_drive_the_source(layout):
    pad = tg.GamepadTeleop(layout=layout, require_device=False)
    pg, lay = pad.pygame, tg.LAYOUTS[layout]
    pg.event.clear()
    home = u.home_pose_rad()
    pad.reset(home)
    np.testing.assert_allclose(pad.command(0.1), home)  # triggers start released: no gripper drift
    post(pg, pg.JOYAXISMOTION, axis=lay.axes["left_x"], value=1.0)
    post(pg, pg.JOYAXISMOTION, axis=lay.axes["r2"], value=1.0)
    post(pg, pg.JOYBUTTONDOWN, button=lay.buttons["l1"])
    q = pad.command(0.1)
    np.testing.assert_allclose(q - home, 0.1 * S * np.array([1, 0, 1, 0, 0, 1]), atol=1e-12)
    post(pg, pg.JOYAXISMOTION, axis=lay.axes["left_x"], value=0.02)  # back inside the dead zone
    post(pg, pg.JOYAXISMOTION, axis=lay.axes["r2"], value=-1.0)
    post(pg, pg.JOYBUTTONUP, button=lay.buttons["l1"])
    np.testing.assert_array_equal(pad.command(0.1), q)
    for name in ("toggle", "reset", "quit"):
        post(pg, pg.JOYBUTTONDOWN, button=lay.buttons[name])
        post(pg, pg.JOYBUTTONUP, button=lay.buttons[name])
    assert pad.poll_events() == [tc.EVENT_TOGGLE, tc.EVENT_RESET, tc.EVENT_QUIT]
    assert pad.poll_events() == []
    pad.close()


def test_safety_cap_and_limits():
    pad = tg.GamepadTeleop(layout="ds4", require_device=False, speeds=np.full(6, 100.0), max_step_rad=0.05)
    pg = pad.pygame
    pg.event.clear()
    pad.reset(np.zeros(6))
    post(pg, pg.JOYAXISMOTION, axis=0, value=1.0)
    q = pad.command(0.1)
    assert q[0] == pytest.approx(0.05)  # 10 rad requested, capped per step
    for _ in range(100):
        q = pad.command(0.1)
    assert q[0] == pytest.approx(u.JOINT_LIMITS_RAD[1, 0])
    pad.close()


def test_standalone_lists_no_controllers():
    from conftest import SIM_DIR

    if tg.list_controllers():
        pytest.skip("a real controller is connected")

    out = subprocess.run([sys.executable, "teleop_gamepad.py"], cwd=SIM_DIR, capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, SDL_VIDEODRIVER="dummy"))
    assert out.returncode == 1 and "0 controller(s) detected" in out.stdout and "no gamepad" in out.stderr
    out = subprocess.run([sys.executable, "teleop_gamepad.py", "--list"], cwd=SIM_DIR, capture_output=True,
                         text=True, timeout=120, env=dict(os.environ, SDL_VIDEODRIVER="dummy"))
    assert out.returncode == 0


def test_record_with_gamepad_but_none_connected(tmp_path, capsys):
    from so101_sim import record_dataset as rd

    if tg.list_controllers():
        pytest.skip("a real controller is connected")

    assert rd.main(["--input", "gamepad", "--output_dir", str(tmp_path / "gp")]) == 2
    assert "No gamepad detected" in capsys.readouterr().err
    assert not (tmp_path / "gp").exists()
