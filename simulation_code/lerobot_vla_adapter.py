"""What SmolVLA and Pi0 share when they run in the simulation: loading, frames, cameras, task.

``smolvla_adapter.SmolVLAAdapter`` and ``pi0_adapter.PI0Adapter`` subclass :class:`LeRobotVLAAdapter`,
which implements :class:`vla_policy_interface.VLAPolicyInterface` on top of stock lerobot==0.6.1
(no fork; which LeRobot internals are used is listed in smolvla_modifications/README.md).

Loading (:meth:`LeRobotVLAAdapter.load`) takes a Hub id or a local policy directory, i.e. what
``policy.save_pretrained`` + ``preprocessor.save_pretrained`` + ``postprocessor.save_pretrained``
write (``config.json``, ``model.safetensors``, ``policy_preprocessor.json``,
``policy_postprocessor.json`` and their ``*.safetensors`` stats). Optional extras of a local
directory, all read by this module:

* ``so101_policy_meta.json`` (:data:`META_FILE`): the ``frame`` the checkpoint was trained in, the
  training ``task`` and the ``camera_map`` used for training (:func:`write_policy_meta`);
* ``vlm/`` (SmolVLA): the VLM backbone's config/tokenizer/processor files, used instead of the
  Hub id in ``config.vlm_model_name``; ``tokenizer/`` (Pi0): used instead of
  ``google/paligemma-3b-pt-224``. With them a directory needs no Hugging Face cache at all.

Frames (:data:`FRAMES`, chosen with ``--frame``, recorded in the run summary):

* ``smolvla_absolute``: absolute servo degrees, ``degrees(q) + MUJOCO_TO_PHYSICAL_OFFSET``,
  z-scored with the reference mean/std ``SMOLVLA_STATE_*``/``SMOLVLA_ACTION_*`` of
  so101_mujoco_utils (shared/reference/000): what ``lerobot/smolvla_base`` was pretrained on.
* ``lerobot_degrees``: LeRobot calibrated units (body joints in degrees, gripper 0..100), z-scored
  with the checkpoint's own stats: checkpoints fine-tuned on this repo's datasets.
* ``mujoco_radians``: MuJoCo radians with the checkpoint's own stats (checkpoints trained on
  simulation rollouts that stored raw MuJoCo states).
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import so101_mujoco_utils as u
from vla_policy_interface import VLAPolicyInterface

# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------

FRAMES: tuple[str, ...] = ("smolvla_absolute", "lerobot_degrees", "mujoco_radians")
#: Accepted by ``--frame``: a frame, or ``auto`` (recorded frame, else a per-checkpoint default).
FRAME_CHOICES: tuple[str, ...] = ("auto", *FRAMES)
#: The Hub checkpoint pretrained on the absolute-servo frame (reference 000).
SMOLVLA_BASE_ID = "lerobot/smolvla_base"
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


def reference_stats() -> dict[str, dict[str, torch.Tensor]]:
    """Normalisation stats of the ``smolvla_absolute`` frame (float32 tensors, degrees), in
    LeRobot's layout ``{"observation.state": {"mean", "std"}, "action": {"mean", "std"}}``.
    Source: ``so101_mujoco_utils.SMOLVLA_*`` (shared/reference/000)."""
    f = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    return {
        u.OBS_STATE: {"mean": f(u.SMOLVLA_STATE_MEAN), "std": f(u.SMOLVLA_STATE_STD)},
        "action": {"mean": f(u.SMOLVLA_ACTION_MEAN), "std": f(u.SMOLVLA_ACTION_STD)},
    }


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


# --------------------------------------------------------------------------------------------
# Checkpoint metadata, cameras
# --------------------------------------------------------------------------------------------


def read_policy_meta(policy_dir: str | Path) -> dict:
    """Contents of ``policy_dir/so101_policy_meta.json`` ({} when absent)."""
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


# --------------------------------------------------------------------------------------------
# Errors and Hub resolution
# --------------------------------------------------------------------------------------------


class PolicyLoadError(RuntimeError):
    """A policy cannot be loaded; the message says why and what to do (printed without traceback)."""


class PolicyUnavailableOffline(PolicyLoadError):
    """Weights are not cached and the Hub cannot be reached."""


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _download_hint(model_type: str, repos: list[tuple[str, str, list[str] | None]], tiny_dir: str) -> str:
    lines = [f"  hf download {r}" + "".join(f' --include "{p}"' for p in (pats or [])) for r, _, pats in repos]
    needed = "; ".join(f"{r} ({what})" for r, what, _ in repos)
    main = repos[0][0]
    return (
        f"Needed: {needed}.\n"
        "On a machine with internet access:\n"
        + "\n".join(lines) + "\n"
        "then copy ~/.cache/huggingface/hub to this machine, or download into a folder\n"
        f"  hf download {main} --local-dir {main.split('/')[-1]}\n"
        f"and run with --policy-path /path/to/{main.split('/')[-1]}"
        + (" (put the backbone files in /path/to/" + main.split('/')[-1]
           + ("/vlm/" if model_type == "smolvla" else "/tokenizer/") + " to need no cache at all)"
           if len(repos) > 1 else "")
        + ".\n"
        f"Offline smoke test with tiny random weights: python make_tiny_policies.py --out {tiny_dir} && "
        f"python run_mujoco_simulation.py --model-type {model_type} --policy-path {tiny_dir}/{model_type} --headless"
    )


def ensure_hub_files(repo_id: str, model_type: str, what: str, allow_patterns: list[str] | None,
                     all_repos: list[tuple[str, str, list[str] | None]], required: tuple[str, ...] = ()) -> Path:
    """Local snapshot folder of ``repo_id``: from the Hugging Face cache, else downloaded.

    Raises:
        PolicyUnavailableOffline: not cached (or ``required`` files missing) and the Hub is
            unreachable / ``HF_HUB_OFFLINE=1``; one message naming every repo in ``all_repos``
            and the ``hf download`` commands.
        PolicyLoadError: the repo does not exist or is gated.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    def _complete(p: str | Path) -> bool:
        return all((Path(p) / f).exists() for f in required)

    try:
        path = snapshot_download(repo_id, local_files_only=True)
        if _complete(path):
            return Path(path)
    except Exception:  # noqa: BLE001  (not cached: LocalEntryNotFoundError and friends)
        pass
    hint = _download_hint(model_type, all_repos, "../outputs/tiny_policies")
    if _hub_offline():
        raise PolicyUnavailableOffline(
            f"Cannot load the {model_type} policy: {repo_id} ({what}) is not in the local Hugging Face cache "
            f"and the Hub is unreachable (HF_HUB_OFFLINE=1).\n{hint}")
    try:
        path = snapshot_download(repo_id, allow_patterns=allow_patterns)
    except GatedRepoError as e:
        raise PolicyLoadError(
            f"{repo_id} is gated: accept its licence on https://huggingface.co/{repo_id} and log in "
            f"(hf auth login), or pass --policy-path with a local copy. ({e.__class__.__name__})") from e
    except RepositoryNotFoundError as e:
        raise PolicyLoadError(f"No Hugging Face repository {repo_id!r}: check --policy-path.") from e
    except Exception as e:  # noqa: BLE001  (network errors of any kind)
        raise PolicyUnavailableOffline(
            f"Cannot load the {model_type} policy: {repo_id} ({what}) is not in the local Hugging Face cache "
            f"and the Hub cannot be reached ({e.__class__.__name__}).\n{hint}") from e
    if not _complete(path):
        raise PolicyLoadError(f"{repo_id} has no {', '.join(required)}: is it a LeRobot {model_type} policy?")
    return Path(path)


