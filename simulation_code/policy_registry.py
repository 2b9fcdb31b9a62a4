"""The one table of policy types, and the one way into a policy.

:data:`POLICIES` names every ``--model-type``: what it is, its default path (Hub id or shipped
checkpoint), what it observes (the env keyword arguments), whether ReinFlow fine-tunes it, and
the class that loads it. Every script that runs or trains a policy (run_mujoco_simulation.py,
run_reinflow_inference.py, analyze_predictions.py, train_reinflow.py, the benchmarks) loads it
here and runs episodes through rollout_utils.run_episode with a *sim policy* from this module:

* :class:`ChunkPolicy`: a flow-matching policy (flow_matching_policy.FlowMatchingPolicy: the
  small flow policy, SmolVLA, Pi0) with this repo's chain sampler (reinflow_engine.sample_chain):
  the deterministic Euler ODE, or with a ReinFlow noise head; executes ``n_action_steps`` of each
  chunk. Its sampler is seeded with the episode seed, so episode s is the same on every run.
* :class:`LeRobotSamplerPolicy`: a SmolVLA/Pi0 adapter through LeRobot's own sampler
  (``select_action`` with its action queue), as ``run_mujoco_simulation.py`` runs the Hub models.
* ``lerobot``: any LeRobot policy checkpoint (ACT, Diffusion, ...; lerobot_policy.LeRobotPolicy is
  itself the sim policy), through LeRobot's factory, processors and ``select_action``; the env it
  needs (cameras, image size, rate) comes from the checkpoint (:func:`sim_env_kwargs`).
* :class:`ScriptedPolicy`: the scripted IK expert, the one *privileged* policy: it reads the block
  pose from the simulator, not from the observation, and says so in its ``name``.

Sim policies act on the observation only (``act(obs) -> (6,)`` MuJoCo radians), except the
scripted expert. This module imports no torch: the scripted path stays light.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from so101_sim import so101_mujoco_utils as u
from so101_sim import vla_frames

#: The shipped flow checkpoints (benchmarks/reinflow_flow.py --ship), repository-relative.
SHIPPED_CHECKPOINTS = {"bc": u.REPO_ROOT / "simulation_code" / "checkpoints" / "flow_bc.pt",
                       "reinflow": u.REPO_ROOT / "simulation_code" / "checkpoints" / "flow_reinflow.pt"}


@dataclass(frozen=True)
class PolicyEntry:
    """One row of :data:`POLICIES`.

    Attributes:
        description: one line for ``--help``.
        default_path: ``--policy-path`` when none is given (Hub id or checkpoint file), or None.
        env_kwargs: ``gym.make`` keyword arguments of the observation it needs ({} for ``lerobot``:
            its checkpoint says, :func:`sim_env_kwargs`).
        loader: ``"module:Class"`` whose ``load(path, **options)`` builds the policy (None: the
            scripted expert, built from the env).
        reinflow: train_reinflow.py can fine-tune it.
        privileged: what it reads beyond a real robot's sensors ("" for none).
    """

    description: str
    default_path: str | None
    env_kwargs: dict = field(default_factory=dict)
    loader: str | None = None
    reinflow: bool = False
    privileged: str = ""


POLICIES: dict[str, PolicyEntry] = {
    "smolvla": PolicyEntry("SmolVLA (LeRobot), three cameras + joint state + language", vla_frames.SMOLVLA_BASE_ID,
                           {"obs_mode": "images"}, "so101_sim.smolvla_adapter:SmolVLAAdapter", reinflow=True),
    "pi0": PolicyEntry("Pi0 (LeRobot), three cameras + joint state + language", "lerobot/pi0",
                       {"obs_mode": "images"}, "so101_sim.pi0_adapter:PI0Adapter", reinflow=True),
    "flow": PolicyEntry("small flow-matching policy (flow_policy.py) on joint state + block pose",
                        str(SHIPPED_CHECKPOINTS["reinflow"]), {"obs_mode": "state", "include_env_state": True},
                        "so101_sim.flow_policy:FlowPolicy", reinflow=True,
                        privileged="observation.environment_state (the block pose, from the simulator)"),
    "lerobot": PolicyEntry("any LeRobot policy checkpoint (ACT, Diffusion, VQ-BeT, SmolVLA, Pi0, Pi0.5, ...: its "
                           "config.json names the type), through LeRobot's factory, processors and select_action",
                           None, {}, "so101_sim.lerobot_policy:LeRobotPolicy"),
    "scripted": PolicyEntry("scripted IK expert (scripted_expert.py)", None, {"obs_mode": "state"},
                            privileged="reads the block pose from the simulator, not the observation"),
}
#: Every ``--model-type``; the one used when the flag is absent (the spec's).
MODEL_TYPES = tuple(POLICIES)
DEFAULT_MODEL_TYPE = "smolvla"
#: The types train_reinflow.py fine-tunes, and those among them that are LeRobot VLAs.
REINFLOW_MODEL_TYPES = tuple(k for k, e in POLICIES.items() if e.reinflow)
VLA_MODEL_TYPES = tuple(k for k, e in POLICIES.items() if e.loader and e.loader.endswith("Adapter"))


class PolicySetupError(Exception):
    """The requested policy cannot be set up; the message says why and what to do (scripts print
    it as one ``error:`` line and exit with ``exit_code``: 1, or 2 for a refused checkpoint file,
    checkpoint_io.CheckpointError)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def entry(model_type: str) -> PolicyEntry:
    """The :data:`POLICIES` row of ``model_type``.

    Raises:
        ValueError: unknown type (lists the known ones).
    """
    if model_type not in POLICIES:
        raise ValueError(f"unknown --model-type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")
    return POLICIES[model_type]


