"""ReinFlow: fine-tune a flow-matching policy with PPO through a noise-injected denoising chain.

Policy-agnostic: every policy call goes through :class:`flow_matching_policy.FlowMatchingPolicy`
(``prepare_batch``, ``build_prefix``, ``denoise_step``, ``expert_hidden``, ``sample_noise``,
``to_mujoco_actions``, ``trainable_parameter_groups``), so the small flow policy, SmolVLA and Pi0
run on the same engine. Reference: Zhang et al. 2025, "ReinFlow: Fine-tuning Flow Matching
Policy with Online Reinforcement Learning" (code: ReinFlow/ReinFlow model/flow/ft_ppo/ppoflow.py).

The chain (one time grid, LeRobot's, for sampling *and* recomputation):
    t_k = 1 + k * dt, dt = -1/K, k = 0..K-1 (t = 1 is noise, t = 0 the action)
    x_0 ~ N(0, I)
    mu_k    = x_k + dt * v(x_k, t_k | obs)
    sigma_k = NoiseHead(expert_hidden(x_k, t_k | obs))      (learnable, bounded, see NoiseHead)
    x_{k+1} = mu_k + sigma_k * eps_k * M,  eps_k ~ N(0, I)
``M`` is the *noise mask*: 1 on the real action dimensions of the first ``n_action_steps`` chunk
positions (the actions the env executes), 0 elsewhere (padding dims and the unexecuted tail of
the chunk follow the deterministic ODE). The chain log-probability is then exact over the random
elements only:
    log p(chain) = [ sum_M log N(x_0; 0, I) + sum_k sum_M log N(x_{k+1}; mu_k, sigma_k^2) ]
                   / (|M| * (K + 1))
i.e. **averaged per random element** (|M| = n_action_steps * action_dim elements, K + 1 factors:
the initial noise and K transitions), so the PPO ratio does not grow with chunk length or K.
The x_0 term has no parameters (it cancels in the ratio) but is kept so the value is the chain's
log-density. The whole chain (B, K+1, chunk, max_action_dim) is stored in the rollout buffer.

Chain start (``ReinFlowConfig.init_noise_scale`` s, default 1 = the formula above): x_0 ~
N(0, s^2 I). With s = 0 every chain starts at x_0 = 0, the x_0 term drops out and the average is
over the K transitions only. Why it matters: the policy gradient credits only the transition
noise eps_k, never x_0. A small BC policy's action can depend strongly on x_0 (measured here: the
same fixed-block episode succeeds for 27-63% of x_0 draws), and then success is mostly decided
by x_0, which is pure noise for the gradient: PPO did not improve such a policy in 50-70k env
steps, and it did within a few iterations with s = 0 (an earlier measurement whose fixed-block run
does not reproduce with today's code; docs/experiments/2026-11-21-reinflow-flow-findings.md). The
policy's own sampler uses the same s (``FlowMatchingPolicy.init_noise_scale``), so training and
deployment see the same chain start.

PPO (:func:`ppo_update`): clipped ratio, GAE (:func:`compute_gae`), a critic (:class:`Critic`,
on the low-dimensional env observation: an asymmetric critic, used only in training), entropy
bonus (Gaussian transition entropy, averaged per element like the log-prob), optional
behaviour-cloning regulariser (MSE between the deterministic chunks of the fine-tuned and the
frozen pretrained policy from the same noise), target-KL early stop, gradient clipping, critic
warm-up iterations, advantage normalisation, reward scaling (``reward_scale`` x reward, then
clipped to +-``reward_clip`` per decision). Rollouts
and log-prob recomputation run the policy in eval mode (no dropout); before the first update of
every iteration the recomputed ratio must equal 1 within 1e-5 (:func:`check_ratio_is_one`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from so101_sim.flow_matching_policy import euler_mean, euler_sample

LOG_2PI = math.log(2 * math.pi)


# ---------------------------------------------------------------------- configuration
@dataclass
class ReinFlowConfig:
    """Hyper-parameters of the ReinFlow engine (stored in checkpoints).

    Attributes:
        num_steps: denoising steps K (1-10).
        sigma_min, sigma_max: noise-head std bounds, in normalised action units.
        sigma_max_final: if set, sigma_max decays linearly to it over ``sigma_decay_iters``.
        sigma_decay_iters: iterations of the decay.
        noise_hidden: noise-head MLP width.
        clip: PPO ratio clip epsilon.
        gamma, gae_lambda: discount and GAE lambda, per *decision* (one executed chunk).
        policy_lr, critic_lr, noise_lr: Adam learning rates (noise head uses ``noise_lr``).
        epochs: PPO epochs per iteration.
        batch_size: minibatch size (decisions).
        grad_accum: minibatches accumulated per optimizer step.
        ent_coef: entropy-bonus weight.
        bc_coef: behaviour-cloning regulariser weight (0 = off).
        vf_coef: value-loss weight.
        target_kl: stop the epochs of an iteration once approx KL exceeds it (None = never).
        max_grad_norm: gradient-norm clip (policy+noise head and critic separately).
        critic_warmup_iters: first iterations update only the critic.
        reward_scale: rewards are multiplied by this before GAE.
        reward_clip: scaled per-decision rewards are clipped to +-reward_clip (None = off); tames
            the env's exponential block-displacement penalty (hundreds per step).
        norm_adv: normalise advantages per iteration.
        critic_hidden: critic MLP width.
        ratio_tol: tolerance of the ratio == 1 check.
        critic_extra_epochs: extra critic-only epochs per iteration after the PPO epochs (minibatches
            of ``critic_batch_size``), so the baseline keeps up with the start-state variance of
            randomized block positions.
        critic_batch_size: minibatch size (decisions) of those epochs.
        init_noise_scale: std s of the chain start x_0 ~ N(0, s^2 I); 0 = start at x_0 = 0 (see
            the module docstring). Applied to the policy (``policy.init_noise_scale``) by the agent.
        reward_terms: training reward = the sum of these env reward terms ("all" or comma-separated
            names of so101_mujoco_utils.REWARD_TERMS; applied by the training script's envs).
        advantage: "gae" (critic + GAE) or "group" (episode return minus the mean return of its
            group of ``group_size`` episodes from the same block position; the training script).
        group_size: episodes per group with ``advantage="group"``.
    """

    num_steps: int = 4
    sigma_min: float = 0.08
    sigma_max: float = 0.16
    sigma_max_final: float | None = None
    sigma_decay_iters: int = 100
    noise_hidden: int = 128
    clip: float = 0.2
    gamma: float = 0.99
    gae_lambda: float = 0.95
    policy_lr: float = 3e-5
    critic_lr: float = 1e-3
    noise_lr: float = 3e-4
    epochs: int = 8
    batch_size: int = 256
    grad_accum: int = 1
    ent_coef: float = 0.0
    bc_coef: float = 0.0
    vf_coef: float = 0.5
    target_kl: float | None = 0.05
    max_grad_norm: float = 1.0
    critic_warmup_iters: int = 2
    reward_scale: float = 0.05
    reward_clip: float | None = 5.0
    norm_adv: bool = True
    critic_hidden: int = 256
    ratio_tol: float = 1e-5
    init_noise_scale: float = 1.0
    critic_extra_epochs: int = 0
    critic_batch_size: int = 64
    reward_terms: str = "all"
    advantage: str = "gae"
    group_size: int = 8

    def __post_init__(self):
        if not 1 <= self.num_steps <= 10:
            raise ValueError(f"num_steps K must be in 1..10, got {self.num_steps}")
        if not 0 < self.sigma_min <= self.sigma_max:
            raise ValueError(f"need 0 < sigma_min <= sigma_max, got {self.sigma_min}, {self.sigma_max}")

    def sigma_max_at(self, iteration: int) -> float:
        """sigma_max of ``iteration`` (linear decay to ``sigma_max_final`` if set, never below sigma_min)."""
        if self.sigma_max_final is None:
            return self.sigma_max
        frac = min(1.0, iteration / max(1, self.sigma_decay_iters))
        return max(self.sigma_min, self.sigma_max + frac * (self.sigma_max_final - self.sigma_max))


# ---------------------------------------------------------------------- noise head
class NoiseHead(nn.Module):
    """sigma(h) per action element: log-variance = lo + (hi - lo) * (tanh(MLP(h)) + 1) / 2 with
    lo = log sigma_min^2, hi = log sigma_max^2 (so sigma is always within the bounds).

    Args:
        hidden_dim: size of the policy's ``expert_hidden`` features.
        action_dim: output size per token (the policy's ``max_action_dim``).
        sigma_min, sigma_max: bounds (normalised action units); changeable with :meth:`set_bounds`.
        width: MLP width.
        detach_features: stop the noise-head gradient at the policy features (default), so the
            noise head never moves the velocity field.
    The last layer starts at zero: sigma starts at sqrt(sigma_min * sigma_max) everywhere.
    """

    def __init__(self, hidden_dim: int, action_dim: int, sigma_min: float = 0.08, sigma_max: float = 0.16,
                 width: int = 128, detach_features: bool = True):
        super().__init__()
        self.config = {"hidden_dim": hidden_dim, "action_dim": action_dim, "sigma_min": sigma_min,
                       "sigma_max": sigma_max, "width": width, "detach_features": detach_features}
        self.net = nn.Sequential(nn.Linear(hidden_dim, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, action_dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.detach_features = detach_features
        self.register_buffer("logvar_min", torch.tensor(2 * math.log(sigma_min)))
        self.register_buffer("logvar_max", torch.tensor(2 * math.log(sigma_max)))

    def set_bounds(self, sigma_min: float, sigma_max: float) -> None:
        """Change the sigma bounds (decay schedule)."""
        self.logvar_min.fill_(2 * math.log(sigma_min))
        self.logvar_max.fill_(2 * math.log(sigma_max))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, chunk, hidden_dim) -> sigma (B, chunk, action_dim), in the head's dtype (float32,
        float64 for the flow policy, see ReinFlowAgent)."""
        if self.detach_features:
            h = h.detach()
        raw = torch.tanh(self.net(h.to(self.net[0].weight.dtype)))
        logvar = self.logvar_min + (self.logvar_max - self.logvar_min) * (raw + 1) / 2
        return torch.exp(0.5 * logvar)


# ---------------------------------------------------------------------- chain math
def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mean, std^2) (same shape as the broadcast inputs), float64: summed
    over a chain it must reproduce the sampling-time value to ~1e-6 (the ratio == 1 check), which
    float32 accumulation does not guarantee for every K."""
    x, mean, std = x.double(), mean.double(), std.double()
    return -0.5 * ((x - mean) / std) ** 2 - torch.log(std) - 0.5 * LOG_2PI


def _start_is_random(policy) -> int:
    return int(getattr(policy, "init_noise_scale", 1.0) > 0)


def start_log_density(policy, x0: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) sum over the masked elements of log N(x_0; 0, s^2) with s = ``policy.init_noise_scale``;
    zeros when s = 0 (the chain then starts at the fixed point x_0 = 0, which has no density)."""
    s = float(getattr(policy, "init_noise_scale", 1.0))
    if s <= 0:
        return torch.zeros(x0.shape[0], device=x0.device)
    return (gaussian_log_density(x0, torch.zeros_like(x0), torch.full_like(x0, s)) * mask).sum(dim=(1, 2))


def noise_mask(policy, device=None) -> torch.Tensor:
    """(chunk_size, max_action_dim) float mask: 1 on the real action dims of the first
    ``n_action_steps`` chunk positions (the random, executed elements), else 0."""
    m = torch.zeros(policy.chunk_size, policy.max_action_dim, device=device or policy.device)
    m[: policy.n_action_steps, : policy.action_dim] = 1.0
    return m


@dataclass
class ChainSample:
    """Output of :func:`sample_chain`.

    Attributes:
        x: (B, chunk, max_action_dim) final flow-space sample (t = 0).
        chain: (B, K+1, chunk, max_action_dim) every x_k, detached.
        log_prob: (B,) per-element-averaged chain log-prob (see module docstring); zeros when
            deterministic.
        sigma_mean: mean sigma over the masked elements (float), 0 when deterministic.
    """

    x: torch.Tensor
    chain: torch.Tensor
    log_prob: torch.Tensor
    sigma_mean: float


@torch.no_grad()
def sample_chain(policy, noise_head: NoiseHead | None, batch: dict, num_steps: int, deterministic: bool = False,
                 generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> ChainSample:
    """Sample a (stochastic or deterministic) denoising chain for a batch of observations.

    Args:
        policy: a :class:`FlowMatchingPolicy` (in eval mode).
        noise_head: required unless ``deterministic``.
        batch: ``policy.prepare_batch(...)`` output with B observations.
        num_steps: K.
        deterministic: plain Euler ODE (the deployment sampler), no noise head.
        generator: CPU torch generator for x_0 and the eps (seeded runs).
        noise: optional x_0 (B, chunk, max_action_dim).
    """
    prefix = policy.build_prefix(batch)
    b = _batch_size(batch)
    x = noise if noise is not None else policy.sample_noise(b, generator=generator)
    mask = noise_mask(policy, x.device)
    chain = [x]
    logp = start_log_density(policy, x, mask)
    sig_sum = 0.0
    for k in range(num_steps):
        mean = euler_mean(policy, prefix, x, k, num_steps)
        if deterministic:
            x = mean
        else:
            std = noise_head(policy.expert_hidden())
            eps = torch.randn(mean.shape, generator=generator, device="cpu").to(mean.device)
            x = mean + std * eps * mask
            logp = logp + (gaussian_log_density(x, mean, std) * mask).sum(dim=(1, 2))
            sig_sum += float((std * mask).sum() / (mask.sum() * b))
        chain.append(x)
    n_el = float(mask.sum()) * (num_steps + _start_is_random(policy))
    logp = torch.zeros(b, device=x.device) if deterministic else logp / n_el
    return ChainSample(x, torch.stack(chain, dim=1), logp, 0.0 if deterministic else sig_sum / num_steps)


def chain_log_prob(policy, noise_head: NoiseHead, batch: dict, chain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Recompute the per-element-averaged log-prob of stored chains under the current parameters
    (differentiable), on the same time grid as :func:`sample_chain`.

    Args:
        chain: (B, K+1, chunk, max_action_dim).
    Returns:
        (log_prob (B,), entropy (B,) mean Gaussian transition entropy per masked element,
        sigma_mean (B,) mean sigma over the masked elements).
    """
    k_steps = chain.shape[1] - 1
    prefix = policy.build_prefix(batch)
    b = chain.shape[0]
    mask = noise_mask(policy, chain.device)
    logp = start_log_density(policy, chain[:, 0], mask)
    ent = torch.zeros(b, device=chain.device)
    sig = torch.zeros(b, device=chain.device)
    for k in range(k_steps):
        mean = euler_mean(policy, prefix, chain[:, k], k, k_steps)
        std = noise_head(policy.expert_hidden())
        logp = logp + (gaussian_log_density(chain[:, k + 1], mean, std) * mask).sum(dim=(1, 2))
        ent = ent + ((0.5 * (1.0 + LOG_2PI) + torch.log(std)) * mask).sum(dim=(1, 2))
        sig = sig + (std * mask).sum(dim=(1, 2))
    n_m = mask.sum()
    return logp / (n_m * (k_steps + _start_is_random(policy))), ent / (n_m * k_steps), sig / (n_m * k_steps)


def _batch_size(batch: dict) -> int:
    for v in batch.values():
        if isinstance(v, torch.Tensor):
            return v.shape[0]
    raise ValueError("batch holds no tensor")


# ---------------------------------------------------------------------- critic
class RunningNorm(nn.Module):
    """Running mean/variance of a feature vector (buffers: saved with the critic)."""

    def __init__(self, dim: int, clip: float = 10.0):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))
        self.clip = clip

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge a batch (N, dim) into the statistics (Chan et al. parallel algorithm)."""
        x = x.double()
        bm, bv, bn = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        delta, tot = bm - self.mean, self.count + bn
        self.mean += delta * bn / tot
        self.var.copy_((self.var * self.count + bv * bn + delta**2 * self.count * bn / tot) / tot)
        self.count.fill_(float(tot))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.double() - self.mean) / torch.sqrt(self.var + 1e-8)).clamp(-self.clip, self.clip).float()


def critic_features(observations: dict) -> torch.Tensor:
    """Low-dimensional env observation (B, D) for the critic: ``observation.state`` plus
    ``observation.environment_state`` when present (float32). Images are not used."""
    keys = [k for k in ("observation.state", "observation.environment_state") if k in observations]
    arrs = [np.asarray(observations[k], np.float32).reshape(len(observations[keys[0]]), -1) for k in keys]
    return torch.as_tensor(np.concatenate(arrs, axis=1))


class Critic(nn.Module):
    """V(s) MLP on :func:`critic_features` with a running input normaliser.

    Args:
        input_dim: feature size (6 or 13).
        hidden: width (two hidden layers, Tanh).
    """

    def __init__(self, input_dim: int, hidden: int = 256):
        super().__init__()
        self.config = {"input_dim": input_dim, "hidden": hidden}
        self.norm = RunningNorm(input_dim)
        self.net = nn.Sequential(nn.Linear(input_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, 1))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, input_dim) -> (B,) values."""
        return self.net(self.norm(feats)).squeeze(-1)


# ---------------------------------------------------------------------- GAE and PPO loss
def compute_gae(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray, terminated: np.ndarray,
                episode_end: np.ndarray, gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation over one env's sequence of decisions (time order).

    Args:
        rewards: (T,) scaled reward of each decision.
        values: (T,) V(s_t).
        next_values: (T,) V(s_{t+1}) of the observation after the decision (for a truncated
            episode or the end of the rollout: V of the final observation).
        terminated: (T,) bool, true terminal (no bootstrap).
        episode_end: (T,) bool, the sequence is cut after t (terminated, truncated or rollout
            end): the advantage recursion does not cross it.
    Returns:
        (advantages (T,), returns = advantages + values (T,)), float64.
    """
    T = len(rewards)
    adv = np.zeros(T, np.float64)
    last = 0.0
    for t in range(T - 1, -1, -1):
        nv = 0.0 if terminated[t] else next_values[t]
        delta = rewards[t] + gamma * nv - values[t]
        last = delta + (0.0 if episode_end[t] else gamma * lam * last)
        adv[t] = last
    return adv, adv + np.asarray(values, np.float64)


