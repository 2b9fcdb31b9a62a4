"""Environment speed, side by side in one run: physics, state-only env, cameras, naive renderer, peer envs.

    .venv/bin/python benchmarks/bench_env.py [--seconds 5] [--no-nexus-install]

Rows (each a fresh env, the same action sequence: small random joint targets around the home
pose, seeded):
  raw mj_step x 50          mujoco.mj_step(nstep=50) on our scene: the physics floor of one env step
  env, state only           gym.make("SO101PickPlace-v0", obs_mode="state")
  env, 3 cameras 256x256    obs_mode="images": decimated meshes, no shadows/MSAA on software GL
  env, 3 cameras 96x96 LOD  image_size=96: the low-detail meshes the env picks for images of at
                            most 128 px (render_lod, so101_mujoco_utils.LOD_MAX_IMAGE_PX)
  env, 3 cameras 96x96 detailed   the same with render_lod=False (the decimated meshes)
  naive 3 cameras 256x256   the same with full meshes, shadows and 4x MSAA (MuJoCo defaults)
  peer: lerobot-env-so101   its SO101PickCube env (EE-delta actions through IK), state only and
                            with its one 128x128 camera as shipped (8x MSAA, shadows)
  peer: so101-nexus         MuJoCoPickLift-v1 (50 Hz, joint-position actions, uniform random),
                            state only and with its wrist + overhead cameras at 96x96, as shipped
                            (8x MSAA, shadows) and with MSAA and shadows off (as our renderer on
                            software GL). It needs its own venv (its numpy and trimesh pins differ
                            from ours): made on demand in outputs/peer_venvs/so101_nexus with
                            ``pip install so101-nexus==0.10.0`` and measured in a subprocess that
                            returns JSON; if that fails the table says why and the run goes on.
Columns: env steps per wall second, simulated seconds per wall second, and each camera row's
steps/s as a fraction of its own simulator's state-only row. Prints the GL backend. Numbers vary
+-15% between runs on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
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


NEXUS_VERSION = "0.10.0"
NEXUS_VENV = u.REPO_ROOT / "outputs" / "peer_venvs" / "so101_nexus"
#: Runs in the so101-nexus venv: argv[1] = JSON {"seconds", "cameras": null | "shipped" | "fast",
#: "size"}; prints one JSON line {"rate": env steps/s, "dt": control period s}. Same loop as
#: time_loop (one warm-up step, a reset every 100 steps).
NEXUS_WORKER = r"""
import json, os, sys, time
import gymnasium as gym, numpy as np
import so101_nexus.mujoco  # registers the MuJoCo* ids
from so101_nexus.config import PickConfig, RenderConfig
from so101_nexus.observations import OverheadCamera, RenderingQuality, WristCamera
args = json.loads(sys.argv[1])
kwargs = {}
if args["cameras"]:
    q = None if args["cameras"] == "shipped" else RenderingQuality(msaa_samples=0, shadows=False)
    n = args["size"]
    kwargs["config"] = PickConfig(render=RenderConfig(quality=q), obs_mode="visual", observations=[
        *PickConfig().observations, WristCamera(width=n, height=n, quality=q), OverheadCamera(width=n, height=n, quality=q)])
env = gym.make("MuJoCoPickLift-v1", **kwargs)
env.reset(seed=0)
space = env.action_space
acts = np.random.default_rng(0).uniform(space.low, space.high, (10_000, *space.shape)).astype(np.float32)
def step(i):
    if any(env.step(acts[i % len(acts)])[2:4]):
        env.reset()
step(0)
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < args["seconds"]:
    step(n)
    n += 1
    if n % 100 == 0:
        env.reset(seed=0)
