"""What differs between policy families in ReinFlow training: one small backend object each.

train_reinflow.py runs the same loop for every policy; everything model-specific is behind
:func:`make_backend`:

* :class:`FlowBackend`: the small flow policy (flow_policy.py) on state observations; starts from
  a BC checkpoint; its checkpoints hold every weight.
* :class:`VLABackend`: SmolVLA / Pi0 through their adapters (reinflow_vla.py) on three-camera
  observations; trains the ``--trainable`` preset; its checkpoints hold only the trained tensors
  plus the base they apply to.

A backend answers: which policy to train (:meth:`load_policy`), what its envs observe
(:meth:`env_kwargs`, :attr:`obs_kind` for the memory check), how the agent is set up
(:meth:`agent_options`, :meth:`prepare_agent`) and which policy fields its checkpoints hold
(:meth:`policy_fields`).
"""

from __future__ import annotations

from so101_sim import checkpoint_io as ckio
from so101_sim import policy_registry as pr


class FlowBackend:
    """The small flow policy: state envs with the privileged block pose, full-weight checkpoints."""

    #: cli_args.WORKER_MEMORY_MB key of its env workers.
    obs_kind = "state"

    def __init__(self, args):
        self.args = args

    def load_policy(self, resume: ckio.Checkpoint | None):
        """The policy to fine-tune: the resumed run's, else the BC (or policy-only) checkpoint of
        ``--init-checkpoint`` / ``--policy-path``.

        Raises:
            SystemExit: no starting checkpoint given.
            checkpoint_io.CheckpointError: not a flow BC checkpoint (e.g. a ReinFlow one: continue
                that with --resume), or unsafe / corrupt.
        """
        from so101_sim.flow_policy import FlowPolicy

        if resume is not None:
            return FlowPolicy.from_checkpoint(resume, device=self.args.device)
        path = self.args.init_checkpoint or self.args.policy_path
        if path is None:
            raise SystemExit("--model-type flow needs --init-checkpoint (or --policy-path) = a BC checkpoint from "
                             "train_flow_bc.py, or --resume")
        bc = ckio.load(path, kind=("bc", "policy"), model_type="flow",
                       hint=f"--init-checkpoint / --policy-path start a ReinFlow run from a BC checkpoint; to continue "
                            f"a ReinFlow run pass it as --resume {path}")
        return FlowPolicy.from_checkpoint(bc, device=self.args.device)

    def env_kwargs(self) -> dict:
        """gym.make kwargs of its training and evaluation envs (policy_registry.POLICIES)."""
        return dict(pr.entry("flow").env_kwargs)

    def settings_line(self) -> str | None:
        """The line printed at start about per-model settings (none for the flow policy)."""
        return None

    def agent_options(self) -> dict:
        """Keyword arguments of reinflow_engine.ReinFlowAgent (every parameter trains)."""
        return {}

    def prepare_agent(self, agent, policy, resume: ckio.Checkpoint | None, is_main: bool) -> None:
        """Nothing to set up for the flow policy."""

    def policy_fields(self, policy, agent) -> dict:
        """Checkpoint fields of the policy: its config, stats and every weight."""
        return policy.checkpoint_fields()


class VLABackend:
    """SmolVLA / Pi0: image envs, the ``--trainable`` preset, delta checkpoints (reinflow_vla.py)."""

    obs_kind = "images"

    def __init__(self, args):
        self.args = args
        self.groups = self.base_info = None
        self.camera_map = None  # the loaded policy's {sim camera: checkpoint key}: what the envs render

    def load_policy(self, resume: ckio.Checkpoint | None):
        """The base VLA (``--policy-path``, or on resume the recorded one) with the resumed delta
        applied (reinflow_vla.load_training_policy). Its camera map decides which cameras the
        envs made after this render (:meth:`env_kwargs`).

        Raises:
            SystemExit: the base cannot be loaded, or the resume checkpoint is not a VLA delta one.
        """
        from so101_sim import reinflow_vla as rv

        policy = rv.load_training_policy(self.args, resume)
        self.camera_map = dict(policy.camera_map)
        return policy

    def env_kwargs(self) -> dict:
        """reinflow_vla.env_kwargs: only the loaded policy's cameras once it is loaded."""
        from so101_sim import reinflow_vla as rv

        return rv.env_kwargs(self.args, self.camera_map)

    def settings_line(self) -> str:
        """reinflow_vla.describe_settings: each per-model setting, marked where it is the default."""
        from so101_sim import reinflow_vla as rv

        return rv.describe_settings(self.args)

    def agent_options(self) -> dict:
        return {"preset": self.args.trainable}

    def prepare_agent(self, agent, policy, resume: ckio.Checkpoint | None, is_main: bool) -> None:
        """Record the trainable groups and the base (for the delta checkpoints); recompute
        log-probs in minibatch-sized chunks (no 1024-image forward passes)."""
        from so101_sim import reinflow_vla as rv

        self.groups = policy.trainable_parameter_groups(self.args.trainable)
        path = self.args.policy_path or ((resume.base_policy or {}).get("path") if resume is not None else None)
        names = {n for ns in rv.trainable_names(policy, self.groups).values() for n in ns}
        self.base_info = rv.base_policy_info(policy, path, names, self.args.image_size)
        agent.ratio_chunk = max(1, agent.cfg.batch_size)
        if is_main:
            print(f"[reinflow {self.args.model_type}] trainable ({self.args.trainable}): "
                  f"{rv.describe_trainable(policy, self.groups)}; critic: MLP on the privileged low-dim state "
                  "(joints + block pose)")

    def policy_fields(self, policy, agent) -> dict:
        """Checkpoint fields of the policy: the trained tensors, preset and base (a delta)."""
        from so101_sim import reinflow_vla as rv

        return rv.checkpoint_fields(policy, self.args.trainable, self.groups, self.base_info, agent.ref_policy)


def make_backend(args):
    """The backend of ``args.model_type``: :class:`FlowBackend` or :class:`VLABackend`."""
    return VLABackend(args) if args.model_type in pr.VLA_MODEL_TYPES else FlowBackend(args)


__all__ = ["FlowBackend", "VLABackend", "make_backend"]
