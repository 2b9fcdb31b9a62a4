"""4-bit weight quantization of Pi0 with optimum-quanto (``qint4``), and its half-precision fallback.

Policy (``--quantize`` / ``--no-quantize`` override it):

* default ON on Apple MPS (the full Pi0 is ~16 GB in float32: 4-bit weights make it fit),
  OFF elsewhere (CUDA has the memory; on CPU quanto's int4 kernels are slower than float32).
* on MPS without optimum-quanto installed: half-precision weights instead, with a message
  (``pip install optimum-quanto==0.2.7`` for 4 bits). The half type is bfloat16, LeRobot's own
  recipe (``PaliGemmaWithExpertModel.to_bfloat16_for_selected_params``): lerobot 0.6.1's Pi0
  forward hard-codes bfloat16 casts, and float16 weights fail there with a dtype mismatch
  (checked on the tiny Pi0); MPS supports bfloat16 on macOS 14+.

What is quantized: ``policy.model.paligemma_with_expert`` (PaliGemma + the action expert, ~99% of
the weights); the small float32 projections (``action_in_proj``, ``action_out_proj``, time MLP,
``state_proj``) stay as they are. Quantized weights are frozen: no training on them.

Note: the first ``qint4`` use on CPU JIT-compiles a small C++ extension of optimum-quanto (needs
a C++ compiler and ninja; about 1-2 minutes, cached afterwards under ~/.cache/torch_extensions).
"""

from __future__ import annotations

import importlib.util
import time

import torch

#: Weight types accepted by :func:`quantize_module`.
WEIGHT_TYPES = ("qint4", "qint8")
FIRST_RUN_NOTE = ("the first qint4 run on CPU JIT-compiles optimum-quanto's C++ extension "
                  "(needs g++ and ninja, about 1-2 minutes; cached afterwards)")


def quanto_available() -> bool:
    """Whether optimum-quanto can be imported."""
    return importlib.util.find_spec("optimum") is not None and importlib.util.find_spec("optimum.quanto") is not None


def default_quantize(device: torch.device | str) -> bool:
    """Default of ``--quantize``: True on MPS only."""
    return torch.device(device).type == "mps"


def quantize_module(module: torch.nn.Module, weights: str = "qint4") -> int:
    """Quantize the Linear weights of ``module`` in place with optimum-quanto and freeze them.

    Args:
        module: any torch module (float32/float16 weights).
        weights: ``"qint4"`` (default) or ``"qint8"``.

    Returns:
        The number of quantized submodules.

    Raises:
        ValueError: unknown weight type.
        ImportError: optimum-quanto is not installed (``pip install optimum-quanto==0.2.7``).
    """
    if weights not in WEIGHT_TYPES:
        raise ValueError(f"weights must be one of {WEIGHT_TYPES}, got {weights!r}")
    from optimum import quanto

    quanto.quantize(module, weights=getattr(quanto, weights))
    quanto.freeze(module)
    return sum(1 for m in module.modules() if isinstance(m, quanto.QModuleMixin))


def to_half_precision(pi0_model: torch.nn.Module) -> None:
    """Cast PaliGemma + expert to bfloat16 with LeRobot's own recipe (vision tower, projector and
    norms stay float32); ``pi0_model`` is a lerobot ``PI0Pytorch`` (``policy.model``)."""
    pi0_model.paligemma_with_expert.to_bfloat16_for_selected_params("bfloat16")


def apply_quantization(policy, device: torch.device | str, quantize: bool | None,
                       weights: str = "qint4", verbose: bool = True) -> dict:
    """Apply the module policy above to a loaded ``PI0Policy``; returns what was done.

    Args:
        policy: a lerobot ``PI0Policy`` (its ``.model.paligemma_with_expert`` is changed in place).
        device: the policy's device (decides the default).
        quantize: True/False from ``--quantize``/``--no-quantize``; None = :func:`default_quantize`.
        weights: quanto weight type.

    Returns:
        ``{"quantized": "qint4"|"qint8"|"bfloat16"|None, "quantization_note": str}``.

    Raises:
        ImportError: ``quantize=True`` off MPS and optimum-quanto missing (the message says how
            to install it).
    """
    device = torch.device(device)
    want = default_quantize(device) if quantize is None else bool(quantize)
    if not want:
        return {"quantized": None, "quantization_note": "float weights (--quantize to use 4-bit)"}
    if not quanto_available():
        if device.type == "mps":
            to_half_precision(policy.model)
            note = ("optimum-quanto is not installed: Pi0 runs with bfloat16 weights instead of 4-bit "
                    "(pip install optimum-quanto==0.2.7 for qint4)")
            if verbose:
                print(f"[pi0] {note}")
            return {"quantized": "bfloat16", "quantization_note": note}
        raise ImportError("--quantize needs optimum-quanto: pip install optimum-quanto==0.2.7")
    if verbose:
        print(f"[pi0] quantizing PaliGemma + expert weights to {weights} with optimum-quanto; note: {FIRST_RUN_NOTE}")
    t0 = time.perf_counter()
    n = quantize_module(policy.model.paligemma_with_expert, weights)
    note = f"{weights} weights on {n} modules (optimum-quanto), {time.perf_counter() - t0:.1f} s"
    if verbose:
        print(f"[pi0] {note}")
    return {"quantized": weights, "quantization_note": note}
