"""Pick MuJoCo's OpenGL backend before ``mujoco`` is imported.

MuJoCo reads the ``MUJOCO_GL`` environment variable once, when the ``mujoco`` module is first
imported. Import this module first (every script and ``so101_mujoco_utils`` do) and it sets
``MUJOCO_GL`` for you:

1. ``MUJOCO_GL`` already set in the environment: kept as is (the user wins). A value this module
   chose in a parent process (env worker processes inherit it) is reported as such.
2. A display is available (``DISPLAY``/``WAYLAND_DISPLAY`` on Linux, always on macOS/Windows):
   ``glfw`` (native OpenGL; needed for the interactive viewer).
3. Headless: ``egl`` if ``libEGL`` can initialise a display, else ``osmesa`` if ``libOSMesa``
   is installed. On a machine without a GPU both are Mesa's software rasterizer (llvmpipe).
4. Neither: ``RuntimeError`` naming the Debian packages to install.

The choice is silent; the scripts print it with ``-v`` / ``--verbose`` (:func:`print_backend`),
and ``SO101_VERBOSE_GL=1`` prints it at import in every process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys

#: Debian/Ubuntu packages that provide headless rendering (EGL or OSMesa, software or GPU).
HEADLESS_GL_PACKAGES = "libegl1 libegl-mesa0 libopengl0 libgl1-mesa-dri libosmesa6"

_CHOSEN: tuple[str, str] | None = None
#: Set next to ``MUJOCO_GL`` when this module chose it: ``backend|reason``, so a child process that
#: inherits both knows the value was not set by the user.
_AUTO_ENV = "SO101_MUJOCO_GL_AUTO"


def has_display() -> bool:
    """True when a native window can be opened (a Linux display server, or macOS/Windows)."""
    if platform.system() in ("Darwin", "Windows"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class NoDisplayError(RuntimeError):
    """A window (MuJoCo's interactive viewer) was asked for on a machine without a display.

    Raised *before* any window is created: MuJoCo's GLFW initialisation failure is a fatal
    ``mju_error`` that ends the Python process, so it must never be reached headless.
    """


def require_display(what: str = "render_mode='human'") -> None:
    """Raise :class:`NoDisplayError` unless :func:`has_display`; ``what`` names the feature.

    Raises:
        NoDisplayError: no display; the message says to use ``render_mode="rgb_array"`` (or no
            viewer) or to run with a display (``mjpython`` on macOS).
    """
    if not has_display():
        raise NoDisplayError(
            f"{what} needs a display, and none was found (DISPLAY/WAYLAND_DISPLAY unset). "
            'Use render_mode="rgb_array" (or None / --headless) for offscreen frames, or run with a '
            "display (`mjpython` on macOS)."
        )


def _egl_works() -> bool:
    """Load libEGL and initialise a display on its first device, as MuJoCo's EGL backend does.

    Uses ``eglQueryDevicesEXT`` + ``eglGetPlatformDisplayEXT(EGL_PLATFORM_DEVICE_EXT)``, which
    works headless with Mesa (llvmpipe) and with NVIDIA drivers; does not import mujoco.
    """
    name = ctypes.util.find_library("EGL") or "libEGL.so.1"
    try:
        egl = ctypes.CDLL(name)
    except OSError:
        return False
    try:
        egl.eglGetProcAddress.restype = ctypes.c_void_p
        egl.eglGetProcAddress.argtypes = [ctypes.c_char_p]
        query_ptr = egl.eglGetProcAddress(b"eglQueryDevicesEXT")
        platform_ptr = egl.eglGetProcAddress(b"eglGetPlatformDisplayEXT")
        if not query_ptr or not platform_ptr:
            return False
        query_devices = ctypes.CFUNCTYPE(
            ctypes.c_uint, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int)
        )(query_ptr)
        get_platform_display = ctypes.CFUNCTYPE(
            ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p
        )(platform_ptr)
        devices = (ctypes.c_void_p * 8)()
        count = ctypes.c_int(0)
        if not query_devices(8, devices, ctypes.byref(count)) or count.value < 1:
            return False
        egl_platform_device_ext = 0x313F
        display = get_platform_display(egl_platform_device_ext, devices[0], None)
        if not display:
            return False
        egl.eglInitialize.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        egl.eglTerminate.argtypes = [ctypes.c_void_p]
        ok = bool(egl.eglInitialize(display, None, None))
        if ok:
            egl.eglTerminate(display)
        return ok
    except (AttributeError, OSError):
        return False


def _osmesa_available() -> bool:
    name = ctypes.util.find_library("OSMesa") or "libOSMesa.so.8"
    try:
        ctypes.CDLL(name)
        return True
    except OSError:
        return False


def choose_gl_backend(verbose: bool = False) -> str:
    """Set ``os.environ["MUJOCO_GL"]`` (unless already set) and return the backend name.

    Returns one of ``"glfw"``, ``"egl"``, ``"osmesa"`` or the user's own value. Must run before
    the first ``import mujoco`` in the process; calling it afterwards only reports. ``verbose``
    (or ``SO101_VERBOSE_GL=1``) prints the choice once to stderr (:func:`print_backend`).

    Raises:
        RuntimeError: headless and neither EGL nor OSMesa can be loaded; the message names
            the packages to install (``apt-get install ...``).
    """
    global _CHOSEN
    if _CHOSEN is None:
        inherited = os.environ.get(_AUTO_ENV, "").split("|", 1)
        if os.environ.get("MUJOCO_GL") and len(inherited) == 2 and inherited[0] == os.environ["MUJOCO_GL"]:
            _CHOSEN = (os.environ["MUJOCO_GL"], f"chosen by the parent process: {inherited[1]}")
        elif os.environ.get("MUJOCO_GL"):
            _CHOSEN = (os.environ["MUJOCO_GL"], "MUJOCO_GL was already set in the environment")
        elif has_display():
            _CHOSEN = ("glfw", "a display is available")
        elif _egl_works():
            _CHOSEN = ("egl", "no display; EGL initialised")
        elif _osmesa_available():
            _CHOSEN = ("osmesa", "no display; EGL unavailable, OSMesa found")
        else:
            raise RuntimeError(
                "No OpenGL backend for headless rendering: no display, EGL cannot initialise and "
                f"OSMesa is not installed. Install one: `sudo apt-get install {HEADLESS_GL_PACKAGES}`, "
                "or set MUJOCO_GL yourself."
            )
        if not os.environ.get("MUJOCO_GL"):
            os.environ[_AUTO_ENV] = f"{_CHOSEN[0]}|{_CHOSEN[1]}"
        os.environ["MUJOCO_GL"] = _CHOSEN[0]
        if verbose or os.environ.get("SO101_VERBOSE_GL") not in (None, "", "0"):
            print_backend()
    return _CHOSEN[0]


def backend_description() -> str:
    """``MUJOCO_GL=<backend> (<why>)``: the backend :func:`choose_gl_backend` chose and why."""
    backend = choose_gl_backend()
    return f"MUJOCO_GL={backend} ({_CHOSEN[1]})"


def print_backend() -> None:
    """Print the OpenGL backend choice, one line on stderr (the scripts' ``-v`` / ``--verbose``)."""
    print(f"[mujoco_rendering] {backend_description()}", file=sys.stderr)


def is_software_gl() -> bool:
    """True when rendering will most likely run on a CPU rasterizer (no GPU visible, headless).

    Used to switch off shadows and multisampling, which dominate the cost of Mesa's llvmpipe.
    Override with ``SO101_FAST_RENDER=0`` (keep full quality) or ``=1`` (always fast).
    """
    forced = os.environ.get("SO101_FAST_RENDER")
    if forced is not None:
        return forced not in ("0", "false", "False")
    backend = os.environ.get("MUJOCO_GL", "")
    if backend == "osmesa":
        return True
    if backend == "egl":
        return not os.path.exists("/dev/nvidia0") and not os.path.exists("/dev/dri/renderD128")
    return False


choose_gl_backend()
