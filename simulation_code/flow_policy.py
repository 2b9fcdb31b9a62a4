"""A small action-chunk flow-matching policy (``--model-type flow``) that trains on a CPU.

It is the policy of the ReinFlow benchmark: behaviour-cloned on scripted demonstrations
(``train_flow_bc.py``), then fine-tuned with ReinFlow (``train_reinflow.py``). It implements
:class:`vla_policy_interface.VLAPolicyInterface`, so the env, the inference scripts and the
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

import so101_mujoco_utils as u
from vla_policy_interface import VLAPolicyInterface, euler_sample

#: Checkpoint format tag written by every checkpoint of this repo's flow/ReinFlow scripts (v2: with a
#: content hash, see :func:`save_checkpoint`); the legacy tags load without an integrity check.
CHECKPOINT_FORMAT = "so101-reinflow-checkpoint-v2"
LEGACY_CHECKPOINT_FORMATS = ("so101-reinflow-checkpoint-v1",)
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
            deterministic sampler starting at 0 (see VLAPolicyInterface.init_noise_scale).
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


class FlowPolicy(VLAPolicyInterface):
    """The small flow policy behind :class:`VLAPolicyInterface` (``model_type = "flow"``).

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
        """Load the policy from a flow BC or ReinFlow checkpoint file (see :func:`load_checkpoint`).

        Raises:
            CheckpointNotFoundError: no such file (also a FileNotFoundError).
            CheckpointError: not a flow checkpoint of this repo, unsafe, truncated or corrupt (a ValueError).
            RuntimeError: architecture mismatch (names the mismatched keys; never partial).
        """
        ckpt = load_checkpoint(path, model_type="flow")
        return cls.from_checkpoint(ckpt, device=kwargs.get("device", "cpu"))

    @classmethod
    def from_checkpoint(cls, ckpt: dict, device: str | torch.device = "cpu") -> "FlowPolicy":
        """Build from a loaded checkpoint dict (keys ``policy_config``, ``norm_stats``, ``policy_state``)."""
        if ckpt.get("model_type") != "flow":
            raise ValueError(f"checkpoint holds model_type {ckpt.get('model_type')!r}, not 'flow'")
        policy = cls(FlowPolicyConfig(**ckpt["policy_config"]), NormStats.from_dict(ckpt["norm_stats"]), device)
        weights = ckpt["policy_state"]
        if weights and next(iter(weights.values())).dtype == torch.float64:  # a ReinFlow checkpoint: keep every bit
            policy.set_dtype(torch.float64)
        strict_load_state_dict(policy.model, weights, "policy")
        policy.model.eval()
        return policy

    def checkpoint_fields(self) -> dict:
        """The policy part of a checkpoint dict: model type, config, stats, weights."""
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


