"""Build backend of pyproject.toml: setuptools, plus one file in every wheel (editable or not).

The added ``so101_sim.pth`` makes Python import :mod:`so101_sim.import_hooks` at start-up: it
registers the ``so101_sim/*`` Gymnasium ids when Gymnasium is imported (Gymnasium 1.x reads no
entry points) and picks MuJoCo's OpenGL backend before anyone imports mujoco (see that module). setuptools cannot install a ``.pth`` of its own, so the wheel it
builds is rewritten with the file and its RECORD line (PEP 427).
"""

import base64
import hashlib
import zipfile
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (every other hook unchanged)

PTH_NAME = "so101_sim.pth"
PTH_TEXT = b"import so101_sim.import_hooks as _so101_hooks; _so101_hooks.install()\n"


def _add_pth(wheel_path: Path) -> None:
    with zipfile.ZipFile(wheel_path) as z:
        entries = [(info, z.read(info)) for info in z.infolist()]
    record = next(info for info, _ in entries if info.filename.endswith(".dist-info/RECORD"))
    digest = base64.urlsafe_b64encode(hashlib.sha256(PTH_TEXT).digest()).rstrip(b"=").decode()
    line = f"{PTH_NAME},sha256={digest},{len(PTH_TEXT)}\n".encode()
    tmp = wheel_path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for info, data in entries:
            if info is not record:
                z.writestr(info, data)
        z.writestr(PTH_NAME, PTH_TEXT)
        z.writestr(record, dict(entries)[record].rstrip(b"\n") + b"\n" + line)
    tmp.replace(wheel_path)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
    _add_pth(Path(wheel_directory) / name)
    return name


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    name = _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
    _add_pth(Path(wheel_directory) / name)
    return name