def group_relative_advantages(group_ids: np.ndarray, returns: np.ndarray) -> np.ndarray:
    """Episode return minus the mean return of its group (episodes that started from the same
    state, e.g. the same block position), (N,) -> (N,) float64. The baseline then carries no
    start-state variance: with randomized block positions a learned critic must first learn how
    hard each position is, a group mean knows it exactly (used by ``train_reinflow.py
    --advantage group``; GRPO/RLOO-style)."""
    group_ids = np.asarray(group_ids)
    returns = np.asarray(returns, dtype=np.float64)
    adv = np.empty_like(returns)
    for g in np.unique(group_ids):
        sel = group_ids == g
        adv[sel] = returns[sel] - returns[sel].mean()
    return adv


def clipped_surrogate(log_prob: torch.Tensor, old_log_prob: torch.Tensor, adv: torch.Tensor, clip: float) -> tuple[torch.Tensor, dict]:
    """PPO clipped policy loss (to minimise): mean(max(-A r, -A clip(r, 1-eps, 1+eps))).

    Returns:
        (loss, stats) with ``approx_kl`` ((r - 1) - log r, mean) and ``clipfrac``.
    """
    logratio = log_prob - old_log_prob
    ratio = torch.exp(logratio)
    loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)).mean()
    with torch.no_grad():
        stats = {"approx_kl": float(((ratio - 1) - logratio).mean()),
                 "clipfrac": float(((ratio - 1).abs() > clip).float().mean())}
    return loss, stats


