"""Reliability of the env: divergence is reported (not silent), reset options and calibration
files are validated, headless human mode raises instead of killing the process."""

import json
import os
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest

from so101_sim import envs  # noqa: F401  (registers the env ids)
from so101_sim import mujoco_rendering
from so101_sim import policy_registry as pr
from so101_sim import rollout_utils as ru
from so101_sim import run_mujoco_simulation
from so101_sim import so101_mujoco_utils as u
from conftest import SIM_DIR
from so101_sim.so101_gym_env import SO101PickPlaceEnv

# --------------------------------------------------------------------------------------------
# Simulator divergence
# --------------------------------------------------------------------------------------------


def _hold(env):
    return env.unwrapped.joint_positions.astype(np.float32)


@pytest.mark.parametrize("dof, value", [("arm", 1e300), ("block", 1e300), ("arm", 1e9)])
def test_divergence_mid_episode_truncates_flags_and_warns(dof, value):
    """qvel 1e300 -> MuJoCo's BADQVEL, 1e9 -> BADQACC; both make MuJoCo reset the state itself."""
    env = gym.make("SO101PickPlace-v0", obs_mode="state", include_env_state=True)
    obs, info = env.reset(seed=5)
    assert info["sim_unstable"] is False
    start_block = info["block_pos"].copy()
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(_hold(env))
        assert info["sim_unstable"] is False and not truncated  # present (False) on every step
    base = env.unwrapped
    base.data.qvel[base.ids.dof_adr[1] if dof == "arm" else base.ids.block_dof_adr] = value
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        obs, reward, terminated, truncated, info = env.step(_hold(env))
    assert truncated is True and terminated is False
    assert info["sim_unstable"] is True and info["is_success"] is False
    assert reward == 0.0 and all(info[f"reward_{t}"] == 0.0 for t in u.REWARD_TERMS)
    msgs = [str(w.message) for w in caught if issubclass(w.category, u.SimulationUnstableWarning)]
    assert len(msgs) == 1 and "\n" not in msgs[0], msgs
    assert "step 4" in msgs[0] and ("BADQVEL" in msgs[0] or "BADQACC" in msgs[0])
    # the state really was reset by MuJoCo (block back at its XML home, not where the episode put it)
    assert np.linalg.norm(obs[u.OBS_ENV_STATE][:2] - start_block[:2]) > 0.01
    assert np.all(np.isfinite(obs[u.OBS_STATE]))
    # a fresh reset recovers: the next episode is normal
    obs, info = env.reset(seed=5)
    np.testing.assert_allclose(info["block_pos"], start_block, atol=1e-9)
    _, _, _, truncated, info = env.step(_hold(env))
    assert info["sim_unstable"] is False and not truncated
    env.close()


def test_second_divergence_is_also_caught():
    """MuJoCo's reset clears the warning counters before counting, so a before/after comparison
    would miss a second event (1 -> 1), and counters never cleared would flag every later step;
    the env zeroes them before each step. Stepping on after a truncation (raw env, no reset):
    diverge -> flagged, stable step -> not flagged, diverge again -> flagged."""
    env = SO101PickPlaceEnv(obs_mode="state")
    env.reset(seed=1)
    flags = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", u.SimulationUnstableWarning)
        for diverge in (True, False, True):
            if diverge:
                env.data.qvel[env.ids.dof_adr[0]] = 1e300
            _, _, _, truncated, info = env.step(env.joint_positions)
            assert truncated == info["sim_unstable"]
            flags.append(info["sim_unstable"])
    assert flags == [True, False, True]
    env.close()


def test_step_and_check_is_quiet_when_stable():
    model, data, ids = u.make_scene()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no MuJoCo message re-emitted either
        assert u.step_and_check(model, data) == []
    data.qvel[ids.dof_adr[0]] = 1e300
    problems = u.step_and_check(model, data)
    assert problems and problems[0].startswith("mjWARN_BADQVEL x1: Nan, Inf or huge value in QVEL")