def resolve_policy_dir(path: str, model_type: str, all_repos: list[tuple[str, str, list[str] | None]]) -> Path:
    """``--policy-path`` -> a local directory with ``config.json`` and ``model.safetensors``.

    An existing path is used as is; something shaped like ``owner/name`` is a Hub id
    (:func:`ensure_hub_files`).

    Raises:
        PolicyLoadError: a path that does not exist / lacks the files.
        PolicyUnavailableOffline: see :func:`ensure_hub_files`.
    """
    p = Path(path).expanduser()
    if p.exists():
        missing = [f for f in ("config.json", "model.safetensors") if not (p / f).is_file()]
        if not p.is_dir() or missing:
            raise PolicyLoadError(
                f"--policy-path {path}: expected a LeRobot policy directory (config.json, model.safetensors, "
                f"policy_preprocessor.json, policy_postprocessor.json); missing: {', '.join(missing) or 'not a directory'}.")
        return p
    if not _REPO_ID.match(path) or path.startswith((".", "/", "~")):
        raise PolicyLoadError(f"--policy-path {path}: no such directory, and not a Hugging Face repo id (owner/name).")
    return ensure_hub_files(path, model_type, "policy weights, config, processors", None, all_repos,
                            required=("config.json", "model.safetensors"))


# --------------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------------


