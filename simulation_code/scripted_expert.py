"""A scripted expert that picks up the block with the arm's own kinematics.

Damped-least-squares inverse kinematics on the ``grasp_center`` site (MuJoCo Jacobians), a
top-down grasp with the jaws turned to the block's faces, and four phases:
approach (above the block, gripper open) -> descend -> close -> lift. Every step it reads the
real joint state and block pose it is given, never a cached target (reference lesson:
shared/reference/003_714577024c12b4ac.txt), and limits the commanded change per control step.

It is the default policy of ``run_mujoco_simulation.py --model-type scripted``, the source of
``record_dataset.py --input scripted`` demonstrations, and a reference for RL.

    expert = ScriptedExpert(env.unwrapped.model)
    obs, info = env.reset(seed=0); expert.reset()
    action = expert.act(env.unwrapped.joint_positions, block_pos, block_quat)
"""

from __future__ import annotations

import numpy as np

from so101_sim import so101_mujoco_utils as u
from so101_sim.so101_mujoco_utils import mujoco

#: Gripper targets, MuJoCo radians: open wide enough for the 2.5 cm block (pads ~60 mm apart),
#: closed = the lower joint limit (the actuator's force limit sets the squeeze).
GRIPPER_OPEN = 0.8
GRIPPER_CLOSED = float(u.JOINT_LIMITS_RAD[0, u.GRIPPER_INDEX])
#: Heights of the grasp point above the block centre, metres.
#: The approach uses the first of APPROACH_HEIGHTS the IK reaches (a vertical grasp cannot be
#: high above blocks close to the base).
APPROACH_HEIGHTS = (0.07, 0.05, 0.035)
LIFT_HEIGHT = 0.12
#: Largest commanded change per control step, radians (arm joints): ~1.2 rad/s at 10 Hz.
MAX_STEP_RAD = 0.12
#: Phase switching tolerances (m) and step budgets.
APPROACH_TOL = 0.015
DESCEND_TOL = 0.006
CLOSE_STEPS = 5
PHASE_TIMEOUT = 40
#: (shoulder_lift, elbow_flex, wrist_flex) starting guesses for the IK, radians.
NOMINAL_STARTS = ((0.0, 0.0, 1.2), (-0.8, 0.8, 1.2), (0.4, -0.6, 1.2))
#: Clearance (m) above the table the grasp point first rises to before moving over the block,
#: so the arm leaving its folded home pose does not sweep the block away.
CLEARANCE_HEIGHT = 0.06