# ---------------------------------------------------------------------- the agent
class ReinFlowAgent:
    """Policy (any :class:`FlowMatchingPolicy`) + noise head + critic + optimizers + a frozen
    copy of the pretrained policy (for the BC regulariser).

    Args:
        policy: the pretrained policy (trained in place).
        cfg: :class:`ReinFlowConfig`.
        critic_input_dim: size of :func:`critic_features` for this env.
        preset: trainable-parameter preset passed to ``policy.trainable_parameter_groups``.
    """

    def __init__(self, policy, cfg: ReinFlowConfig, critic_input_dim: int, preset: str = "all"):
        self.policy = policy
        self.cfg = cfg
        policy.init_noise_scale = cfg.init_noise_scale
        if hasattr(policy, "set_dtype"):  # the small flow policy: float64 (see FlowPolicy.set_dtype)
            policy.set_dtype(torch.float64)
        self.noise_head = NoiseHead(policy.hidden_dim, policy.max_action_dim, cfg.sigma_min, cfg.sigma_max,
                                    cfg.noise_hidden).to(policy.device, getattr(policy, "dtype", torch.float32))
        self.critic = Critic(critic_input_dim, cfg.critic_hidden).to(policy.device)
        groups = policy.trainable_parameter_groups(preset)
        self.policy_params = [p for ps in groups.values() for p in ps]
        self.policy_opt = torch.optim.Adam([
            {"params": self.policy_params, "lr": cfg.policy_lr},
            {"params": list(self.noise_head.parameters()), "lr": cfg.noise_lr},
        ])
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.ref_policy = None
        if cfg.bc_coef > 0:
            self.ref_policy = copy.deepcopy(policy)
            for p in self.ref_policy.parameters():
                p.requires_grad_(False)
        self.eval_mode()

    def eval_mode(self) -> None:
        """Eval mode everywhere (no dropout) for rollouts and log-prob recomputation."""
        self.policy.model.eval()
        self.noise_head.eval()
        if self.ref_policy is not None:
            self.ref_policy.model.eval()

    def set_iteration(self, iteration: int) -> float:
        """Apply the sigma schedule for ``iteration``; returns sigma_max."""
        smax = self.cfg.sigma_max_at(iteration)
        self.noise_head.set_bounds(self.cfg.sigma_min, smax)
        return smax

    @torch.no_grad()
    def act(self, observations: dict, generator: torch.Generator | None, deterministic: bool = False,
            task: str | None = None) -> tuple[np.ndarray, ChainSample, dict]:
        """Chunks for a batch of B env observations: ((B, chunk, 6) float32 MuJoCo radians, the
        ChainSample, the policy's prepared batch, which the rollout buffer keeps for the update)."""
        batch = self.policy.prepare_batch(observations, task or self.policy.task)
        s = sample_chain(self.policy, None if deterministic else self.noise_head, batch, self.cfg.num_steps,
                         deterministic=deterministic, generator=generator)
        return self.policy.to_mujoco_actions(s.x, batch), s, batch

    @torch.no_grad()
    def values(self, feats: torch.Tensor) -> np.ndarray:
        """V for (B, D) :func:`critic_features`: (B,) float64."""
        return self.critic(feats.to(self.policy.device)).double().cpu().numpy()

    # -------------------------------------------------------------- checkpoint pieces
    def checkpoint_fields(self) -> dict:
        """The agent's fields of a checkpoint_io.Checkpoint: ReinFlow config, noise head and critic
        (config + weights), both optimizer states, the BC reference's weights (the policy's own
        weights are the backend's)."""
        return {"noise_head_config": dict(self.noise_head.config), "noise_head_state": _cpu(self.noise_head.state_dict()),
                "critic_config": dict(self.critic.config), "critic_state": _cpu(self.critic.state_dict()),
                "optimizers": {"policy": self.policy_opt.state_dict(), "critic": self.critic_opt.state_dict()},
                "reinflow_config": asdict(self.cfg),
                "reference_state": _cpu(self.ref_policy.model.state_dict()) if self.ref_policy is not None else None}

    def load_checkpoint(self, ckpt) -> None:
        """Strict counterpart of :meth:`checkpoint_fields` for a checkpoint_io.Checkpoint (names
        mismatched keys, never partial). A reference state holding only some tensors (a VLA
        delta) is applied to those tensors.

        Raises:
            RuntimeError: a noise head for another policy width, or mismatched keys.
        """
        from so101_sim.checkpoint_io import strict_load_state_dict

        if ckpt.noise_head_config["hidden_dim"] != self.noise_head.config["hidden_dim"]:
            raise RuntimeError(f"noise head: checkpoint hidden_dim {ckpt.noise_head_config['hidden_dim']} vs "
                               f"policy {self.noise_head.config['hidden_dim']}")
        strict_load_state_dict(self.noise_head, ckpt.noise_head_state, "noise head")
        strict_load_state_dict(self.critic, ckpt.critic_state, "critic")
        self.policy_opt.load_state_dict(ckpt.optimizers["policy"])
        self.critic_opt.load_state_dict(ckpt.optimizers["critic"])
        ref = ckpt.reference_state
        if self.ref_policy is None or not ref:
            return
        own = self.ref_policy.model.state_dict()
        if set(ref) == set(own):
            strict_load_state_dict(self.ref_policy.model, ref, "reference policy")
            return
        params = dict(self.ref_policy.model.named_parameters())
        if not set(ref) <= set(params):
            raise RuntimeError(f"reference policy: unexpected keys {sorted(set(ref) - set(params))[:5]}; nothing was loaded")
        with torch.no_grad():
            for n, v in ref.items():
                params[n].copy_(v.to(params[n].device, params[n].dtype))


