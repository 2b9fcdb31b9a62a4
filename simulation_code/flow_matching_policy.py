"""One interface for every flow-matching policy in this repo (SmolVLA, Pi0, the small flow policy).

Inference (``run_mujoco_simulation.py``) and ReinFlow training (``reinflow_engine.py``) both go
through it, so a new policy type only has to implement this class.

Conventions (all implementations):

* Observations are the env's dicts: ``observation.state`` (6,) float32 MuJoCo radians,
  ``observation.images.camera1|2|3`` (H, W, 3) uint8, optionally
  ``observation.environment_state``. A *batch* of observations is the same dict with a leading
  batch axis (what Gymnasium vector envs return).
* Actions leave the interface as MuJoCo radians, (chunk_size, 6) or (B, chunk_size, 6), clamped to
  the joint limits. Each implementation converts to and from the frame its checkpoint was trained
  in (``frame`` attribute) in one place.
* Flow matching follows LeRobot: x(t=1) is Gaussian noise, x(t=0) the (normalised, padded) action
  chunk, Euler steps ``x <- x + dt * v(x, t)`` with ``dt = -1/K`` on the grid ``t_k = 1 + k dt``.
  The grid and the step live in one place, :func:`euler_time` / :func:`euler_mean`; the
  deterministic sampler :func:`euler_sample` is LeRobot's own
  ``lerobot.policies.common.flow_matching.euler_integrate``. The ReinFlow engine's noisy chain,
  its log-prob recomputation and its BC regulariser step with :func:`euler_mean`, and it calls
  :meth:`denoise_step`; it never re-implements a policy's network.
* Flow-space tensors are (B, chunk_size, max_action_dim); only the first ``action_dim`` entries
  of the last axis are real joints (the rest is padding, e.g. 32 for the VLAs).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from typing import Any

import numpy as np
import torch


def euler_time(step: int, num_steps: int, batch: int, device) -> torch.Tensor:
    """Flow time of Euler step ``step`` of ``num_steps``: ``t = 1 + step * dt`` with ``dt = -1/K``,
    as a float32 (batch,) tensor (LeRobot's grid: t = 1 noise -> t = 0 action)."""
    return torch.full((batch,), 1.0 + step * (-1.0 / num_steps), dtype=torch.float32, device=device)


def euler_mean(policy: "FlowMatchingPolicy", prefix: Any, x: torch.Tensor, step: int, num_steps: int) -> torch.Tensor:
    """One Euler step from ``x`` (B, chunk, max_action_dim) at :func:`euler_time` ``step``:
    ``x + dt * v(x, t)`` with ``dt = -1/num_steps`` (the mean of a ReinFlow transition)."""
    t = euler_time(step, num_steps, x.shape[0], x.device)
    return x + (-1.0 / num_steps) * policy.denoise_step(prefix, x, t)


def euler_sample(policy: "FlowMatchingPolicy", prefix: Any, noise: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Deterministic sampler: ``num_steps`` Euler steps from ``noise`` at t = 1 to t = 0, by LeRobot's
    ``euler_integrate`` (the same grid and arithmetic as :func:`euler_mean`). Returns
    (B, chunk, max_action_dim) flow-space actions."""
    from lerobot.policies.common.flow_matching import euler_integrate

    return euler_integrate(lambda x, t: policy.denoise_step(prefix, x, t), noise, num_steps)


class FlowMatchingPolicy(ABC):
    """Abstract flow-matching policy. Attributes every implementation sets in ``__init__``:

    Attributes:
        model_type: ``"smolvla"``, ``"pi0"`` or ``"flow"``.
        chunk_size: actions predicted per chunk.
        n_action_steps: actions of each chunk executed before re-planning (<= chunk_size).
        action_dim: real action dimensions (6 joints).
        max_action_dim: last-axis size of flow-space tensors (>= action_dim).
        num_denoise_steps: default number of Euler steps K at inference.
        hidden_dim: size of the per-action-token hidden state exposed by :meth:`expert_hidden`.
        frame: the joint frame the checkpoint was trained in (e.g. ``"smolvla_absolute"``,
            ``"lerobot_degrees"``, ``"mujoco_radians"``), recorded, never guessed.
        device: torch device of the model.
        task: default language instruction.
    """

    model_type: str
    chunk_size: int
    n_action_steps: int
    action_dim: int
    max_action_dim: int
    num_denoise_steps: int
    hidden_dim: int
    frame: str
    device: torch.device
    task: str
    #: std s of the chain start x(t=1) ~ N(0, s^2 I). 1 = LeRobot's sampler; 0 starts every chain
    #: at x = 0 (a deterministic deployment sampler; ReinFlow then explores only through its
    #: learnable noise, see reinflow_engine.ReinFlowConfig.init_noise_scale).
    init_noise_scale: float = 1.0

    def __init__(self) -> None:
        self._queue: deque[np.ndarray] = deque()

    # ------------------------------------------------------------------ loading
    @classmethod
    @abstractmethod
    def load(cls, path: str, **kwargs: Any) -> "FlowMatchingPolicy":
        """Load from a hub id or a local directory/file (with the policy's own pre/post-processors).

        Raises a clear error (never a partial load) for missing weights offline, a wrong
        architecture or an unknown type.
        """

    # ------------------------------------------------------------------ inference
    def reset(self) -> None:
        """Forget queued actions (call at every episode start)."""
        self._queue.clear()

    @torch.no_grad()
    def predict_action_chunk(self, observation: dict, task: str | None = None, noise: torch.Tensor | None = None) -> np.ndarray:
        """Deterministic chunk for one observation: (chunk_size, 6) float32 MuJoCo radians.

        Runs the prefix once and ``num_denoise_steps`` Euler steps from ``noise`` (or fresh
        Gaussian noise of shape (1, chunk_size, max_action_dim)).
        """
        batch = self.prepare_batch(_add_batch_axis(observation), task or self.task)
        prefix = self.build_prefix(batch)
        x = euler_sample(self, prefix, noise if noise is not None else self.sample_noise(1), self.num_denoise_steps)
        return self.to_mujoco_actions(x, batch)[0]

    def select_action(self, observation: dict, task: str | None = None) -> np.ndarray:
        """Next action (6,) float32 MuJoCo radians from a queue refilled with the first
        ``n_action_steps`` actions of a fresh chunk whenever it runs empty."""
        if not self._queue:
            chunk = self.predict_action_chunk(observation, task)
            self._queue.extend(chunk[: self.n_action_steps])
        return self._queue.popleft()

    # ------------------------------------------------------------------ flow-matching internals (ReinFlow)
    @abstractmethod
    def prepare_batch(self, observations: dict, task: str | list[str]) -> dict:
        """Batched env observations (leading axis B) -> the model's input batch (tensors on
        ``device``: converted frame, normalised state, images, language tokens)."""

    @abstractmethod
    def build_prefix(self, batch: dict) -> Any:
        """Everything that does not depend on the noisy action: for VLAs the VLM prefix and its
        KV cache, for the flow policy the observation embedding. Built once per observation and
        reused by every :meth:`denoise_step` of the chain (and by log-prob recomputation)."""

    @abstractmethod
    def denoise_step(self, prefix: Any, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Velocity v(x_t, t | obs): (B, chunk_size, max_action_dim), differentiable w.r.t. the
        trainable parameters. ``t`` is (B,) in [0, 1], 1 = noise. Also records the hidden state
        returned by :meth:`expert_hidden`."""

    @abstractmethod
    def expert_hidden(self) -> torch.Tensor:
        """Per-action-token hidden state of the last :meth:`denoise_step`: (B, chunk_size,
        hidden_dim) (the action expert's output for VLAs); input of ReinFlow's noise head."""

    def sample_noise(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """x(t=1) ~ N(0, s^2 I) with s = :attr:`init_noise_scale`: (batch_size, chunk_size,
        max_action_dim) on ``device``. The generator advances the same way for every s."""
        x = torch.randn(batch_size, self.chunk_size, self.max_action_dim, generator=generator, device="cpu")
        return (x * self.init_noise_scale).to(device=self.device, dtype=getattr(self, "dtype", torch.float32))

    @abstractmethod
    def to_mujoco_actions(self, x0: torch.Tensor, batch: dict | None = None) -> np.ndarray:
        """Flow-space chunk at t=0 (B, chunk_size, max_action_dim) -> (B, chunk_size, 6) float32
        MuJoCo radians: drop padding, unnormalise, convert the frame, clamp to the joint limits."""

    @abstractmethod
    def trainable_parameter_groups(self, preset: str) -> dict[str, list[torch.nn.Parameter]]:
        """Named parameter groups that train under ``preset`` (``"expert"``, ``"heads"``, or
        ``"all"`` for the small flow policy). Everything else gets ``requires_grad=False``."""

    def parameters(self):
        """All torch parameters of the wrapped model."""
        return self.model.parameters()


def _add_batch_axis(observation: dict) -> dict:
    out = {}
    for k, v in observation.items():
        if isinstance(v, np.ndarray):
            out[k] = v[None]
        elif isinstance(v, torch.Tensor):
            out[k] = v.unsqueeze(0)
        else:
            out[k] = v
    return out