class ScriptedExpert:
    """Phase-based pick-up controller; see the module docstring.

    Args:
        model: the compiled scene (``so101_mujoco_utils.load_model()``), used for kinematics on a
            private ``MjData``; the simulation's own data is never touched.
        damping: DLS damping lambda (m).
        orientation_weight: weight of the orientation error against the position error (m/rad).
        control_hz: the env's control rate (Hz; ``env.unwrapped.control_hz``). The step cap and
            the phase step budgets above are per 10 Hz step; they are scaled so the expert moves at
            the same joint speed (rad/s) and waits the same seconds at any rate (10 Hz: unchanged).
    """

    def __init__(self, model: mujoco.MjModel, damping: float = 0.02, orientation_weight: float = 0.15,
                 control_hz: float = u.CONTROL_HZ):
        scale = float(control_hz) / u.CONTROL_HZ
        self.max_step_rad = MAX_STEP_RAD / scale
        self.close_steps, self.phase_timeout = round(CLOSE_STEPS * scale), round(PHASE_TIMEOUT * scale)
        self.model = model
        self.data = mujoco.MjData(model)
        self.ids = u.SceneIds.from_model(model)
        self.damping = damping
        self.w_rot = orientation_weight
        self.reset()

    def reset(self) -> None:
        """Start a new episode (phase = approach)."""
        self.phase = "approach"
        self.phase_steps = 0
        self.initial_block = None

    # ------------------------------------------------------------------ kinematics
    def _forward(self, q: np.ndarray) -> None:
        self.data.qpos[self.ids.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)

    def grasp_pose(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Forward kinematics: (grasp point (3,) world m, gripper rotation matrix (3, 3)) at ``q``."""
        self._forward(q)
        return self.data.site_xpos[self.ids.gripper_site].copy(), self.data.xmat[self.ids.gripper_body].reshape(3, 3).copy()

    def solve_ik(self, q_start: np.ndarray, target_pos: np.ndarray, block_yaw: float, iters: int = 30) -> np.ndarray:
        """Joint angles (6,) putting the grasp point at ``target_pos`` with the jaws pointing down
        (gripper body -z = world -z) and closing along one of the block's horizontal axes.

        Damped least squares on the 5 arm joints, starting from ``q_start`` (radians, MuJoCo
        frame); the gripper angle is copied from ``q_start``. Result clipped to joint limits.
        """
        q = np.array(q_start, dtype=np.float64)
        dofs = self.ids.dof_adr[:5]
        jacp = np.zeros((3, self.model.nv))
        jacr = np.zeros((3, self.model.nv))
        for _ in range(iters):
            pos, rot = self.grasp_pose(q)
            # desired frame: z up (so the jaws, along -z, point down); x along the block face
            # normal nearest to the current closing axis (no needless wrist turns)
            x_now = rot[:, 0]
            z_des = np.array([0.0, 0.0, 1.0])
            candidates = [block_yaw + k * np.pi / 2 for k in range(4)]
            dirs = [np.array([np.cos(a), np.sin(a), 0.0]) for a in candidates]
            x_des = max(dirs, key=lambda d: d @ x_now)
            x_des = x_des - z_des * (z_des @ x_des)
            x_des /= np.linalg.norm(x_des)
            rot_err = 0.5 * (np.cross(rot[:, 0], x_des) + np.cross(rot[:, 2], z_des))
            err = np.concatenate([target_pos - pos, self.w_rot * rot_err])
            mujoco.mj_jacSite(self.model, self.data, jacp, jacr, self.ids.gripper_site)
            jac = np.vstack([jacp[:, dofs], self.w_rot * jacr[:, dofs]])
            dq = jac.T @ np.linalg.solve(jac @ jac.T + self.damping**2 * np.eye(6), err)
            q[:5] = np.clip(q[:5] + dq, u.JOINT_LIMITS_RAD[0, :5], u.JOINT_LIMITS_RAD[1, :5])
            if np.linalg.norm(err) < 1e-4:
                break
        self.last_ik_error = float(np.linalg.norm(err))
        return q

    def solve_ik_multistart(self, q_now: np.ndarray, target_pos: np.ndarray, block_yaw: float) -> np.ndarray:
        """:meth:`solve_ik` from the measured joints and from nominal poses facing the target;
        keeps the measured-joint solution unless another start is at least 5 mm better (DLS alone
        gets stuck against the shoulder_lift/wrist_flex limits close to the base)."""
        best = self.solve_ik(q_now, target_pos, block_yaw)
        best_err = self.last_ik_error
        pan = np.arctan2(target_pos[0], target_pos[1])
        for lift, elbow, flex in NOMINAL_STARTS:
            seed = np.array([pan, lift, elbow, flex, q_now[4], q_now[5]])
            q = self.solve_ik(seed, target_pos, block_yaw)
            if self.last_ik_error < best_err - 0.005:
                best, best_err = q, self.last_ik_error
        self.last_ik_error = best_err
        return best

    # ------------------------------------------------------------------ policy
    def act(self, q_now: np.ndarray, block_pos: np.ndarray, block_quat: np.ndarray) -> np.ndarray:
        """One control step.

        Args:
            q_now: measured joint angles (6,), MuJoCo radians.
            block_pos: measured block centre (3,), world frame, m.
            block_quat: measured block orientation (4,), (w, x, y, z).
        Returns:
            joint position targets (6,) float32, MuJoCo radians, within the joint limits.
        """
        q_now = np.asarray(q_now, dtype=np.float64)
        block_pos = np.asarray(block_pos, dtype=np.float64)
        if self.initial_block is None:
            self.initial_block = block_pos.copy()
        w, x, y, z = block_quat
        yaw = float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))
        grasp_now, _ = self.grasp_pose(q_now)
        self.phase_steps += 1

        if self.phase == "approach":
            target, grip = block_pos + [0, 0, self._approach_height(q_now, block_pos, yaw)], GRIPPER_OPEN
            far = np.linalg.norm(grasp_now[:2] - block_pos[:2]) > 0.04
            if far and grasp_now[2] < CLEARANCE_HEIGHT - 0.01:  # rise first, jaws still closed
                target = np.array([grasp_now[0], grasp_now[1], CLEARANCE_HEIGHT + 0.02])
                grip = float(q_now[u.GRIPPER_INDEX])
            elif np.linalg.norm(grasp_now - target) < APPROACH_TOL or self.phase_steps > self.phase_timeout:
                self._enter("descend")
        elif self.phase == "descend":
            target, grip = block_pos.copy(), GRIPPER_OPEN
            if np.linalg.norm(grasp_now - target) < DESCEND_TOL or self.phase_steps > self.phase_timeout // 2:
                self._enter("close")
        elif self.phase == "close":
            target, grip = block_pos.copy(), GRIPPER_CLOSED
            if self.phase_steps >= self.close_steps:
                self._enter("lift")
        else:  # lift
            target = np.array([self.initial_block[0], self.initial_block[1], u.BLOCK_HALF_SIZE + LIFT_HEIGHT])
            grip = GRIPPER_CLOSED
            dropped = block_pos[2] < u.BLOCK_HALF_SIZE + 0.01 and grasp_now[2] > block_pos[2] + 0.03
            if dropped:  # the block slipped out: open and try again from above its new position
                self._enter("approach")
                self.initial_block = block_pos.copy()
        q_des = self.solve_ik_multistart(q_now, target, yaw)
        q_des[u.GRIPPER_INDEX] = grip
        step = np.clip(q_des[:5] - q_now[:5], -self.max_step_rad, self.max_step_rad)
        action = q_now.copy()
        action[:5] = q_now[:5] + step
        action[u.GRIPPER_INDEX] = grip
        return u.clip_to_joint_limits(action).astype(np.float32)

    def _approach_height(self, q_now: np.ndarray, block_pos: np.ndarray, yaw: float) -> float:
        for h in APPROACH_HEIGHTS:
            self.solve_ik_multistart(q_now, block_pos + [0, 0, h], yaw)
            if self.last_ik_error < 0.003:
                return h
        return APPROACH_HEIGHTS[-1]

    def _enter(self, phase: str) -> None:
        self.phase = phase
        self.phase_steps = 0

    def act_in_env(self, env) -> np.ndarray:
        """Convenience: :meth:`act` with the measured state of a ``SO101PickPlaceEnv`` (or a
        wrapper of one). Returns MuJoCo-radian targets; with ``smolvla_normalize=True`` envs,
        normalize them with ``so101_mujoco_utils.normalize_action_for_smolvla`` first."""
        base = env.unwrapped
        a = base.ids.block_qpos_adr
        return self.act(base.joint_positions, base.data.qpos[a : a + 3], base.data.qpos[a + 3 : a + 7])