def _cpu(sd: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in sd.items()}


# ---------------------------------------------------------------------- what PPO consumes
def take_inputs(inputs: dict, idx) -> dict:
    """Rows ``idx`` of a policy's prepared batch (``policy.prepare_batch`` output): tensors and
    numpy arrays indexed on their first axis, lists element-wise, anything else kept."""
    out = {}
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor):
            out[k] = v[torch.as_tensor(idx, device=v.device)]
        elif isinstance(v, np.ndarray):
            out[k] = v[idx]
        elif isinstance(v, list):
            out[k] = [v[int(i)] for i in idx]
        else:
            out[k] = v
    return out


def cat_inputs(batches: list[dict]) -> dict:
    """Concatenate prepared batches on their first axis (tensors, numpy arrays, lists); a value
    that is neither is taken from the first batch."""
    out = {}
    for k, v in batches[0].items():
        if isinstance(v, torch.Tensor):
            out[k] = torch.cat([b[k] for b in batches])
        elif isinstance(v, np.ndarray):
            out[k] = np.concatenate([b[k] for b in batches])
        elif isinstance(v, list):
            out[k] = [x for b in batches for x in b[k]]
        else:
            out[k] = v
    return out


@dataclass
class RolloutData:
    """One iteration's decisions, flattened (reinflow_rollout.RolloutBuffer.flatten), as
    :func:`ppo_update` consumes them.

    Attributes:
        inputs: the policy's prepared batch of every decision's observation
            (``policy.prepare_batch``, computed once when the decision was taken: images,
            tokens and normalisation are never recomputed per minibatch or epoch).
        critic_feats: (N, D) float32 :func:`critic_features` of the observations.
        chains: (N, K+1, chunk, max_action_dim) the sampled chains, policy dtype.
        log_probs: (N,) sampling-time log-probs.
        advantages, returns: (N,) float32 (advantages not yet normalised).
    """

    inputs: dict
    critic_feats: torch.Tensor
    chains: torch.Tensor
    log_probs: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor

    def __len__(self) -> int:
        return len(self.log_probs)

    def select(self, idx) -> "RolloutData":
        """The decisions ``idx`` (an int array), same order."""
        t = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return RolloutData(take_inputs(self.inputs, idx), self.critic_feats[t], self.chains[t], self.log_probs[t],
                           self.advantages[t], self.returns[t])