rate = n / (time.perf_counter() - t0)
print(json.dumps({"rate": rate, "dt": float(env.unwrapped.control_dt)}), flush=True)
os._exit(0)  # skip EGL teardown (its GL contexts raise at interpreter exit)
"""


def nexus_python(venv: Path = NEXUS_VENV, install: bool = True) -> tuple[Path | None, str]:
    """The so101-nexus venv's python, creating the venv and installing so101-nexus==NEXUS_VERSION
    from PyPI if needed. Returns ``(python, "")`` or ``(None, why not)``; never raises."""
    py = venv / "bin" / "python"
    probe = [str(py), "-c", "import importlib.metadata as m; print(m.version('so101-nexus'))"]

    def installed() -> bool:
        if not py.exists():
            return False
        out = subprocess.run(probe, capture_output=True, text=True)
        return out.returncode == 0 and out.stdout.strip() == NEXUS_VERSION

    if installed():
        return py, ""
    if not install:
        return None, f"so101-nexus {NEXUS_VERSION} not in {venv} (--no-nexus-install)"
    print(f"installing so101-nexus=={NEXUS_VERSION} into {venv} ...", flush=True)
    for cmd in ([sys.executable, "-m", "venv", str(venv)],
                [str(py), "-m", "pip", "install", "-q", f"so101-nexus=={NEXUS_VERSION}"]):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, f"install failed: {e}"
        if out.returncode != 0:
            return None, f"install failed: {(out.stderr.strip().splitlines() or ['?'])[-1][:120]}"
    return (py, "") if installed() else (None, "install failed: so101-nexus not importable")


def bench_nexus(python: Path | None, why: str, seconds: float, cameras: str | None = None, size: int = 96):
    """so101-nexus PickLift in its own venv (NEXUS_WORKER): ``(steps/s, control dt)``, or a string
    saying why it was not measured."""
    if python is None:
        return why
    args = json.dumps({"seconds": seconds, "cameras": cameras, "size": size})
    try:
        out = subprocess.run([str(python), "-c", NEXUS_WORKER, args], capture_output=True, text=True,
                             timeout=seconds * 4 + 600)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        return float(res["rate"]), float(res["dt"])
    except (IndexError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
        tail = (out.stderr.strip().splitlines() or [""])[-1][:120] if "out" in locals() else ""
        return f"failed: {type(e).__name__} {tail}"


def print_table(rows) -> None:
    """Markdown table of ``rows`` = [(name, (steps/s, dt) or reason, state-only row name or None)]."""
    rate = {name: r[0] for name, r, _ in rows if not isinstance(r, str)}
    print(f"\n| {'configuration':<62} | {'env steps/s':>11} | {'sim s / wall s':>14} | {'x own state-only':>16} |")
    print(f"|{'-' * 64}|{'-' * 13}|{'-' * 16}|{'-' * 18}|")
    for name, r, base in rows:
        if isinstance(r, str):
            print(f"| {name:<62} | {'n/a':>11} | {'n/a':>14} | {'':>16} | {r}")
            continue
        ratio = f"{r[0] / rate[base]:.3f}x" if base in rate else ""
        print(f"| {name:<62} | {r[0]:11.1f} | {r[0] * r[1]:14.2f} | {ratio:>16} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="wall seconds per row")
    parser.add_argument("--no-nexus-install", action="store_true",
                        help="measure so101-nexus only if its venv already exists (no pip install)")
    args = parser.parse_args()
    sec = args.seconds
    print(f"GL backend: MUJOCO_GL={mujoco_rendering.choose_gl_backend(verbose=False)}, "
          f"software rasterizer assumed: {mujoco_rendering.is_software_gl()}")
    nexus, why = nexus_python(install=not args.no_nexus_install)
    state, nexus_state = "env, state only", "peer: so101-nexus PickLift, state"
    rows = [
        ("raw mj_step x 50", bench_raw(sec), None),
        (state, bench_env(sec, obs_mode="state"), None),
        ("env, 3 cameras 256x256", bench_env(sec, obs_mode="images"), state),
        ("env, 3 cameras 96x96 LOD", bench_env(sec, obs_mode="images", image_size=96), state),
        ("env, 3 cameras 96x96 detailed", bench_env(sec, obs_mode="images", image_size=96, render_lod=False), state),
        ("naive 3 cameras 256x256", bench_env(sec, obs_mode="images", fast_render=False, decimate_meshes=False), state),
        ("peer: lerobot-env-so101, state", bench_peer(sec, image_obs=False), None),
        ("peer: lerobot-env-so101, 1 camera 128", bench_peer(sec, image_obs=True), "peer: lerobot-env-so101, state"),
        (nexus_state, bench_nexus(nexus, why, sec), None),
        ("peer: so101-nexus PickLift, 2 cameras 96 (8x MSAA, shadows)", bench_nexus(nexus, why, sec, "shipped"), nexus_state),
        ("peer: so101-nexus PickLift, 2 cameras 96 (no MSAA/shadows)", bench_nexus(nexus, why, sec, "fast"), nexus_state),
    ]
    print_table(rows)
    rate = {name: r[0] for name, r, _ in rows if not isinstance(r, str)}
    print(f"\nstate-only env / raw physics: {rate[state] / rate['raw mj_step x 50']:.2f}x (goal >= 0.8x)")
    print(f"3 cameras, ours / naive:      {rate['env, 3 cameras 256x256'] / rate['naive 3 cameras 256x256']:.1f}x (goal >= 10x)")
    print(f"3 cameras 96x96 LOD / state-only env: {rate['env, 3 cameras 96x96 LOD'] / rate[state]:.3f}x "
          f"(goal >= 0.2x, moonshot 0.5x; detailed meshes "
          f"{rate['env, 3 cameras 96x96 detailed'] / rate[state]:.3f}x)")


if __name__ == "__main__":
    main()
