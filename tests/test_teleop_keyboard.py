"""Keyboard teleop: the pure key -> joint mapping (spec key map, directions checked with the arm's
kinematics), the input source without a keyboard, and the no-display error."""

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from so101_sim import so101_mujoco_utils as u
from so101_sim import teleop_common as tc
from so101_sim import teleop_keyboard as tk
from so101_sim.teleop_keyboard import KEY_BINDINGS, keys_to_velocity

J = {n: i for i, n in enumerate(u.JOINT_NAMES)}


def test_spec_key_map_is_complete():
    # shared/reference/001 "Keyboard Controls": every listed key moves a joint or controls the episode
    for key in ["up", "down", "left", "right", "w", "s", "i", "k", "z", "x", "a", "d", "q", "e"]:
        assert key in KEY_BINDINGS
    assert tk.EVENT_KEYS == {"space": tc.EVENT_TOGGLE, "r": tc.EVENT_RESET, "esc": tc.EVENT_QUIT}
    assert set(KEY_BINDINGS).isdisjoint(tk.EVENT_KEYS)
    # each joint has a key pair moving it both ways
    for j in range(u.NUM_JOINTS):
        dirs = {d for (jj, d) in KEY_BINDINGS.values() if jj == j}
        assert dirs == {-1, 1}, u.JOINT_NAMES[j]


@pytest.mark.parametrize("key,joint,sign", [
    ("left", "shoulder_pan", -1), ("right", "shoulder_pan", 1), ("w", "shoulder_lift", -1),
    ("s", "shoulder_lift", 1), ("up", "shoulder_lift", 1), ("down", "shoulder_lift", -1),
    ("i", "elbow_flex", -1), ("k", "elbow_flex", 1), ("z", "wrist_flex", 1), ("x", "wrist_flex", -1),
    ("a", "wrist_roll", -1), ("d", "wrist_roll", 1), ("q", "gripper", 1), ("e", "gripper", -1),
])
def test_each_key_moves_one_joint_at_its_speed(key, joint, sign):
    v = keys_to_velocity({key})
    expected = np.zeros(6)
    expected[J[joint]] = sign * tc.JOINT_SPEED_RAD_S[J[joint]]
    np.testing.assert_array_equal(v, expected)
    np.testing.assert_array_equal(keys_to_velocity({key.upper()}), expected)  # case-insensitive


def test_combinations_cancel_and_saturate():
    np.testing.assert_array_equal(keys_to_velocity({"w", "s"}), np.zeros(6))  # opposite keys cancel
    assert keys_to_velocity({"up", "s"})[J["shoulder_lift"]] == tc.JOINT_SPEED_RAD_S[J["shoulder_lift"]]
    np.testing.assert_array_equal(keys_to_velocity({"space", "shift", "f1"}), np.zeros(6))  # not joint keys
    v = keys_to_velocity({"right", "w", "q"}, speeds=np.ones(6))
    np.testing.assert_array_equal(v, [1, -1, 0, 0, 0, 1])


def test_key_directions_match_the_kinematics():
    """Right turns the gripper to +x (operator's right), W raises it, Up/S pitch the upper arm
    forward (the elbow moves to +y), I extends the arm, Z tips the gripper down; checked with MuJoCo
    forward kinematics."""
    from so101_sim.scripted_expert import ScriptedExpert

    fk = ScriptedExpert(u.load_model())
    q0 = np.array([0.0, -0.6, 0.8, 0.6, 0.0, 0.5])  # a mid-workspace pose
    p0, _ = fk.grasp_pose(q0)

    def moved(key):
        return fk.grasp_pose(q0 + 0.1 * keys_to_velocity({key}) / np.max(np.abs(keys_to_velocity({key}))))[0] - p0

    assert moved("right")[0] > 0.005 and moved("left")[0] < -0.005
    assert moved("w")[2] > 0.003 and moved("s")[2] < -0.003
    data, model = fk.data, fk.model

    def elbow_y(key):
        fk.grasp_pose(q0 + 0.1 * np.sign(keys_to_velocity({key})))
        return data.xpos[model.body("lower_arm").id][1]

    y0 = elbow_y("space")  # no joint key: q0
    assert elbow_y("up") > y0 + 0.005 and elbow_y("s") > y0 + 0.005 and elbow_y("down") < y0 - 0.005
    reach = np.linalg.norm(p0[:2])
    assert np.linalg.norm((p0 + moved("i"))[:2]) > reach > np.linalg.norm((p0 + moved("k"))[:2])
    assert moved("z")[2] < 0 < moved("x")[2]


def test_keyboard_source_without_a_keyboard():
    kb = tk.KeyboardTeleop(start_listener=False)
    home = u.home_pose_rad()
    kb.reset(home)
    np.testing.assert_allclose(kb.command(0.1), home)  # nothing held: no motion
    kb.press("right")
    kb.press("q")
    q = kb.command(0.1)
    assert q[J["shoulder_pan"]] == pytest.approx(home[0] + 0.1 * tc.JOINT_SPEED_RAD_S[0])
    assert q[J["gripper"]] > home[J["gripper"]]
    for _ in range(50):  # held long: stops at the joint limit
        q = kb.command(0.1)
    assert q[J["gripper"]] == pytest.approx(u.JOINT_LIMITS_RAD[1, J["gripper"]])
    kb.release("right")
    kb.release("q")
    np.testing.assert_array_equal(kb.command(0.1), q)
    # events: edge-triggered (auto-repeat while held gives one event), drained by poll
    kb.press("space")
    kb.press("space")
    kb.release("space")
    kb.press("r")
    kb.press("esc")
    assert kb.poll_events() == [tc.EVENT_TOGGLE, tc.EVENT_RESET, tc.EVENT_QUIT]
    assert kb.poll_events() == []
    kb.close()


def test_key_name_from_pynput_like_keys():
    assert tk.key_name(SimpleNamespace(char="W")) == "w"
    assert tk.key_name(SimpleNamespace(char=None, name="space")) == "space"
    assert tk.key_name(SimpleNamespace(char=None, name="up")) == "up"
    assert tk.key_name(SimpleNamespace(char=None, name=None)) is None


def test_no_display_gives_a_clear_error(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(tc.TeleopUnavailable, match="needs a display"):
        tk.KeyboardTeleop()


def test_standalone_help_and_headless_exit():
    from conftest import SIM_DIR

    env = {k: v for k, v in __import__("os").environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    out = subprocess.run([sys.executable, "teleop_keyboard.py", "--help"], cwd=SIM_DIR, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "W/S" in out.stdout
    out = subprocess.run([sys.executable, "teleop_keyboard.py"], cwd=SIM_DIR, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "needs a display" in out.stderr
