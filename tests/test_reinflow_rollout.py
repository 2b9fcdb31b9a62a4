"""The rollout pieces of ReinFlow training: the chunk-executing env wrapper (one step = one
decision), the (T, N) rollout buffer (GAE, group advantages, discarded episodes, flattening)."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from so101_sim import envs  # noqa: F401  (registers the env ids)
from so101_sim import so101_mujoco_utils as u
from so101_sim.reinflow_engine import ChainSample, ReinFlowConfig, compute_gae
from so101_sim.reinflow_rollout import RolloutBuffer
from so101_sim.so101_gym_env import ChunkActionWrapper


def test_chunk_wrapper_executes_the_chunk_sums_rewards_and_stops_at_the_episode_end():
    rng = np.random.default_rng(0)
    chunk = (u.home_pose_rad() + rng.normal(0, 0.05, (4, 6))).astype(np.float32)
    plain = gym.make(envs.DEFAULT_ENV_ID, obs_mode="state", max_episode_steps=6)
    wrapped = ChunkActionWrapper(gym.make(envs.DEFAULT_ENV_ID, obs_mode="state", max_episode_steps=6), 4)
    assert wrapped.action_space.shape == (4, 6)
    plain.reset(seed=11)
    wrapped.reset(seed=11)
    rewards = []
    for a in chunk:
        obs, r, term, trunc, _ = plain.step(a)
        rewards.append(r)
    obs_c, r_c, term_c, trunc_c, info = wrapped.step(chunk)
    assert info["chunk_steps"] == 4 and r_c == pytest.approx(sum(rewards), abs=1e-9)
    np.testing.assert_array_equal(obs_c[u.OBS_STATE], obs[u.OBS_STATE])
    # the second chunk is cut after 2 steps: the time limit (6) ends the episode inside it
    for a in chunk[:2]:
        obs, r, term, trunc, _ = plain.step(a)
    obs_c, r_c, term_c, trunc_c, info = wrapped.step(chunk)
    assert trunc and trunc_c and info["chunk_steps"] == 2
    np.testing.assert_array_equal(obs_c[u.OBS_STATE], obs[u.OBS_STATE])
    with pytest.raises(ValueError, match=r"shape \(4, 6\)"):
        wrapped.step(chunk[:3])
    plain.close()
    wrapped.close()


def _filled_buffer(T=5, N=2):
    """A buffer with made-up decisions: env 0 ends an episode after t=1 (terminated) and t=3
    (truncated); env 1 runs one episode through the rollout."""
    buf = RolloutBuffer(T, N, feat_dim=3)
    rng = np.random.default_rng(1)
    ends = {(1, 0): "term", (3, 0): "trunc"}
    for t in range(T):
        sample = ChainSample(None, torch.full((N, 2, 1, 1), float(t)), torch.full((N,), -float(t)), 0.1)
        term = np.array([ends.get((t, i)) == "term" for i in range(N)])
        ended = np.array([(t, i) in ends for i in range(N)])
        buf.add(t, rng.normal(size=(N, 3)), sample, {"x": torch.arange(N) + 10 * t}, rng.normal(size=N), term, ended,
                rng.normal(size=(N, 3)))
    buf.finish()
    return buf


def test_buffer_gae_is_compute_gae_per_env_and_cut_at_episode_ends():
    buf = _filled_buffer()
    cfg = ReinFlowConfig(reward_scale=0.5, reward_clip=None, gamma=0.9, gae_lambda=0.8)
    values, next_values = np.arange(10.0).reshape(5, 2), np.arange(10.0, 20.0).reshape(5, 2)
    adv, ret = buf.gae(values, next_values, cfg)
    for i in range(2):
        a, r = compute_gae(buf.rewards[:, i] * 0.5, values[:, i], next_values[:, i], buf.terminated[:, i], buf.ends[:, i],
                           0.9, 0.8)
        np.testing.assert_allclose(adv[:, i], a)
        np.testing.assert_allclose(ret[:, i], r)
    # env 0's first episode ends terminated at t=1: its advantage there has no bootstrap and no carry
    assert adv[1, 0] == pytest.approx(buf.rewards[1, 0] * 0.5 - values[1, 0])
    assert buf.ends[-1].all() and buf.episode[:, 0].tolist() == [0, 0, 1, 1, 2] and buf.episodes_done.tolist() == [2, 0]


def test_discard_drops_the_running_episode_only_and_flatten_is_env_major():
    buf = _filled_buffer()
    assert buf.discard(4, 0) == 1  # env 0's third episode (started at t=4) is dropped
    assert buf.discard(4, 1) == 5  # env 1's only episode: all of it
    assert buf.valid[:, 0].tolist() == [True, True, True, True, False] and not buf.valid[:, 1].any()
    buf.valid[:, 1] = True  # pretend env 1 kept its decisions, to check the order
    data = buf.flatten(buf.valid, np.arange(10.0).reshape(5, 2), np.zeros((5, 2)))
    # env 0's four kept decisions in time order, then env 1's five
    assert data.advantages.tolist() == [0.0, 2.0, 4.0, 6.0, 1.0, 3.0, 5.0, 7.0, 9.0]
    assert data.inputs["x"].tolist() == [0, 10, 20, 30, 1, 11, 21, 31, 41]
    assert data.chains[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4] and len(data) == 9
    sub = data.select(np.array([4, 0]))
    assert sub.inputs["x"].tolist() == [1, 0] and sub.log_probs.tolist() == [-0.0, -0.0]


def test_group_advantages_are_episode_returns_minus_their_groups_mean():
    cfg = ReinFlowConfig(reward_scale=0.5, reward_clip=2.0)
    buf = RolloutBuffer(7, 2, feat_dim=1)
    # env 0: episodes 0..4 over 7 decisions (group size 2: groups {0,1}, {2,3}; episode 4 is cut off);
    # env 1: one episode that never ends (dropped)
    rewards0 = [(0, 1.0), (0, 10.0), (1, 0.0), (2, 2.0), (2, 2.0), (3, -1.0), (4, 6.0)]
    for t, (ep, r) in enumerate(rewards0):
        nxt = rewards0[t + 1][0] if t + 1 < len(rewards0) else None
        ended = np.array([nxt is not None and nxt != ep, False])
        sample = ChainSample(None, torch.zeros(2, 1, 1, 1), torch.zeros(2), 0.0)
        buf.add(t, np.zeros((2, 1)), sample, {}, np.array([r, 3.0]), ended, ended, np.zeros((2, 1)))
    buf.finish()
    keep, adv = buf.group_advantages(2, cfg)
    assert keep[:, 0].tolist() == [True] * 6 + [False] and not keep[:, 1].any()
    ret = {0: 0.5 + 2.0, 1: 0.0, 2: 1.0 + 1.0, 3: -0.5}  # x0.5, clipped to +-2 per decision
    mean01, mean23 = (ret[0] + ret[1]) / 2, (ret[2] + ret[3]) / 2  # over episodes, not decisions
    expected = [ret[0] - mean01] * 2 + [ret[1] - mean01] + [ret[2] - mean23] * 2 + [ret[3] - mean23]
    assert adv[:6, 0].tolist() == pytest.approx(expected)
