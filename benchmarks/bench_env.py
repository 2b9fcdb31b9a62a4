"""Environment speed, side by side in one run: physics, state-only env, cameras, naive renderer, peer env.

    .venv/bin/python benchmarks/bench_env.py [--seconds 5]

Rows (each a fresh env, the same action sequence: small random joint targets around the home
pose, seeded):
  raw mj_step x 50          mujoco.mj_step(nstep=50) on our scene: the physics floor of one env step
  env, state only           gym.make("SO101PickPlace-v0", obs_mode="state")
  env, 3 cameras 256x256    obs_mode="images": decimated meshes, no shadows/MSAA on software GL
  naive 3 cameras 256x256   the same with full meshes, shadows and 4x MSAA (MuJoCo defaults)
  peer: lerobot-env-so101   its SO101PickCube env (EE-delta actions through IK), state only and
                            with its one 128x128 camera as shipped (8x MSAA, shadows)
Columns: env steps per wall second, simulated seconds per wall second, and the ratios the
issue asks for. Prints the GL backend. Numbers vary +-15% between runs on a shared machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


from so101_sim import mujoco_rendering  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from so101_sim import envs  # noqa: E402,F401
from so101_sim import so101_mujoco_utils as u  # noqa: E402
from so101_sim.so101_mujoco_utils import mujoco  # noqa: E402


def actions(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    home = u.home_pose_rad()
    return u.clip_to_joint_limits(home + rng.normal(0, 0.2, (n, 6))).astype(np.float32)


def time_loop(step, seconds: float, reset=None) -> float:
    """Calls step(i) until ``seconds`` of wall time have passed; returns calls per second."""
    step(0)  # warm-up (first render allocates the GL context)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step(n)
        n += 1
        if reset is not None and n % 100 == 0:
            reset()
    return n / (time.perf_counter() - t0)


def bench_raw(seconds):
    model = u.load_model()
    data = mujoco.MjData(model)
    ids = u.SceneIds.from_model(model)
    u.reset_scene(model, data, ids, u.BLOCK_DEFAULT_POS)
    acts = actions(100_000)

    def step(i):
        data.ctrl[ids.actuator_ids] = acts[i % len(acts)]
        mujoco.mj_step(model, data, nstep=u.PHYSICS_SUBSTEPS)

    return time_loop(step, seconds), u.PHYSICS_TIMESTEP * u.PHYSICS_SUBSTEPS


def bench_env(seconds, **kwargs):
    env = gym.make("SO101PickPlace-v0", **kwargs)
    env.reset(seed=0)
    acts = actions(100_000)
    rate = time_loop(lambda i: env.step(acts[i % len(acts)]), seconds, reset=lambda: env.reset(seed=0))
    env.close()
    return rate, 1.0 / u.CONTROL_HZ


def bench_peer(seconds, image_obs):
    from lerobot_env_so101.pick_env import SO101PickCubeGymEnv

    env = SO101PickCubeGymEnv(image_obs=image_obs)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    acts = rng.uniform(env.action_space.low, env.action_space.high, (10_000, *env.action_space.shape)).astype(np.float32)
    rate = time_loop(lambda i: env.step(acts[i % len(acts)]), seconds, reset=lambda: env.reset(seed=0))
    dt = float(env._control_dt)  # noqa: SLF001  (its control period; 0.1 s by default)
    env.close()
    return rate, dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="wall seconds per row")
    args = parser.parse_args()
    print(f"GL backend: MUJOCO_GL={mujoco_rendering.choose_gl_backend(verbose=False)}, "
          f"software rasterizer assumed: {mujoco_rendering.is_software_gl()}")
    rows = [
        ("raw mj_step x 50", bench_raw(args.seconds)),
        ("env, state only", bench_env(args.seconds, obs_mode="state")),
        ("env, 3 cameras 256x256", bench_env(args.seconds, obs_mode="images")),
        ("naive 3 cameras 256x256", bench_env(args.seconds, obs_mode="images", fast_render=False, decimate_meshes=False)),
        ("peer: lerobot-env-so101, state", bench_peer(args.seconds, image_obs=False)),
        ("peer: lerobot-env-so101, 1 camera 128", bench_peer(args.seconds, image_obs=True)),
    ]
    rate = {name: r for name, (r, _) in rows}
    print(f"\n| {'configuration':<38} | {'env steps/s':>11} | {'sim s / wall s':>14} |")
    print(f"|{'-' * 40}|{'-' * 13}|{'-' * 16}|")
    for name, (r, dt) in rows:
        print(f"| {name:<38} | {r:11.1f} | {r * dt:14.2f} |")
    print(f"\nstate-only env / raw physics: {rate['env, state only'] / rate['raw mj_step x 50']:.2f}x (goal >= 0.8x)")
    print(f"3 cameras, ours / naive:      {rate['env, 3 cameras 256x256'] / rate['naive 3 cameras 256x256']:.1f}x (goal >= 10x)")


if __name__ == "__main__":
    main()
