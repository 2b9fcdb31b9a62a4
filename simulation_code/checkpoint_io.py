"""The one checkpoint module: schema, atomic save, strict and safe load, policy export.

Every checkpoint this repo writes (train_flow_bc.py: ``kind="bc"``; train_reinflow.py:
``kind="reinflow"``; :func:`export_policy`: ``kind="policy"``) is one :class:`Checkpoint`; its
fields are the schema, documented on the class. On disk it is one ``torch.save`` zip archive of
the fields as a dict plus ``format`` (:data:`CHECKPOINT_FORMAT`) and ``content_sha256``
(:func:`content_hash`).

* :func:`save`: ``PATH.tmp`` in the same folder, fsync, rename, fsync the folder: a crash or
  SIGKILL while saving leaves the previous file intact.
* :func:`load`: ``torch.load(weights_only=True)`` with only numpy arrays and scalars allowlisted,
  so a crafted pickle is refused without running anything; then the format, the content hash and
  the kind / model type are checked, and a file of an earlier format is converted to the schema
  in one place (:func:`_upgrade`). Errors are :class:`CheckpointError`, one line naming the
  file, what it is and what was expected.
* :meth:`Checkpoint.build_noise_head` / :meth:`Checkpoint.build_critic` rebuild the ReinFlow
  noise head and critic from their stored configs; the policy is rebuilt by its family
  (flow_policy.FlowPolicy.from_checkpoint, reinflow_vla.load_for_inference).
* :func:`export_policy`: the policy alone (plus the noise head, for stochastic sampling), for
  deployment: no optimizer states, critic, history or RNG.
"""

from __future__ import annotations

import os
import random
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from so101_sim import policy_registry as pr
from so101_sim import so101_mujoco_utils as u

#: Format tag of every checkpoint written now (v3: the :class:`Checkpoint` schema, one set of
#: keys for BC and ReinFlow). v2 (flat keys that differed between BC and ReinFlow, with a content
#: hash) is converted on load; v1 (no hash) loads with a warning.
CHECKPOINT_FORMAT = "so101-checkpoint-v3"
LEGACY_CHECKPOINT_FORMATS = ("so101-reinflow-checkpoint-v2", "so101-reinflow-checkpoint-v1")
#: Checkpoint kinds (``kind`` field): (name, the script that writes it).
CHECKPOINT_KINDS = {"bc": ("BC", "train_flow_bc.py"), "reinflow": ("ReinFlow", "train_reinflow.py"),
                    "policy": ("policy-only", "print_checkpoint_stats.py --export-policy")}
#: Model types a checkpoint can hold: the ones train_reinflow.py fine-tunes (policy_registry).
CHECKPOINT_MODEL_TYPES = pr.REINFLOW_MODEL_TYPES
#: Field holding the sha256 of everything else in the checkpoint (:func:`content_hash`).
CONTENT_HASH_KEY = "content_sha256"


