"""Joint frames, camera maps and the policy metadata file of a VLA checkpoint (no torch, no lerobot).

Owns what the adapters (lerobot_vla_adapter.py) decide before and around the model, all in numpy:

* Frames (:data:`FRAMES`; ``--frame`` takes :data:`FRAME_CHOICES`, defined only here; the choice
  is recorded in the run summary). :func:`mujoco_to_frame` / :func:`frame_to_mujoco` convert
  joint vectors (..., 6); :func:`resolve_frame` picks the frame of a checkpoint.

  - ``smolvla_absolute``: absolute servo degrees, ``degrees(q) + MUJOCO_TO_PHYSICAL_OFFSET``,
    z-scored with the reference mean/std ``SMOLVLA_STATE_*``/``SMOLVLA_ACTION_*`` of
    so101_mujoco_utils (shared/reference/000): what ``lerobot/smolvla_base`` was pretrained on.
  - ``lerobot_degrees``: LeRobot calibrated units (body joints in degrees, gripper 0..100),
    z-scored with the checkpoint's own stats: checkpoints fine-tuned on this repo's datasets.
  - ``mujoco_radians``: MuJoCo radians with the checkpoint's own stats (checkpoints trained on
    simulation rollouts that stored raw MuJoCo states).

* The metadata file :data:`META_FILE` (``so101_policy_meta.json``) in a policy directory: the
  ``frame`` the checkpoint was trained in, the training ``task`` and the ``camera_map``
  (:func:`write_policy_meta`, :func:`read_policy_meta`).
* Camera maps, sim camera (``camera1|2|3``) -> the checkpoint's image feature key
  (:func:`parse_camera_map` for ``--camera-map``, :func:`resolve_camera_map`).

Only numpy and so101_mujoco_utils are imported, so command-line parsers can use
:data:`FRAME_CHOICES` without loading torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from so101_sim import so101_mujoco_utils as u
from so101_sim.hub_download import PolicyLoadError

#: The joint frames a checkpoint can be trained in (module docstring).
FRAMES: tuple[str, ...] = ("smolvla_absolute", "lerobot_degrees", "mujoco_radians")
#: Accepted by ``--frame``: a frame, or ``auto`` (recorded frame, else a per-checkpoint default).
FRAME_CHOICES: tuple[str, ...] = ("auto", *FRAMES)
#: The Hub checkpoint pretrained on the absolute-servo frame (reference 000).
SMOLVLA_BASE_ID = "lerobot/smolvla_base"
#: Metadata file of a policy directory: frame, training task, camera map (:func:`write_policy_meta`).
META_FILE = "so101_policy_meta.json"


def _copy64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).copy()


#: frame -> (MuJoCo radians -> frame units, frame units -> MuJoCo radians); the conversions
#: themselves live in so101_mujoco_utils.
_FRAME_CONVERSIONS = {
    "smolvla_absolute": (u.mujoco_to_smolvla_degrees, u.smolvla_degrees_to_mujoco),
    "lerobot_degrees": (u.mujoco_to_lerobot, u.lerobot_to_mujoco),
    "mujoco_radians": (_copy64, _copy64),
}


def _conversions(frame: str):
    if frame not in _FRAME_CONVERSIONS:
        raise ValueError(f"Unknown frame {frame!r}; choose one of {', '.join(FRAMES)}")
    return _FRAME_CONVERSIONS[frame]


def mujoco_to_frame(q_rad, frame: str) -> np.ndarray:
    """MuJoCo radians (..., 6) -> the checkpoint frame's units (float64, same shape).

    ``smolvla_absolute``: degrees + ``MUJOCO_TO_PHYSICAL_OFFSET``; ``lerobot_degrees``: degrees,
    gripper 0..100 (``so101_mujoco_utils.mujoco_to_lerobot``); ``mujoco_radians``: unchanged.

    Raises:
        ValueError: unknown frame (lists :data:`FRAMES`).
    """
    return _conversions(frame)[0](q_rad)


def frame_to_mujoco(x, frame: str) -> np.ndarray:
    """Inverse of :func:`mujoco_to_frame`: frame units (..., 6) -> MuJoCo radians (not clipped)."""
    return _conversions(frame)[1](x)


def resolve_frame(flag: str, meta: dict, policy_ref: str, source: str | None = None) -> tuple[str, str]:
    """Pick the frame for a checkpoint; returns ``(frame, why)``, ``why`` is printed and recorded.

    ``flag`` other than ``auto`` wins; ``why`` is ``source`` (where it came from, e.g. a ReinFlow
    checkpoint's record), else ``--frame``. ``auto``: the frame recorded in :data:`META_FILE`, else
    ``smolvla_absolute`` for ``lerobot/smolvla_base``, else ``lerobot_degrees`` (checkpoints
    fine-tuned on LeRobot datasets, which store calibrated degrees).

    Raises:
        ValueError: unknown flag value or an unknown recorded frame.
    """
    if flag not in FRAME_CHOICES:
        raise ValueError(f"--frame {flag!r} is not one of {', '.join(FRAME_CHOICES)}")
    if flag != "auto":
        why = source or "--frame"
        if meta.get("frame") and meta["frame"] != flag:
            why += f" (overrides the frame recorded in {META_FILE}: {meta['frame']})"
        return flag, why
    if meta.get("frame"):
        if meta["frame"] not in FRAMES:
            raise ValueError(f"{META_FILE} records an unknown frame {meta['frame']!r}; known: {', '.join(FRAMES)}")
        return meta["frame"], f"recorded in the checkpoint's {META_FILE}"
    if policy_ref.rstrip("/") == SMOLVLA_BASE_ID:
        return "smolvla_absolute", f"default for {SMOLVLA_BASE_ID} (pretrained on absolute servo degrees)"
    return "lerobot_degrees", ("default for fine-tuned checkpoints (LeRobot calibrated degrees); "
                               "pass --frame smolvla_absolute|mujoco_radians if it was trained otherwise")



def read_policy_meta(policy_dir: str | Path) -> dict:
    """Contents of ``policy_dir/so101_policy_meta.json`` ({} when absent or not a JSON object).

    Raises:
        PolicyLoadError: the file is not valid JSON (names the file).
    """
    path = Path(policy_dir) / META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PolicyLoadError(f"{path} is not valid JSON ({e}); fix or delete it.") from e
    return meta if isinstance(meta, dict) else {}


def write_policy_meta(policy_dir: str | Path, frame: str, task: str | None = None,
                      camera_map: dict[str, str] | None = None, **extra: Any) -> Path:
    """Record how a checkpoint was trained, so loading it needs no guess (:data:`META_FILE`).

    Args:
        frame: one of :data:`FRAMES`.
        task: the training task string.
        camera_map: sim camera (``camera1|2|3``) -> the checkpoint's image feature key.
        extra: more JSON-serialisable fields (e.g. ``dataset``).

    Raises:
        ValueError: unknown frame.
    """
    if frame not in FRAMES:
        raise ValueError(f"Unknown frame {frame!r}; choose one of {', '.join(FRAMES)}")
    meta = {"frame": frame, "task": task, "camera_map": camera_map, **extra}
    path = Path(policy_dir) / META_FILE
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return path


def _full_image_key(key: str) -> str:
    return key if key.startswith(u.OBS_IMAGE_PREFIX) else u.OBS_IMAGE_PREFIX + key


def parse_camera_map(spec: str | dict | None) -> dict[str, str] | None:
    """``--camera-map`` -> ``{sim camera: checkpoint image key}``.

    Accepts ``"camera1=front,camera2=wrist"`` (short keys get the ``observation.images.`` prefix),
    full keys, or a JSON object with the same content. None/empty -> None.

    Raises:
        ValueError: malformed entries (names the entry and the expected syntax).
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return None
    if isinstance(spec, str):
        s = spec.strip()
        if s.startswith("{"):
            try:
                spec = json.loads(s)
            except json.JSONDecodeError as e:
                raise ValueError(f"--camera-map JSON is invalid ({e})") from e
        else:
            pairs = {}
            for item in filter(None, (p.strip() for p in s.split(","))):
                if "=" not in item:
                    raise ValueError(f"--camera-map entry {item!r} must look like camera1=<checkpoint image key>")
                src, dst = (x.strip() for x in item.split("=", 1))
                pairs[src] = dst
            spec = pairs
    out = {}
    for src, dst in spec.items():
        src = src[len(u.OBS_IMAGE_PREFIX):] if src.startswith(u.OBS_IMAGE_PREFIX) else src
        out[src] = _full_image_key(dst)
    return out


def resolve_camera_map(expected: list[str], spec: str | dict | None = None,
                       recorded: dict | None = None, source: str | None = None) -> tuple[dict[str, str], str]:
    """Map the simulation's cameras onto the image features a checkpoint expects.

    Args:
        expected: the checkpoint's image feature keys (``config.image_features``).
        spec: the ``--camera-map`` value (see :func:`parse_camera_map`), or None.
        recorded: the camera map recorded in the checkpoint's :data:`META_FILE`, or None.
        source: where ``spec`` came from when not the command line (the ``why``; default
            ``--camera-map``).

    Returns:
        ``({sim camera: checkpoint key}, why)``. Default (no spec, nothing recorded): every
        expected ``observation.images.cameraN`` gets the simulation's ``cameraN``.

    Raises:
        ValueError: a sim camera that does not exist, a key the checkpoint does not expect, or an
            expected key left unmapped; the message names the expected and available keys.
    """
    available = ", ".join(f"{k} ({v})" for k, v in u.CAMERAS.items())
    exp_txt = ", ".join(expected) or "(none)"
    cmap = parse_camera_map(spec)
    why = source or "--camera-map"
    if cmap is None and recorded:
        cmap, why = parse_camera_map(recorded), f"recorded in the checkpoint's {META_FILE}"
    if cmap is None:
        cmap = {k[len(u.OBS_IMAGE_PREFIX):]: k for k in expected
                if k.startswith(u.OBS_IMAGE_PREFIX) and k[len(u.OBS_IMAGE_PREFIX):] in u.CAMERAS}
        why = "default (checkpoint keys named like the simulation's cameras)"
    for src, dst in cmap.items():
        if src not in u.CAMERAS:
            raise ValueError(f"Camera map: the simulation has no camera {src!r}. Available: {available}. "
                             f"The checkpoint expects: {exp_txt}.")
        if dst not in expected:
            raise ValueError(f"Camera map: the checkpoint has no image feature {dst!r}. "
                             f"Expected keys: {exp_txt}. Available sim cameras: {available}.")
    missing = [k for k in expected if k not in cmap.values()]
    if missing:
        example = ",".join(f"{c}={k[len(u.OBS_IMAGE_PREFIX):]}" for c, k in zip(u.CAMERAS, expected))
        raise ValueError(
            f"Camera map ({why}) leaves the checkpoint's image feature(s) {', '.join(missing)} without a "
            f"camera. Expected keys: {exp_txt}. Available sim cameras: {available}. "
            f"Pass e.g. --camera-map {example}")
    return cmap, why

