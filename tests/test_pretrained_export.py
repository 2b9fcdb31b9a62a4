"""Checkpoints in the ecosystem's form (pretrained_export.py, print_checkpoint_stats.py
--export-pretrained): a SmolVLA ReinFlow delta as a LeRobot pretrained_model directory that
LeRobot's own loader runs with the same actions, and the flow policy as safetensors + JSON."""

import json
import shutil

import numpy as np
import pytest
import torch

from so101_sim import checkpoint_io as ckio
from so101_sim import policy_registry as pr
from so101_sim import pretrained_export as pe
from so101_sim import reinflow_vla as rv
from so101_sim import so101_mujoco_utils as u
from so101_sim import vla_frames
from vla_tiny import fake_obs

IMG = 32


def test_calibrated_stats_normalise_to_the_same_numbers():
    rng = np.random.default_rng(0)
    q = rng.uniform(-1, 1, (5, u.NUM_JOINTS))
    absolute, calibrated = vla_frames.mujoco_to_frame(q, "smolvla_absolute"), u.mujoco_to_lerobot(q)
    stats = {"observation.state.mean": rng.normal(size=6) * 10, "observation.state.std": rng.uniform(5, 50, 6),
             "observation.state.min": rng.normal(size=6), "action.q99": rng.normal(size=6), "observation.state.count": np.array([7])}
    conv = pe.to_calibrated_stats(stats, "smolvla_absolute")
    z_abs = (absolute - stats["observation.state.mean"]) / stats["observation.state.std"]
    z_cal = (calibrated - conv["observation.state.mean"]) / conv["observation.state.std"]
    np.testing.assert_allclose(z_cal, z_abs, atol=1e-9)
    a, b = pe.frame_affine("smolvla_absolute")
    np.testing.assert_allclose(a * conv["action.q99"] + b, stats["action.q99"], atol=1e-9)
    assert conv["observation.state.count"] is stats["observation.state.count"]
    assert not np.allclose(conv["observation.state.mean"], stats["observation.state.mean"])  # it did convert


def test_smolvla_delta_exports_to_a_lerobot_directory_with_the_same_actions(tiny_dirs, tmp_path):
    base_dir = str(tiny_dirs["smolvla"])
    pol = rv.load_policy("smolvla", base_dir, device="cpu", verbose=False)
    assert pol.frame == "smolvla_absolute"  # the tiny SmolVLA stands in for smolvla_base: stats get converted
    groups = pol.trainable_parameter_groups("heads")
    names = {n for ns in rv.trainable_names(pol, groups).values() for n in ns}
    with torch.no_grad():  # "fine-tuned": the trained tensors differ from the base
        for n, p in pol.model.named_parameters():
            if n in names:
                p.add_(0.05 * torch.randn_like(p))
    ck = ckio.Checkpoint(kind="reinflow", **rv.checkpoint_fields(pol, "heads", groups,
                                                                 rv.base_policy_info(pol, base_dir, names, IMG)))
    out = pe.export_pretrained(ck, tmp_path / "pretrained_model")
    for f in ("config.json", "model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json"):
        assert (out / f).is_file(), f
    meta = json.loads((out / vla_frames.META_FILE).read_text())
    assert meta["frame"] == "lerobot_degrees" and meta["exported_from"]["trained_frame"] == "smolvla_absolute"

    exported = pr.load_policy("lerobot", str(out), device="cpu")
    assert exported.setup.frame == "lerobot_degrees"
    assert exported.setup.cameras == {k.removeprefix(u.OBS_IMAGE_PREFIX): u.CAMERAS[s] for s, k in pol.camera_map.items()}
    obs = fake_obs(q_rad=np.array([0.1, -0.4, 0.5, 0.2, -0.3, 0.4], np.float32), size=IMG, seed=3)
    obs = {**{k: v for k, v in obs.items() if not k.startswith(u.OBS_IMAGE_PREFIX)},
           **{u.OBS_IMAGE_PREFIX + n: obs[u.OBS_IMAGE_PREFIX + s]
              for s, k in pol.camera_map.items() for n in [k.removeprefix(u.OBS_IMAGE_PREFIX)]}}
    x0 = pol.sample_noise(1, torch.Generator().manual_seed(5))
    ours = pol.predict_action_chunk({**obs, **{u.OBS_IMAGE_PREFIX + s: obs[k] for s, k in pol.camera_map.items()}},
                                    noise=x0.clone())
    exported.policy.model.sample_noise = lambda shape, device: x0.clone().to(device)
    exported.reset(0)
    # the adapter clips its chunk to the joint limits; LeRobot's path leaves that to the env
    np.testing.assert_allclose(u.clip_to_joint_limits(exported.act(obs)), ours[0], atol=2e-4)
    base = pr.load_policy("lerobot", base_dir, device="cpu", frame="smolvla_absolute")  # the untuned base differs
    base.policy.model.sample_noise = lambda shape, device: x0.clone().to(device)
    base.reset(0)
    assert np.abs(base.act(obs) - ours[0]).max() > 1e-3


