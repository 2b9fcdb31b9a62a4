"""ReinFlow math, each checked against an independent computation (torch.distributions, hand
arithmetic, a direct re-derivation of the chain density)."""

import math

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from so101_sim import flow_policy as fp  # noqa: E402
from so101_sim.reinflow_engine import (  # noqa: E402
    NoiseHead, ReinFlowConfig, chain_log_prob, clipped_surrogate, compute_gae, gaussian_log_density, noise_mask,
    sample_chain,
)


def _policy(seed=0, chunk=4, n_exec=2):
    torch.manual_seed(seed)
    cfg = fp.FlowPolicyConfig(chunk_size=chunk, n_action_steps=n_exec, hidden_dim=32, depth=2)
    pol = fp.FlowPolicy(cfg, fp.NormStats.identity(cfg))
    pol.model.eval()
    return pol


def _batch(pol, b=5, seed=1):
    rng = np.random.default_rng(seed)
    obs = {"observation.state": rng.normal(size=(b, 6)).astype(np.float32),
           "observation.environment_state": rng.normal(size=(b, 7)).astype(np.float32)}
    return pol.prepare_batch(obs)


def test_transition_log_density_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    x, mean = torch.randn(3, 4, 6, generator=g), torch.randn(3, 4, 6, generator=g)
    std = torch.rand(3, 4, 6, generator=g) * 0.3 + 0.05
    ref = torch.distributions.Normal(mean.double(), std.double()).log_prob(x.double())  # float64, as the engine
    torch.testing.assert_close(gaussian_log_density(x, mean, std), ref, rtol=1e-6, atol=1e-6)


def test_sigma_stays_within_bounds():
    head = NoiseHead(16, 6, sigma_min=0.08, sigma_max=0.16, width=8)
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 5.0)  # saturate the tanh in both directions
    h = torch.randn(64, 4, 16) * 100
    s = head(h)
    assert float(s.min()) >= 0.08 - 1e-6 and float(s.max()) <= 0.16 + 1e-6
    assert float(s.min()) < 0.085 and float(s.max()) > 0.155  # both bounds reachable
    head.set_bounds(0.02, 0.05)
    s = head(h)
    assert float(s.min()) >= 0.02 - 1e-7 and float(s.max()) <= 0.05 + 1e-7
    # zero-initialised last layer: sigma starts at the geometric mean of the bounds
    fresh = NoiseHead(16, 6, 0.08, 0.16)
    torch.testing.assert_close(fresh(h), torch.full((64, 4, 6), math.sqrt(0.08 * 0.16)))


def test_sigma_decay_schedule():
    cfg = ReinFlowConfig(sigma_min=0.08, sigma_max=0.16, sigma_max_final=0.1, sigma_decay_iters=10)
    assert cfg.sigma_max_at(0) == pytest.approx(0.16)
    assert cfg.sigma_max_at(5) == pytest.approx(0.13)
    assert cfg.sigma_max_at(50) == pytest.approx(0.1)


def test_chain_log_prob_recomputed_equals_sampling_time_value():
    pol = _policy()
    head = NoiseHead(pol.hidden_dim, pol.max_action_dim)
    with torch.no_grad():
        head.net[-1].weight.normal_(0, 0.5)  # make sigma vary with the features
    batch = _batch(pol)
    s = sample_chain(pol, head, batch, num_steps=4, generator=torch.Generator().manual_seed(3))
    assert s.chain.shape == (5, 5, 4, 6)
    lp, ent, sig = chain_log_prob(pol, head, batch, s.chain)
    torch.testing.assert_close(lp, s.log_prob, rtol=0, atol=1e-6)
    assert torch.all(sig >= 0.08 - 1e-6) and torch.all(sig <= 0.16 + 1e-6)


def test_deterministic_chain_is_lerobot_euler():
    pol = _policy()
    batch = _batch(pol, b=2)
    x0 = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(0))
    s = sample_chain(pol, None, batch, num_steps=4, deterministic=True, noise=x0)
    torch.testing.assert_close(s.x, pol.sample_deterministic(batch, x0, 4))
    assert torch.all(s.log_prob == 0)


def test_gae_hand_worked_example():
    # gamma 0.5, lambda 0.5; episode of 3 decisions that terminates, then 1 decision cut by the rollout end
    r = np.array([1.0, 0.0, 2.0, 1.0])
    v = np.array([0.5, 1.0, 1.0, 2.0])
    nv = np.array([1.0, 1.0, 9.0, 4.0])  # nv[2] ignored (terminal); nv[3] bootstraps
    term = np.array([False, False, True, False])
    end = np.array([False, False, True, True])
    adv, ret = compute_gae(r, v, nv, term, end, gamma=0.5, lam=0.5)
    d3 = 1.0 + 0.5 * 4.0 - 2.0  # 1.0
    d2 = 2.0 - 1.0  # terminal: 1.0
    d1 = 0.0 + 0.5 * 1.0 - 1.0  # -0.5
    d0 = 1.0 + 0.5 * 1.0 - 0.5  # 1.0
    a2 = d2
    a1 = d1 + 0.25 * a2  # -0.25
    a0 = d0 + 0.25 * a1  # 0.9375
    np.testing.assert_allclose(adv, [a0, a1, a2, d3])
    np.testing.assert_allclose(ret, adv + v)