def test_nan_action_is_refused_before_simulating():
    env = SO101PickPlaceEnv(obs_mode="state")
    env.reset(seed=0)
    t = env.data.time
    with pytest.raises(ValueError, match="NaN or inf"):
        env.step(np.array([0, 0, np.nan, 0, 0, 0]))
    assert env.data.time == t
    env.close()


def test_vector_env_stacks_sim_unstable():
    venv = gym.vector.SyncVectorEnv([lambda: gym.make("SO101PickPlace-v0", obs_mode="state")] * 2)
    venv.reset(seed=0)
    _, _, _, _, infos = venv.step(np.stack([u.home_pose_rad()] * 2).astype(np.float32))
    assert infos["sim_unstable"].dtype == bool and infos["sim_unstable"].tolist() == [False, False]
    venv.close()


def test_run_script_summary_counts_unstable_episodes(tmp_path, capsys, monkeypatch):
    """run_mujoco_simulation.py: the first of two episodes diverges at its 3rd step; the summary
    JSON counts it, the episode says so, the result line says "unstable 1"."""
    act = pr.ScriptedPolicy.act
    calls = {"n": 0}

    def act_and_break_the_first_episode(self, obs):
        calls["n"] += 1
        if calls["n"] == 3:
            self.env.unwrapped.data.qvel[self.env.unwrapped.ids.dof_adr[1]] = 1e300
        return act(self, obs)

    monkeypatch.setattr(pr.ScriptedPolicy, "act", act_and_break_the_first_episode)
    path = tmp_path / "summary.json"
    with pytest.warns(u.SimulationUnstableWarning, match="step 3"):
        assert run_mujoco_simulation.main(["--model-type", "scripted", "--episodes", "2", "--max-steps", "6",
                                           "--headless", "--summary-json", str(path)]) == 0
    summary = json.loads(path.read_text())
    assert summary["unstable_episodes"] == 1
    assert [e["sim_unstable"] for e in summary["per_episode"]] == [True, False]
    assert [e["length"] for e in summary["per_episode"]] == [3, 6]  # truncated at the divergence
    assert "unstable 1" in capsys.readouterr().out


def test_summary_counts_and_line_omits_zero(capsys):
    import argparse

    from so101_sim import eval_report

    eps = [{"seed": 0, "return": 1.0, "length": 3, "success": True, "sim_unstable": False},
           {"seed": 1, "return": 0.0, "length": 2, "success": False}]  # old episode dicts: no key
    summary = ru.summarize(eps, "x")
    assert summary["unstable_episodes"] == 0
    eval_report.finish_run(argparse.Namespace(summary_json=None, report=None), summary, eval_report.EvalReport())
    assert "unstable" not in capsys.readouterr().out
    eps[1]["sim_unstable"] = True
    assert ru.summarize(eps, "x")["unstable_episodes"] == 1


# --------------------------------------------------------------------------------------------
# reset(options={"block_pos": ...})
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pos, match", [
    ([0.0, 0.2, -0.05], r"under the table: z = -0\.0500 m.*0\.0125"),
    ([0.0, 0.2, 0.2], r"above the table"),
    ([0.0, 0.6, u.BLOCK_HALF_SIZE], r"outside the workspace: distance from the base 0\.6000 m, allowed 0\.1\.\.0\.3 m"),
    ([0.0, 0.05, u.BLOCK_HALF_SIZE], r"distance from the base 0\.0500 m"),
    ([0.2, 0.0, u.BLOCK_HALF_SIZE], r"angle from \+y -90\.0 deg, allowed -60\.0\.\.60\.0 deg"),
    ([0.0, -0.2, u.BLOCK_HALF_SIZE], r"angle from \+y -?180\.0 deg"),  # behind the base
    ([np.nan, 0.2, u.BLOCK_HALF_SIZE], r"3 finite numbers.*nan"),
    ([0.0, 0.2], r"3 finite numbers"),
])
def test_bad_block_pos_is_refused(pos, match):
    env = SO101PickPlaceEnv(obs_mode="state")
    with pytest.raises(ValueError, match=match):
        env.reset(seed=0, options={"block_pos": pos})
    env.close()