# ---------------------------------------------------------------------- checkpoints
def strict_load_state_dict(module: nn.Module, state: dict, what: str) -> None:
    """Load ``state`` into ``module`` all-or-nothing.

    Raises:
        RuntimeError: missing, unexpected or shape-mismatched keys, all named in the message
            (lesson of shared/reference/003: a partial load silently leaves random weights).
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                   for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if shape:
            parts.append(f"shape mismatches {shape}")
        raise RuntimeError(f"{what}: checkpoint does not match the model architecture ({'; '.join(parts)}); "
                           "nothing was loaded")
    module.load_state_dict(state, strict=True)


# ---------------------------------------------------------------------- checkpoint files
#: Checkpoint kinds (``kind`` field) and model types (``model_type``) written by this repo's scripts.
CHECKPOINT_KINDS = {"bc": ("BC", "train_flow_bc.py"), "reinflow": ("ReinFlow", "train_reinflow.py")}
CHECKPOINT_MODEL_TYPES = ("flow", "smolvla", "pi0")
#: Field holding the sha256 of everything else in the checkpoint (:func:`content_hash`).
CONTENT_HASH_KEY = "content_sha256"


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint: unsafe or foreign pickle, truncated or corrupt,
    content hash mismatch, or a checkpoint of another kind / model type than expected. The message
    names the file, what it is and what was expected; the entry scripts print it as one
    ``error: ...`` line and exit with status 2. ``path``: the file."""

    def __init__(self, message: str, path=None):
        super().__init__(message)
        self.path = path


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No file at the checkpoint path (also a FileNotFoundError)."""


def _safe_globals() -> list:
    """The only non-torch types ``torch.load(weights_only=True)`` may build from our checkpoints:
    numpy arrays, dtypes and scalars (numpy RNG states, numpy numbers in histories), under their
    numpy 2 and numpy 1 module names. Nothing here runs code when unpickled."""
    mr = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    out: list = [np.ndarray, np.dtype]
    for fn in (mr._reconstruct, mr.scalar):
        out += [fn, (fn, f"numpy.core.multiarray.{fn.__name__}"), (fn, f"numpy._core.multiarray.{fn.__name__}")]
    return out + [type(np.dtype(t)) for t in (np.bool_, np.int32, np.int64, np.uint32, np.uint64, np.float32, np.float64)]


def _feed(h, o, where: str = "ckpt") -> None:
    """Feed ``o`` to the hash ``h`` in a canonical encoding (type tag, size, value; dict keys sorted)."""
    if isinstance(o, torch.Tensor):
        t = o.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(o, np.ndarray) and not o.dtype.hasobject:
        h.update(f"A{o.dtype.str}{o.shape};".encode())
        h.update(np.ascontiguousarray(o).tobytes())
    elif isinstance(o, np.generic):
        h.update(f"N{o.dtype.str};".encode() + o.tobytes())
    elif isinstance(o, dict):
        keys = sorted((k for k in o if not (where == "ckpt" and k == CONTENT_HASH_KEY)),
                      key=lambda k: (type(k).__name__, repr(k)))
        h.update(f"D{len(keys)};".encode())
        for k in keys:
            _feed(h, k, where)
            _feed(h, o[k], f"{where}[{k!r}]")
    elif isinstance(o, (list, tuple)):
        h.update(f"{'L' if isinstance(o, list) else 'U'}{len(o)};".encode())
        for i, x in enumerate(o):
            _feed(h, x, f"{where}[{i}]")
    elif isinstance(o, (str, bytes)):
        b = o.encode("utf-8", "surrogatepass") if isinstance(o, str) else o
        h.update(f"{type(o).__name__}{len(b)};".encode() + b)
    elif o is None or isinstance(o, (bool, int, float, complex, torch.dtype, torch.device)):
        h.update(f"{type(o).__name__}:{o!r};".encode())
    else:
        raise TypeError(f"{where}: a {type(o).__module__}.{type(o).__qualname__} cannot be stored in a checkpoint "
                        "(only tensors, numpy arrays/numbers, str, numbers, None, lists, tuples, dicts)")


def content_hash(ckpt: dict) -> str:
    """sha256 (hex) of everything in ``ckpt`` except its ``content_sha256`` field: every tensor's
    dtype, shape and bytes and every other value, dict keys in sorted order.

    Raises:
        TypeError: a value of a type that ``load_checkpoint`` would not load (names where it is).
    """
    import hashlib

    h = hashlib.sha256()
    _feed(h, ckpt)
    return h.hexdigest()


def save_checkpoint(path, ckpt: dict) -> None:
    """Write ``ckpt`` atomically with its ``format`` tag and content hash (:func:`content_hash`):
    ``torch.save`` to ``PATH.tmp`` in the same folder, fsync, rename over ``path``, fsync the
    folder (a crash or SIGKILL while saving leaves the previous file intact).

    Raises:
        ValueError: ``ckpt`` has no valid ``kind`` / ``model_type`` (CHECKPOINT_KINDS / _MODEL_TYPES).
        TypeError: it holds a value that :func:`load_checkpoint` would refuse (see content_hash).
    """
    import os
    from pathlib import Path

    if ckpt.get("kind") not in CHECKPOINT_KINDS or ckpt.get("model_type") not in CHECKPOINT_MODEL_TYPES:
        raise ValueError(f"checkpoint kind {ckpt.get('kind')!r} / model_type {ckpt.get('model_type')!r}: expected one "
                         f"of {tuple(CHECKPOINT_KINDS)} / {CHECKPOINT_MODEL_TYPES}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    ckpt = dict(ckpt, format=CHECKPOINT_FORMAT)
    ckpt[CONTENT_HASH_KEY] = content_hash(ckpt)
    with open(tmp, "wb") as f:
        torch.save(ckpt, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable (POSIX)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _describe(kinds, model_types) -> str:
    t = f"{model_types[0]} " if len(model_types) == 1 else ""
    if len(kinds) == 1:
        name, script = CHECKPOINT_KINDS[kinds[0]]
        return f"a {t}{name} checkpoint ({script})"
    return f"a {t}checkpoint of this repo (BC or ReinFlow{'' if t else '; ' + ', '.join(model_types)})"


def _sniff(head: bytes) -> str | None:
    """What a file that is not a torch zip archive is, from its first bytes (None: a zip archive)."""
    if head.startswith(b"PK\x03\x04"):
        return None
    if not head:
        return "empty (truncated or corrupt)"
    if len(head) >= 10 and head[8:10] in (b'{"', b"{'") and int.from_bytes(head[:8], "little") < 1 << 30:
        return "a safetensors file (e.g. a LeRobot policy's model.safetensors), not a checkpoint of this repo"
    if head[:1] == b"\x80":
        return ("a raw pickle, not a checkpoint written by this repo, or an unsafe pickle: refused without "
                "running it")
    if head.lstrip()[:1] in (b"{", b"["):
        return "a JSON/text file, not a checkpoint of this repo"
    return "a file of unknown type (not a torch zip archive), not a checkpoint of this repo"


def _torch_reason(e: BaseException) -> str:
    """The informative line of a torch.load error (torch wraps it in paragraphs of advice)."""
    skip = ("Weights only load failed", "Please file an issue", "Check the documentation", "In PyTorch 2.6")
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.strip().startswith(skip)]
    line = (lines[0] if lines else "") or type(e).__name__
    return line.split(". This is an internal")[0].removeprefix("WeightsUnpickler error: ").strip() or "unexpected end of file"


def load_checkpoint(path, kind=None, model_type=None, hint: str = "") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, safely: ``torch.load(weights_only=True)``
    with only numpy arrays/scalars allowlisted (:func:`_safe_globals`), so a crafted pickle is refused
    without running anything; then the format tag, the content hash (legacy v1 files have none: a
    warning says they load unchecked) and the kind / model type are checked.

    Args:
        kind: accepted ``kind``: None (any), "bc", "reinflow" or a tuple of them.
        model_type: accepted ``model_type``: None (any of CHECKPOINT_MODEL_TYPES), one or a tuple.
        hint: appended to the message when the file is a checkpoint of another kind / model type.
    Returns:
        the checkpoint dict (``content_sha256`` included).
    Raises:
        CheckpointNotFoundError: no such file (a CheckpointError and a FileNotFoundError).
        CheckpointError: a directory (e.g. a LeRobot policy folder), a safetensors/JSON/raw pickle
            file, an unsafe or foreign pickle, a truncated or corrupt file, a content hash mismatch,
            or another kind / model type than expected. The message reads
            ``PATH is WHAT[ (detail)]; expected WANTED`` or ``PATH is WHAT, expected WANTED[; hint]``.
    """
    import pickle
    import warnings
    from pathlib import Path

    path = Path(path)
    kinds = tuple(CHECKPOINT_KINDS) if kind is None else ((kind,) if isinstance(kind, str) else tuple(kind))
    types = CHECKPOINT_MODEL_TYPES if model_type is None else (
        (model_type,) if isinstance(model_type, str) else tuple(model_type))
    want = _describe(kinds, types)
    if path.is_dir():
        lerobot = any((path / n).is_file() for n in ("config.json", "model.safetensors"))
        raise CheckpointError(f"{path} is a directory{' (a LeRobot policy folder)' if lerobot else ''}, not a "
                              f"checkpoint file; expected {want}", path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"no checkpoint at {path}; expected {want}", path)
    with open(path, "rb") as f:
        what = _sniff(f.read(16))
    if what is not None:
        raise CheckpointError(f"{path} is {what}; expected {want}", path)
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(_safe_globals()):
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path} is not a checkpoint written by this repo, or an unsafe pickle: refused without "
                              f"running it ({_torch_reason(e)}); expected {want}", path) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as e:
        raise CheckpointError(f"{path} is truncated or corrupt ({_torch_reason(e)}); expected {want}", path) from None
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    if fmt != CHECKPOINT_FORMAT and fmt not in LEGACY_CHECKPOINT_FORMATS:
        held = f"format {fmt!r}" if isinstance(ckpt, dict) else f"a {type(ckpt).__name__}"
        raise CheckpointError(f"{path} is a torch file but not a checkpoint written by this repo ({held}, not "
                              f"{CHECKPOINT_FORMAT!r}); expected {want}", path)
    k, mt = ckpt.get("kind"), ckpt.get("model_type")
    found = (_describe((k,), (mt,)) if k in CHECKPOINT_KINDS and mt in CHECKPOINT_MODEL_TYPES
             else f"a checkpoint of this repo with kind {k!r} and model_type {mt!r}")
    if fmt == CHECKPOINT_FORMAT:
        stored = ckpt.get(CONTENT_HASH_KEY)
        try:
            actual = content_hash(ckpt)
        except TypeError as e:
            raise CheckpointError(f"{path} is corrupt: {e}; expected {want}", path) from None
        if stored != actual:
            raise CheckpointError(f"{path} is corrupt: content hash mismatch (stored {str(stored)[:16]}, computed "
                                  f"{actual[:16]}): a damaged copy of {found}; expected an intact {want.removeprefix('a ')}",
                                  path)
    else:
        warnings.warn(f"{path}: legacy {fmt} checkpoint without a content hash, loaded without an integrity check; "
                      "re-save it with flow_policy.save_checkpoint to add one (docs/reliability.md, Checkpoints)", stacklevel=2)
    if k not in kinds or mt not in types:
        raise CheckpointError(f"{path} is {found}, expected {want}" + (f"; {hint}" if hint else ""), path)
    return ckpt


