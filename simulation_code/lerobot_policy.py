"""Any LeRobot policy checkpoint in the sim: ``run_mujoco_simulation.py --model-type lerobot``.

    python run_mujoco_simulation.py --model-type lerobot --policy-path OUT/checkpoints/000100/pretrained_model \\
        --headless --episodes 10

A ``pretrained_model`` directory (``config.json`` naming the type: act, diffusion, vqbet, smolvla,
pi0, pi05, ..., or this repo's so101_act plugin; ``model.safetensors``; the pre/post-processor files) runs through LeRobot's own
code: ``get_policy_class(type).from_pretrained``, ``make_pre_post_processors`` and
``select_action``, exactly as ``lerobot-eval`` does, on the observation ``lerobot-eval`` gets from
``--env.type=so101_pickplace`` (lerobot_env.to_lerobot_observation and LeRobot's
``preprocess_observation``). So both give the same episodes on the same seeds (tests/test_lerobot_plugin.py).

The rules used for SmolVLA/Pi0 (docs/vla.md) pick what the sim feeds the checkpoint:

* frame (``--frame``; vla_frames.resolve_frame): ``auto`` = recorded in so101_policy_meta.json, else
  ``lerobot_degrees`` (LeRobot calibrated units, what this repo's datasets store);
* cameras: each image feature ``observation.images.<name>`` of the checkpoint gets a sim camera
  from ``--camera-map`` (``camera_up=front,wrist_camera=wrist``: sim camera = checkpoint image name;
  sim keys camera1|2|3 work too), else the camera map the training dataset recorded (found through
  the checkpoint's train_config.json), else by name (:func:`default_sim_camera`). The env renders
  exactly those cameras at the checkpoint's image size;
* task (``--task``): the language instruction, default the recorded training task, else
  so101_mujoco_utils.DEFAULT_TASK;
* control rate: the training dataset's fps when it can be found (its meta/info.json), else 10 Hz.

A checkpoint that needs an input the sim cannot give (another state size, an environment state, a
camera that cannot be mapped) fails with one message naming the keys (:class:`~hub_download.PolicyLoadError`).
This module imports torch/lerobot only in :meth:`LeRobotPolicy.load`; :func:`sim_setup` reads JSON only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from so101_sim import registration
from so101_sim import so101_mujoco_utils as u
from so101_sim import vla_frames
from so101_sim.hub_download import PolicyLoadError, resolve_policy_dir

#: Checkpoint image names that name no sim camera, mapped by default (the real-robot schema's
#: names, record_dataset.py --schema so101_follower).
NAMED_CAMERAS = {"front": "camera_up", "wrist": "wrist_camera"}


def default_sim_camera(name: str) -> str | None:
    """The MuJoCo camera a checkpoint image named ``name`` gets by default: a sim key (camera1|2|3,
    so101_mujoco_utils.CAMERAS), a MuJoCo camera name, or :data:`NAMED_CAMERAS`; None otherwise."""
    if name in u.CAMERAS:
        return u.CAMERAS[name]
    if name in u.CAMERAS.values():
        return name
    return NAMED_CAMERAS.get(name)


def _sim_camera(spec: str) -> str | None:
    return u.CAMERAS.get(spec, spec if spec in u.CAMERAS.values() else None)


@dataclass(frozen=True)
class SimSetup:
    """What the sim must provide for a checkpoint (:func:`sim_setup`).

    Attributes:
        policy_dir: the local checkpoint directory.
        cameras: checkpoint image name -> MuJoCo camera ({} for a state-only policy).
        image_hw: (height, width) in pixels of every image feature, or None.
        control_hz: control rate (Hz) the env runs at.
        task: the language instruction.
        frame: the joint frame (vla_frames.FRAMES).
        why: where each choice came from (printed with -v, recorded in the summary).
    """

    policy_dir: Path
    cameras: dict
    image_hw: tuple[int, int] | None
    control_hz: float
    task: str
    frame: str
    why: dict

    def env_kwargs(self, env_id: str) -> dict:
        """``gym.make`` keyword arguments of the env this checkpoint needs (so101 convention)."""
        kwargs: dict = {"obs_mode": "images" if self.cameras else "state"}
        if self.cameras:
            kwargs.update(cameras=dict(self.cameras), image_size=self.image_hw)
        if self.control_hz != registration.REGISTERED_CONTROL_HZ:
            kwargs.update(control_hz=self.control_hz, max_episode_steps=registration.episode_steps(env_id, self.control_hz))
        return kwargs


def _training_dataset_meta(policy_dir: Path) -> tuple[dict, str | None]:
    """What the dataset the checkpoint was trained on recorded, when it is on this disk (found
    through ``train_config.json``'s ``dataset.root``): ``{"fps": ..., "camera_map": {image name:
    MuJoCo camera}, "control_hz": ...}`` from its meta/info.json and this repo's recording sidecar
    (record_dataset.RECORDING_META); and the dataset folder (None when not found)."""
    from so101_sim.record_dataset import RECORDING_META

    def read(path: Path) -> dict:
        try:
            data = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    root = (read(policy_dir / "train_config.json").get("dataset") or {}).get("root")
    if not root or not (Path(root) / "meta" / "info.json").is_file():
        return {}, None
    info, sidecar = read(Path(root) / "meta" / "info.json"), read(Path(root) / RECORDING_META)
    return {"fps": info.get("fps"), "camera_map": sidecar.get("camera_map"), "control_hz": sidecar.get("control_hz")}, root


def _input_features(policy_dir: Path) -> dict:
    try:
        cfg = json.loads((policy_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PolicyLoadError(f"{policy_dir / 'config.json'}: cannot read the policy config ({e})") from e
    if "type" not in cfg:
        raise PolicyLoadError(f"{policy_dir / 'config.json'} has no 'type': not a LeRobot policy checkpoint")
    bad_action = cfg.get("output_features", {}).get("action", {}).get("shape")
    if bad_action is not None and list(bad_action) != [u.NUM_JOINTS]:
        raise PolicyLoadError(f"the checkpoint's action has shape {bad_action}; the sim's SO-101 takes "
                              f"({u.NUM_JOINTS},) joint targets ({', '.join(u.LEROBOT_MOTOR_NAMES)})")
    return cfg.get("input_features", {})


def _recorded_cameras(dataset: dict, meta: dict) -> dict | None:
    """{image name: sim camera} recorded by the training dataset's sidecar, else by
    so101_policy_meta.json (``cameras``, or its ``camera_map`` {sim key: checkpoint key} inverted)."""
    recorded = dataset.get("camera_map") or meta.get("cameras")
    if not recorded and isinstance(meta.get("camera_map"), dict):
        recorded = {k.removeprefix(u.OBS_IMAGE_PREFIX): s for s, k in meta["camera_map"].items()}
    return recorded or None


def _camera_choice(names: list[str], camera_map: str | None, recorded: dict | None) -> tuple[dict, str]:
    if camera_map:
        pairs = {}
        for item in filter(None, (p.strip() for p in camera_map.split(","))):
            if "=" not in item:
                raise PolicyLoadError(f"--camera-map entry {item!r} must look like <sim camera>=<checkpoint image name>")
            sim, name = (x.strip() for x in item.split("=", 1))
            if _sim_camera(sim) is None:
                raise PolicyLoadError(f"--camera-map: the sim has no camera {sim!r}; available: "
                                      + ", ".join(f"{k} ({v})" for k, v in u.CAMERAS.items()))
            pairs[name.removeprefix(u.OBS_IMAGE_PREFIX)] = _sim_camera(sim)
        return pairs, "--camera-map"
    if recorded:
        return {k: _sim_camera(v) or v for k, v in recorded.items()}, "recorded by the training dataset"
    return {n: default_sim_camera(n) for n in names if default_sim_camera(n)}, "default (by image name)"


def sim_setup(path: str, *, camera_map: str | None = None, task: str | None = None, frame: str = "auto") -> SimSetup:
    """Read a checkpoint's config (JSON only, no torch) and decide cameras, image size, rate, task, frame.

    Raises:
        PolicyLoadError: unreadable config; an input the sim cannot give (names the keys and what
            the sim offers); a camera left without a sim camera (names it, suggests --camera-map);
            image features of different sizes.
        PolicyUnavailableOffline: a Hub id that is not cached while offline.
    """
    policy_dir = resolve_policy_dir(path, "lerobot", [(path, "policy", None)])
    feats = _input_features(policy_dir)
    images = {k.removeprefix(u.OBS_IMAGE_PREFIX): v for k, v in feats.items() if k.startswith(u.OBS_IMAGE_PREFIX)}
    unsupported = [f"{k} {v.get('shape')}" for k, v in feats.items() if k not in (u.OBS_STATE,) and
                   not k.startswith(u.OBS_IMAGE_PREFIX)]
    state = feats.get(u.OBS_STATE)
    if state is not None and list(state.get("shape", [])) != [u.NUM_JOINTS]:
        unsupported.append(f"{u.OBS_STATE} {state.get('shape')} (the sim gives ({u.NUM_JOINTS},))")
    if unsupported:
        raise PolicyLoadError(f"the checkpoint expects inputs the sim cannot give: {', '.join(unsupported)}. The sim gives "
                              f"{u.OBS_STATE} ({u.NUM_JOINTS},) and camera images observation.images.<name> (3, H, W).")
    dataset, dataset_root = _training_dataset_meta(policy_dir)
    meta = vla_frames.read_policy_meta(policy_dir)
    recorded = _recorded_cameras(dataset, meta)
    cams, cam_why = _camera_choice(list(images), camera_map, recorded)
    missing = [n for n in images if n not in cams]
    wrong = [c for c in cams.values() if c not in u.CAMERAS.values()]
    if missing or wrong:
        raise PolicyLoadError(
            f"the checkpoint's camera(s) {', '.join(u.OBS_IMAGE_PREFIX + n for n in missing) or ', '.join(wrong)} have no sim "
            f"camera ({cam_why}). Sim cameras: {', '.join(f'{k} ({v})' for k, v in u.CAMERAS.items())}. "
            f"Pass e.g. --camera-map " + ",".join(f"{c}={n}" for c, n in zip(u.CAMERAS.values(), images)))
    cams = {n: cams[n] for n in images}
    sizes = {tuple(v["shape"][-2:]) for v in images.values()}
    if len(sizes) > 1:
        raise PolicyLoadError(f"the checkpoint's images have different sizes {sorted(sizes)}; the sim renders one size")
    too_big = [hw for hw in sizes if hw[0] > u.MAX_IMAGE_HW[0] or hw[1] > u.MAX_IMAGE_HW[1]]
    if too_big:
        raise PolicyLoadError(f"the checkpoint's images are {too_big[0][0]}x{too_big[0][1]} (HxW); the sim renders at "
                              f"most {u.MAX_IMAGE_HW[0]}x{u.MAX_IMAGE_HW[1]} (so101_mujoco_utils.MAX_IMAGE_HW)")
    hz = float(dataset.get("control_hz") or dataset.get("fps") or registration.REGISTERED_CONTROL_HZ)
    frame_name, frame_why = vla_frames.resolve_frame(frame, meta, path)
    run_task = task or meta.get("task") or u.DEFAULT_TASK
    why = {"cameras": cam_why, "control_hz": f"training dataset {dataset_root}" if dataset_root else "default",
           "frame": frame_why, "task": "--task" if task else ("recorded" if meta.get("task") else "default")}
    return SimSetup(policy_dir, cams, sizes.pop() if sizes else None, hz, run_task, frame_name, why)


class LeRobotPolicy:
    """A LeRobot ``PreTrainedPolicy`` as a sim policy: ``reset(seed)``, ``act(obs) -> (6,) MuJoCo rad``.

    ``act`` takes the env's observation (so101 convention, cameras named as the checkpoint's
    images: :meth:`SimSetup.env_kwargs`), converts it as lerobot-eval's env does, runs LeRobot's
    preprocessor, ``select_action`` (the policy's own action queue: ``n_action_steps``) and
    postprocessor, and returns the action in MuJoCo radians.
    """

    name = "lerobot"

    def __init__(self, policy, preprocessor, postprocessor, setup: SimSetup, device: str):
        self.policy, self.preprocessor, self.postprocessor = policy, preprocessor, postprocessor
        self.setup, self.device = setup, device

    @classmethod
    def load(cls, path: str, *, device: str | None = None, camera_map: str | None = None, task: str | None = None,
             frame: str = "auto", **_ignored) -> "LeRobotPolicy":
        """Load ``path`` (a pretrained_model directory or a Hub id) with LeRobot's factory.

        Raises:
            PolicyLoadError: see :func:`sim_setup`, or LeRobot could not build the policy (its message).
        """
        setup = sim_setup(path, camera_map=camera_map, task=task, frame=frame)
        from lerobot.configs.policies import PreTrainedConfig
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors

        from so101_sim import so101_act_policy  # noqa: F401  registers --policy.type=so101_act
        from so101_sim.lerobot_vla_adapter import pick_device

        dev = str(pick_device(device))
        try:
            cfg = PreTrainedConfig.from_pretrained(setup.policy_dir)
            cfg.device = dev
            overrides = {"device_processor": {"device": dev}}
            if getattr(cfg, "vlm_model_name", None) and (setup.policy_dir / "vlm").is_dir():
                # a SmolVLA's own backbone folder, as the adapter does; its tokenizer too (the saved
                # tokenizer_name is relative, or a path on the machine that trained it)
                cfg.vlm_model_name = str(setup.policy_dir / "vlm")
                overrides["tokenizer_processor"] = {"tokenizer_name": cfg.vlm_model_name}
            policy = get_policy_class(cfg.type).from_pretrained(setup.policy_dir, config=cfg)
            pre, post = make_pre_post_processors(cfg, pretrained_path=str(setup.policy_dir),
                                                 preprocessor_overrides=overrides)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise PolicyLoadError(f"LeRobot could not load the {setup.policy_dir} checkpoint: {e}") from e
        policy.eval()
        return cls(policy, pre, post, setup, dev)

    def reset(self, seed: int) -> None:
        """Clear the policy's action queue and seed torch with the episode seed (a sampling policy,
        e.g. a flow-matching VLA or Diffusion, then repeats its episode; lerobot-eval seeds once per run)."""
        import torch

        torch.manual_seed(seed)
        self.policy.reset()

    def act(self, obs: dict) -> np.ndarray:
        import torch
        from lerobot.envs.utils import preprocess_observation

        from so101_sim.lerobot_env import AGENT_POS, PIXELS

        state = vla_frames.mujoco_to_frame(obs[u.OBS_STATE], self.setup.frame).astype(np.float32)
        raw = {AGENT_POS: state[None]}
        if self.setup.cameras:
            raw[PIXELS] = {n: obs[u.OBS_IMAGE_PREFIX + n][None] for n in self.setup.cameras}
        batch = preprocess_observation(raw)
        batch["task"] = [self.setup.task]
        batch = self.preprocessor(batch)
        with torch.inference_mode():
            action = self.postprocessor(self.policy.select_action(batch))
        return vla_frames.frame_to_mujoco(action.to("cpu").numpy()[0], self.setup.frame)

    def describe(self) -> dict:
        """What ran (for the summary): type, directory, cameras, rate, task, frame and why."""
        s = self.setup
        return {"policy_type": self.policy.config.type, "policy_dir": str(s.policy_dir), "cameras": s.cameras,
                "image_hw": s.image_hw, "control_hz": s.control_hz, "task": s.task, "frame": s.frame, "why": s.why}
