"""Checkpoints in the ecosystem's form (print_checkpoint_stats.py ``--export-pretrained DIR``).

* A SmolVLA / Pi0 ReinFlow (or BC) checkpoint -> a LeRobot ``pretrained_model`` directory:
  the base VLA with the checkpoint's trained tensors applied, written by LeRobot's own
  ``save_pretrained`` (``config.json``, ``model.safetensors``) and the pre/post-processors'
  ``save_pretrained`` (JSON + stats safetensors). The state/action statistics are rewritten to
  LeRobot calibrated units (:func:`to_calibrated_stats`), the units ``lerobot-eval
  --env.type=so101_pickplace`` and this repo's datasets use, and so101_policy_meta.json records
  ``frame: lerobot_degrees``, the task and the camera map. ``lerobot-eval --policy.path=DIR`` and
  ``run_mujoco_simulation.py --model-type lerobot --policy-path DIR`` load it.
* A flow-policy checkpoint -> ``model.safetensors`` (the policy's tensors, ``policy.*``, and the
  ReinFlow noise head's, ``noise_head.*``) + ``config.json`` (architecture, normalisation stats,
  ReinFlow/noise-head configs, source, iteration): no pickle anywhere. :func:`load_flow_pretrained`
  reads it back as a checkpoint_io.Checkpoint (``kind="policy"``), so ``FlowPolicy.load(DIR)`` and
  ``run_mujoco_simulation.py --model-type flow --policy-path DIR`` run it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from so101_sim import so101_mujoco_utils as u
from so101_sim import vla_frames

FLOW_FORMAT = "so101-flow-pretrained-v1"
FLOW_WEIGHTS, FLOW_CONFIG = "model.safetensors", "config.json"
#: Statistics that move with the units (a location) and that scale (a spread); others (count) stay.
SCALE_STATS = ("std",)


def frame_affine(frame: str) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)``, (6,) float64 each, with ``frame units = a * calibrated + b`` per joint
    (vla_frames.mujoco_to_frame vs so101_mujoco_utils.mujoco_to_lerobot, probed at two poses).

    Raises:
        ValueError: the frame is not affine in calibrated units (checked at a third pose).
    """
    q = np.stack([np.zeros(u.NUM_JOINTS), np.full(u.NUM_JOINTS, 0.5), np.full(u.NUM_JOINTS, -0.3)])
    f, c = vla_frames.mujoco_to_frame(q, frame), u.mujoco_to_lerobot(q)
    a = (f[1] - f[0]) / (c[1] - c[0])
    b = f[0] - a * c[0]
    if not np.allclose(a * c[2] + b, f[2], atol=1e-9) or np.any(a <= 0):
        raise ValueError(f"frame {frame} is not an increasing affine function of LeRobot calibrated units")
    return a, b


def to_calibrated_stats(stats: dict[str, np.ndarray], frame: str) -> dict[str, np.ndarray]:
    """Normalisation stats of ``observation.state`` / ``action`` in ``frame`` units -> the same
    normalisation in calibrated units (x_frame = a x + b: locations (mean, min, max, quantiles)
    become (s - b) / a, spreads (std) s / a), so normalising calibrated inputs gives exactly the
    numbers the policy saw in its own frame. Keys are flat (``"observation.state.mean"``);
    other keys are returned unchanged."""
    a, b = frame_affine(frame)
    out = {}
    for key, value in stats.items():
        feature, _, stat = key.rpartition(".")
        v = np.asarray(value, dtype=np.float64)
        if feature in (u.OBS_STATE, "action") and v.shape[-1:] == (u.NUM_JOINTS,) and stat != "count":
            v = v / a if stat in SCALE_STATS else (v - b) / a
            out[key] = v.astype(np.asarray(value).dtype)
        else:
            out[key] = value
    return out


def _rewrite_stats_files(out: Path, frame: str) -> list[str]:
    import torch
    from safetensors.torch import load_file, save_file

    changed = []
    for path in sorted(out.glob("*normalizer_processor.safetensors")):
        tensors = load_file(path)
        conv = to_calibrated_stats({k: v.numpy() for k, v in tensors.items()}, frame)
        save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in conv.items()}, path)
        changed.append(path.name)
    return changed