# ---------------------------------------------------------------------- data
def chunk_targets(actions: np.ndarray, episode_index: np.ndarray, chunk_size: int) -> np.ndarray:
    """Action chunks from per-frame actions: chunk i = actions[i : i + chunk_size] of the same
    episode, padded by repeating the episode's last action.

    Args:
        actions: (N, 6) frames ordered by episode then time.
        episode_index: (N,) int episode id per frame.
    Returns:
        (N, chunk_size, 6) float32.
    """
    n = len(actions)
    out = np.empty((n, chunk_size, actions.shape[1]), np.float32)
    ends = {}
    for i in range(n - 1, -1, -1):
        ends.setdefault(int(episode_index[i]), i)
    for i in range(n):
        last = ends[int(episode_index[i])]
        idx = np.minimum(np.arange(i, i + chunk_size), last)
        out[i] = actions[idx]
    return out


def scripted_demonstrations(num_episodes: int, seed: int, env_id: str = "SO101PickPlace-v0",
                            only_successful: bool = True) -> dict[str, np.ndarray]:
    """Demonstrations straight from the env + scripted expert, in memory (development/tests;
    the benchmark records a LeRobotDataset with ``record_dataset.py``).

    Episode j uses seed ``seed + j``. Returns frames ordered by episode: ``state`` (N, 6) and
    ``action`` (N, 6) MuJoCo radians, ``env_state`` (N, 7), ``episode_index`` (N,) int64.
    """
    import gymnasium as gym

    import envs  # noqa: F401
    from scripted_expert import ScriptedExpert

    env = gym.make(env_id, obs_mode="state", include_env_state=True)
    expert = ScriptedExpert(env.unwrapped.model)
    cols: dict[str, list] = {"state": [], "env_state": [], "action": [], "episode_index": []}
    ep = 0
    for j in range(num_episodes):
        obs, _ = env.reset(seed=seed + j)
        expert.reset()
        rows: dict[str, list] = {k: [] for k in cols}
        done, success = False, False
        while not done:
            a = expert.act_in_env(env)
            rows["state"].append(obs[u.OBS_STATE])
            rows["env_state"].append(obs[u.OBS_ENV_STATE])
            rows["action"].append(np.asarray(a, np.float32))
            rows["episode_index"].append(ep)
            obs, _, term, trunc, info = env.step(a)
            success |= bool(info["is_success"])
            done = term or trunc
        if success or not only_successful:
            for k in cols:
                cols[k].extend(rows[k])
            ep += 1
    env.close()
    return {k: np.asarray(v, np.int64 if k == "episode_index" else np.float32) for k, v in cols.items()}


