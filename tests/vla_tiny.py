"""Shared by tests/test_vla_*.py: the tiny SmolVLA/Pi0 built once per test session.

Each test module wraps :func:`tiny_policy_dirs` in a session-scoped fixture; the directory lives
under pytest's session base temp dir and carries a ``.complete`` marker, so the (~15 s) build runs
once per session however many modules use it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from so101_sim import so101_mujoco_utils as u


def tiny_policy_dirs(tmp_path_factory) -> dict[str, Path]:
    """{"smolvla": dir, "pi0": dir} of make_tiny_policies.py outputs (built on first use, seed 0)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.getbasetemp() / "tiny_vla_policies"
    if not (root / ".complete").exists():
        from so101_sim.make_tiny_policies import build_all

        build_all(root, seed=0)
        (root / ".complete").write_text("ok\n")
    return {"smolvla": root / "smolvla", "pi0": root / "pi0"}


def fake_obs(q_rad=None, size: int = 48, seed: int = 0) -> dict:
    """One env-like observation: state (6,) float32 MuJoCo radians, three (size, size, 3) uint8 images."""
    rng = np.random.default_rng(seed)
    obs = {u.OBS_STATE: np.zeros(6, np.float32) if q_rad is None else np.asarray(q_rad, np.float32)}
    for key in u.IMAGE_KEYS:
        obs[key] = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return obs
