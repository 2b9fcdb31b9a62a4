"""SmolVLA / Pi0 adapters on the tiny offline policies: frames, shapes, queue, camera map, loading.

All on CPU with one thread; the tiny policies are built once per session (tests/vla_tiny.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from so101_sim import so101_mujoco_utils as u
from so101_sim import vla_frames as vf
from so101_sim.hub_download import PolicyLoadError
from so101_sim.make_tiny_policies import PI0_STATS_MEAN, PI0_STATS_STD, TINY_CHUNK, TINY_N_ACTION_STEPS
from so101_sim.pi0_adapter import PI0Adapter
from so101_sim.smolvla_adapter import SmolVLAAdapter
from so101_sim.flow_matching_policy import FlowMatchingPolicy, _add_batch_axis
from vla_tiny import fake_obs

ADAPTERS = {"smolvla": SmolVLAAdapter, "pi0": PI0Adapter}



@pytest.fixture(scope="module")
def loaded(tiny_dirs):
    """Both tiny adapters, loaded once for the read-only tests of this module."""
    return {name: cls.load(str(tiny_dirs[name]), device="cpu", verbose=False, debug_inferences=0)
            for name, cls in ADAPTERS.items()}


# ----------------------------------------------------------------------------- frames
def test_frame_choices_and_vla_frames_imports_no_torch():
    """``--frame`` choices are defined once, in vla_frames, which parsers import without torch."""
    assert vf.FRAME_CHOICES == ("auto", *vf.FRAMES)
    assert set(vf.FRAMES) == set(vf._FRAME_CONVERSIONS)  # noqa: SLF001
    code = ("import sys; from so101_sim import vla_frames; "
            "bad = [m for m in ('torch', 'lerobot', 'transformers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_frame_conversions_against_hand_computed_values():
    lo, hi = u.JOINT_LIMITS_RAD[:, 5]
    q = np.radians([10.0, -20.0, 30.0, 0.0, 45.0, 0.0])
    q[5] = lo + 0.25 * (hi - lo)  # gripper a quarter open
    g_deg = np.degrees(q[5])
    # smolvla_absolute: degrees + offsets (0, 120, 110, 57, -27, 12) from reference 000
    np.testing.assert_allclose(vf.mujoco_to_frame(q, "smolvla_absolute"),
                               [10.0, 100.0, 140.0, 57.0, 18.0, g_deg + 12.0], atol=1e-9)
    # lerobot_degrees: body joints in degrees, gripper 0..100 over its range
    np.testing.assert_allclose(vf.mujoco_to_frame(q, "lerobot_degrees"), [10.0, -20.0, 30.0, 0.0, 45.0, 25.0],
                               atol=1e-9)
    np.testing.assert_allclose(vf.mujoco_to_frame(q, "mujoco_radians"), q)
    for frame in vf.FRAMES:
        np.testing.assert_allclose(vf.frame_to_mujoco(vf.mujoco_to_frame(q, frame), frame), q, atol=1e-12)
    with pytest.raises(ValueError, match="smolvla_absolute"):
        vf.mujoco_to_frame(q, "degrees")


def test_resolve_frame_rules():
    assert vf.resolve_frame("auto", {}, "lerobot/smolvla_base")[0] == "smolvla_absolute"
    assert vf.resolve_frame("auto", {}, "someone/smolvla_so101_finetune")[0] == "lerobot_degrees"
    assert vf.resolve_frame("auto", {"frame": "mujoco_radians"}, "lerobot/smolvla_base")[0] == "mujoco_radians"
    frame, why = vf.resolve_frame("lerobot_degrees", {"frame": "smolvla_absolute"}, "x/y")
    assert frame == "lerobot_degrees" and "overrides" in why
    with pytest.raises(ValueError, match="auto"):
        vf.resolve_frame("radians", {}, "x/y")


def test_policy_meta_round_trip_and_errors(tmp_path):
    assert vf.read_policy_meta(tmp_path) == {}
    cmap = {"camera1": "observation.images.top"}
    path = vf.write_policy_meta(tmp_path, "mujoco_radians", task="t", camera_map=cmap, dataset="d")
    assert path == tmp_path / vf.META_FILE
    assert vf.read_policy_meta(tmp_path) == {"frame": "mujoco_radians", "task": "t", "camera_map": cmap, "dataset": "d"}
    assert vf.resolve_frame("auto", vf.read_policy_meta(tmp_path), "lerobot/smolvla_base")[0] == "mujoco_radians"
    with pytest.raises(ValueError, match="smolvla_absolute"):
        vf.write_policy_meta(tmp_path, "degrees")
    path.write_text("{not json")
    with pytest.raises(PolicyLoadError, match="not valid JSON"):
        vf.read_policy_meta(tmp_path)


def test_normalised_state_hand_computed(loaded):
    # SmolVLA tiny: smolvla_absolute frame with the reference stats
    q = np.radians([10.0, -20.0, 30.0, 0.0, 45.0, 5.0])
    smol = loaded["smolvla"]
    batch = smol.prepare_batch(_add_batch_axis(fake_obs(q)))
    absolute = np.degrees(q) + np.array([0.0, 120.0, 110.0, 57.0, -27.0, 12.0])
    expected = (absolute - u.SMOLVLA_STATE_MEAN) / u.SMOLVLA_STATE_STD
    np.testing.assert_allclose(batch[u.OBS_STATE][0].numpy(), expected, atol=1e-5)
    # Pi0 tiny: lerobot_degrees with the checkpoint's own stats (mean 0/50, std 40/60/25)
    pi0 = loaded["pi0"]
    batch = pi0.prepare_batch(_add_batch_axis(fake_obs(q)))
    lo, hi = u.JOINT_LIMITS_RAD[:, 5]
    lerobot = np.concatenate([np.degrees(q[:5]), [(q[5] - lo) / (hi - lo) * 100.0]])
    np.testing.assert_allclose(batch[u.OBS_STATE][0].numpy(), (lerobot - PI0_STATS_MEAN) / PI0_STATS_STD, atol=1e-5)


def test_zero_flow_output_unnormalises_to_the_frame_mean(loaded):
    # x0 = 0 (normalised) is the stats mean; through the frame back to MuJoCo radians
    zero = torch.zeros(1, TINY_CHUNK, 32)
    smol = loaded["smolvla"].to_mujoco_actions(zero)
    expected = np.radians(u.SMOLVLA_ACTION_MEAN - u.MUJOCO_TO_PHYSICAL_OFFSET)
    np.testing.assert_allclose(smol[0, 0], expected, atol=1e-6)
    pi0 = loaded["pi0"].to_mujoco_actions(zero)
    np.testing.assert_allclose(pi0[0, 3], u.lerobot_to_mujoco(PI0_STATS_MEAN), atol=1e-6)


@pytest.mark.parametrize("name", ["smolvla", "pi0"])
def test_outgoing_actions_are_clamped_to_joint_limits(loaded, name):
    big = torch.full((2, TINY_CHUNK, 32), 50.0)
    q = loaded[name].to_mujoco_actions(big)
    assert q.shape == (2, TINY_CHUNK, 6) and q.dtype == np.float32
    np.testing.assert_allclose(q[0, 0], u.JOINT_LIMITS_RAD[1].astype(np.float32))
    q = loaded[name].to_mujoco_actions(-big)
    np.testing.assert_allclose(q[1, -1], u.JOINT_LIMITS_RAD[0].astype(np.float32))


# ----------------------------------------------------------------------------- inference
@pytest.mark.parametrize("name", ["smolvla", "pi0"])
def test_chunk_shape_dtype_and_limits(loaded, name):
    a = loaded[name]
    chunk = a.predict_action_chunk(fake_obs())
    assert chunk.shape == (TINY_CHUNK, 6) and chunk.dtype == np.float32
    assert np.all(chunk >= u.JOINT_LIMITS_RAD[0] - 1e-6) and np.all(chunk <= u.JOINT_LIMITS_RAD[1] + 1e-6)
    assert a.action_dim == 6 and a.max_action_dim == 32 and a.chunk_size == TINY_CHUNK


@pytest.mark.parametrize("name", ["smolvla", "pi0"])
def test_our_denoise_loop_equals_lerobot_sample_actions(loaded, name):
    """The interface's Euler loop over denoise_step (what ReinFlow drives) reproduces LeRobot's
    own sample_actions bit for bit on the same noise: the KV-cache reuse and time grid match."""
    a = loaded[name]
    noise = a.sample_noise(1, torch.Generator().manual_seed(3))
    ours = FlowMatchingPolicy.predict_action_chunk(a, fake_obs(), noise=noise.clone())
    lerobots = a.predict_action_chunk(fake_obs(), noise=noise.clone())
    np.testing.assert_allclose(ours, lerobots, atol=1e-5)
    other = a.predict_action_chunk(fake_obs(), noise=a.sample_noise(1, torch.Generator().manual_seed(4)))
    assert np.abs(other - lerobots).max() > 1e-3  # the noise matters: the comparison is not vacuous


@pytest.mark.parametrize("name", ["smolvla", "pi0"])
def test_queue_executes_n_action_steps_per_chunk(loaded, name):
    a = loaded[name]
    chunks = []
    original = a.predict_action_chunk

    def recording(obs, task=None, noise=None):
        chunks.append(original(obs, task, noise))
        return chunks[-1]

    a.predict_action_chunk = recording
    try:
        a.reset()
        actions = [a.select_action(fake_obs(seed=i)) for i in range(2 * TINY_N_ACTION_STEPS + 1)]
    finally:
        del a.predict_action_chunk
    assert len(chunks) == 3  # 11 steps with 5 per chunk -> chunks at steps 0, 5, 10
    for i, act in enumerate(actions):
        np.testing.assert_array_equal(act, chunks[i // TINY_N_ACTION_STEPS][i % TINY_N_ACTION_STEPS])
    a.reset()
    a.predict_action_chunk = recording
    try:
        a.select_action(fake_obs())
    finally:
        del a.predict_action_chunk
    assert len(chunks) == 4  # reset() empties the queue: a fresh chunk


def test_n_action_steps_override(tiny_dirs):
    a = SmolVLAAdapter.load(str(tiny_dirs["smolvla"]), device="cpu", n_action_steps=3, verbose=False,
                            debug_inferences=0)
    for _ in range(7):
        a.select_action(fake_obs())
    assert a.n_action_steps == 3 and a.inferences == 3
    with pytest.raises(ValueError, match="chunk_size"):
        SmolVLAAdapter.load(str(tiny_dirs["smolvla"]), device="cpu", n_action_steps=TINY_CHUNK + 1, verbose=False)


@pytest.mark.parametrize("name", ["smolvla", "pi0"])
def test_expert_hidden_and_trainable_groups(tiny_dirs, name):
    a = ADAPTERS[name].load(str(tiny_dirs[name]), device="cpu", verbose=False, debug_inferences=0)
    with pytest.raises(RuntimeError, match="denoise_step"):
        a.expert_hidden()
    groups = a.trainable_parameter_groups("expert")
    assert set(groups) == {"expert", "heads"}
    trainable = {id(p) for p in a.parameters() if p.requires_grad}
    assert trainable == {id(p) for ps in groups.values() for p in ps}
    batch = a.prepare_batch(_add_batch_axis(fake_obs()))
    with torch.no_grad():
        prefix = a.build_prefix(batch)
    x = a.sample_noise(1, torch.Generator().manual_seed(0))
    v = a.denoise_step(prefix, x, torch.ones(1))
    h = a.expert_hidden()
    assert v.shape == (1, TINY_CHUNK, 32) and h.shape == (1, TINY_CHUNK, a.hidden_dim)
    v[..., : a.action_dim].sum().backward()
    assert all(p.grad is not None for p in groups["expert"] if p.requires_grad and p.dim() > 1)
    heads = a.trainable_parameter_groups("heads")
    assert set(heads) == {"heads"} and not any(p.requires_grad for p in groups["expert"])
    with pytest.raises(ValueError, match="heads"):
        a.trainable_parameter_groups("vision")


# ----------------------------------------------------------------------------- cameras, task, loading
def test_camera_map_default_and_errors():
    expected = ["observation.images.top", "observation.images.wrist"]
    with pytest.raises(ValueError) as e:
        vf.resolve_camera_map(expected)
    msg = str(e.value)
    assert "observation.images.top" in msg and "observation.images.wrist" in msg  # expected keys
    assert "camera1 (camera_up)" in msg and "camera3 (camera_side)" in msg  # available cameras
    assert "--camera-map" in msg
    cmap, why = vf.resolve_camera_map(expected, "camera1=top,camera2=observation.images.wrist")
    assert cmap == {"camera1": "observation.images.top", "camera2": "observation.images.wrist"}
    assert vf.resolve_camera_map(list(u.IMAGE_KEYS))[0] == {k: u.OBS_IMAGE_PREFIX + k for k in u.CAMERAS}
    with pytest.raises(ValueError, match="no camera 'camera4'"):
        vf.resolve_camera_map(expected, "camera4=top,camera2=wrist")
    with pytest.raises(ValueError, match="no image feature 'observation.images.front'"):
        vf.resolve_camera_map(expected, "camera1=front,camera2=wrist")
    with pytest.raises(ValueError, match="must look like"):
        vf.parse_camera_map("camera1:top")
    assert vf.parse_camera_map('{"camera3": "top"}') == {"camera3": "observation.images.top"}


def test_camera_map_error_at_load_names_expected_keys(tiny_dirs):
    with pytest.raises(ValueError) as e:
        PI0Adapter.load(str(tiny_dirs["pi0"]), device="cpu", camera_map="camera1=front", verbose=False)
    assert "observation.images.top" in str(e.value) and "camera2 (wrist_camera)" in str(e.value)


def test_task_and_camera_mismatch_warnings(tiny_dirs, capsys):
    a = PI0Adapter.load(str(tiny_dirs["pi0"]), device="cpu", task="grab the brain",
                        camera_map="camera3=top,camera2=wrist", debug_inferences=0)
    out = capsys.readouterr()
    assert "training task: 'pick up the red block'" in out.out
    assert "observation.images.top, observation.images.wrist" in out.out  # checkpoint camera names
    assert any("differs from the training task" in w for w in a.warnings)
    assert any("differs from the one used in training" in w for w in a.warnings)
    assert "WARNING" in out.err
    assert a.camera_map == {"camera3": "observation.images.top", "camera2": "observation.images.wrist"}
    quiet = PI0Adapter.load(str(tiny_dirs["pi0"]), device="cpu", verbose=False)
    assert quiet.warnings == [] and quiet.task == u.DEFAULT_TASK


def test_frame_flag_changes_the_state_the_model_sees(tiny_dirs):
    a = SmolVLAAdapter.load(str(tiny_dirs["smolvla"]), device="cpu", frame="lerobot_degrees", verbose=False)
    assert a.frame == a.describe()["frame"] == "lerobot_degrees"
    q = np.radians([10.0, -20.0, 30.0, 0.0, 45.0, 5.0])
    batch = a.prepare_batch(_add_batch_axis(fake_obs(q)))
    # the tiny SmolVLA saved the reference stats as its own: lerobot units z-scored with them
    np.testing.assert_allclose(batch[u.OBS_STATE][0].numpy(),
                               (u.mujoco_to_lerobot(q) - u.SMOLVLA_STATE_MEAN) / u.SMOLVLA_STATE_STD, atol=1e-5)


def test_wrong_model_type_is_refused(tiny_dirs):
    with pytest.raises(PolicyLoadError, match="--model-type pi0"):
        SmolVLAAdapter.load(str(tiny_dirs["pi0"]), device="cpu", verbose=False)


def test_real_pi0_directory_does_not_import_the_tiny_patch(tmp_path, monkeypatch):
    """Only a directory carrying TINY_PI0_MARKER is built through lerobot_tiny_pi0_patch; for any
    other Pi0 checkpoint the patch module is not even imported."""
    from so101_sim.pi0_adapter import TINY_PI0_MARKER

    monkeypatch.delitem(sys.modules, "lerobot_tiny_pi0_patch", raising=False)
    sentinel, calls = object(), []

    class StubPolicy:
        @classmethod
        def from_pretrained(cls, path, config, strict):
            calls.append((path, config, strict))
            return sentinel

    assert not (tmp_path / TINY_PI0_MARKER).exists()
    assert PI0Adapter._build_policy(StubPolicy, tmp_path, "cfg") is sentinel  # noqa: SLF001
    assert calls == [(str(tmp_path), "cfg", True)]
    assert "lerobot_tiny_pi0_patch" not in sys.modules


def test_mismatching_weights_are_refused_not_silently_random(tiny_dirs, tmp_path):
    """LeRobot's Pi0 loader only prints a warning when weights do not fit the config; the adapter
    refuses instead of running with random weights."""
    bad = tmp_path / "pi0_bad"
    shutil.copytree(tiny_dirs["pi0"], bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["max_action_dim"] = 16  # action projections no longer match the stored tensors
    cfg["max_state_dim"] = 16
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PolicyLoadError, match="refusing a partial load"):
        PI0Adapter.load(str(bad), device="cpu", verbose=False)


def test_missing_processor_files_explained(tiny_dirs, tmp_path):
    bad = tmp_path / "smol_noproc"
    shutil.copytree(tiny_dirs["smolvla"], bad)
    (bad / "policy_preprocessor.json").unlink()
    with pytest.raises(PolicyLoadError, match="migrate_policy_normalization"):
        SmolVLAAdapter.load(str(bad), device="cpu", verbose=False)


def test_tiny_policy_directories_are_normal_lerobot_checkpoints(tiny_dirs):
    for name, d in tiny_dirs.items():
        for f in ("config.json", "model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json",
                  vf.META_FILE):
            assert (d / f).is_file(), (name, f)
        assert json.loads((d / "config.json").read_text())["type"] == name
    assert (tiny_dirs["smolvla"] / "vlm" / "tokenizer.json").is_file()
    assert (tiny_dirs["pi0"] / "tokenizer" / "tokenizer.json").is_file()