def load_lerobot_demonstrations(root: str, env_id: str | None = None) -> dict[str, np.ndarray]:
    """Frames of a LeRobotDataset v3 recorded by ``record_dataset.py`` (no video decoding).

    ``observation.state`` / ``action`` are converted from LeRobot calibrated units (degrees,
    gripper 0..100) to MuJoCo radians with :func:`so101_mujoco_utils.lerobot_to_mujoco`.
    The flow policy also needs the block pose: if the dataset has an
    ``observation.environment_state`` column it is used; otherwise it is *reconstructed by
    replay*: each episode is reset with the seed the recorder stored in its ``episode_seed`` column
    (:data:`so101_mujoco_utils.EPISODE_SEED`; older recordings: ``meta/so101_recording.json``) and
    its stored actions are executed (control rate / dataset fps control steps per frame), recording
    the block pose before each frame. The env id comes from ``env_id``, else the recording sidecar,
    else ``SO101PickPlace-v0`` (LeRobot's dataset tools drop the sidecar: pass ``env_id`` for a
    fixed-block recording). The recorder stores actions so that replay is exact; the replayed joint
    angles are checked against the recorded ``observation.state``.

    Returns:
        like :func:`scripted_demonstrations`.
    Raises:
        KeyError: no environment_state column and no seeds (column or sidecar).
        RuntimeError: replay does not reproduce the recorded joint states (> 1e-3 rad).
    """
    import json
    import logging
    from pathlib import Path

    logging.getLogger("lerobot.utils.import_utils").setLevel(logging.ERROR)  # torchcodec -> pyav notice
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = Path(root)
    ds = LeRobotDataset(f"local/{root.name}", root=root)
    hf = ds.hf_dataset.with_format("numpy")
    ep = np.asarray(hf["episode_index"], np.int64)
    fi = np.asarray(hf["frame_index"], np.int64)
    order = np.lexsort((fi, ep))
    action64 = u.lerobot_to_mujoco(np.stack(hf["action"])[order].astype(np.float32))  # as the recorder executes
    out = {
        "state": u.lerobot_to_mujoco(np.stack(hf[u.OBS_STATE])[order]).astype(np.float32),
        "action": action64.astype(np.float32),
        "episode_index": ep[order],
    }
    if u.OBS_ENV_STATE in hf.column_names:
        out["env_state"] = np.stack(hf[u.OBS_ENV_STATE])[order].astype(np.float32)
        return out
    meta_path = root / "meta" / "so101_recording.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if u.EPISODE_SEED in hf.column_names:
        seed_col = np.asarray(hf[u.EPISODE_SEED], np.int64).reshape(-1)[order]
        seeds = {int(e): int(s) for e, s in zip(out["episode_index"], seed_col)}
    elif meta:
        seeds = {int(e["episode_index"]): int(e["seed"]) for e in meta["episodes"]}
    else:
        raise KeyError(f"{root}: no {u.OBS_ENV_STATE!r} column and no {u.EPISODE_SEED!r} column or "
                       f"{meta_path.name} with episode seeds to replay")
    k = int(round(u.CONTROL_HZ / ds.fps))
    out["env_state"] = _replay_env_state(dict(out, action=action64), seeds, env_id or meta.get("env_id", "SO101PickPlace-v0"),
                                         k, root)
    return out