def test_valid_block_pos_still_works_and_limits_come_from_the_spawn_region():
    env = SO101PickPlaceEnv(obs_mode="state")
    for d, a in [(u.BLOCK_DISTANCE_RANGE[0], u.BLOCK_ANGLE_RANGE_DEG[0]), (u.BLOCK_DISTANCE_RANGE[1], 0.0),
                 (0.2, u.BLOCK_ANGLE_RANGE_DEG[1])]:  # the corners of the region sample_block_position uses
        pos = np.array([-d * np.sin(np.radians(a)), d * np.cos(np.radians(a)), u.BLOCK_HALF_SIZE])
        _, info = env.reset(options={"block_pos": pos})
        np.testing.assert_allclose(info["block_pos"], pos, atol=1e-3)  # placed there, not launched
        # the settled position read back is accepted again (RepeatBlockWrapper does this)
        _, again = env.reset(options={"block_pos": info["block_pos"]})
        np.testing.assert_allclose(again["block_pos"], pos, atol=1e-3)
    env.close()


# --------------------------------------------------------------------------------------------
# Calibration files
# --------------------------------------------------------------------------------------------

GOOD = {j: {"id": i + 1, "drive_mode": 0, "homing_offset": 100 * i - 250, "range_min": 800, "range_max": 3200}
        for i, j in enumerate(u.JOINT_NAMES)}


def _write(tmp_path, calib):
    path = tmp_path / "calib.json"
    path.write_text(calib if isinstance(calib, str) else json.dumps(calib))
    return path


def _with(joint, **fields):
    calib = json.loads(json.dumps(GOOD))
    for k, v in fields.items():
        if v is None:
            del calib[joint][k]
        else:
            calib[joint][k] = v
    return calib


@pytest.mark.parametrize("calib, match", [
    (_with("elbow_flex", homing_offset=10**12), r"joint 'elbow_flex', field 'homing_offset' = 1000000000000 is outside -2047\.\.2047"),
    (_with("wrist_flex", homing_offset=-2048), r"joint 'wrist_flex', field 'homing_offset' = -2048 is outside"),
    (_with("gripper", range_min=3300), r"joint 'gripper', field 'range_min' = 3300 must be below range_max = 3200"),
    (_with("wrist_roll", range_max=4096), r"joint 'wrist_roll', field 'range_max' = 4096 is outside 0\.\.4095"),
    (_with("shoulder_pan", range_min=-1), r"joint 'shoulder_pan', field 'range_min' = -1 is outside 0\.\.4095"),
    (_with("shoulder_lift", range_max=None), r"joint 'shoulder_lift', field 'range_max' is missing"),
    (_with("shoulder_lift", homing_offset=12.0), r"joint 'shoulder_lift', field 'homing_offset' must be an integer"),
    (_with("gripper", drive_mode=2), r"joint 'gripper', field 'drive_mode' = 2 must be 0 or 1"),
    ({j: v for j, v in GOOD.items() if j != "wrist_roll"}, r"no entry for joint 'wrist_roll'"),
    ("{not json", r"is not valid JSON \(.*line 1 column 2"),
])
def test_bad_calibration_files_name_the_joint_and_field(tmp_path, calib, match):
    path = _write(tmp_path, calib)
    with pytest.raises(ValueError, match=match):
        u.load_calibration(path)
    with pytest.raises(ValueError, match=match):  # the offsets use the same check
        u.offsets_from_calibration(path)


