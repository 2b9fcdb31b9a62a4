"""The adapter SmolVLA and Pi0 share in the simulation: :class:`LeRobotVLAAdapter`.

``smolvla_adapter.SmolVLAAdapter`` and ``pi0_adapter.PI0Adapter`` subclass :class:`LeRobotVLAAdapter`,
which implements :class:`flow_matching_policy.FlowMatchingPolicy` on top of stock lerobot==0.6.1
(no fork; which LeRobot internals are used is listed in smolvla_modifications/README.md).

Owned here: loading (:meth:`LeRobotVLAAdapter.load`: config, normalisation stats, weights with
:func:`_verify_weights`, pre/post-processors), the batch/action conversions around the model, the
action queue, debug output, trainable parameter groups, :func:`pick_device`, :class:`VLAPrefix`
and :func:`reference_stats` (torch tensors). The jobs around it live in two torch-free modules:

* hub_download.py: ``--policy-path`` -> a local directory (Hub cache / download, offline
  messages), :class:`~hub_download.PolicyLoadError`, :class:`~hub_download.PolicyUnavailableOffline`;
* vla_frames.py: the joint frames (``FRAMES``, ``FRAME_CHOICES``, ``resolve_frame``), the camera
  map and the metadata file ``so101_policy_meta.json`` (``META_FILE``, ``write_policy_meta``).

Loading takes a Hub id or a local policy directory, i.e. what ``policy.save_pretrained`` +
``preprocessor.save_pretrained`` + ``postprocessor.save_pretrained`` write (``config.json``,
``model.safetensors``, ``policy_preprocessor.json``, ``policy_postprocessor.json`` and their
``*.safetensors`` stats). Optional extras of a local directory:

* ``so101_policy_meta.json`` (vla_frames.META_FILE): frame, training task, camera map;
* ``vlm/`` (SmolVLA): the VLM backbone's config/tokenizer/processor files, used instead of the
  Hub id in ``config.vlm_model_name``; ``tokenizer/`` (Pi0): used instead of
  ``google/paligemma-3b-pt-224``. With them a directory needs no Hugging Face cache at all.

New code imports those names from hub_download / vla_frames; the ones this module uses itself
(``PolicyLoadError``, ``resolve_frame``, ``resolve_camera_map``, ...) are still importable from here.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from so101_sim import so101_mujoco_utils as u
from so101_sim.hub_download import PolicyLoadError, resolve_policy_dir
from so101_sim.vla_frames import (
    frame_to_mujoco,
    mujoco_to_frame,
    parse_camera_map,
    read_policy_meta,
    resolve_camera_map,
    resolve_frame,
)
from so101_sim.flow_matching_policy import FlowMatchingPolicy


def reference_stats() -> dict[str, dict[str, torch.Tensor]]:
    """Normalisation stats of the ``smolvla_absolute`` frame (float32 tensors, degrees), in
    LeRobot's layout ``{"observation.state": {"mean", "std"}, "action": {"mean", "std"}}``.
    Source: ``so101_mujoco_utils.SMOLVLA_*`` (shared/reference/000)."""
    f = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    return {
        u.OBS_STATE: {"mean": f(u.SMOLVLA_STATE_MEAN), "std": f(u.SMOLVLA_STATE_STD)},
        "action": {"mean": f(u.SMOLVLA_ACTION_MEAN), "std": f(u.SMOLVLA_ACTION_STD)},
    }


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


class LeRobotVLAAdapter(FlowMatchingPolicy):
    """:class:`FlowMatchingPolicy` for a LeRobot flow-matching VLA (subclasses set the class
    attributes and the model-specific hooks). Construct with :meth:`load`.

    Extra attributes: ``policy`` (the LeRobot policy), ``preprocessor``/``postprocessor`` (its
    pipelines), ``camera_map`` ({sim camera: checkpoint key}), ``policy_dir``, ``info`` (what
    was chosen and why, for summaries), ``warnings`` (mismatch warnings printed at load).
    """

    #: Set by subclasses.
    model_type: str = ""
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

        Steps: :meth:`_load_config` (directory, device, config), the processor files, the frame
        (``vla_frames.resolve_frame``), the normalisation stats (:func:`_normalisation_overrides`),
        :meth:`_load_weights`, LeRobot's ``make_pre_post_processors``, the camera map and task.

        Args:
            path: Hub id or directory (default: policy_registry.POLICIES[model_type].default_path).
            device: ``cpu``/``cuda``/``mps``/``auto`` (None = auto).
            frame: one of ``vla_frames.FRAME_CHOICES`` (see ``vla_frames.resolve_frame``).
            camera_map: ``--camera-map`` (see ``vla_frames.resolve_camera_map``).
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
        from lerobot.policies.factory import make_pre_post_processors

        if not path:
            from so101_sim import policy_registry

            path = policy_registry.entry(cls.model_type).default_path
        policy_dir, cfg, dev, pre_overrides = cls._load_config(path, device, n_action_steps, num_denoise_steps,
                                                               gradient_checkpointing)
        _require_processor_files(path, policy_dir)
        meta = read_policy_meta(policy_dir)
        frame_name, frame_why = resolve_frame(frame, meta, str(path), source=frame_source)
        info: dict[str, Any] = {"model_type": cls.model_type, "policy_path": str(path),
                                "policy_dir": str(policy_dir), "frame": frame_name, "frame_source": frame_why}
        pre_overrides, post_overrides, stats_source, warn = _normalisation_overrides(
            policy_dir, frame_name, dev, pre_overrides)
        info["stats_source"] = stats_source
        policy, weights_info = cls._load_weights(policy_dir, cfg, dev, quantize)
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
        warn += _training_mismatches(run_task, train_task, cmap, meta.get("camera_map"))

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
    def _load_config(cls, path: str, device: str | None, n_action_steps: int | None,
                     num_denoise_steps: int | None, gradient_checkpointing: bool | None):
        """Load step 1: the policy directory, the device, the checkpoint's config with this run's
        overrides, and the preprocessor overrides of :meth:`_prepare_config` (local backbone files).

        Returns:
            ``(policy_dir, cfg, device, preprocessor_overrides)``.

        Raises:
            PolicyUnavailableOffline, PolicyLoadError: see :func:`hub_download.resolve_policy_dir`;
                PolicyLoadError also for a config of another policy type.
            ValueError: ``n_action_steps`` outside 1..chunk_size.
        """
        from lerobot.configs.policies import PreTrainedConfig

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
        return policy_dir, cfg, dev, cls._prepare_config(cfg, policy_dir, all_repos)

    @classmethod
    def _load_weights(cls, policy_dir: Path, cfg, dev: torch.device, quantize: bool | None):
        """Load step 2: the LeRobot policy with the verified weights of ``policy_dir``, transformed
        (:meth:`_weight_transform`), in eval mode on ``dev``. Leaves ``cfg.device = dev.type``.

        Returns:
            ``(policy, weights info dict)`` (``quantized`` and the transform's notes).

        Raises:
            PolicyLoadError: the weights do not match the architecture (:func:`_verify_weights`).
            ValueError: ``quantize`` for a model type that does not support it.
        """
        import importlib

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
        return policy, weights_info

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
        from so101_sim.flow_matching_policy import _add_batch_axis

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


def _require_processor_files(path: str, policy_dir: Path) -> None:
    """Raise :class:`PolicyLoadError` (with the migration command) unless ``policy_dir`` has the
    saved pre/post-processor pipelines of LeRobot >= 0.4."""
    for name in ("policy_preprocessor.json", "policy_postprocessor.json"):
        if not (policy_dir / name).is_file():
            raise PolicyLoadError(
                f"{path} has no {name}: checkpoints from LeRobot < 0.4 must be migrated with "
                f"`python -m lerobot.processor.migrate_policy_normalization --pretrained-path {path}`.")


def _normalisation_overrides(policy_dir: Path, frame: str, dev: torch.device,
                             pre_overrides: dict) -> tuple[dict, dict, str, list[str]]:
    """Overrides of the saved pipelines' steps for ``frame`` (added to ``pre_overrides``).

    ``device_processor`` gets ``dev``; ``smolvla_absolute`` replaces the checkpoint's stats by
    :func:`reference_stats` in both normalisers (warning when the checkpoint's own
    ``observation.state`` stats differ); other frames keep the checkpoint's stats (warning when it
    has none). Only steps the saved pipelines have are kept.

    Returns:
        ``(preprocessor overrides, postprocessor overrides, where the stats come from, warnings)``.
    """
    ckpt_stats = _pipeline_stats(policy_dir, "policy_preprocessor.json")
    post_overrides: dict[str, Any] = {}
    warn: list[str] = []
    pre_steps = _pipeline_step_names(policy_dir, "policy_preprocessor.json")
    post_steps = _pipeline_step_names(policy_dir, "policy_postprocessor.json")
    if "device_processor" in pre_steps:
        pre_overrides["device_processor"] = {"device": dev.type}
    if frame == "smolvla_absolute":
        ref = reference_stats()
        pre_overrides["normalizer_processor"] = {"stats": ref}
        post_overrides["unnormalizer_processor"] = {"stats": ref}
        stats_source = "reference SMOLVLA_* (so101_mujoco_utils: the statistics lerobot/smolvla_base was trained with)"
        own = ckpt_stats.get(u.OBS_STATE, {})
        if "mean" in own and "std" in own and not (
                np.allclose(own["mean"], u.SMOLVLA_STATE_MEAN, rtol=0.01, atol=0.5)
                and np.allclose(own["std"], u.SMOLVLA_STATE_STD, rtol=0.01, atol=0.5)):
            warn.append(f"the checkpoint's own observation.state stats (mean {np.round(own['mean'], 2)}, "
                        f"std {np.round(own['std'], 2)}) differ from the reference smolvla_absolute stats; "
                        "the reference stats are used (pass --frame lerobot_degrees to use the checkpoint's)")
    else:
        stats_source = "checkpoint (policy_preprocessor / policy_postprocessor stats)"
        if u.OBS_STATE not in ckpt_stats:
            warn.append("the checkpoint has no observation.state normalisation stats: state and actions "
                        "pass through unnormalised")
    pre_overrides = {k: v for k, v in pre_overrides.items() if k in pre_steps}
    post_overrides = {k: v for k, v in post_overrides.items() if k in post_steps}
    return pre_overrides, post_overrides, stats_source, warn


def _training_mismatches(run_task: str, train_task: str | None, cmap: dict[str, str],
                         recorded_camera_map) -> list[str]:
    """Warnings for a task or camera map that differs from the one recorded for training."""
    warn = []
    if train_task and run_task != train_task:
        warn.append(f"task {run_task!r} differs from the training task {train_task!r} "
                    "(VLAs are sensitive to the exact wording)")
    recorded_map = parse_camera_map(recorded_camera_map)
    if recorded_map and recorded_map != cmap:
        warn.append(f"camera map {cmap} differs from the one used in training {recorded_map}")
    return warn


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