def check_ratio_is_one(agent: ReinFlowAgent, data: RolloutData, chunk: int = 1024) -> float:
    """Recompute every stored chain's log-prob before any update and compare.

    Returns:
        max |exp(new - old) - 1| over the buffer.
    Raises:
        RuntimeError: it exceeds ``cfg.ratio_tol`` (sampling and recomputation disagree: a
            different time grid, train-mode dropout, or a stale noise head).
    """
    agent.eval_mode()
    worst = 0.0
    with torch.no_grad():
        for s in range(0, len(data), chunk):
            idx = np.arange(s, min(len(data), s + chunk))
            lp, _, _ = chain_log_prob(agent.policy, agent.noise_head, take_inputs(data.inputs, idx), data.chains[idx])
            worst = max(worst, float((torch.exp(lp - data.log_probs[idx]) - 1).abs().max()))
    if not worst <= agent.cfg.ratio_tol:
        raise RuntimeError(f"ReinFlow: the recomputed PPO ratio before the first update is not 1 "
                           f"(max |ratio - 1| = {worst:.3e} > {agent.cfg.ratio_tol:.0e}); sampling and "
                           "log-prob recomputation disagree")
    return worst


def ppo_update(agent: ReinFlowAgent, data: RolloutData, iteration: int, generator: torch.Generator,
               dist=None) -> dict[str, float]:
    """PPO epochs on one iteration's rollouts (see the module docstring).

    Args:
        agent: the agent (its policy stays in eval mode; gradients still flow).
        data: the iteration's decisions (advantages not yet normalised), with the policy's
            prepared inputs cached (:class:`RolloutData`).
        iteration: used for critic warm-up.
        generator: seeds the minibatch permutation and the BC-regulariser noise.
        dist: None (one process), or distributed.Distributed: gradients are averaged across
            ranks before every optimizer step and the target-KL test uses the mean KL, so all
            ranks take the same steps (each rank must bring the same number of decisions).
    Returns:
        mean statistics: pg_loss, v_loss, entropy, bc_loss, approx_kl, clipfrac, sigma,
        epochs (run), ratio_check (max |ratio - 1| before the update), policy_updated (0/1).
    """
    cfg = agent.cfg
    agent.eval_mode()
    n = len(data)
    feats = data.critic_feats.to(agent.policy.device)
    adv = data.advantages.clone()
    if cfg.norm_adv and n > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    update_policy = iteration >= cfg.critic_warmup_iters
    ratio_dev = check_ratio_is_one(agent, data, chunk=getattr(agent, "ratio_chunk", 1024))
    stats: dict[str, list[float]] = {k: [] for k in ("pg_loss", "v_loss", "entropy", "bc_loss", "approx_kl", "clipfrac", "sigma")}
    epochs_run = 0
    stop = False
    mb = max(1, min(cfg.batch_size, n))
    for _epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=generator).numpy()
        n_mb = 0
        agent.policy_opt.zero_grad(set_to_none=True)
        agent.critic_opt.zero_grad(set_to_none=True)
        starts = list(range(0, n, mb))
        for j, s in enumerate(starts):
            idx = perm[s : s + mb]
            loss = _minibatch_loss(agent, data, feats, adv, idx, update_policy, generator, stats)
            (loss / cfg.grad_accum).backward()
            n_mb += 1
            if n_mb % cfg.grad_accum == 0 or j == len(starts) - 1:
                if dist is not None:
                    dist.average_gradients(list(agent.critic.parameters()))
                nn.utils.clip_grad_norm_(agent.critic.parameters(), cfg.max_grad_norm)
                agent.critic_opt.step()
                if update_policy:
                    if dist is not None:
                        dist.average_gradients(agent.policy_params + list(agent.noise_head.parameters()))
                    nn.utils.clip_grad_norm_(agent.policy_params + list(agent.noise_head.parameters()), cfg.max_grad_norm)
                    agent.policy_opt.step()
                agent.policy_opt.zero_grad(set_to_none=True)
                agent.critic_opt.zero_grad(set_to_none=True)
                if update_policy and cfg.target_kl is not None and stats["approx_kl"] and (
                        stats["approx_kl"][-1] if dist is None else dist.mean_scalar(stats["approx_kl"][-1])) > cfg.target_kl:
                    stop = True
                    break
        epochs_run += 1
        if stop:
            break
    _critic_epochs(agent, data, feats, generator, stats, dist)
    out = {k: (float(np.mean(v)) if v else float("nan")) for k, v in stats.items()}
    out.update(epochs=epochs_run, ratio_check=ratio_dev, policy_updated=float(update_policy),
               early_stop=float(stop))
    return out


