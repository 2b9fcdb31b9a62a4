"""GL backend choice and the fast renderer."""

import os
import subprocess
import sys

import numpy as np

from so101_sim import so101_mujoco_utils as u
from conftest import SIM_DIR
from so101_sim.so101_mujoco_utils import mujoco

PROBE = "import mujoco_rendering, os; print(os.environ['MUJOCO_GL'])"


def _backend(env_updates):
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY")}
    env.update(env_updates)
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=SIM_DIR, env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip(), out.stderr


def test_user_setting_wins():
    chosen, err = _backend({"MUJOCO_GL": "osmesa", "SO101_VERBOSE_GL": "1"})
    assert chosen == "osmesa" and "already set in the environment" in err


def test_display_selects_native_and_headless_selects_egl_or_osmesa():
    assert _backend({"DISPLAY": ":0"})[0] == "glfw"
    chosen, err = _backend({"SO101_VERBOSE_GL": "1"})
    assert chosen in ("egl", "osmesa")
    assert "no display" in err


def test_the_choice_is_quiet_by_default_and_a_child_process_does_not_call_it_the_users():
    """Quiet unless asked (-v / SO101_VERBOSE_GL); a process that inherits this module's choice
    (an env worker) says it was the parent's, not "set by the user"."""
    chosen, err = _backend({})
    assert chosen in ("egl", "osmesa") and "MUJOCO_GL" not in err
    child = ("import mujoco_rendering, os, subprocess, sys; "
             "sys.exit(subprocess.run([sys.executable, '-c', 'import mujoco_rendering; mujoco_rendering.print_backend()'])"
             ".returncode)")
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY", "SO101_MUJOCO_GL_AUTO")}
    out = subprocess.run([sys.executable, "-c", child], cwd=SIM_DIR, env=env, capture_output=True, text=True, check=True)
    assert "chosen by the parent process: no display" in out.stderr and "already set" not in out.stderr, out.stderr


def test_fast_renderer_turns_off_shadows_and_multisampling_and_still_draws_the_scene():
    model = u.load_model()
    data = mujoco.MjData(model)
    ids = u.SceneIds.from_model(model)
    u.reset_scene(model, data, ids, u.BLOCK_DEFAULT_POS)
    r = u.CameraRenderer(model, 64, 64, fast=True)
    assert model.vis.quality.offsamples == 0
    assert not r._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW]  # noqa: SLF001
    img = r.render(data, "camera_side")
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and img.std() > 5
    r.close()


def test_closing_one_renderer_leaves_the_others_frames_intact():
    """MuJoCo's Renderer.close frees the GL objects of whichever context is current; CameraRenderer
    makes its own current first (before, closing one env's renderer turned another's frames into
    noise: mean pixel difference ~85)."""
    model = u.load_model()
    data = mujoco.MjData(model)
    ids = u.SceneIds.from_model(model)
    u.reset_scene(model, data, ids, u.BLOCK_DEFAULT_POS)
    first, second = u.CameraRenderer(model, 64, 64), u.CameraRenderer(model, 64, 64)
    before = second.render(data, "camera_side")
    first.render(data, "camera_side")
    second.render(data, "camera_side")  # the second renderer's context is the current one
    first.close()
    np.testing.assert_array_equal(second.render(data, "camera_side"), before)
    second.close()