@dataclass
class Checkpoint:
    """The schema of every checkpoint (BC, ReinFlow, policy-only), all model types.

    Attributes:
        kind: "bc" (train_flow_bc.py), "reinflow" (train_reinflow.py) or "policy" (:func:`export_policy`).
        model_type: one of :data:`CHECKPOINT_MODEL_TYPES` ("smolvla", "pi0", "flow").
        policy_state: {name: tensor} policy weights, CPU: every weight of the flow policy (float32
            after BC, float64 after ReinFlow); only the trained tensors of a VLA (a *delta* on its
            base, see ``base_policy``).
        policy_config, norm_stats: flow policy: flow_policy.FlowPolicyConfig fields and
            flow_policy.NormStats.to_dict(). None for the VLAs.
        base_policy: VLAs: the base the delta applies to (path / Hub id, resolved folder, Hub
            revision, frame, camera map, task, n_action_steps, chunk_size, image_size, a
            fingerprint of the frozen weights; reinflow_vla.base_policy_info). None for flow.
        trainable_preset, trainable_groups: VLAs: the ``--trainable`` preset and {group: names}.
        iteration: BC: optimizer steps; ReinFlow: PPO iterations done (a resumed run starts here).
        history: one dict per logged step (BC: ``step``, ``loss``; ReinFlow: the CSV row of each
            iteration, train_reinflow.CSV_FIELDS and more).
        optimizers: {"policy": ..., "critic": ...} torch optimizer state dicts.
        rng_state: {"torch", "numpy", "python"} generator states at the save (exact resume).
        args: the run's command-line settings (flag dest -> value; paths as strings).
        source: what the run started from: BC: the demonstrations (dataset folder or "scripted");
            ReinFlow: the base policy (repository-relative path, absolute path or Hub id;
            :func:`portable_source`).
        data: BC: {"episodes", "frames"} of the demonstrations.
        evaluation: BC: the evaluation after training (success_rate, mean_return, episodes, seeds).
        reinflow_config: ReinFlow: reinflow_engine.ReinFlowConfig fields.
        noise_head_config, noise_head_state: ReinFlow: reinflow_engine.NoiseHead config and weights.
        critic_config, critic_state: ReinFlow: reinflow_engine.Critic config and weights.
        reference_state: ReinFlow with a BC regulariser: the frozen reference policy's weights
            (flow: all; VLAs: the trained tensors only, the rest is the base).
        block_curriculum: ReinFlow with ``--block-curriculum``: curriculum.BlockCurriculum.state_dict().
    """

    kind: str
    model_type: str
    policy_state: dict
    policy_config: dict | None = None
    norm_stats: dict | None = None
    base_policy: dict | None = None
    trainable_preset: str | None = None
    trainable_groups: dict | None = None
    iteration: int = 0
    history: list = field(default_factory=list)
    optimizers: dict = field(default_factory=dict)
    rng_state: dict | None = None
    args: dict = field(default_factory=dict)
    source: str = ""
    data: dict | None = None
    evaluation: dict | None = None
    reinflow_config: dict | None = None
    noise_head_config: dict | None = None
    noise_head_state: dict | None = None
    critic_config: dict | None = None
    critic_state: dict | None = None
    reference_state: dict | None = None
    block_curriculum: dict | None = None

    def to_dict(self) -> dict:
        """The fields as a dict (no copies: tensors are shared)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def build_noise_head(self, device=None, dtype=None):
        """The ReinFlow noise head from ``noise_head_config`` / ``noise_head_state``, strictly
        loaded, in eval mode, on ``device`` in ``dtype`` (the policy's: float64 for the flow
        policy); None for a checkpoint without one (BC)."""
        if self.noise_head_config is None:
            return None
        from so101_sim.reinflow_engine import NoiseHead

        head = NoiseHead(**self.noise_head_config)
        head.to(device or "cpu", dtype or torch.float32)
        strict_load_state_dict(head, self.noise_head_state, "noise head")
        return head.eval()

    def build_critic(self, device=None):
        """The ReinFlow critic from ``critic_config`` / ``critic_state`` (strict), or None."""
        if self.critic_config is None:
            return None
        from so101_sim.reinflow_engine import Critic

        critic = Critic(**self.critic_config).to(device or "cpu")
        strict_load_state_dict(critic, self.critic_state, "critic")
        return critic


def save(path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` atomically with its ``format`` tag and content hash: ``torch.save`` to
    ``PATH.tmp`` in the same folder, fsync, rename over ``path``, fsync the folder (a crash or
    SIGKILL while saving leaves the previous file intact). Returns ``path``.

    Raises:
        ValueError: no valid ``kind`` / ``model_type`` (:data:`CHECKPOINT_KINDS` / :data:`CHECKPOINT_MODEL_TYPES`).
        TypeError: a value that :func:`load` would refuse (see :func:`content_hash`).
    """
    if ckpt.kind not in CHECKPOINT_KINDS or ckpt.model_type not in CHECKPOINT_MODEL_TYPES:
        raise ValueError(f"checkpoint kind {ckpt.kind!r} / model_type {ckpt.model_type!r}: expected one "
                         f"of {tuple(CHECKPOINT_KINDS)} / {CHECKPOINT_MODEL_TYPES}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    out = dict(ckpt.to_dict(), format=CHECKPOINT_FORMAT)
    out[CONTENT_HASH_KEY] = content_hash(out)
    with open(tmp, "wb") as f:
        torch.save(out, f)
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
    return path


def load(path, kind=None, model_type=None, hint: str = "") -> Checkpoint:
    """Read a checkpoint written by :func:`save` (or an earlier format), safely and strictly.

    Args:
        kind: accepted ``kind``: None (any), one of :data:`CHECKPOINT_KINDS` or a tuple of them.
        model_type: accepted ``model_type``: None (any of :data:`CHECKPOINT_MODEL_TYPES`), one or a tuple.
        hint: appended to the message when the file is a checkpoint of another kind / model type.
    Returns:
        the :class:`Checkpoint`.
    Raises:
        CheckpointNotFoundError: no such file (a CheckpointError and a FileNotFoundError).
        CheckpointError: a directory (e.g. a LeRobot policy folder), a safetensors/JSON/raw pickle
            file, an unsafe or foreign pickle, a truncated or corrupt file, a content hash mismatch,
            or another kind / model type than expected. The message reads
            ``PATH is WHAT[ (detail)]; expected WANTED`` or ``PATH is WHAT, expected WANTED[; hint]``.
    """
    import pickle

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
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path} is not a checkpoint written by this repo, or an unsafe pickle: refused without "
                              f"running it ({_torch_reason(e)}); expected {want}", path) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as e:
        raise CheckpointError(f"{path} is truncated or corrupt ({_torch_reason(e)}); expected {want}", path) from None
    fmt = raw.get("format") if isinstance(raw, dict) else None
    if fmt != CHECKPOINT_FORMAT and fmt not in LEGACY_CHECKPOINT_FORMATS:
        held = f"format {fmt!r}" if isinstance(raw, dict) else f"a {type(raw).__name__}"
        raise CheckpointError(f"{path} is a torch file but not a checkpoint written by this repo ({held}, not "
                              f"{CHECKPOINT_FORMAT!r}); expected {want}", path)
    k, mt = raw.get("kind"), raw.get("model_type")
    found = (_describe((k,), (mt,)) if k in CHECKPOINT_KINDS and mt in CHECKPOINT_MODEL_TYPES
             else f"a checkpoint of this repo with kind {k!r} and model_type {mt!r}")
    if CONTENT_HASH_KEY in raw or fmt == CHECKPOINT_FORMAT:
        stored = raw.get(CONTENT_HASH_KEY)
        try:
            actual = content_hash(raw)
        except TypeError as e:
            raise CheckpointError(f"{path} is corrupt: {e}; expected {want}", path) from None
        if stored != actual:
            raise CheckpointError(f"{path} is corrupt: content hash mismatch (stored {str(stored)[:16]}, computed "
                                  f"{actual[:16]}): a damaged copy of {found}; expected an intact {want.removeprefix('a ')}",
                                  path)
    else:
        warnings.warn(f"{path}: legacy {fmt} checkpoint without a content hash, loaded without an integrity check; "
                      "re-save it with checkpoint_io.save to add one (docs/reliability.md, Checkpoints)", stacklevel=2)
    if k not in kinds or mt not in types:
        raise CheckpointError(f"{path} is {found}, expected {want}" + (f"; {hint}" if hint else ""), path)
    try:
        return _upgrade(raw)
    except (TypeError, KeyError) as e:
        raise CheckpointError(f"{path} is {found} that does not match the checkpoint schema ({e}); expected {want}",
                              path) from None