def _minibatch_loss(agent: ReinFlowAgent, data: RolloutData, feats: torch.Tensor, adv: torch.Tensor, idx,
                    update_policy: bool, generator: torch.Generator, stats: dict) -> torch.Tensor:
    """The loss of one PPO minibatch ``idx``: value loss, and while the policy trains the clipped
    surrogate, entropy bonus and BC regulariser; appends the minibatch's statistics to ``stats``."""
    cfg = agent.cfg
    v = agent.critic(feats[idx])
    v_loss = 0.5 * ((v - data.returns[idx]) ** 2).mean()
    loss = cfg.vf_coef * v_loss
    if update_policy:
        batch = take_inputs(data.inputs, idx)
        lp, ent, sig = chain_log_prob(agent.policy, agent.noise_head, batch, data.chains[idx])
        pg_loss, st = clipped_surrogate(lp, data.log_probs[idx], adv[idx], cfg.clip)
        loss = loss + pg_loss - cfg.ent_coef * ent.mean()
        if cfg.bc_coef > 0:
            bc = bc_regulariser(agent, batch, generator)
            loss = loss + cfg.bc_coef * bc
            stats["bc_loss"].append(bc.item())
        stats["pg_loss"].append(pg_loss.item())
        stats["entropy"].append(ent.mean().item())
        stats["sigma"].append(sig.mean().item())
        stats["approx_kl"].append(st["approx_kl"])
        stats["clipfrac"].append(st["clipfrac"])
    stats["v_loss"].append(v_loss.item())
    return loss


