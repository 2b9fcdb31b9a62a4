"""Joint tracking under gravity for candidate position-servo gains (how ACTUATOR_KP/KV were chosen).

    .venv/bin/python benchmarks/bench_actuators.py

For each (kp, kv) it holds two poses for 2 s of simulated time (the home pose and a
mid-workspace pose with the arm reaching over the default block position), then steps every
joint target by 0.2 rad toward mid-range, and prints per pose: the steady-state tracking error (max over joints,
degrees), the peak actuator force (N m, the servo limit is 3.35) and, for the step, the time until
every body joint stays within 1 degree of its target (1.5 = never) and the overshoot. Values are from MuJoCo at the scene's 2 ms implicit-fast step.
"""

from __future__ import annotations

import sys
from pathlib import Path


import numpy as np  # noqa: E402

from so101_sim import so101_mujoco_utils as u  # noqa: E402
from so101_sim.so101_mujoco_utils import mujoco  # noqa: E402

SETTLE_BAND_DEG = 1.0
CANDIDATES = [(17.8, 0.0), (50.0, 1.0), (100.0, 2.0), (998.22, 2.731)]


def mid_workspace_pose(model) -> np.ndarray:
    from so101_sim.scripted_expert import ScriptedExpert

    expert = ScriptedExpert(model)
    q = expert.solve_ik(u.home_pose_rad(), u.BLOCK_DEFAULT_POS + [0, 0, 0.07], 0.0)
    q[u.GRIPPER_INDEX] = 0.8
    return q


def hold(model, data, ids, target, seconds=2.0):
    """Hold ``target`` (6,) rad; returns (steady error deg (6,), peak |force| N m)."""
    data.qpos[ids.qpos_adr] = target
    data.qvel[:] = 0
    data.ctrl[ids.actuator_ids] = target
    mujoco.mj_forward(model, data)
    peak = 0.0
    for _ in range(int(seconds / model.opt.timestep)):
        mujoco.mj_step(model, data)
        peak = max(peak, float(np.abs(data.actuator_force[ids.actuator_ids]).max()))
    return np.degrees(np.abs(data.qpos[ids.qpos_adr] - target)), peak


def step_response(model, data, ids, start, delta=0.2, seconds=1.5):
    """From a held ``start`` step every target by ``delta`` rad toward the middle of its range
    (away from the limits): returns (settling time s, overshoot %) over the body joints; settled =
    every body joint stays within SETTLE_BAND_DEG of its target."""
    hold(model, data, ids, start, 1.0)
    target = u.clip_to_joint_limits(start - delta * np.sign(start))
    data.ctrl[ids.actuator_ids] = target
    n = int(seconds / model.opt.timestep)
    traj = np.zeros((n, 6))
    for i in range(n):
        mujoco.mj_step(model, data)
        traj[i] = data.qpos[ids.qpos_adr]
    moved = target - start
    progress = (traj - start) / np.where(np.abs(moved) > 1e-9, moved, 1.0)
    j = slice(0, 5)  # body joints (the gripper is tested by grasping)
    overshoot = max(0.0, float((progress[:, j] - 1).max())) * 100
    outside = np.any(np.abs(traj[:, j] - target[j]) > np.radians(SETTLE_BAND_DEG), axis=1)
    settle = (np.nonzero(outside)[0].max() + 1) * model.opt.timestep if outside.any() else 0.0
    return settle, overshoot


def main() -> None:
    print(f"{'kp':>7} {'kv':>6} | {'pose':<5} | {'steady err (deg)':>16} | {'peak force (N m)':>16} | "
          f"{'settle to 1 deg (s)':>19} | {'overshoot':>9}")
    print("-" * 92)
    for kp, kv in CANDIDATES:
        model = u.load_model(kp=kp, kv=kv)
        data = mujoco.MjData(model)
        ids = u.SceneIds.from_model(model)
        for name, pose in (("home", u.home_pose_rad()), ("mid", mid_workspace_pose(model))):
            err, peak = hold(model, data, ids, pose)
            settle, over = step_response(model, data, ids, pose)
            print(f"{kp:7.1f} {kv:6.3f} | {name:<5} | {err[:5].max():16.2f} | {peak:16.2f} | "
                  f"{settle:19.2f} | {over:8.0f}%")
    print(f"\nchosen: kp={u.ACTUATOR_KP}, kv={u.ACTUATOR_KV} (so101_mujoco_utils.ACTUATOR_KP/KV)")


if __name__ == "__main__":
    main()
