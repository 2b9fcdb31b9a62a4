"""The small flow policy: SmolVLA's flow-matching convention, normalisation round trip, the
interface's deterministic sampler, and the recorded-dataset loader (block pose by replay)."""

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from so101_sim import flow_policy as fp  # noqa: E402
from so101_sim import demonstrations as demos
from so101_sim import so101_mujoco_utils as u  # noqa: E402


def _obs(b, seed=0):
    rng = np.random.default_rng(seed)
    return {u.OBS_STATE: rng.normal(0, 0.3, (b, 6)).astype(np.float32),
            u.OBS_ENV_STATE: rng.normal(0, 0.1, (b, 7)).astype(np.float32)}


def test_flow_matching_convention_learns_noise_to_action_map():
    """Train on one fixed chunk: integrating t = 1 (noise) -> 0 with dt = -1/K must land on it
    (with the opposite sign or time convention it would not)."""
    torch.manual_seed(0)
    cfg = fp.FlowPolicyConfig(chunk_size=2, n_action_steps=1, hidden_dim=64, depth=2, action_mode="absolute")
    pol = fp.FlowPolicy(cfg, fp.NormStats.identity(cfg))
    obs = _obs(64)
    batch = pol.prepare_batch(obs)
    target = torch.tensor([[0.5, -0.3, 0.2, 0.1, -0.4, 0.3], [0.6, -0.2, 0.1, 0.0, -0.3, 0.2]]).expand(64, 2, 6)
    opt = torch.optim.Adam(pol.model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        loss = pol.flow_matching_loss(batch, target, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    pol.model.eval()
    x = pol.sample_deterministic(batch, pol.sample_noise(64, generator=g), num_steps=10)
    assert float((x - target).abs().mean()) < 0.15  # pure noise would be ~0.8 away
    # the interface's own predict_action_chunk uses the same grid (joint-limit clipping aside)
    chunk = pol.predict_action_chunk({k: v[0] for k, v in obs.items()})
    assert chunk.shape == (2, 6) and chunk.dtype == np.float32


def test_normalisation_round_trip_and_delta_mode():
    cfg = fp.FlowPolicyConfig(chunk_size=3, n_action_steps=2, hidden_dim=16, depth=1)
    rng = np.random.default_rng(1)
    states = rng.normal(0, 0.5, (50, 6)).astype(np.float32)
    chunks = (states[:, None, :] + rng.normal(0, 0.05, (50, 3, 6))).astype(np.float32)
    stats = fp.compute_norm_stats(states, rng.normal(0, 0.1, (50, 7)), chunks, cfg)
    np.testing.assert_allclose(stats.action_mean, (chunks - states[:, None]).mean(0), rtol=1e-5, atol=1e-6)
    pol = fp.FlowPolicy(cfg, stats)
    st = torch.as_tensor(states)
    z = pol.normalize_actions(torch.as_tensor(chunks), st)
    torch.testing.assert_close(pol.unnormalize_actions(z, st), torch.as_tensor(chunks), rtol=1e-5, atol=1e-5)
    assert abs(float(z.mean())) < 0.1 and abs(float(z.std()) - 1) < 0.1


def test_chunk_targets_pad_with_last_action():
    acts = np.arange(10, dtype=np.float32)[:, None].repeat(6, 1)
    ep = np.array([0] * 4 + [1] * 6)
    c = demos.chunk_targets(acts, ep, 3)
    np.testing.assert_array_equal(c[2, :, 0], [2, 3, 3])
    np.testing.assert_array_equal(c[4, :, 0], [4, 5, 6])
    np.testing.assert_array_equal(c[9, :, 0], [9, 9, 9])


def test_prepare_batch_requires_environment_state():
    pol = fp.FlowPolicy(fp.FlowPolicyConfig(hidden_dim=16, depth=1))
    with pytest.raises(KeyError, match="include_env_state"):
        pol.prepare_batch({u.OBS_STATE: np.zeros((1, 6), np.float32)})


def test_recorded_dataset_loader_replays_block_pose(tmp_path):
    from so101_sim import record_dataset

    root = tmp_path / "demos"
    assert record_dataset.main(["--input", "scripted", "--output_dir", str(root), "--num_episodes", "1",
                                "--seed", "4242", "--image-size", "32"]) == 0
    data = demos.load_lerobot_demonstrations(str(root))
    ref = demos.scripted_demonstrations(1, 4242, only_successful=False)
    n = len(ref["state"])
    assert len(data["state"]) >= n  # the recorder keeps a few frames after success
    np.testing.assert_allclose(data["state"][:n], ref["state"], atol=1e-3)
    np.testing.assert_allclose(data["env_state"][:n, :3], ref["env_state"][:, :3], atol=1e-3)
