"""Two import hooks, installed at interpreter start in any Python of an environment where the
package is installed (the ``so101_sim.pth`` file that simulation_code/plugin/so101_build_backend.py
adds to the wheel runs :func:`install`). Neither costs anything until its trigger is imported.

* Before ``mujoco`` is first imported, by anyone: pick its OpenGL backend
  (:func:`so101_sim.mujoco_rendering.choose_gl_backend`; a ``MUJOCO_GL`` already set wins). MuJoCo
  reads ``MUJOCO_GL`` once, at import; LeRobot's scripts (``lerobot-eval``, ``lerobot-train``) and
  other plugins import it before our modules could, and its default (GLFW) cannot render headless.
* After ``gymnasium.envs`` has loaded: register the ``so101_sim/...`` ids
  (:func:`so101_sim.registration.register_envs`), so ``gym.make("so101_sim/SO101PickPlace-v0")``
  works with nothing imported first. Gymnasium 0.26-0.29 loaded third-party envs from the
  ``gymnasium.envs`` entry-point group; Gymnasium 1.0 removed that plugin system (1.4.0, our pin,
  reads no entry points). pyproject.toml still declares the entry point.
"""

import sys  # only sys at start-up: this module is imported by every Python of the environment


def _choose_gl() -> None:
    from so101_sim import mujoco_rendering  # noqa: F401  (sets MUJOCO_GL at import)


def _register() -> None:
    from so101_sim.registration import register_envs

    register_envs()


#: trigger module -> (run before it loads, run after it loaded)
HOOKS = {"mujoco": (_choose_gl, None), "gymnasium.envs": (None, _register)}


def _safely(fn) -> None:
    try:
        fn()
    except Exception as e:  # noqa: BLE001  (never break a user's import)
        import warnings

        warnings.warn(f"so101_sim: import hook {fn.__name__} failed: {e!r}", stacklevel=3)


class _RunAfterLoad:
    """A loader (importlib's protocol): runs the real loader, then ``after``."""

    def __init__(self, loader, after):
        self._loader, self._after = loader, after

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _safely(self._after)

    def __getattr__(self, name):  # resource readers etc. of the wrapped loader
        return getattr(self._loader, name)


class _Finder:
    """One shot per trigger: runs its ``before`` hook, and wraps the loader the other finders
    find with its ``after`` hook; leaves ``sys.meta_path`` when no trigger is left (a meta path
    finder: importlib's protocol)."""

    def __init__(self, pending: dict):
        self.pending = pending

    def find_spec(self, name, path=None, target=None):
        if name not in self.pending:
            return None
        before, after = self.pending.pop(name)
        if not self.pending and self in sys.meta_path:
            sys.meta_path.remove(self)
        if before is not None:
            _safely(before)
        if after is None:
            return None  # the other finders load it as usual
        import importlib.util

        spec = importlib.util.find_spec(name)  # the other finders (``name`` is no longer pending here)
        if spec is not None and spec.loader is not None:
            spec.loader = _RunAfterLoad(spec.loader, after)
        return spec


def install() -> None:
    """Install the hooks (idempotent); a trigger that is already imported runs its hook now."""
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    pending = {}
    for name, (before, after) in HOOKS.items():
        if name in sys.modules:
            _safely(after or before)
        else:
            pending[name] = (before, after)
    if pending:
        sys.meta_path.insert(0, _Finder(pending))