def _critic_epochs(agent: ReinFlowAgent, data: RolloutData, feats: torch.Tensor, generator: torch.Generator,
                   stats: dict, dist=None) -> None:
    """``cfg.critic_extra_epochs`` critic-only passes after the PPO epochs (cheap: a small MLP on
    the env state), minibatches of ``cfg.critic_batch_size``."""
    cfg, n = agent.cfg, len(data)
    for _ in range(cfg.critic_extra_epochs):
        perm = torch.randperm(n, generator=generator).numpy()
        for s in range(0, n, cfg.critic_batch_size):
            idx = perm[s : s + cfg.critic_batch_size]
            v_loss = 0.5 * ((agent.critic(feats[idx]) - data.returns[idx]) ** 2).mean()
            agent.critic_opt.zero_grad(set_to_none=True)
            (cfg.vf_coef * v_loss).backward()
            if dist is not None:
                dist.average_gradients(list(agent.critic.parameters()))
            nn.utils.clip_grad_norm_(agent.critic.parameters(), cfg.max_grad_norm)
            agent.critic_opt.step()
            stats["v_loss"].append(v_loss.item())


def bc_regulariser(agent: ReinFlowAgent, batch: dict, generator: torch.Generator) -> torch.Tensor:
    """MSE (normalised action space, masked elements) between the deterministic chunks of the
    fine-tuned and the frozen pretrained policy from the same x_0 (differentiable in the former)."""
    pol, ref = agent.policy, agent.ref_policy
    b = _batch_size(batch)
    x = pol.sample_noise(b, generator=generator)
    xr = x.clone()
    k = agent.cfg.num_steps
    prefix = pol.build_prefix(batch)
    with torch.no_grad():
        ref_prefix = ref.build_prefix(batch)
        xr = euler_sample(ref, ref_prefix, xr, k)
    for i in range(k):
        x = euler_mean(pol, prefix, x, i, k)
    m = noise_mask(pol, x.device)
    return (((x - xr) ** 2) * m).sum() / (m.sum() * b)


__all__ = ["ReinFlowConfig", "NoiseHead", "gaussian_log_density", "noise_mask", "sample_chain", "chain_log_prob",
           "ChainSample", "Critic", "RunningNorm", "critic_features", "compute_gae", "group_relative_advantages",
           "clipped_surrogate",
           "ReinFlowAgent", "RolloutData", "cat_inputs", "check_ratio_is_one", "ppo_update", "bc_regulariser", "take_inputs"]