def _replay_env_state(frames: dict, seeds: dict[int, int], env_id: str, k: int, root) -> np.ndarray:
    import gymnasium as gym

    import envs  # noqa: F401

    env = gym.make(env_id, obs_mode="state", include_env_state=True, terminate_on_success=False,
                   max_episode_steps=10**9, disable_env_checker=True)
    env_state = np.zeros((len(frames["state"]), 7), np.float32)
    worst = 0.0
    try:
        for e in np.unique(frames["episode_index"]):
            idx = np.flatnonzero(frames["episode_index"] == e)
            if int(e) not in seeds:
                raise KeyError(f"{root}: episode {e} has no recorded seed")
            obs, _ = env.reset(seed=seeds[int(e)])
            for i in idx:
                worst = max(worst, float(np.abs(obs[u.OBS_STATE] - frames["state"][i]).max()))
                env_state[i] = obs[u.OBS_ENV_STATE]
                for _ in range(k):
                    obs, *_ = env.step(frames["action"][i])
    finally:
        env.close()
    if worst > 1e-3:
        raise RuntimeError(f"{root}: replaying the stored actions does not reproduce the recorded joint states "
                           f"(max deviation {worst:.2e} rad); cannot reconstruct the block pose")
    return env_state


__all__ = ["FlowPolicy", "FlowPolicyConfig", "NormStats", "FlowMLP", "compute_norm_stats", "chunk_targets",
           "save_checkpoint", "load_checkpoint", "strict_load_state_dict", "scripted_demonstrations",
           "load_lerobot_demonstrations", "CHECKPOINT_FORMAT", "CheckpointError", "CheckpointNotFoundError",
           "content_hash"]