def test_flow_export_is_safetensors_and_json_and_runs_the_same(tmp_path):
    ck = ckio.load(pr.SHIPPED_CHECKPOINTS["reinflow"])
    out = pe.export_pretrained(ck, tmp_path / "flow")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == pe.FLOW_FORMAT and config["policy_config"] == ck.policy_config
    back = pe.load_flow_pretrained(out)
    assert set(back.policy_state) == set(ck.policy_state)
    for k, v in ck.policy_state.items():
        assert torch.equal(back.policy_state[k], v)
    for k, v in ck.noise_head_state.items():
        assert torch.equal(back.noise_head_state[k], v)
    from so101_sim.flow_policy import FlowPolicy

    a, b = FlowPolicy.load(str(pr.SHIPPED_CHECKPOINTS["reinflow"])), FlowPolicy.load(str(out))
    obs = {u.OBS_STATE: np.array([0.0, -1.7, 1.5, 1.1, -1.4, 0.1], np.float32)[None],
           u.OBS_ENV_STATE: np.array([0.05, 0.25, 0.0125, 1, 0, 0, 0], np.float32)[None]}
    noise = a.sample_noise(1, torch.Generator().manual_seed(2))
    from so101_sim.reinflow_engine import sample_chain

    xa = sample_chain(a, None, a.prepare_batch(obs, ""), 4, deterministic=True, noise=noise.clone()).x
    xb = sample_chain(b, None, b.prepare_batch(obs, ""), 4, deterministic=True, noise=noise.clone()).x
    torch.testing.assert_close(xa, xb, atol=0, rtol=0)
    with pytest.raises(ckio.CheckpointError, match="not a flow policy export"):
        pe.load_flow_pretrained(tmp_path)
    # the runner takes the folder where it takes the .pt, with the same episodes
    from so101_sim import run_mujoco_simulation as rms

    returns = {}
    for name, path in (("pt", pr.SHIPPED_CHECKPOINTS["reinflow"]), ("dir", out)):
        summary = tmp_path / f"{name}.json"
        assert rms.main(["--model-type", "flow", "--policy-path", str(path), "--episodes", "2", "--seed", "7",
                         "--max-steps", "25", "--headless", "--summary-json", str(summary)]) == 0
        returns[name] = [e["return"] for e in json.loads(summary.read_text())["per_episode"]]
    assert returns["pt"] == returns["dir"]


def test_reinflow_denoising_steps_become_the_exported_num_steps_and_a_zero_chain_start_is_refused(tiny_dirs, tmp_path):
    """LeRobot's sampler of the export (x_0 given, config num_steps) equals ReinFlow's deterministic
    chain at the run's K; a run trained from x_0 = 0 cannot be deployed by it and is refused."""
    from so101_sim.reinflow_engine import sample_chain

    base_dir = str(tiny_dirs["smolvla"])
    pol = rv.load_policy("smolvla", base_dir, device="cpu", verbose=False)
    groups = pol.trainable_parameter_groups("heads")
    names = {n for ns in rv.trainable_names(pol, groups).values() for n in ns}
    fields = rv.checkpoint_fields(pol, "heads", groups, rv.base_policy_info(pol, base_dir, names, IMG))
    k = 3
    assert pol.policy.config.num_steps != k  # the base's own steps differ from the run's
    out = pe.export_pretrained(ckio.Checkpoint(kind="reinflow", reinflow_config={"num_steps": k}, **fields),
                               tmp_path / "pretrained_model")
    config = json.loads((out / "config.json").read_text())
    assert config["num_steps"] == k
    # the locally built VLM travels with the export, so the folder loads wherever it is copied
    assert config["vlm_model_name"] == "vlm" and (out / "vlm" / "config.json").is_file()
    moved = tmp_path / "moved"
    shutil.move(out, moved)
    out = moved
    exported = pr.load_policy("lerobot", str(out), device="cpu")
    obs = fake_obs(q_rad=np.array([0.2, -0.3, 0.4, 0.1, -0.2, 0.3], np.float32), size=IMG, seed=4)
    x0 = pol.sample_noise(1, torch.Generator().manual_seed(7))
    batch = pol.prepare_batch({key: np.asarray(v)[None] for key, v in obs.items()})
    ours = pol.to_mujoco_actions(sample_chain(pol, None, batch, k, deterministic=True, noise=x0.clone()).x, batch)[0]
    lerobot_obs = {**{key: v for key, v in obs.items() if not key.startswith(u.OBS_IMAGE_PREFIX)},
                   **{u.OBS_IMAGE_PREFIX + key.removeprefix(u.OBS_IMAGE_PREFIX): obs[u.OBS_IMAGE_PREFIX + s]
                      for s, key in pol.camera_map.items()}}
    exported.policy.model.sample_noise = lambda shape, device: x0.clone().to(device)
    exported.reset(0)
    np.testing.assert_allclose(u.clip_to_joint_limits(exported.act(lerobot_obs)), ours[0], atol=2e-4)
    with pytest.raises(ValueError, match="init-noise-scale 1"):
        pe.export_pretrained(ckio.Checkpoint(kind="reinflow", reinflow_config={"num_steps": k, "init_noise_scale": 0.0},
                                             **fields), tmp_path / "zero_start")