@dataclass
class VLAPrefix:
    """What :meth:`LeRobotVLAAdapter.build_prefix` returns: the VLM prefix's pad mask (B, L) bool,
    its KV cache (a transformers ``Cache``), and the padded state (B, max_state_dim) (Pi0 puts the
    state in the suffix, so its ``denoise_step`` needs it)."""

    pad_masks: torch.Tensor
    past_key_values: Any
    state: torch.Tensor


def pick_device(device: str | None = None) -> torch.device:
    """``--device``: explicit value, else cuda > mps > cpu."""
    if device and device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class LeRobotVLAAdapter(VLAPolicyInterface):
    """:class:`VLAPolicyInterface` for a LeRobot flow-matching VLA (subclasses set the class
    attributes and the model-specific hooks). Construct with :meth:`load`.

    Extra attributes: ``policy`` (the LeRobot policy), ``preprocessor``/``postprocessor`` (its
    pipelines), ``camera_map`` ({sim camera: checkpoint key}), ``policy_dir``, ``info`` (what
    was chosen and why, for summaries), ``warnings`` (mismatch warnings printed at load).
    """

    #: Set by subclasses.
    model_type: str = ""
    DEFAULT_PATH: str = ""
    POLICY_CLASS_PATH: tuple[str, str] = ("", "")
    #: Number of inferences with debug output (state in each frame, chunk ranges).
    DEBUG_INFERENCES = 3

    def __init__(self, policy, preprocessor, postprocessor, *, frame: str, camera_map: dict[str, str],
                 task: str, device: torch.device, policy_dir: Path, info: dict, warnings: list[str],
                 debug_inferences: int = DEBUG_INFERENCES, verbose: bool = True):
        super().__init__()
        self.policy, self.model = policy, policy.model
        self.preprocessor, self.postprocessor = preprocessor, postprocessor
        cfg = policy.config
        self.chunk_size = int(cfg.chunk_size)
        self.n_action_steps = int(cfg.n_action_steps)
        self.action_dim = int(cfg.output_features["action"].shape[0])
        self.max_action_dim = int(cfg.max_action_dim)
        self.num_denoise_steps = int(self._num_steps(cfg))
        self.hidden_dim = int(self.model.action_out_proj.in_features)
        self.frame, self.camera_map, self.task = frame, camera_map, task
        self.device, self.policy_dir, self.info, self.warnings = device, policy_dir, info, warnings
        self.verbose = verbose
        self._debug_left = debug_inferences
        #: Number of chunks predicted so far (select_action re-plans every n_action_steps).
        self.inferences = 0
        self._hidden: torch.Tensor | None = None
        # The expert's per-token output is the input of action_out_proj: capture it there.
        self._hook = self.model.action_out_proj.register_forward_pre_hook(self._capture_hidden)

    # ------------------------------------------------------------------ subclass hooks
    @staticmethod
    def _num_steps(cfg) -> int:
        raise NotImplementedError

    @staticmethod
    def _set_num_steps(cfg, k: int) -> None:
        raise NotImplementedError

    @classmethod
    def _backbone_repos(cls, cfg) -> list[tuple[str, str, list[str] | None]]:
        """(repo id, what, allow_patterns) of the Hub repos besides the policy itself."""
        return []

    @classmethod
    def _prepare_config(cls, cfg, policy_dir: Path, all_repos) -> dict:
        """Point the config at local backbone files; return preprocessor overrides."""
        return {}

    @classmethod
    def _build_policy(cls, policy_cls, policy_dir: Path, cfg):
        return policy_cls.from_pretrained(str(policy_dir), config=cfg, strict=True)

    def _expert_module(self) -> torch.nn.Module:
        raise NotImplementedError

    def _head_modules(self) -> list[torch.nn.Module]:
        m = self.model
        return [m.action_in_proj, m.action_out_proj, m.action_time_mlp_in, m.action_time_mlp_out, m.state_proj]

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | None = None, *, device: str | None = None, frame: str = "auto",
             camera_map: str | dict | None = None, task: str | None = None, quantize: bool | None = None,
             n_action_steps: int | None = None, num_denoise_steps: int | None = None,
             gradient_checkpointing: bool | None = None, debug_inferences: int = DEBUG_INFERENCES,
             verbose: bool = True, frame_source: str | None = None,
             camera_map_source: str | None = None) -> "LeRobotVLAAdapter":
        """Load a checkpoint (Hub id or local directory) with its own pre/post-processors.

        Args:
            path: Hub id or directory (default :attr:`DEFAULT_PATH`).
            device: ``cpu``/``cuda``/``mps``/``auto`` (None = auto).
            frame: one of :data:`FRAME_CHOICES` (see :func:`resolve_frame`).
            camera_map: ``--camera-map`` (see :func:`resolve_camera_map`).
            task: language instruction (default: the recorded training task, else
                ``so101_mujoco_utils.DEFAULT_TASK``).
            quantize: Pi0 only: qint4 weights (None = on for MPS only, see pi0_quantization).
            n_action_steps: actions executed per chunk (default: the checkpoint's).
            num_denoise_steps: Euler steps per chunk (default: the checkpoint's).
            gradient_checkpointing: Pi0 only: the config switch used by training.
            debug_inferences: inferences with debug output.
            frame_source, camera_map_source: where a given ``frame`` / ``camera_map`` came from when
                not the command line (e.g. recorded in a ReinFlow checkpoint): printed and recorded
                as its source instead of ``--frame`` / ``--camera-map``.

        Raises:
            PolicyUnavailableOffline: weights not cached and no Hub (one message, see docs/vla.md).
            PolicyLoadError: wrong policy type, missing processor files/stats, weights that do not
                match the architecture.
            ValueError: bad frame / camera map / n_action_steps.
        """
        import importlib

        from lerobot.configs.policies import PreTrainedConfig
        from lerobot.policies.factory import make_pre_post_processors

        path = path or cls.DEFAULT_PATH
        default_repos = cls._backbone_repos(None)
        all_repos = [(path, "policy weights, config, processors", None), *default_repos]
        policy_dir = resolve_policy_dir(path, cls.model_type, all_repos)
        dev = pick_device(device)
        cfg = PreTrainedConfig.from_pretrained(str(policy_dir))
        if cfg.type != cls.model_type:
            raise PolicyLoadError(f"{path} is a '{cfg.type}' policy, not '{cls.model_type}': "
                                  f"use --model-type {cfg.type}.")
        cfg.device = dev.type
        if n_action_steps is not None:
            if not 1 <= n_action_steps <= cfg.chunk_size:
                raise ValueError(f"n_action_steps must be in 1..chunk_size={cfg.chunk_size}, got {n_action_steps}")
            cfg.n_action_steps = int(n_action_steps)
        if num_denoise_steps is not None:
            cls._set_num_steps(cfg, int(num_denoise_steps))
        if gradient_checkpointing is not None and hasattr(cfg, "gradient_checkpointing"):
            cfg.gradient_checkpointing = bool(gradient_checkpointing)
        all_repos = [(path, "policy weights, config, processors", None), *cls._backbone_repos(cfg)]
        pre_overrides = cls._prepare_config(cfg, policy_dir, all_repos)

        for name in ("policy_preprocessor.json", "policy_postprocessor.json"):
            if not (policy_dir / name).is_file():
                raise PolicyLoadError(
                    f"{path} has no {name}: checkpoints from LeRobot < 0.4 must be migrated with "
                    f"`python -m lerobot.processor.migrate_policy_normalization --pretrained-path {path}`.")
        meta = read_policy_meta(policy_dir)
        frame_name, frame_why = resolve_frame(frame, meta, str(path), source=frame_source)
        info: dict[str, Any] = {"model_type": cls.model_type, "policy_path": str(path),
                                "policy_dir": str(policy_dir), "frame": frame_name, "frame_source": frame_why}
        warn: list[str] = []

        ckpt_stats = _pipeline_stats(policy_dir, "policy_preprocessor.json")
        post_overrides: dict[str, Any] = {}
        pre_steps = _pipeline_step_names(policy_dir, "policy_preprocessor.json")
        post_steps = _pipeline_step_names(policy_dir, "policy_postprocessor.json")
        if "device_processor" in pre_steps:
            pre_overrides["device_processor"] = {"device": dev.type}
        if frame_name == "smolvla_absolute":
            ref = reference_stats()
            pre_overrides["normalizer_processor"] = {"stats": ref}
            post_overrides["unnormalizer_processor"] = {"stats": ref}
            info["stats_source"] = "reference SMOLVLA_* (so101_mujoco_utils: the statistics lerobot/smolvla_base was trained with)"
            own = ckpt_stats.get(u.OBS_STATE, {})
            if "mean" in own and "std" in own and not (
                    np.allclose(own["mean"], u.SMOLVLA_STATE_MEAN, rtol=0.01, atol=0.5)
                    and np.allclose(own["std"], u.SMOLVLA_STATE_STD, rtol=0.01, atol=0.5)):
                warn.append(f"the checkpoint's own observation.state stats (mean {np.round(own['mean'], 2)}, "
                            f"std {np.round(own['std'], 2)}) differ from the reference smolvla_absolute stats; "
                            "the reference stats are used (pass --frame lerobot_degrees to use the checkpoint's)")
        else:
            info["stats_source"] = "checkpoint (policy_preprocessor / policy_postprocessor stats)"
            if u.OBS_STATE not in ckpt_stats:
                warn.append("the checkpoint has no observation.state normalisation stats: state and actions "
                            "pass through unnormalised")
        pre_overrides = {k: v for k, v in pre_overrides.items() if k in pre_steps}
        post_overrides = {k: v for k, v in post_overrides.items() if k in post_steps}

        module_name, class_name = cls.POLICY_CLASS_PATH
        policy_cls = getattr(importlib.import_module(module_name), class_name)
        # Weights that get transformed (Pi0 quantization) are built on the CPU first, so the float32
        # model never has to fit on the accelerator.
        transform = cls._weight_transform(dev, quantize)
        cfg.device = "cpu" if transform else dev.type
        policy = cls._build_policy(policy_cls, policy_dir, cfg)
        _verify_weights(policy, policy_dir / "model.safetensors")
        weights_info = transform(policy) if transform else {"quantized": None}
        cfg.device = dev.type
        policy.to(dev).eval()
        info.update(weights_info)
        pre, post = make_pre_post_processors(cfg, pretrained_path=str(policy_dir),
                                             preprocessor_overrides=pre_overrides,
                                             postprocessor_overrides=post_overrides)

        expected = list(cfg.image_features)
        cmap, cmap_why = resolve_camera_map(expected, camera_map, meta.get("camera_map"), source=camera_map_source)
        info.update(camera_map=cmap, camera_map_source=cmap_why, checkpoint_image_keys=expected)
        train_task = meta.get("task")
        run_task = task or train_task or u.DEFAULT_TASK
        info.update(task=run_task, training_task=train_task)
        if train_task and run_task != train_task:
            warn.append(f"task {run_task!r} differs from the training task {train_task!r} "
                        "(VLAs are sensitive to the exact wording)")
        recorded_map = parse_camera_map(meta.get("camera_map"))
        if recorded_map and recorded_map != cmap:
            warn.append(f"camera map {cmap} differs from the one used in training {recorded_map}")

        adapter = cls(policy, pre, post, frame=frame_name, camera_map=cmap, task=run_task, device=dev,
                      policy_dir=policy_dir, info=info, warnings=warn, debug_inferences=debug_inferences,
                      verbose=verbose)
        info.update(chunk_size=adapter.chunk_size, n_action_steps=adapter.n_action_steps,
                    num_denoise_steps=adapter.num_denoise_steps, action_dim=adapter.action_dim,
                    device=str(dev))
        if verbose:
            adapter._print_load_report()
        return adapter

    @classmethod
    def _weight_transform(cls, device: torch.device, quantize: bool | None):
        """None, or a function ``policy -> info dict`` applied to the freshly loaded CPU weights
        before they move to ``device`` (Pi0: quantization)."""
        if quantize:
            raise ValueError(f"--quantize is only supported for pi0, not {cls.model_type}")
        return None

    def _print_load_report(self) -> None:
        i, tag = self.info, f"[{self.model_type}]"
        print(f"{tag} loaded {i['policy_path']} on {i['device']}: chunk {self.chunk_size}, executing "
              f"{self.n_action_steps} per chunk, {self.num_denoise_steps} denoising steps, "
              f"action dim {self.action_dim}")
        print(f"{tag} frame: {self.frame} ({i['frame_source']}); stats: {i['stats_source']}")
        print(f"{tag} checkpoint cameras: {', '.join(i['checkpoint_image_keys'])}; camera map "
              f"({i['camera_map_source']}): " + ", ".join(f"{k} ({u.CAMERAS[k]}) -> {v}" for k, v in self.camera_map.items()))
        print(f"{tag} training task: {i['training_task']!r}" if i["training_task"] else
              f"{tag} training task: not recorded in the checkpoint")
        print(f"{tag} task: {self.task!r}")
        for w in self.warnings:
            print(f"{tag} WARNING: {w}", file=sys.stderr)

    # ------------------------------------------------------------------ interface
    def prepare_batch(self, observations: dict, task: str | list[str] | None = None) -> dict:
        """Batched env observations -> the model batch (after LeRobot's preprocessor).

        Args:
            observations: ``observation.state`` (B, 6) MuJoCo radians and
                ``observation.images.cameraN`` (B, H, W, 3) uint8 (numpy or torch).
            task: a string (used for every row) or B strings (default :attr:`task`).

        Returns:
            The preprocessor's dict: normalised ``observation.state`` (B, 6), the mapped image keys
            (B, 3, H, W) float in [0, 1], language tokens/mask, on :attr:`device`; plus
            ``"so101.state_frame"`` (B, 6) float64 numpy, the state in the checkpoint frame.

        Raises:
            KeyError: a mapped camera is missing from the observations.
        """
        state = np.asarray(_to_numpy(observations[u.OBS_STATE]), dtype=np.float64)
        state_frame = mujoco_to_frame(state, self.frame)
        b = state.shape[0]
        raw: dict[str, Any] = {u.OBS_STATE: torch.as_tensor(state_frame, dtype=torch.float32)}
        for cam, key in self.camera_map.items():
            sim_key = u.OBS_IMAGE_PREFIX + cam
            if sim_key not in observations:
                raise KeyError(f"{sim_key} missing from the observation (available: {sorted(observations)}); "
                               "create the env with obs_mode='images'")
            img = torch.as_tensor(_to_numpy(observations[sim_key]))
            raw[key] = img.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        task = task or self.task
        raw["task"] = [task] * b if isinstance(task, str) else list(task)
        batch = self.preprocessor(raw)
        batch["so101.state_frame"] = state_frame
        return batch

    def denoise_step(self, prefix: VLAPrefix, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """One velocity evaluation through LeRobot's own ``denoise_step`` (see the interface)."""
        return self._lerobot_denoise(prefix, x_t.to(self.device, torch.float32), t.to(self.device, torch.float32))

    def _lerobot_denoise(self, prefix: VLAPrefix, x_t, t):
        raise NotImplementedError

    def _capture_hidden(self, _module, args) -> None:
        self._hidden = args[0]

    def expert_hidden(self) -> torch.Tensor:
        """(B, chunk_size, hidden_dim): the action expert's output tokens at the last denoise step.

        Raises:
            RuntimeError: no denoise step has run yet.
        """
        if self._hidden is None:
            raise RuntimeError("expert_hidden(): call denoise_step first")
        return self._hidden

    def to_mujoco_actions(self, x0: torch.Tensor, batch: dict | None = None) -> np.ndarray:
        """(B, chunk, max_action_dim) normalised flow output -> (B, chunk, 6) float32 MuJoCo radians:
        drop padding, LeRobot's unnormaliser (checkpoint or reference stats), frame -> MuJoCo, clamp."""
        return self._unnormalize(x0)[1]

    def _unnormalize(self, x0: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        a = x0[..., : self.action_dim].detach().to(torch.float32)
        in_frame = self.postprocessor(a)
        in_frame = np.asarray(in_frame.detach().cpu().numpy(), dtype=np.float64)
        q = u.clip_to_joint_limits(frame_to_mujoco(in_frame, self.frame)).astype(np.float32)
        return in_frame, q

    @torch.no_grad()
    def predict_action_chunk(self, observation: dict, task: str | None = None,
                             noise: torch.Tensor | None = None) -> np.ndarray:
        """(chunk_size, 6) float32 MuJoCo radians for one observation, through LeRobot's own
        ``sample_actions`` (prefix + KV cache once, ``num_denoise_steps`` Euler steps).
        Prints debug output for the first :attr:`DEBUG_INFERENCES` calls."""
        from vla_policy_interface import _add_batch_axis

        batch = self.prepare_batch(_add_batch_axis(observation), task or self.task)
        x = noise if noise is not None else self.sample_noise(1)
        x0 = self._lerobot_sample(batch, x.to(self.device, torch.float32))
        in_frame, q = self._unnormalize(x0)
        self.inferences += 1
        if self._debug_left > 0:
            self._debug_left -= 1
            self._print_debug(observation, batch, x0, in_frame, q)
        return q[0]

    def _lerobot_sample(self, batch: dict, noise: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _print_debug(self, observation, batch, x0, in_frame, q) -> None:
        n = self.DEBUG_INFERENCES - self._debug_left
        tag = f"[{self.model_type} debug {n}/{self.DEBUG_INFERENCES}]"
        f = lambda a: np.array2string(np.asarray(a, dtype=np.float64), precision=2, suppress_small=True,  # noqa: E731
                                      max_line_width=200)
        state = np.asarray(_to_numpy(observation[u.OBS_STATE]), dtype=np.float64)
        print(f"{tag} state MuJoCo rad      {f(state)}")
        print(f"{tag} state MuJoCo deg      {f(np.degrees(state))}")
        print(f"{tag} state LeRobot units   {f(u.mujoco_to_lerobot(state))}")
        print(f"{tag} state SmolVLA abs deg {f(u.mujoco_to_smolvla_degrees(state))}")
        print(f"{tag} state in frame {self.frame}: {f(batch['so101.state_frame'][0])}")
        print(f"{tag} normalised state      {f(batch[u.OBS_STATE][0, :self.action_dim].float().cpu().numpy())}")
        raw = x0[0, :, : self.action_dim].float().cpu().numpy()
        print(f"{tag} raw chunk   min {f(raw.min(0))} max {f(raw.max(0))}")
        print(f"{tag} unnormalised ({self.frame}) min {f(in_frame[0].min(0))} max {f(in_frame[0].max(0))}")
        print(f"{tag} MuJoCo rad (clamped) min {f(q[0].min(0))} max {f(q[0].max(0))}")

    def trainable_parameter_groups(self, preset: str) -> dict[str, list[torch.nn.Parameter]]:
        """Parameter groups for training; everything else gets ``requires_grad=False``.

        Presets: ``"heads"`` -> ``{"heads": action in/out projections, action-time MLP, state
        projection}``; ``"expert"`` -> ``{"expert": the action expert transformer, "heads": ...}``;
        ``"all"`` -> those plus ``{"vlm": every other parameter}`` (the VLM backbone; expensive).

        Raises:
            ValueError: unknown preset.
            RuntimeError: the weights are quantized (frozen integer weights cannot train).
        """
        if preset not in ("heads", "expert", "all"):
            raise ValueError(f"Unknown preset {preset!r} for {self.model_type}: choose 'heads', 'expert' or 'all'")
        if self.info.get("quantized"):
            raise RuntimeError("quantized weights cannot be trained: load with quantize=False (--no-quantize)")
        for p in self.model.parameters():
            p.requires_grad_(False)
        groups: dict[str, list[torch.nn.Parameter]] = {}
        if preset in ("expert", "all"):
            groups["expert"] = list(self._expert_module().parameters())
        groups["heads"] = [p for m in self._head_modules() for p in m.parameters()]
        if preset == "all":
            taken = {id(p) for ps in groups.values() for p in ps}
            groups["vlm"] = [p for p in self.model.parameters() if id(p) not in taken]
        for params in groups.values():
            for p in params:
                p.requires_grad_(True)
        return groups

    def describe(self) -> dict:
        """What was loaded and chosen (frame, stats, camera map, task, sizes) and the number of
        chunks predicted so far, for JSON summaries."""
        return {**self.info, "inferences": self.inferences}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _pipeline_step_names(policy_dir: Path, name: str) -> set[str]:
    cfg = json.loads((policy_dir / name).read_text())
    return {s.get("registry_name") for s in cfg.get("steps", [])}


def _pipeline_stats(policy_dir: Path, name: str) -> dict[str, dict[str, np.ndarray]]:
    """Stats stored by a saved pipeline's normaliser step ({} when none)."""
    from safetensors.numpy import load_file

    cfg = json.loads((policy_dir / name).read_text())
    out: dict[str, dict[str, np.ndarray]] = {}
    for step in cfg.get("steps", []):
        if step.get("registry_name") in ("normalizer_processor", "unnormalizer_processor") and step.get("state_file"):
            f = policy_dir / step["state_file"]
            if f.is_file():
                for key, arr in load_file(str(f)).items():
                    feat, _, stat = key.rpartition(".")
                    out.setdefault(feat, {})[stat] = arr
    return out


def _verify_weights(policy: torch.nn.Module, weights_file: Path, n_check: int = 8) -> None:
    """Fail unless the policy holds the weights of ``weights_file`` (LeRobot's Pi0 loader only
    prints a warning and returns random weights when keys do not match).

    Checks that >= 95% of the file's tensors have a same-shaped parameter in the model (keys
    with or without the ``model.`` prefix, Pi0's ``time_mlp_*`` renaming) and that ``n_check`` of
    them are equal.

    Raises:
        PolicyLoadError: the architecture does not match the file.
    """
    from safetensors import safe_open

    state = policy.state_dict()
    names = {k: k for k in state}
    names.update({k[len("model."):]: k for k in state if k.startswith("model.")})
    with safe_open(str(weights_file), framework="pt") as f:
        keys = list(f.keys())
        matched = []
        for k in keys:
            kk = re.sub(r"^(model\.)?time_mlp_(in|out)\.", r"\1action_time_mlp_\2.", k)  # Pi0's renaming
            target = names.get(kk) or names.get("model." + kk)
            if target is not None and tuple(f.get_slice(k).get_shape()) == tuple(state[target].shape):
                matched.append((k, target))
        if not keys or len(matched) < 0.95 * len(keys):
            raise PolicyLoadError(
                f"{weights_file}: only {len(matched)}/{len(keys)} tensors match the {type(policy).__name__} "
                "built from its config.json (wrong architecture or a modified config); refusing a partial load.")
        step = max(1, len(matched) // n_check)
        for k, target in matched[::step][:n_check]:
            if not torch.equal(f.get_tensor(k).to(state[target].dtype).cpu(), state[target].detach().cpu()):
                raise PolicyLoadError(f"{weights_file}: tensor {k} was not loaded into the model; refusing a partial load.")
