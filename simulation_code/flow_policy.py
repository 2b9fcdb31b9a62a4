"""A small action-chunk flow-matching policy (``--model-type flow``) that trains on a CPU.

It is the policy of the ReinFlow benchmark: behaviour-cloned on scripted demonstrations
(``train_flow_bc.py``), then fine-tuned with ReinFlow (``train_reinflow.py``). It implements
:class:`flow_matching_policy.FlowMatchingPolicy`, so the env, the inference scripts and the
ReinFlow engine treat it exactly like SmolVLA or Pi0.

Inputs (privileged state, no images):
    ``observation.state``             (6,) joint angles, MuJoCo radians
    ``observation.environment_state`` (7,) block position (m, world) + quaternion (w, x, y, z):
                                      *privileged* simulator state, which a real robot does not
                                      have; the env provides it with ``include_env_state=True``.
Output: a chunk of ``chunk_size`` absolute joint targets (MuJoCo radians), of which the first
``n_action_steps`` are executed.

Flow matching, same convention as LeRobot's SmolVLA (``policies/smolvla/modeling_smolvla.py``):
    x_t = t * noise + (1 - t) * a,   target velocity u = noise - a,
    t ~ Beta(1.5, 1.0) * 0.999 + 0.001 at training time; sampling integrates from t = 1 (noise)
    to t = 0 (action) with Euler steps ``x <- x + dt * v(x, t)``, ``dt = -1/K``.
``a`` is the *normalised* action chunk: with ``action_mode="delta"`` (default) the chunk minus the
current joint state, z-scored per (chunk position, joint) with the dataset statistics; with
``"absolute"`` the chunk itself, z-scored per joint position the same way.

Network (about 0.3 M parameters with the defaults): an observation encoder MLP (13 -> 256 -> 256),
a sinusoidal time embedding + MLP (-> 64), and a velocity MLP on [x_t flattened, obs embedding,
time embedding] -> chunk_size * 6. The ReinFlow noise head reads :meth:`FlowPolicy.expert_hidden`:
[obs embedding, time embedding, one-hot chunk position] per action token.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from so101_sim import so101_mujoco_utils as u
from so101_sim.checkpoint_io import Checkpoint, load as load_checkpoint, strict_load_state_dict
from so101_sim.flow_matching_policy import FlowMatchingPolicy, euler_sample

#: Floors on the observation standard deviations used for normalisation (radians / metres /
#: quaternion units). The block quaternion barely varies in the demonstrations (the block starts
#: unrotated), so its std needs a floor; normalised observations are also clipped to +-OBS_CLIP.
STATE_STD_FLOOR = 1e-2
ENV_STATE_STD_FLOOR = 5e-2
ACTION_STD_FLOOR = 1e-3
OBS_CLIP = 10.0


@dataclass
class FlowPolicyConfig:
    """Architecture and chunking of :class:`FlowPolicy` (stored in every checkpoint).

    Attributes:
        state_dim: joint state size (6).
        env_state_dim: privileged block pose size (7).
        action_dim: joints (6).
        chunk_size: actions per predicted chunk.
        n_action_steps: actions executed per chunk (<= chunk_size).
        hidden_dim: width of the encoder and velocity MLPs.
        depth: hidden layers of the velocity MLP.
        time_dim: sinusoidal time-embedding size.
        num_denoise_steps: default Euler steps K at inference.
        action_mode: ``"delta"`` (chunk - current state) or ``"absolute"``.
        init_noise_scale: std s of the sampler's start x(t=1) ~ N(0, s^2 I); 0 = a fully
            deterministic sampler starting at 0 (see FlowMatchingPolicy.init_noise_scale).
    """

    state_dim: int = 6
    env_state_dim: int = 7
    action_dim: int = 6
    chunk_size: int = 8
    n_action_steps: int = 4
    hidden_dim: int = 256
    depth: int = 3
    time_dim: int = 32
    num_denoise_steps: int = 4
    action_mode: str = "delta"
    init_noise_scale: float = 1.0

    def __post_init__(self):
        if not 1 <= self.n_action_steps <= self.chunk_size:
            raise ValueError(f"need 1 <= n_action_steps <= chunk_size, got {self.n_action_steps}, {self.chunk_size}")
        if self.action_mode not in ("delta", "absolute"):
            raise ValueError(f"action_mode must be 'delta' or 'absolute', got {self.action_mode!r}")


def sinusoidal_embedding(t: torch.Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """Sine-cosine embedding of scalar times, as SmolVLA's ``create_sinusoidal_pos_embedding``.

    Args:
        t: (B,) float times in [0, 1].
        dim: even embedding size.
    Returns:
        (B, dim), the dtype of ``t`` if it is floating point (float32 otherwise).
    """
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    dtype = t.dtype if t.is_floating_point() else torch.float32
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=dtype, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = (2 * math.pi / period)[None, :] * t.to(dtype)[:, None]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)


def _mlp(sizes: list[int], act=nn.SiLU) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class FlowMLP(nn.Module):
    """Velocity field v(x_t, t | obs) as MLPs (see the module docstring).

    Shapes: ``obs`` (B, state_dim + env_state_dim) normalised; ``x_t`` (B, chunk, action_dim);
    ``t`` (B,). Output (B, chunk, action_dim).
    """

    def __init__(self, cfg: FlowPolicyConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden_dim
        obs_dim = cfg.state_dim + cfg.env_state_dim
        self.obs_encoder = nn.Sequential(_mlp([obs_dim, h, h]), nn.SiLU())
        self.time_mlp = nn.Sequential(_mlp([cfg.time_dim, 64, 64]), nn.SiLU())
        flat = cfg.chunk_size * cfg.action_dim
        self.velocity = _mlp([flat + h + 64] + [h] * cfg.depth + [flat])
        self.feature_dim = h + 64

    def encode_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, obs_dim) -> (B, hidden_dim) observation embedding."""
        return self.obs_encoder(obs)

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, 64) time embedding (in the network's dtype, whatever the dtype of ``t``)."""
        return self.time_mlp(sinusoidal_embedding(t.to(next(self.time_mlp.parameters()).dtype), self.cfg.time_dim))

    def forward(self, obs_emb: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocity (B, chunk, action_dim) and the time embedding (B, 64)."""
        te = self.embed_time(t)
        inp = torch.cat([x_t.flatten(1).to(te.dtype), obs_emb, te], dim=1)
        return self.velocity(inp).view_as(x_t), te


@dataclass
class NormStats:
    """Normalisation statistics (float32 numpy arrays), computed from the BC dataset.

    Attributes:
        state_mean, state_std: (6,) radians.
        env_state_mean, env_state_std: (7,) metres / quaternion units.
        action_mean, action_std: (chunk_size, 6) radians; of the delta or absolute chunk
            (see :class:`FlowPolicyConfig.action_mode`).
    """

    state_mean: np.ndarray
    state_std: np.ndarray
    env_state_mean: np.ndarray
    env_state_std: np.ndarray
    action_mean: np.ndarray
    action_std: np.ndarray

    def to_dict(self) -> dict[str, list]:
        return {k: np.asarray(v, dtype=np.float32).tolist() for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "NormStats":
        return cls(**{k: np.asarray(v, dtype=np.float32) for k, v in d.items()})

    @classmethod
    def identity(cls, cfg: FlowPolicyConfig) -> "NormStats":
        """Zero mean / unit std (tests and toy policies)."""
        return cls(np.zeros(cfg.state_dim, np.float32), np.ones(cfg.state_dim, np.float32),
                   np.zeros(cfg.env_state_dim, np.float32), np.ones(cfg.env_state_dim, np.float32),
                   np.zeros((cfg.chunk_size, cfg.action_dim), np.float32),
                   np.ones((cfg.chunk_size, cfg.action_dim), np.float32))


def compute_norm_stats(states: np.ndarray, env_states: np.ndarray, action_chunks: np.ndarray,
                       cfg: FlowPolicyConfig) -> NormStats:
    """Statistics of a BC dataset.

    Args:
        states: (N, 6) MuJoCo radians.
        env_states: (N, 7) block pose.
        action_chunks: (N, chunk_size, 6) absolute targets, MuJoCo radians.
    Returns:
        :class:`NormStats` with std floors applied (module constants).
    """
    chunks = action_chunks - states[:, None, :] if cfg.action_mode == "delta" else action_chunks
    return NormStats(
        states.mean(0).astype(np.float32), np.maximum(states.std(0), STATE_STD_FLOOR).astype(np.float32),
        env_states.mean(0).astype(np.float32), np.maximum(env_states.std(0), ENV_STATE_STD_FLOOR).astype(np.float32),
        chunks.mean(0).astype(np.float32), np.maximum(chunks.std(0), ACTION_STD_FLOOR).astype(np.float32),
    )


@dataclass
class FlowPrefix:
    """What :meth:`FlowPolicy.build_prefix` returns: the observation embedding (B, hidden_dim)."""

    obs_emb: torch.Tensor


class FlowPolicy(FlowMatchingPolicy):
    """The small flow policy behind :class:`FlowMatchingPolicy` (``model_type = "flow"``).

    Args:
        cfg: architecture (:class:`FlowPolicyConfig`).
        stats: normalisation (:class:`NormStats`); identity when None.
        device: torch device (CPU is enough).
    """

    model_type = "flow"
    frame = "mujoco_radians"

    def __init__(self, cfg: FlowPolicyConfig | None = None, stats: NormStats | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        self.cfg = cfg or FlowPolicyConfig()
        self.stats = stats or NormStats.identity(self.cfg)
        self.device = torch.device(device)
        self.model = FlowMLP(self.cfg).to(self.device)
        self.chunk_size = self.cfg.chunk_size
        self.n_action_steps = self.cfg.n_action_steps
        self.action_dim = self.cfg.action_dim
        self.max_action_dim = self.cfg.action_dim
        self.num_denoise_steps = self.cfg.num_denoise_steps
        self.hidden_dim = self.model.feature_dim + self.cfg.chunk_size
        self.task = u.DEFAULT_TASK
        self._hidden: torch.Tensor | None = None
        self._set_stat_tensors()

    @property
    def init_noise_scale(self) -> float:
        """Start-noise std, stored in the config so checkpoints carry it (interface attribute)."""
        return self.cfg.init_noise_scale

    @init_noise_scale.setter
    def init_noise_scale(self, value: float) -> None:
        self.cfg.init_noise_scale = float(value)

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the network and of every tensor the policy makes (float32 by default)."""
        return next(self.model.parameters()).dtype

    def set_dtype(self, dtype: torch.dtype) -> "FlowPolicy":
        """Run the policy in ``dtype`` (weights cast in place). ReinFlow trains the flow policy in
        float64: the PPO ratio check (recomputed log-prob == sampling-time log-prob within 1e-5)
        then holds for every K, whereas float32 results depend on the batch size at the ~1e-5
        level (BLAS kernels), which is enough to break it at K = 1. Returns self."""
        self.model.to(dtype)
        self._set_stat_tensors()
        return self

    def _set_stat_tensors(self) -> None:
        s, d, dt = self.stats, self.device, self.dtype
        self._obs_mean = torch.as_tensor(np.concatenate([s.state_mean, s.env_state_mean]), device=d, dtype=dt)
        self._obs_std = torch.as_tensor(np.concatenate([s.state_std, s.env_state_std]), device=d, dtype=dt)
        self._act_mean = torch.as_tensor(s.action_mean, device=d, dtype=dt)
        self._act_std = torch.as_tensor(s.action_std, device=d, dtype=dt)
        self._pos_onehot = torch.eye(self.chunk_size, device=d, dtype=dt)

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def load(cls, path: str, **kwargs: Any) -> "FlowPolicy":
        """Load the policy from a flow checkpoint file of any kind (BC, ReinFlow, policy-only;
        checkpoint_io.load: safe, hash-checked) or a safetensors + JSON export directory
        (pretrained_export.export_flow_pretrained).

        Raises:
            checkpoint_io.CheckpointNotFoundError: no such file (also a FileNotFoundError).
            checkpoint_io.CheckpointError: not a flow checkpoint of this repo, unsafe, truncated or corrupt.
            RuntimeError: architecture mismatch (names the mismatched keys; never partial).
        """
        from so101_sim.pretrained_export import is_flow_pretrained, load_flow_pretrained

        ckpt = load_flow_pretrained(path) if is_flow_pretrained(path) else load_checkpoint(path, model_type="flow")
        return cls.from_checkpoint(ckpt, device=kwargs.get("device", "cpu"))

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, device: str | torch.device = "cpu") -> "FlowPolicy":
        """Build from a loaded :class:`checkpoint_io.Checkpoint` (``policy_config``, ``norm_stats``,
        ``policy_state``): float64 when the stored weights are (a ReinFlow checkpoint: every bit kept).

        Raises:
            ValueError: a checkpoint of another model type. RuntimeError: architecture mismatch.
        """
        if ckpt.model_type != "flow":
            raise ValueError(f"checkpoint holds model_type {ckpt.model_type!r}, not 'flow'")
        policy = cls(FlowPolicyConfig(**ckpt.policy_config), NormStats.from_dict(ckpt.norm_stats), device)
        weights = ckpt.policy_state
        if weights and next(iter(weights.values())).dtype == torch.float64:
            policy.set_dtype(torch.float64)
        strict_load_state_dict(policy.model, weights, "policy")
        policy.model.eval()
        return policy

    def checkpoint_fields(self) -> dict:
        """The policy fields of a :class:`checkpoint_io.Checkpoint`: model type, config, stats, weights (CPU copies)."""
        return {"model_type": self.model_type, "policy_config": asdict(self.cfg),
                "norm_stats": self.stats.to_dict(),
                "policy_state": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}}

    # ------------------------------------------------------------------ interface
    def prepare_batch(self, observations: dict, task: str | list[str] | None = None) -> dict:
        """Env observations with a leading batch axis -> {"obs": (B, 13) normalised, "state": (B, 6)
        raw radians} on ``device``, in the policy's :attr:`dtype`.

        Raises:
            KeyError: ``observation.environment_state`` missing (make the env with
                ``include_env_state=True``).
        """
        if u.OBS_ENV_STATE not in observations:
            raise KeyError(f"the flow policy needs {u.OBS_ENV_STATE!r} (privileged block pose); make the env "
                           "with include_env_state=True (and obs_mode='state')")
        state = torch.as_tensor(np.asarray(observations[u.OBS_STATE], dtype=np.float32), device=self.device).to(self.dtype)
        env_state = torch.as_tensor(np.asarray(observations[u.OBS_ENV_STATE], dtype=np.float32),
                                    device=self.device).to(self.dtype)
        if state.ndim == 1:
            state, env_state = state[None], env_state[None]
        obs = (torch.cat([state, env_state], dim=1) - self._obs_mean) / self._obs_std
        return {"obs": obs.clamp(-OBS_CLIP, OBS_CLIP), "state": state}

    def build_prefix(self, batch: dict) -> FlowPrefix:
        """Observation embedding, computed once per observation (differentiable)."""
        return FlowPrefix(self.model.encode_obs(batch["obs"]))

    def denoise_step(self, prefix: FlowPrefix, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v(x_t, t | obs): (B, chunk, 6); records :meth:`expert_hidden`."""
        v, te = self.model(prefix.obs_emb, x_t, t)
        b = x_t.shape[0]
        feat = torch.cat([prefix.obs_emb, te], dim=1)[:, None, :].expand(b, self.chunk_size, -1)
        self._hidden = torch.cat([feat, self._pos_onehot[None].expand(b, -1, -1)], dim=2)
        return v

    def expert_hidden(self) -> torch.Tensor:
        """(B, chunk, hidden_dim): [obs embedding, time embedding, one-hot chunk position]."""
        if self._hidden is None:
            raise RuntimeError("expert_hidden() before any denoise_step()")
        return self._hidden

    def normalize_actions(self, chunk: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Absolute chunk (B, chunk, 6) radians -> normalised flow space (B, chunk, 6)."""
        a = chunk - state[:, None, :] if self.cfg.action_mode == "delta" else chunk
        return (a - self._act_mean) / self._act_std

    def unnormalize_actions(self, x0: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Normalised flow space (B, chunk, 6) -> absolute chunk (B, chunk, 6) radians (unclipped)."""
        a = x0[..., : self.action_dim] * self._act_std + self._act_mean
        return a + state[:, None, :] if self.cfg.action_mode == "delta" else a

    def to_mujoco_actions(self, x0: torch.Tensor, batch: dict | None = None) -> np.ndarray:
        """(B, chunk, 6) flow space -> (B, chunk, 6) float32 MuJoCo radians clipped to the joint
        limits. ``batch`` (from :meth:`prepare_batch`) is required: actions are relative to its state.

        Raises:
            ValueError: ``batch`` is None.
        """
        if batch is None:
            raise ValueError("the flow policy needs the batch (current joint state) to decode actions")
        a = self.unnormalize_actions(x0.detach(), batch["state"]).cpu().numpy()
        return u.clip_to_joint_limits(a).astype(np.float32)

    def trainable_parameter_groups(self, preset: str = "all") -> dict[str, list[torch.nn.Parameter]]:
        """``"all"`` (every weight of the small policy; the only preset it has).

        Raises:
            ValueError: another preset.
        """
        if preset not in ("all", "expert"):
            raise ValueError(f"the flow policy trains preset 'all' only, got {preset!r}")
        for p in self.model.parameters():
            p.requires_grad_(True)
        return {"flow": list(self.model.parameters())}

    # ------------------------------------------------------------------ training
    def flow_matching_loss(self, batch: dict, action_chunks: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """SmolVLA's flow-matching loss (scalar): MSE(v(x_t, t), noise - a) with
        x_t = t * noise + (1 - t) * a and t ~ Beta(1.5, 1) * 0.999 + 0.001.

        Args:
            batch: from :meth:`prepare_batch`.
            action_chunks: (B, chunk, 6) absolute targets, MuJoCo radians.
        """
        a = self.normalize_actions(action_chunks.to(self.device), batch["state"])
        b = a.shape[0]
        noise = torch.randn(a.shape, generator=generator, device="cpu").to(self.device)
        # t ~ Beta(1.5, 1) drawn by inverse CDF (CDF = x^1.5), so a torch.Generator can seed it;
        # the same distribution as SmolVLA's sample_beta(1.5, 1.0).
        uni = torch.rand(b, generator=generator, device="cpu").to(self.device)
        t = uni ** (1.0 / 1.5) * 0.999 + 0.001
        x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * a
        target = noise - a
        v = self.denoise_step(self.build_prefix(batch), x_t, t)
        return torch.mean((v - target) ** 2)

    @torch.no_grad()
    def sample_deterministic(self, batch: dict, noise: torch.Tensor, num_steps: int | None = None) -> torch.Tensor:
        """Euler ODE from ``noise`` (B, chunk, 6) at t=1 to t=0 -> (B, chunk, 6) flow space."""
        return euler_sample(self, self.build_prefix(batch), noise, num_steps or self.num_denoise_steps)


__all__ = ["FlowPolicy", "FlowPolicyConfig", "NormStats", "FlowMLP", "compute_norm_stats"]
