"""Pi0 weight quantization (pi0_quantization.py) on the tiny Pi0, CPU.

Note: the first qint4 use in a fresh environment JIT-compiles optimum-quanto's C++ extension
(g++ + ninja, about 1.5-3 minutes on 2 cores; cached afterwards inside the installed package), so
the first run of test_qint4_actions_close_to_float is slow. It is kept in the default suite on
purpose: qint4 is the shipped default on MPS, and qint8 (fast) does not exercise the int4 kernels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from so101_sim import pi0_quantization as pq
from so101_sim.pi0_adapter import PI0Adapter
from vla_tiny import fake_obs



def _chunks(path, quantize, n=3, weights=None, monkeypatch=None):
    a = PI0Adapter.load(str(path), device="cpu", quantize=quantize if weights is None else False,
                        verbose=False, debug_inferences=0)
    if weights is not None:
        pq.quantize_module(a.model.paligemma_with_expert, weights)
    out = []
    for i in range(n):
        noise = a.sample_noise(1, torch.Generator().manual_seed(i))
        out.append(a.predict_action_chunk(fake_obs(seed=i), noise=noise))
    return a, np.stack(out)


def test_default_policy_is_on_for_mps_only():
    assert pq.default_quantize("mps") is True
    assert pq.default_quantize("cpu") is False and pq.default_quantize("cuda") is False


def test_no_quantize_leaves_float_weights(tiny_dirs):
    a, _ = _chunks(tiny_dirs["pi0"], quantize=None, n=1)  # CPU default: off
    assert a.describe()["quantized"] is None
    assert all(p.dtype == torch.float32 for p in a.model.parameters())


def test_qint8_actions_close_to_float(tiny_dirs):
    _, ref = _chunks(tiny_dirs["pi0"], quantize=False)
    q, got = _chunks(tiny_dirs["pi0"], quantize=None, weights="qint8")
    n_q = sum(1 for m in q.model.modules() if type(m).__name__.startswith("Q"))
    assert n_q > 10  # the transformer Linears were replaced
    err = np.abs(got - ref)
    assert err.max() < 0.05 and err.mean() < 0.01, (err.max(), err.mean())  # radians


def test_qint4_actions_close_to_float(tiny_dirs):
    """The shipped qint4 path end to end through load(quantize=True), same noise as float32.

    Random tiny weights (width 64) are a harsh case for 4-bit groups, so "close" is measured
    against the policy's own scale: the qint4 error must be far below the change that a different
    noise sample causes (measured: mean 0.07 rad vs 0.80 rad, correlation 0.995). A broken
    quantization (wrong scales, garbage weights) is as far off as a different noise sample.
    """
    a, ref = _chunks(tiny_dirs["pi0"], quantize=False, n=4)
    other = np.stack([a.predict_action_chunk(fake_obs(seed=i), noise=a.sample_noise(1, torch.Generator().manual_seed(100 + i)))
                      for i in range(4)])
    q, got = _chunks(tiny_dirs["pi0"], quantize=True, n=4)
    info = q.describe()
    assert info["quantized"] == "qint4" and "optimum-quanto" in info["quantization_note"]
    err, spread = np.abs(got - ref), np.abs(other - ref)
    assert 0 < err.mean() < 0.2 * spread.mean(), (err.mean(), spread.mean())
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.98
    with pytest.raises(RuntimeError, match="--no-quantize"):
        q.trainable_parameter_groups("expert")


def test_half_precision_fallback_on_mps_without_quanto(tiny_dirs, monkeypatch, capsys):
    """On MPS without optimum-quanto: half-precision (bfloat16, LeRobot's own recipe; float16 is
    not supported by lerobot 0.6.1's Pi0 forward) transformer weights and a message. Exercised on
    CPU (the device only decides the default) by pretending quanto is missing."""
    a = PI0Adapter.load(str(tiny_dirs["pi0"]), device="cpu", quantize=False, verbose=False, debug_inferences=0)
    ref = a.predict_action_chunk(fake_obs(), noise=a.sample_noise(1, torch.Generator().manual_seed(0)))
    monkeypatch.setattr(pq, "quanto_available", lambda: False)
    info = pq.apply_quantization(a.policy, "mps", None)
    assert info["quantized"] == "bfloat16"
    assert "optimum-quanto is not installed" in capsys.readouterr().out
    dtypes = {p.dtype for p in a.model.paligemma_with_expert.gemma_expert.parameters()}
    assert torch.bfloat16 in dtypes
    assert a.model.action_out_proj.weight.dtype == torch.float32  # projections stay float32
    got = a.predict_action_chunk(fake_obs(), noise=a.sample_noise(1, torch.Generator().manual_seed(0)))
    assert np.abs(got - ref).max() < 0.05
    with pytest.raises(ImportError, match="pip install optimum-quanto"):
        pq.apply_quantization(a.policy, "cpu", True)
