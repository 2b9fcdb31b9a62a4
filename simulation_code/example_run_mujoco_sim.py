"""Open the SO-101 scene in MuJoCo's viewer with no policy (the arm holds its home pose targets).

Copy-paste (from simulation_code/):

    python example_run_mujoco_sim.py                         # interactive viewer (needs a display)
    python example_run_mujoco_sim.py --headless --steps 50 --video ../outputs/example.mp4

Headless it simulates ``--steps`` control steps (0.1 s each), prints the joint angles and the
block position at the end, and optionally writes an mp4 of the chosen camera.
"""

from __future__ import annotations

import argparse
import sys

from so101_sim import mujoco_rendering

import numpy as np

from so101_sim import cli_args
from so101_sim import rollout_utils as ru
from so101_sim import so101_mujoco_utils as u
from so101_sim.so101_mujoco_utils import mujoco


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--headless", action="store_true", help="no viewer; simulate --steps control steps")
    p.add_argument("--steps", type=cli_args.positive_int, default=100, help="control steps to simulate headless (0.1 s each)")
    p.add_argument("--video", type=cli_args.output_path, default=None, help="headless only: write an mp4 here")
    p.add_argument("--camera", default=u.CAMERAS["camera3"], choices=sorted(u.CAMERAS.values()), help="video camera")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    model, data, ids = u.make_scene()
    if not args.headless:
        if not mujoco_rendering.has_display():
            print("No display found: use --headless (and --video to see the result).", file=sys.stderr)
            return 2
        u.run_viewer(model, data)
        return 0
    renderer = u.CameraRenderer(model, 480, 640) if args.video else None
    video = ru.VideoWriter(args.video) if args.video else None
    for _ in range(args.steps):
        mujoco.mj_step(model, data, nstep=u.PHYSICS_SUBSTEPS)
        if video:
            video.append(renderer.render(data, args.camera))
    if video:
        print(f"video -> {video.close()}")
        renderer.close()
    q = data.qpos[ids.qpos_adr]
    print(f"after {args.steps} steps ({args.steps / u.CONTROL_HZ:.1f} s): joints (deg) "
          f"{np.round(np.degrees(q), 2).tolist()}, block (m) {np.round(u.block_position(data, ids), 4).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