#: v2 key -> v3 field (train_flow_bc.py wrote bc_* keys, train_reinflow.py others for the same things).
_V2_RENAMES = {"bc_history": "history", "bc_args": "args", "bc_source": "source", "bc_data": "data",
               "bc_eval": "evaluation", "ref_policy_state": "reference_state", "ref_trainable_state": "reference_state"}
#: v2 optimizer keys -> name in :attr:`Checkpoint.optimizers`.
_V2_OPTIMIZERS = {"optimizer_state": "policy", "policy_optimizer": "policy", "critic_optimizer": "critic"}


def _upgrade(raw: dict) -> Checkpoint:
    """A loaded dict (any format) as a :class:`Checkpoint`; the one place earlier formats are
    converted. Raises TypeError on an unknown field (a file of a newer schema)."""
    d = {k: v for k, v in raw.items() if k not in ("format", CONTENT_HASH_KEY, "vla_checkpoint")}
    if raw.get("format") != CHECKPOINT_FORMAT:
        if "bc_history" in d:
            d.pop("history", None)  # v2 BC files carried an empty ReinFlow-style history next to bc_history
        opts = {name: d.pop(key) for key, name in _V2_OPTIMIZERS.items() if key in d}
        for old, new in _V2_RENAMES.items():
            if old in d:
                value = d.pop(old)
                if value is not None or new not in d:
                    d[new] = value
        if opts or "optimizers" not in d:
            d["optimizers"] = opts
    return Checkpoint(**d)