def policy_class(model_type: str):
    """The class that loads ``model_type`` (imported on first use)."""
    module, name = entry(model_type).loader.split(":")
    return getattr(importlib.import_module(module), name)


def load_policy(model_type: str, path: str | None = None, **options: Any):
    """Load a flow-matching policy (smolvla, pi0, flow) from ``path`` (default: its
    :attr:`PolicyEntry.default_path`) with its class's ``load(path, **options)`` (VLAs: device,
    frame, camera_map, task, quantize, n_action_steps, ...; docs/vla.md).

    Returns:
        a flow_matching_policy.FlowMatchingPolicy.
    Raises:
        PolicySetupError: weights unavailable offline, wrong checkpoint type, bad camera map or
            frame, quantization impossible (exit code 1), or a refused flow checkpoint file
            (exit code 2); the message comes from the loader.
        ValueError: ``model_type`` is unknown or has no loader (the scripted expert).
    """
    e = entry(model_type)
    if e.loader is None:
        raise ValueError(f"--model-type {model_type} is not a loadable policy (it is built from the env)")
    from so101_sim.checkpoint_io import CheckpointError
    from so101_sim.hub_download import PolicyLoadError

    try:
        return policy_class(model_type).load(path or e.default_path, **options)
    except CheckpointError as exc:  # unsafe, corrupt, missing or not a flow checkpoint
        raise PolicySetupError(str(exc), exit_code=2) from exc
    except (PolicyLoadError, ValueError, ImportError, RuntimeError) as exc:
        raise PolicySetupError(str(exc)) from exc


def vla_options(args) -> dict:
    """The VLA loading options of rollout_utils.add_policy_args in ``args`` (absent ones: defaults)."""
    get = lambda name, default=None: getattr(args, name, default)  # noqa: E731
    return {"device": get("device"), "frame": get("frame", "auto"), "camera_map": get("camera_map"), "task": get("task"),
            "quantize": get("quantize"), "n_action_steps": get("n_action_steps")}


def sim_env_kwargs(model_type: str, args) -> dict:
    """``gym.make`` keyword arguments of the observation ``model_type`` needs: the registry's, or for
    ``lerobot`` what the checkpoint's config asks for (cameras, image size, control rate;
    lerobot_policy.sim_setup, JSON only).

    Raises:
        PolicySetupError: the checkpoint cannot run in the sim (the message names the keys).
    """
    if model_type != "lerobot":
        return dict(entry(model_type).env_kwargs)
    from so101_sim.hub_download import PolicyLoadError
    from so101_sim.lerobot_policy import sim_setup

    try:
        setup = sim_setup(args.policy_path, camera_map=getattr(args, "camera_map", None), task=getattr(args, "task", None),
                          frame=getattr(args, "frame", "auto"))
    except (PolicyLoadError, ValueError) as exc:
        raise PolicySetupError(str(exc)) from exc
    return setup.env_kwargs(getattr(args, "env_id", None) or "SO101PickPlace-v0")


def make_sim_policy(model_type: str, args, env):
    """The sim policy ``run_mujoco_simulation.py --model-type`` runs: the scripted expert
    (:class:`ScriptedPolicy`, from ``env``), a VLA through LeRobot's sampler
    (:class:`LeRobotSamplerPolicy`), or the flow policy's deterministic sampler
    (:class:`ChunkPolicy`), loaded from ``args.policy_path`` (default: the registry's).

    Raises:
        PolicySetupError: see :func:`load_policy`. ValueError: unknown model type.
    """
    if model_type == "scripted":
        return ScriptedPolicy(env)
    path = getattr(args, "policy_path", None)
    if model_type in VLA_MODEL_TYPES:
        return LeRobotSamplerPolicy(load_policy(model_type, path, **vla_options(args)))
    if model_type == "lerobot":  # LeRobot's own sampling loop (select_action) is the sim policy
        opts = vla_options(args)
        return load_policy(model_type, path, **{k: opts[k] for k in ("device", "camera_map", "task", "frame")})
    return ChunkPolicy(load_policy(model_type, path))


