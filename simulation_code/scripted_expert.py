"""A scripted expert that picks up the block with the arm's own kinematics.

Damped-least-squares inverse kinematics on the ``grasp_center`` site (MuJoCo Jacobians) and a
top-down grasp with the jaws closing across two of the block's faces. Each grasp attempt starts
with a *plan* for the block pose it sees (:meth:`ScriptedExpert.plan`): for each of the four ways
to turn the jaws to the block's faces it solves the grasp pose, a pre-grasp pose above it and the
descent between them, rejects those the joint limits or collisions rule out (the open moving jaw
against the shoulder near the base, the jaws on the block or the table), and keeps the best. Then
phases: rise (clear of the table when starting low, e.g. from the folded home pose) -> approach
(to the pre-grasp pose, gripper open) -> descend -> close -> lift. A grasp that fails (the jaws
closed on nothing, the block slipped out while lifting, the descent stalled, the block was pushed
away) ends in a retreat upward with the gripper open and a new plan from the block's new pose,
without the face choice that just failed if the block did not move.

Every step reads the measured joint state and block pose it is given (reference lesson:
shared/reference/003_714577024c12b4ac.txt): the action is a bounded step from the *measured*
joints toward the current phase's joint target, and the plan's IK solutions are reused only while
the block stays where the plan saw it (within :data:`REPLAN_DISTANCE`); otherwise it re-plans.
Reusing them is what makes the expert cheap: IK runs once per grasp attempt (and once per lift),
not every step. Deterministic: no randomness, so a seeded episode is the same on every run.

It is the default policy of ``run_mujoco_simulation.py --model-type scripted``, the source of
``record_dataset.py --input scripted`` demonstrations, and a reference for RL.

    expert = ScriptedExpert(env.unwrapped.model, control_hz=env.unwrapped.control_hz)
    obs, info = env.reset(seed=0); expert.reset()
    action = expert.act(env.unwrapped.joint_positions, block_pos, block_quat)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from so101_sim import so101_mujoco_utils as u
from so101_sim.so101_mujoco_utils import mujoco

#: Gripper targets, MuJoCo radians: open wide enough for the 2.5 cm block (pads ~60 mm apart),
#: closed = the lower joint limit (the actuator's force limit sets the squeeze).
GRIPPER_OPEN = 0.8
GRIPPER_CLOSED = float(u.JOINT_LIMITS_RAD[0, u.GRIPPER_INDEX])
#: Gripper angle (rad) below which a closed gripper holds nothing (pads < ~5 mm apart; a held
#: 2.5 cm block stops the closing jaw at about 0.17 rad).
GRIPPER_EMPTY = 0.0
#: Heights (m) of the pre-grasp point above the grasp target, tried highest first: the highest one
#: the IK reaches with the jaws within :data:`MAX_PRE_TILT_DEG` of vertical (a vertical gripper
#: cannot be high above blocks close to the base or at the far edge: wrist_flex's upper limit).
PRE_GRASP_HEIGHTS = (0.05, 0.04, 0.03, 0.022)
MAX_PRE_TILT_DEG = 25.0
#: Gripper tilts tried for the grasp (deg, about the horizontal perpendicular to the block's
#: direction; positive leans the wrist outward), in order; the next only when no grasp is feasible.
GRASP_TILTS_DEG = (0.0, 10.0, -10.0, 20.0, -20.0, 30.0, -30.0)
#: Plan score per radian of wrist turn (against 1 per lower pre-grasp height, 0.1 per degree of tilt).
ROLL_COST = 0.2
#: Orientation weight of tilted grasps, relative to ``orientation_weight``, and how much higher (m)
#: they grasp the block (the tilted pads' lower corners keep clear of the table).
TILTED_WEIGHT = 0.2
TILTED_RAISE = 0.003
#: Lift target of the grasp point above the block centre, m; the lift also pulls the block in to
#: at most LIFT_MAX_RADIUS from the base (shoulder torque at full reach).
LIFT_HEIGHT = 0.12
LIFT_MAX_RADIUS = 0.24
#: The grasp point aims this far (m) off the block centre toward the fixed jaw: the grasp point is
#: where a held block's centre sits, touching the fixed pad, so without the offset the fixed pad
#: would land on the block's edge; closing pushes the block onto the fixed pad.
GRASP_OFFSET = 0.006
#: Largest commanded change per control step, radians (arm joints): ~1.2 rad/s at 10 Hz. The
#: step toward a joint target is scaled down as a whole (a straight line in joint space).
MAX_STEP_RAD = 0.12
#: Phase switching tolerances (m) and step budgets (10 Hz steps).
APPROACH_TOL = 0.012
DESCEND_TOL = 0.006
CLOSE_STEPS = 5
PHASE_TIMEOUT = 40
DESCEND_TIMEOUT = 15
#: The plan is kept while the block stays within this distance (m) and yaw (rad) of the pose it
#: was made for; beyond it the expert re-plans (or, once descending, retreats and re-plans).
REPLAN_DISTANCE = 0.005
REPLAN_YAW = np.radians(5.0)
#: (shoulder_lift, elbow_flex, wrist_flex) starting guesses for the grasp IK, radians.
NOMINAL_STARTS = ((0.0, 0.0, 1.2), (-0.8, 0.8, 1.2), (0.4, -0.6, 1.2), (-1.2, 1.3, 1.4))
#: Clearance (m) above the table the grasp point first rises to before moving over the block,
#: so the arm leaving its folded home pose does not sweep the block away.
CLEARANCE_HEIGHT = 0.06
#: Grasp-plan acceptance: grasp-pose position residual (m), jaw tilt from vertical (deg), closing
#: axis error (deg); pre-grasp position residual (m); penetration depth that counts as a collision (m).
MAX_GRASP_RESIDUAL = 0.002
MAX_GRASP_TILT_DEG = 8.0
MAX_AXIS_ERR_DEG = 12.0
MAX_PRE_RESIDUAL = 0.003
COLLISION_DEPTH = 0.0005
DESCENT_WAYPOINTS = 3

_Z_UP = np.array([0.0, 0.0, 1.0])


@dataclass
class GraspPlan:
    """One grasp attempt, solved for one block pose (world frame, m / rad).

    ``q_pre`` / ``q_grasp`` (6,) and ``descent`` (list of (6,)) are joint targets, MuJoCo radians,
    gripper open; ``pre_pos`` / ``grasp_pos`` (3,) the grasp point there; ``face`` 0..3 the block
    face pair the jaws close across; ``axis`` (3,) the planned closing axis (unit; that face pair's
    normal, turned with the gripper's tilt when the plan tilts it).
    """

    block: np.ndarray
    yaw: float
    face: int
    axis: np.ndarray
    grasp_pos: np.ndarray
    pre_pos: np.ndarray
    q_grasp: np.ndarray
    q_pre: np.ndarray
    descent: list = field(default_factory=list)
    score: float = 0.0


def block_yaw(block_quat) -> float:
    """Yaw (rad, about world z) of a block quaternion (4,) (w, x, y, z)."""
    w, x, y, z = (float(v) for v in block_quat)
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def _rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """``v`` (3,) rotated by ``angle`` rad about the unit ``axis`` (3,) (Rodrigues)."""
    c, s = np.cos(angle), np.sin(angle)
    return v * c + _cross(axis, v) * s + axis * (axis @ v) * (1 - c)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a x b for two (3,) vectors (np.cross is ~20x slower on tiny arrays)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(a @ b, -1.0, 1.0))))


class ScriptedExpert:
    """Plan-then-track pick-up controller; see the module docstring.

    Args:
        model: the compiled scene (``so101_mujoco_utils.load_model()``), used for kinematics and
            collision checks on a private ``MjData``; the simulation's own data is never touched.
        damping: DLS damping lambda.
        orientation_weight: weight of the orientation error against the position error (m/rad).
        control_hz: the env's control rate (Hz; ``env.unwrapped.control_hz``). The step cap and
            the phase step budgets above are per 10 Hz step; they are scaled so the expert moves at
            the same joint speed (rad/s) and waits the same seconds at any rate (10 Hz: unchanged).
        close_tol: the jaws start closing once the grasp point is this close (m) to the plan's grasp
            pose: at the last descent waypoint with the default :data:`DESCEND_TOL`, on any waypoint
            when larger (a lenient close: a DAgger student hovering ~1 cm away is labelled "close";
            ``record_dataset.py --expert-close-tol``).
    """

    def __init__(self, model: mujoco.MjModel, damping: float = 0.02, orientation_weight: float = 0.15,
                 control_hz: float = u.CONTROL_HZ, close_tol: float = DESCEND_TOL):
        self.close_tol = float(close_tol)
        scale = float(control_hz) / u.CONTROL_HZ
        self.max_step_rad = MAX_STEP_RAD / scale
        self.close_steps, self.phase_timeout = round(CLOSE_STEPS * scale), round(PHASE_TIMEOUT * scale)
        self.descend_timeout = round(DESCEND_TIMEOUT * scale)
        self.model = model
        self.data = mujoco.MjData(model)
        self.ids = u.SceneIds.from_model(model)
        self.damping = damping
        self.w_rot = orientation_weight
        self._roll_jnt = model.joint(u.JOINT_NAMES[4]).id
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))
        self.last_ik_error = 0.0
        self.reset()

    def reset(self) -> None:
        """Start a new episode: no plan, phase = rise (then approach)."""
        self.phase = "rise"
        self.phase_steps = 0
        self.plan_: GraspPlan | None = None
        self.attempts = 0  # grasp plans made this episode (a new one after a failure or a moved block)
        self.failures = 0  # grasp attempts that failed and ended in a retreat
        self.failed_faces: list[tuple[np.ndarray, int]] = []  # (block pos, face) of failed attempts
        self.q_target: np.ndarray | None = None  # joint target of rise / lift / retreat
        self.waypoint = 0
        self.plan_wait = 0  # approach steps before the next planning try
        self.rest_z = None

    # ------------------------------------------------------------------ kinematics
    def _forward(self, q: np.ndarray) -> None:
        self.data.qpos[self.ids.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)

    def grasp_pose(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Forward kinematics: (grasp point (3,) world m, gripper rotation matrix (3, 3)) at ``q``."""
        self._forward(q)
        return self.data.site_xpos[self.ids.gripper_site].copy(), self.data.xmat[self.ids.gripper_body].reshape(3, 3).copy()

    def _ik(self, q_start: np.ndarray, target: np.ndarray, axis: np.ndarray | None, iters: int,
            w_axis: float, w_up: float, up: np.ndarray = _Z_UP, tol: float = 1e-4) -> tuple[np.ndarray, float]:
        """DLS on the 5 arm joints: grasp point at ``target`` (3,), closing axis (gripper x) along
        ``axis`` (unit (3,), or None: free) with weight ``w_axis``, gripper z along ``up`` (unit
        (3,), default world z: jaws down) with weight ``w_up``. Returns (q (6,) clipped to the joint
        limits, position residual m)."""
        q = np.array(q_start, dtype=np.float64)
        dofs = self.ids.dof_adr[:5]
        lo, hi = u.JOINT_LIMITS_RAD[0, :5], u.JOINT_LIMITS_RAD[1, :5]
        damp = self.damping**2 * np.eye(5)
        terms = [(0, axis, w_axis), (2, up, w_up)]
        terms = [t for t in terms if t[1] is not None and t[2] > 0]
        jac, err = np.zeros((3 + 3 * len(terms), 5)), np.zeros(3 + 3 * len(terms))
        site, body = self.ids.gripper_site, self.ids.gripper_body
        for _ in range(iters):
            self._forward(q)
            rot = self.data.xmat[body].reshape(3, 3)
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, site)
            jr = self._jacr[:, dofs]
            jac[:3], err[:3] = self._jacp[:, dofs], target - self.data.site_xpos[site]
            for i, (col, want, w) in enumerate(terms, start=1):  # rotation error and its Jacobian, perpendicular to vec
                vec = rot[:, col]
                jac[3 * i : 3 * i + 3] = w * (jr - vec[:, None] * (vec @ jr))
                err[3 * i : 3 * i + 3] = w * _cross(vec, want)
            if err @ err < tol * tol:
                break
            q[:5] = np.clip(q[:5] + np.linalg.solve(jac.T @ jac + damp, jac.T @ err), lo, hi)
        pos, _ = self.grasp_pose(q)
        return q, float(np.linalg.norm(target - pos))

    def solve_ik(self, q_start: np.ndarray, target_pos: np.ndarray, block_yaw: float, iters: int = 30) -> np.ndarray:
        """Joint angles (6,) putting the grasp point at ``target_pos`` ((3,) world, m) with the jaws
        pointing down (gripper body -z = world -z) and closing along the block's horizontal face
        normal (yaw ``block_yaw`` rad + k * 90 deg) nearest to the closing axis at ``q_start``.

        Damped least squares on the 5 arm joints, starting from ``q_start`` (radians, MuJoCo
        frame); the gripper angle is copied from ``q_start``. Result clipped to joint limits;
        ``self.last_ik_error`` is the position residual (m).
        """
        _, rot = self.grasp_pose(np.asarray(q_start, dtype=np.float64))
        dirs = [np.array([np.cos(block_yaw + k * np.pi / 2), np.sin(block_yaw + k * np.pi / 2), 0.0]) for k in range(4)]
        axis = max(dirs, key=lambda d: d @ rot[:, 0])
        w = 0.5 * self.w_rot
        q, self.last_ik_error = self._ik(q_start, np.asarray(target_pos, dtype=np.float64), axis, iters, w, w)
        return q

    # ------------------------------------------------------------------ planning
    def _collision_depth(self, q: np.ndarray, block_pos: np.ndarray, block_quat) -> float:
        """Deepest penetration (m, >= 0) at arm pose ``q`` with the block at ``block_pos``, except the
        block resting on the table."""
        a = self.ids.block_qpos_adr
        self.data.qpos[self.ids.qpos_adr] = q
        self.data.qpos[a : a + 3] = block_pos
        self.data.qpos[a + 3 : a + 7] = block_quat
        mujoco.mj_fwdPosition(self.model, self.data)
        deepest = 0.0
        table, block = self.ids.table_geom, self.ids.block_geom
        for i in range(self.data.ncon):
            c = self.data.contact[i]
            if {int(c.geom1), int(c.geom2)} != {table, block}:
                deepest = max(deepest, -float(c.dist))
        return deepest

    def _roll_to(self, q: np.ndarray, axis: np.ndarray) -> np.ndarray | None:
        """``q`` with wrist_roll turned so the closing axis points along ``axis`` (jaws about
        vertical); None when no roll within the joint limits does."""
        _, rot = self.grasp_pose(q)
        x = rot[:, 0] - rot[:, 2] * (rot[:, 2] @ axis)
        sign = float(np.sign(self.data.xaxis[self._roll_jnt] @ rot[:, 2])) or 1.0
        phi = float(np.arctan2(_cross(x, axis) @ rot[:, 2], x @ axis))
        lo, hi = u.JOINT_LIMITS_RAD[:, 4]
        options = [q[4] + sign * phi + k * 2 * np.pi for k in (-1, 0, 1)]
        options = [r for r in options if lo <= r <= hi]
        if not options:
            return None
        out = q.copy()
        out[4] = min(options, key=lambda r: abs(r - q[4]))
        return out

    def _base_solution(self, q_now: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Grasp point at ``target`` with the jaws vertical, closing axis free: the best of DLS runs
        from the nominal starts facing the target."""
        pan = np.arctan2(target[0], target[1])
        best, best_err = None, np.inf
        for lift, elbow, flex in NOMINAL_STARTS:
            seed = np.array([pan, lift, elbow, flex, q_now[4], GRIPPER_OPEN])
            q, err = self._ik(seed, target, None, 25, 0.0, self.w_rot, tol=3e-4)
            _, rot = self.grasp_pose(q)
            err += 0.01 * (1.0 - rot[2, 2])  # prefer vertical jaws
            if err < best_err:
                best, best_err = q, err
        return best

    def _plan_face(self, q0: np.ndarray, block_pos, block_quat, yaw: float, face: int,
                   tilt_deg: float) -> GraspPlan | None:
        """The grasp with the jaws closing across block face pair ``face`` (0..3) and the gripper
        tilted ``tilt_deg`` about the horizontal perpendicular to the block's direction from the
        base (positive: wrist leaning outward, jaws pointing toward the base), solved from ``q0``
        (jaws vertical and turned to that face pair); None when it is out of reach, outside the
        joint limits or collides. Lower ``score`` is better (ROLL_COST * wrist turn added by the
        caller)."""
        block_pos = np.asarray(block_pos, dtype=np.float64)
        ang = yaw + face * np.pi / 2
        normal = np.array([np.cos(ang), np.sin(ang), 0.0])
        radial = block_pos[:2] / max(float(np.linalg.norm(block_pos[:2])), 1e-9)
        tangent = np.array([-radial[1], radial[0], 0.0])
        axis, up = _rotate(normal, tangent, np.radians(tilt_deg)), _rotate(_Z_UP, tangent, np.radians(tilt_deg))
        grasp_pos = block_pos - GRASP_OFFSET * normal + [0.0, 0.0, TILTED_RAISE if tilt_deg else 0.0]
        # tilted, the closing axis and the tilt cannot both be exact (the grasp point is off the
        # wrist's plane): weigh them less and accept a few degrees on each
        w = self.w_rot if tilt_deg == 0 else TILTED_WEIGHT * self.w_rot
        q_g, err = self._ik(q0, grasp_pos, axis, 60, w, w, up)
        _, rot_g = self.grasp_pose(q_g)
        if (err > MAX_GRASP_RESIDUAL or _angle(rot_g[:, 2], _Z_UP) > abs(tilt_deg) + MAX_GRASP_TILT_DEG
                or _angle(rot_g[:, 0], axis) > MAX_AXIS_ERR_DEG):
            return None
        q_g[u.GRIPPER_INDEX] = GRIPPER_OPEN
        if self._collision_depth(q_g, block_pos, block_quat) > COLLISION_DEPTH:
            return None
        for rank, h in enumerate(PRE_GRASP_HEIGHTS):
            pre_pos = grasp_pos + h * up
            q_p, err = self._ik(q_g, pre_pos, axis, 30, w, 0.3 * w, up)
            _, rot = self.grasp_pose(q_p)
            pre_tilt, axis_err = _angle(rot[:, 2], rot_g[:, 2]), _angle(rot[:, 0], rot_g[:, 0])
            if err <= MAX_PRE_RESIDUAL and pre_tilt <= MAX_PRE_TILT_DEG and axis_err <= MAX_AXIS_ERR_DEG:
                break
        else:
            return None
        q_p[u.GRIPPER_INDEX] = GRIPPER_OPEN
        descent = self._descent(q_p, pre_pos, grasp_pos, (axis, up, w), block_pos, block_quat)
        if descent is None or self._collision_depth(q_p, block_pos, block_quat) > COLLISION_DEPTH:
            return None
        score = rank + abs(tilt_deg) / 10.0 + pre_tilt / 10.0
        return GraspPlan(block_pos.copy(), yaw, face, axis, grasp_pos, pre_pos, q_g, q_p, descent, score)

    def _descent(self, q_pre, pre_pos, grasp_pos, frame, block_pos, block_quat) -> list | None:
        """Joint waypoints (list of (6,)) from the pre-grasp pose in a straight line to the grasp
        pose (the last one is the grasp pose); ``frame`` = (closing axis, up, orientation weight).
        None when one collides."""
        axis, up, w = frame
        out, q = [], q_pre
        for s in np.linspace(0.0, 1.0, DESCENT_WAYPOINTS + 1)[1:]:
            q, _ = self._ik(q, pre_pos + s * (grasp_pos - pre_pos), axis, 12, w, w, up, tol=3e-4)
            q[u.GRIPPER_INDEX] = GRIPPER_OPEN
            if self._collision_depth(q, block_pos, block_quat) > COLLISION_DEPTH:
                return None
            out.append(q)
        return out

    def plan(self, q_now: np.ndarray, block_pos: np.ndarray, block_quat: np.ndarray) -> GraspPlan | None:
        """Choose and solve a grasp for the block at ``block_pos`` ((3,) world, m) / ``block_quat``
        ((4,) w x y z), from the measured joints ``q_now`` ((6,) MuJoCo rad).

        Tries the four face pairs with vertical jaws, then (only if none is feasible) with the
        gripper tilted by each of :data:`GRASP_TILTS_DEG` in turn, skipping face pairs that already
        failed for a block within :data:`REPLAN_DISTANCE` of here or that wrist_roll cannot reach;
        returns the feasible :class:`GraspPlan` with the lowest score (highest pre-grasp point,
        least tilt, least wrist turn), or None when none is feasible. Face pairs are solved in
        order of wrist turn, and one whose turn alone costs more than the best score so far is
        skipped.
        """
        block_pos = np.asarray(block_pos, dtype=np.float64)
        yaw = block_yaw(block_quat)
        q_base = self._base_solution(np.asarray(q_now, dtype=np.float64), block_pos)
        starts = []
        for f in range(4):
            if any(f == face and np.linalg.norm(p[:2] - block_pos[:2]) < REPLAN_DISTANCE for p, face in self.failed_faces):
                continue
            ang = yaw + f * np.pi / 2
            q0 = self._roll_to(q_base, np.array([np.cos(ang), np.sin(ang), 0.0]))
            if q0 is not None:
                starts.append((ROLL_COST * abs(q0[4] - q_base[4]), f, q0))
        starts.sort(key=lambda s: s[:2])
        best = None
        for tilt in GRASP_TILTS_DEG:
            for turn, f, q0 in starts:
                if best is not None and turn >= best.score:
                    break
                p = self._plan_face(q0, block_pos, block_quat, yaw, f, tilt)
                if p is not None:
                    p.score += turn
                    best = p if best is None or p.score < best.score else best
            if best is not None:
                break
        self.last_ik_error = 0.0 if best is not None else np.inf
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
        block_quat = np.asarray(block_quat, dtype=np.float64)
        if self.rest_z is None:
            self.rest_z = float(block_pos[2])
        grasp_now, _ = self.grasp_pose(q_now)
        self.phase_steps += 1
        target, grip = getattr(self, f"_{self.phase}")(q_now, grasp_now, block_pos, block_quat)
        return self._step_toward(q_now, target, grip)

    def _step_toward(self, q_now: np.ndarray, target: np.ndarray, grip: float) -> np.ndarray:
        """Bounded step from the measured joints toward ``target`` (scaled as a whole so the largest
        joint change is at most ``max_step_rad``), gripper set to ``grip``."""
        delta = target[:5] - q_now[:5]
        biggest = float(np.abs(delta).max())
        if biggest > self.max_step_rad:
            delta *= self.max_step_rad / biggest
        action = q_now.copy()
        action[:5] = q_now[:5] + delta
        action[u.GRIPPER_INDEX] = grip
        return u.clip_to_joint_limits(action).astype(np.float32)

    def _enter(self, phase: str) -> None:
        self.phase = phase
        self.phase_steps = 0

    def _moved(self, block_pos: np.ndarray, block_quat: np.ndarray, dist: float = REPLAN_DISTANCE) -> bool:
        p = self.plan_
        dyaw = (block_yaw(block_quat) - p.yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4
        return bool(np.linalg.norm(block_pos[:2] - p.block[:2]) > dist or abs(dyaw) > REPLAN_YAW)

    def _new_plan(self, q_now, block_pos, block_quat) -> None:
        self.plan_ = self.plan(q_now, block_pos, block_quat)
        if self.plan_ is None and self.failed_faces:  # every face failed here: try them all again
            self.failed_faces = []
            self.plan_ = self.plan(q_now, block_pos, block_quat)
        self.attempts += 1
        self.waypoint = 0

    # phase handlers: (q_now, grasp point now, block pos, block quat) -> (joint target (6,), gripper)
    def _rise(self, q_now, grasp_now, block_pos, block_quat):
        far = np.linalg.norm(grasp_now[:2] - block_pos[:2]) > 0.04
        if self.q_target is None and far and grasp_now[2] < CLEARANCE_HEIGHT - 0.01:
            up = np.array([grasp_now[0], grasp_now[1], CLEARANCE_HEIGHT + 0.02])
            self.q_target, _ = self._ik(q_now, up, None, 30, 0.0, 0.5 * self.w_rot)
        if self.q_target is None or grasp_now[2] >= CLEARANCE_HEIGHT - 0.01 or self.phase_steps > self.phase_timeout:
            self.q_target = None
            self._enter("approach")
            return self._approach(q_now, grasp_now, block_pos, block_quat)
        return self.q_target, float(q_now[u.GRIPPER_INDEX])  # jaws as they are

    def _approach(self, q_now, grasp_now, block_pos, block_quat):
        if self.plan_ is not None and self._moved(block_pos, block_quat):
            self.plan_, self.plan_wait = None, 0
        self.plan_wait -= 1
        if self.plan_ is None and self.plan_wait < 0:
            self._new_plan(q_now, block_pos, block_quat)
            self.plan_wait = self.close_steps if self.plan_ is None else 0  # none feasible: retry in 0.5 s
        p = self.plan_
        if p is None:  # nothing feasible (not seen inside the spawn region): hover above the block
            self.q_target = self.q_target if self.q_target is not None else self.solve_ik(
                q_now, block_pos + [0.0, 0.0, CLEARANCE_HEIGHT], block_yaw(block_quat))
            return self.q_target, GRIPPER_OPEN
        self.q_target = None
        if np.linalg.norm(grasp_now - p.pre_pos) < APPROACH_TOL or self.phase_steps > self.phase_timeout:
            self._enter("descend")
        return p.q_pre, GRIPPER_OPEN

    def _descend(self, q_now, grasp_now, block_pos, block_quat):
        p = self.plan_
        if p is None or self._moved(block_pos, block_quat, 2 * REPLAN_DISTANCE) or self.phase_steps > self.descend_timeout:
            return self._fail(q_now, grasp_now, block_pos, block_quat)
        if self.waypoint < len(p.descent) - 1 and np.abs(p.descent[self.waypoint][:5] - q_now[:5]).max() < 0.05:
            self.waypoint += 1
        last = self.waypoint == len(p.descent) - 1
        if np.linalg.norm(grasp_now - p.grasp_pos) < self.close_tol and (last or self.close_tol > DESCEND_TOL):
            self._enter("close")  # a lenient close_tol closes on the way down; the arm goes on to q_grasp
        return p.descent[self.waypoint], GRIPPER_OPEN

    def _close(self, q_now, grasp_now, block_pos, block_quat):
        if self.phase_steps >= self.close_steps:
            if q_now[u.GRIPPER_INDEX] < GRIPPER_EMPTY:  # closed on nothing
                return self._fail(q_now, grasp_now, block_pos, block_quat)
            self._enter("lift")
            return self._lift(q_now, grasp_now, block_pos, block_quat)
        return self.plan_.q_grasp, GRIPPER_CLOSED

    def _lift(self, q_now, grasp_now, block_pos, block_quat):
        if self.q_target is None:
            xy = self.plan_.block[:2]
            xy = xy * min(1.0, LIFT_MAX_RADIUS / max(float(np.linalg.norm(xy)), 1e-9))
            up = np.array([xy[0], xy[1], self.rest_z + LIFT_HEIGHT])
            self.q_target, _ = self._ik(q_now, up, self.plan_.axis, 25, 0.3 * self.w_rot, 0.3 * self.w_rot, tol=3e-4)
        dropped = block_pos[2] < self.rest_z + 0.01 and grasp_now[2] > block_pos[2] + 0.03
        if dropped or q_now[u.GRIPPER_INDEX] < GRIPPER_EMPTY or self.phase_steps > self.phase_timeout:
            return self._fail(q_now, grasp_now, block_pos, block_quat)
        return self.q_target, GRIPPER_CLOSED

    def _fail(self, q_now, grasp_now, block_pos, block_quat):
        """The attempt failed: remember its face (if the block stayed put) and retreat upward."""
        p = self.plan_
        self.failures += 1
        if p is not None and np.linalg.norm(block_pos[:2] - p.block[:2]) < REPLAN_DISTANCE:
            self.failed_faces.append((p.block.copy(), p.face))
        up = grasp_now + [0.0, 0.0, 0.04]
        self.q_target, _ = self._ik(q_now, up, None if p is None else p.axis, 20, 0.3 * self.w_rot, self.w_rot)
        self.plan_ = None
        self._enter("retreat")
        return self._retreat(q_now, grasp_now, block_pos, block_quat)

    def _retreat(self, q_now, grasp_now, block_pos, block_quat):
        if np.abs(self.q_target[:5] - q_now[:5]).max() < 0.05 or self.phase_steps > self.close_steps * 2:
            self.q_target = None
            self._enter("approach")
        return (q_now if self.q_target is None else self.q_target), GRIPPER_OPEN

    def act_in_env(self, env) -> np.ndarray:
        """Convenience: :meth:`act` with the measured state of a ``SO101PickPlaceEnv`` (or a
        wrapper of one). Returns MuJoCo-radian targets; with ``smolvla_normalize=True`` envs,
        normalize them with ``so101_mujoco_utils.normalize_action_for_smolvla`` first."""
        base = env.unwrapped
        a = base.ids.block_qpos_adr
        return self.act(base.joint_positions, base.data.qpos[a : a + 3], base.data.qpos[a + 3 : a + 7])