def export_policy(ckpt: Checkpoint) -> Checkpoint:
    """The policy-only checkpoint of ``ckpt`` (``kind="policy"``): the policy's weights and what
    rebuilds it (config and stats, or the VLA base and preset), the noise head (stochastic
    sampling) and the ReinFlow config (its K), its ``source`` and ``iteration``; no optimizer
    states, critic, reference policy, history, RNG states or run arguments."""
    keep = {"kind", "model_type", "policy_state", "policy_config", "norm_stats", "base_policy", "trainable_preset",
            "trainable_groups", "iteration", "source", "reinflow_config", "noise_head_config", "noise_head_state"}
    return Checkpoint(**{k: v for k, v in replace(ckpt, kind="policy").to_dict().items() if k in keep})


def portable_source(source) -> str:
    """The base policy as recorded in :attr:`Checkpoint.source`: a local file or folder inside
    the repository as a path relative to the repository root (so101_mujoco_utils.REPO_ROOT), so a
    shipped checkpoint names no developer's directory; an existing path outside the repository
    as an absolute path; anything else (a Hub id, "") unchanged, as a string."""
    path = Path(source)
    if str(source) and path.exists():
        try:
            return path.resolve().relative_to(u.REPO_ROOT).as_posix()
        except ValueError:
            return str(path.resolve())
    return str(source)


def rng_states() -> dict:
    """The global torch / numpy / Python generator states, for :attr:`Checkpoint.rng_state`."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_states(s: dict) -> None:
    """Restore :func:`rng_states` (an exact resume)."""
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])


def content_hash(ckpt: dict) -> str:
    """sha256 (hex) of everything in the dict ``ckpt`` except its ``content_sha256`` field:
    every tensor's dtype, shape and bytes and every other value, dict keys in sorted order.

    Raises:
        TypeError: a value of a type that :func:`load` would not load (names where it is).
    """
    import hashlib

    h = hashlib.sha256()
    _feed(h, ckpt.to_dict() if isinstance(ckpt, Checkpoint) else ckpt)
    return h.hexdigest()


def _describe(kinds, model_types) -> str:
    t = f"{model_types[0]} " if len(model_types) == 1 else ""
    if len(kinds) == 1:
        name, script = CHECKPOINT_KINDS[kinds[0]]
        return f"a {t}{name} checkpoint ({script})"
    names = "/".join(CHECKPOINT_KINDS[k][0] for k in kinds)
    return f"a {t}checkpoint of this repo ({names}{'' if t else '; ' + ', '.join(model_types)})"


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


__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_KINDS", "CHECKPOINT_MODEL_TYPES", "Checkpoint", "CheckpointError",
           "CheckpointNotFoundError", "content_hash", "export_policy", "load", "portable_source", "rng_states", "save",
           "set_rng_states", "strict_load_state_dict"]