class ChunkPolicy:
    """A flow-matching policy as a sim policy: at each decision one chunk from
    reinflow_engine.sample_chain (deterministic Euler ODE, or with ``noise_head`` the ReinFlow
    noisy chain), then its first ``n_action_steps`` actions, one per ``act``. ``reset(seed)``
    clears the queue and seeds the sampler's generator with the episode seed.

    Args:
        policy: a flow_matching_policy.FlowMatchingPolicy.
        noise_head: reinflow_engine.NoiseHead for stochastic sampling, or None (deterministic).
        num_steps: denoising steps K (default: the policy's ``num_denoise_steps``).
        name: for summaries (default: the policy's model type).
        debug: print the first ``debug`` inferences (observation, chunk, time).
    Attributes:
        inferences: chunks predicted so far.
    """

    def __init__(self, policy, noise_head=None, num_steps: int | None = None, name: str | None = None, debug: int = 0):
        import torch

        self.policy, self.noise_head = policy, noise_head
        self.num_steps = int(num_steps or policy.num_denoise_steps)
        self.name = name or policy.model_type
        self.debug, self.inferences = int(debug), 0
        self._gen = torch.Generator()
        self._queue: list[np.ndarray] = []

    def reset(self, seed: int) -> None:
        self._gen.manual_seed(int(seed))
        self._queue = []

    def act(self, obs: dict) -> np.ndarray:
        """(6,) float32 MuJoCo-radian joint targets."""
        if not self._queue:
            self._queue = list(self.predict_chunk(obs)[: self.policy.n_action_steps])
        return self._queue.pop(0)

    def predict_chunk(self, obs: dict) -> np.ndarray:
        """One chunk for one observation: (chunk_size, 6) float32 MuJoCo radians."""
        import time

        from so101_sim.reinflow_engine import sample_chain

        t0 = time.perf_counter()
        batch = self.policy.prepare_batch({k: np.asarray(v)[None] for k, v in obs.items()})
        s = sample_chain(self.policy, self.noise_head, batch, self.num_steps, deterministic=self.noise_head is None,
                         generator=self._gen)
        chunk = self.policy.to_mujoco_actions(s.x, batch)[0]
        if self.inferences < self.debug:
            n = self.policy.n_action_steps
            print(f"[debug inference {self.inferences}] state(rad)={np.round(obs[u.OBS_STATE], 3)} K={self.num_steps} "
                  + (f"sigma={s.sigma_mean:.3f} " if self.noise_head is not None else "")
                  + f"chunk[0](rad)={np.round(chunk[0], 3)} chunk[{n - 1}]={np.round(chunk[n - 1], 3)} "
                  f"({1e3 * (time.perf_counter() - t0):.1f} ms)")
        self.inferences += 1
        return chunk


class LeRobotSamplerPolicy:
    """A SmolVLA/Pi0 adapter as a sim policy through LeRobot's own sampler: ``select_action``
    executes ``n_action_steps`` of each chunk (the adapter's queue). Needs image observations."""

    def __init__(self, adapter):
        self.adapter = adapter
        self.name = adapter.model_type

    def reset(self, seed: int) -> None:
        self.adapter.reset()

    def act(self, obs: dict) -> np.ndarray:
        return self.adapter.select_action(obs)

    def describe(self) -> dict:
        """The adapter's load report (frame, stats, camera map, task, sizes, inferences)."""
        return self.adapter.describe() if hasattr(self.adapter, "describe") else {}


class ScriptedPolicy:
    """The scripted IK expert as a sim policy. Privileged: it reads the block pose from the
    simulator of ``env`` (the env it acts in), not from the observation."""

    name = "scripted"

    def __init__(self, env):
        from so101_sim.scripted_expert import ScriptedExpert

        self.env = env
        self.expert = ScriptedExpert(env.unwrapped.model, control_hz=env.unwrapped.control_hz)

    def reset(self, seed: int) -> None:
        self.expert.reset()

    def act(self, obs: dict) -> np.ndarray:
        return self.expert.act_in_env(self.env)


__all__ = ["ChunkPolicy", "DEFAULT_MODEL_TYPE", "LeRobotSamplerPolicy", "MODEL_TYPES", "POLICIES", "PolicyEntry",
           "PolicySetupError", "REINFLOW_MODEL_TYPES", "SHIPPED_CHECKPOINTS", "ScriptedPolicy", "VLA_MODEL_TYPES",
           "entry", "load_policy", "make_sim_policy", "policy_class", "vla_options"]