class FlowSimPolicy:
    """A flow checkpoint as a sim policy for ``run_mujoco_simulation.py --model-type flow``
    (rollout_utils): deterministic ODE sampler, ``n_action_steps`` per chunk. The block pose is read
    from the observation's ``observation.environment_state`` or, when the env was made without it,
    from the simulator (privileged, like the scripted expert). The sampler noise of episode n
    (n-th :meth:`reset`) is seeded with ``seed + n``.

    Args:
        path: BC or ReinFlow checkpoint.
        seed: first episode's noise seed (run_mujoco_simulation passes ``--seed``).
    """

    name = "flow"

    def __init__(self, path: str, seed: int = 0):
        self.policy = FlowPolicy.load(path)
        self._seed, self._episodes = int(seed), 0
        self._gen = torch.Generator()
        self._queue: list[np.ndarray] = []

    def reset(self) -> None:
        self._gen.manual_seed(self._seed + self._episodes)
        self._episodes += 1
        self._queue = []

    def act(self, obs: dict, env) -> np.ndarray:
        """(6,) float32 MuJoCo-radian joint targets."""
        if not self._queue:
            base = env.unwrapped
            env_state = obs.get(u.OBS_ENV_STATE)
            if env_state is None:
                a = base.ids.block_qpos_adr
                env_state = base.data.qpos[a : a + 7].astype(np.float32)
            batch = self.policy.prepare_batch({u.OBS_STATE: np.asarray(base.joint_positions, np.float32)[None],
                                               u.OBS_ENV_STATE: np.asarray(env_state, np.float32)[None]})
            x = self.policy.sample_deterministic(batch, self.policy.sample_noise(1, generator=self._gen))
            self._queue = list(self.policy.to_mujoco_actions(x, batch)[0][: self.policy.n_action_steps])
        return self._queue.pop(0)