def export_vla_pretrained(ckpt, out: Path, device: str = "cpu") -> Path:
    """Write the LeRobot ``pretrained_model`` directory of a SmolVLA/Pi0 checkpoint (module docstring).

    A ReinFlow checkpoint's denoising steps K become the config's ``num_steps``, so LeRobot's own
    sampler (x_0 ~ N(0, I), K Euler steps, no injected noise) is the deterministic sampler the run
    evaluated, x_0 included (seeded the same way, the same distribution; not the same draws).

    Raises:
        SystemExit / RuntimeError / ValueError: the base VLA cannot be rebuilt or does not match
            (reinflow_vla.load_for_inference).
        ValueError: the run trained with another chain start than x_0 ~ N(0, I)
            (``--init-noise-scale`` not 1), which LeRobot's sampler cannot reproduce.
    """
    from so101_sim import reinflow_vla as rv

    rf = ckpt.reinflow_config or {}
    if float(rf.get("init_noise_scale", 1.0)) != 1.0:
        raise ValueError(f"this ReinFlow run trained with chain start x_0 ~ N(0, {rf['init_noise_scale']:g}^2 I); "
                         "LeRobot's SmolVLA/Pi0 sampler starts at x_0 ~ N(0, I), so the export would not deploy the "
                         "policy as trained: export a run trained with --init-noise-scale 1 (the VLA default)")
    args = argparse.Namespace(device=device, frame=None, camera_map=None, task=None, n_action_steps=None,
                              policy_path=None)
    adapter = rv.load_for_inference(ckpt, args)
    if rf.get("num_steps"):
        adapter.policy.config.num_steps = int(rf["num_steps"])
    out.mkdir(parents=True, exist_ok=True)
    adapter.policy.save_pretrained(out)
    adapter.preprocessor.save_pretrained(out)
    adapter.postprocessor.save_pretrained(out)
    if adapter.frame != "lerobot_degrees":
        _rewrite_stats_files(out, adapter.frame)
    local_vlm = bundle_local_vlm(out, getattr(adapter.policy.config, "vlm_model_name", None))
    names = {k.removeprefix(u.OBS_IMAGE_PREFIX): u.CAMERAS[s] for s, k in adapter.camera_map.items()}
    vla_frames.write_policy_meta(out, "lerobot_degrees", task=adapter.task, camera_map=dict(adapter.camera_map),
                                 cameras=names, exported_from={"model_type": ckpt.model_type, "kind": ckpt.kind,
                                                               "iteration": ckpt.iteration, "trained_frame": adapter.frame},
                                 **({"note": "config.vlm_model_name is the vlm/ folder next to this file"} if local_vlm else {}))
    return out


def bundle_local_vlm(out: Path, vlm_name: str | None) -> bool:
    """A SmolVLA whose VLM backbone is a local folder (a locally built SmolVLM, e.g.
    checkpoints/smolvla_bc/vlm): copy it to ``out/vlm`` and point ``config.vlm_model_name`` and the
    tokenizer step of ``policy_preprocessor.json`` at ``vlm`` (our adapter resolves it against the
    folder; ``lerobot-eval`` against its working directory: run it from inside ``out``). A Hub id is
    left as it is. Returns whether a folder was bundled."""
    import shutil

    if not vlm_name or not Path(vlm_name).is_dir():
        return False
    shutil.copytree(vlm_name, out / "vlm", dirs_exist_ok=True)
    for name, indent, edit in (("config.json", 4, lambda d: d.update(vlm_model_name="vlm")),
                               ("policy_preprocessor.json", 2, lambda d: [step["config"].update(tokenizer_name="vlm")
                                                                          for step in d.get("steps", [])
                                                                          if "tokenizer_name" in step.get("config", {})])):
        if (out / name).is_file():  # LeRobot's own indents
            data = json.loads((out / name).read_text())
            edit(data)
            (out / name).write_text(json.dumps(data, indent=indent) + "\n")
    return True


def export_flow_pretrained(ckpt, out: Path) -> Path:
    """Write a flow checkpoint as safetensors + JSON (module docstring)."""
    from safetensors.torch import save_file

    tensors = {f"policy.{k}": v.contiguous() for k, v in ckpt.policy_state.items()}
    tensors.update({f"noise_head.{k}": v.contiguous() for k, v in (ckpt.noise_head_state or {}).items()})
    config = {"format": FLOW_FORMAT, "model_type": "flow", "policy_config": ckpt.policy_config,
              "norm_stats": ckpt.norm_stats, "reinflow_config": ckpt.reinflow_config,
              "noise_head_config": ckpt.noise_head_config, "source": ckpt.source, "iteration": ckpt.iteration,
              "exported_from_kind": ckpt.kind}
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / FLOW_WEIGHTS)
    (out / FLOW_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return out


def is_flow_pretrained(path) -> bool:
    """True when ``path`` is a directory written by :func:`export_flow_pretrained`."""
    p = Path(path) / FLOW_CONFIG
    try:
        return p.is_file() and json.loads(p.read_text()).get("format") == FLOW_FORMAT
    except (OSError, json.JSONDecodeError):
        return False


def load_flow_pretrained(path):
    """Read an :func:`export_flow_pretrained` directory as a checkpoint_io.Checkpoint (``kind="policy"``).

    Raises:
        checkpoint_io.CheckpointError: not such a directory, or unreadable files (names the file).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from so101_sim.checkpoint_io import Checkpoint, CheckpointError

    path = Path(path)
    if not is_flow_pretrained(path):
        raise CheckpointError(f"{path}: not a flow policy export ({FLOW_CONFIG} with format {FLOW_FORMAT})")
    config = json.loads((path / FLOW_CONFIG).read_text())
    try:
        tensors = load_file(path / FLOW_WEIGHTS)
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"{path / FLOW_WEIGHTS}: cannot read the weights ({e})") from e
    part = lambda prefix: {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
    return Checkpoint(kind="policy", model_type="flow", policy_config=config["policy_config"],
                      norm_stats=config["norm_stats"], policy_state=part("policy."),
                      reinflow_config=config.get("reinflow_config"), noise_head_config=config.get("noise_head_config"),
                      noise_head_state=part("noise_head.") or None, source=config.get("source") or "",
                      iteration=config.get("iteration") or 0)


def export_pretrained(ckpt, out: Path, device: str = "cpu") -> Path:
    """The export of ``ckpt`` by model type: flow -> :func:`export_flow_pretrained`, VLAs ->
    :func:`export_vla_pretrained`."""
    if ckpt.model_type == "flow":
        return export_flow_pretrained(ckpt, out)
    return export_vla_pretrained(ckpt, out, device)