def test_good_calibration_file_loads(tmp_path):
    path = _write(tmp_path, _with("wrist_flex", homing_offset=-2047))  # the register's extreme is valid
    assert u.load_calibration(path)["wrist_flex"]["homing_offset"] == -2047
    assert u.HOMING_OFFSET_RANGE == (-2047, 2047) and u.CALIBRATION_TICK_RANGE == (0, 4095)


def test_homing_offset_range_is_what_lerobot_can_write():
    """The constant agrees with LeRobot's own sign-magnitude encoder for the STS3215 register."""
    from lerobot.motors.encoding_utils import encode_sign_magnitude
    from lerobot.motors.feetech.tables import MODEL_ENCODING_TABLE, MODEL_RESOLUTION

    bit = MODEL_ENCODING_TABLE["sts3215"]["Homing_Offset"]
    lo, hi = u.HOMING_OFFSET_RANGE
    encode_sign_magnitude(lo, bit), encode_sign_magnitude(hi, bit)
    with pytest.raises(ValueError):
        encode_sign_magnitude(hi + 1, bit)
    assert u.CALIBRATION_TICK_RANGE[1] == MODEL_RESOLUTION["sts3215"] - 1


def test_teleop_validates_the_calibration_before_lerobot_reads_it(tmp_path):
    from so101_sim import teleop_common as tc
    from so101_sim import teleop_physical_arm as tpa

    folder = tmp_path / "cal"
    folder.mkdir()
    (folder / "bad.json").write_text(json.dumps(_with("elbow_flex", homing_offset=10**12)))
    with pytest.raises(tc.TeleopUnavailable, match="joint 'elbow_flex', field 'homing_offset'"):
        tpa.make_leader("/dev/fake", "bad", folder)
    (folder / "good.json").write_text(json.dumps(GOOD))
    assert tpa.make_leader("/dev/fake", "good", folder).calibration["elbow_flex"].homing_offset == GOOD["elbow_flex"]["homing_offset"]


# --------------------------------------------------------------------------------------------
# Headless human mode
# --------------------------------------------------------------------------------------------

HEADLESS_SCRIPT = r"""
import gymnasium as gym
from so101_sim import envs
from gymnasium.utils.env_checker import check_env
from so101_sim import mujoco_rendering
assert not mujoco_rendering.has_display()
try:
    gym.make("SO101PickPlaceHuman-v0").reset()
except RuntimeError as e:
    print("caught make+reset:", type(e).__name__, isinstance(e, mujoco_rendering.NoDisplayError), e)
try:
    check_env(gym.make("SO101PickPlaceHuman-v0", obs_mode="state"))
except RuntimeError as e:
    print("caught check_env human:", type(e).__name__)
check_env(gym.make("SO101PickPlace-v0", obs_mode="state"))  # defaults: every render mode the instance lists
print("check_env defaults passed")
"""


def test_headless_human_mode_raises_a_catchable_error_and_check_env_passes():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL")}
    out = subprocess.run([sys.executable, "-c", HEADLESS_SCRIPT], cwd=SIM_DIR, capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "caught make+reset: NoDisplayError True" in out.stdout and 'render_mode="rgb_array"' in out.stdout
    assert "caught check_env human: NoDisplayError" in out.stdout
    assert "check_env defaults passed" in out.stdout
    assert "could not initialize GLFW" not in out.stderr


def test_render_modes_of_an_instance_follow_the_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if mujoco_rendering.has_display():  # macOS / Windows always have one
        pytest.skip("this platform always has a display")
    env = SO101PickPlaceEnv(obs_mode="state")
    assert env.metadata["render_modes"] == ["rgb_array"]
    assert "human" in SO101PickPlaceEnv.metadata["render_modes"]  # the class (registration) keeps it
    with pytest.raises(mujoco_rendering.NoDisplayError, match="no.*display|none was found"):
        SO101PickPlaceEnv(render_mode="human", obs_mode="state")
    env.close()
