"""Hold the SO-101 at its home (starting) pose and report how well the servos track it.

Copy-paste (from simulation_code/):

    python run_mujoco_simulation_startingpose.py                  # viewer (needs a display)
    python run_mujoco_simulation_startingpose.py --headless --steps 30

Every control step commands the home pose (so101_mujoco_utils.HOME_POSE_LEROBOT, converted to
MuJoCo radians). Headless it prints the home pose in the three frames (MuJoCo radians, LeRobot
calibrated units, SmolVLA degrees) and the largest tracking error over the run, in degrees.
"""

from __future__ import annotations

import argparse
import sys

from so101_sim import mujoco_rendering

import numpy as np

from so101_sim import cli_args
from so101_sim import so101_mujoco_utils as u
from so101_sim.so101_mujoco_utils import mujoco


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--headless", action="store_true", help="no viewer; simulate --steps control steps")
    p.add_argument("--steps", type=cli_args.positive_int, default=30, help="control steps to hold the pose headless (0.1 s each)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    model, data, ids = u.make_scene()
    home = u.home_pose_rad()
    if not args.headless:
        if not mujoco_rendering.has_display():
            print("No display found: use --headless.", file=sys.stderr)
            return 2
        u.run_viewer(model, data, before_step=lambda: data.ctrl.__setitem__(ids.actuator_ids, home))
        return 0
    worst = np.zeros(u.NUM_JOINTS)
    for _ in range(args.steps):
        data.ctrl[ids.actuator_ids] = home
        mujoco.mj_step(model, data, nstep=u.PHYSICS_SUBSTEPS)
        worst = np.maximum(worst, np.abs(data.qpos[ids.qpos_adr] - home))
    print("home pose, MuJoCo (rad):      ", np.round(home, 4).tolist())
    print("home pose, LeRobot (deg/0-100):", np.round(u.mujoco_to_lerobot(home), 2).tolist())
    print("home pose, SmolVLA (deg):     ", np.round(u.mujoco_to_smolvla_degrees(home), 2).tolist())
    print(f"max tracking error over {args.steps} steps (deg): {np.round(np.degrees(worst), 3).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