def test_clipped_objective_gradient_zero_outside_clip_range():
    eps = 0.2
    old = torch.zeros(4)
    # ratios 1.5 (A>0, above 1+eps), 0.5 (A<0, below 1-eps): clipped -> no gradient
    # ratios 1.1 (A>0) and 0.9 (A<0): inside -> gradient
    lp = torch.log(torch.tensor([1.5, 0.5, 1.1, 0.9])).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    loss, st = clipped_surrogate(lp, old, adv, eps)
    loss.backward()
    g = lp.grad
    assert g[0] == 0 and g[1] == 0
    # d/dlp of -(A r)/4 = -A r / 4
    torch.testing.assert_close(g[2:], torch.tensor([-1.1 / 4, 0.9 / 4]))
    assert st["clipfrac"] == pytest.approx(0.5)
    # the pessimistic side is not clipped: ratio 1.5 with A<0 keeps its gradient
    lp2 = torch.log(torch.tensor([1.5])).requires_grad_(True)
    clipped_surrogate(lp2, torch.zeros(1), torch.tensor([-1.0]), eps)[0].backward()
    assert lp2.grad[0] != 0


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.0])
def test_chain_log_prob_equals_independent_derivation(scale):
    """Re-derive log p(chain) with torch.distributions, step by step, from the stored chain, for
    init_noise_scale s: x_0 ~ N(0, s^2) enters the log-prob with std s (s = 1: LeRobot's start);
    s = 0 starts every chain at 0, drops the x_0 term (average over K transitions) and makes the
    sampler deterministic."""
    pol = _policy(chunk=4, n_exec=2)
    pol.init_noise_scale = scale
    assert pol.cfg.init_noise_scale == scale  # stored in the config, hence in checkpoints
    head = NoiseHead(pol.hidden_dim, pol.max_action_dim)
    batch = _batch(pol, b=3)
    k = 3
    s = sample_chain(pol, head, batch, num_steps=k, generator=torch.Generator().manual_seed(7))
    chain = s.chain
    with torch.no_grad():
        prefix = pol.build_prefix(batch)
        total = torch.zeros(3)
        if scale > 0:
            total += torch.distributions.Normal(0.0, scale).log_prob(chain[:, 0, :2, :]).sum(dim=(1, 2))
        else:
            assert torch.all(chain[:, 0] == 0)
        for i in range(k):
            t = torch.full((3,), 1.0 - i / k)
            mean = chain[:, i] - (1.0 / k) * pol.denoise_step(prefix, chain[:, i], t)
            total += torch.distributions.Normal(mean[:, :2], head(pol.expert_hidden())[:, :2]).log_prob(
                chain[:, i + 1, :2]).sum(dim=(1, 2))
            # unexecuted chunk positions follow the deterministic ODE (no noise there)
            torch.testing.assert_close(chain[:, i + 1, 2:], mean[:, 2:], rtol=0, atol=1e-6)
    m = noise_mask(pol)
    assert m.sum() == 12 and m[:2].all() and not m[2:].any()
    n_elements = 2 * 6 * (k + (1 if scale > 0 else 0))
    torch.testing.assert_close(s.log_prob, (total / n_elements).double(), rtol=0, atol=1e-5)
    torch.testing.assert_close(chain_log_prob(pol, head, batch, chain)[0], s.log_prob, rtol=0, atol=1e-6)
    obs = {"observation.state": np.zeros(6, np.float32), "observation.environment_state": np.ones(7, np.float32)}
    a, b = pol.predict_action_chunk(obs), pol.predict_action_chunk(obs)
    assert (np.array_equal(a, b)) == (scale == 0)  # only s = 0 gives the same chunk on every call


def test_group_relative_advantages_hand_worked():
    from so101_sim.reinflow_engine import group_relative_advantages

    groups = np.array([0, 0, 1, 1, 1, 2])
    returns = np.array([3.0, 1.0, 5.0, 2.0, 2.0, 7.0])
    # group 0 mean 2, group 1 mean 3, group 2 mean 7 (a lone episode gets no signal)
    np.testing.assert_allclose(group_relative_advantages(groups, returns), [1, -1, 2, -1, -1, 0])


@pytest.mark.parametrize("k", [1, 4])
def test_ratio_check_holds_for_chains_sampled_one_by_one_and_recomputed_in_a_batch(k):
    """Rollouts sample one env at a time, PPO recomputes hundreds at once; the agent runs the flow
    policy in float64 so the two agree within the 1e-5 the ratio check demands, for every K
    (float32 BLAS results depend on the batch size at ~1e-5, enough to break K = 1)."""
    from so101_sim.reinflow_engine import ReinFlowAgent, RolloutData, check_ratio_is_one, critic_features

    torch.manual_seed(0)
    cfg = fp.FlowPolicyConfig(chunk_size=8, n_action_steps=4, hidden_dim=256, depth=3)
    pol = fp.FlowPolicy(cfg, fp.NormStats.identity(cfg))
    agent = ReinFlowAgent(pol, ReinFlowConfig(num_steps=k, sigma_min=0.05, sigma_max=0.15, init_noise_scale=0.0), 13)
    assert pol.dtype == torch.float64 and next(agent.noise_head.parameters()).dtype == torch.float64
    rng = np.random.default_rng(k)
    obs = {"observation.state": rng.normal(size=(64, 6)).astype(np.float32),
           "observation.environment_state": rng.normal(size=(64, 7)).astype(np.float32)}
    gen = torch.Generator().manual_seed(k)
    samples = [agent.act({key: v[i:i + 1] for key, v in obs.items()}, gen)[1] for i in range(64)]
    data = RolloutData(pol.prepare_batch(obs), critic_features(obs), torch.cat([s.chain for s in samples]),
                       torch.cat([s.log_prob for s in samples]), torch.zeros(64), torch.zeros(64))
    assert check_ratio_is_one(agent, data) <= 1e-5
    data.log_probs[3] += 1e-3  # a real mismatch is still caught
    with pytest.raises(RuntimeError, match="ratio"):
        check_ratio_is_one(agent, data)
