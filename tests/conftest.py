"""Test setup: offline Hugging Face, headless rendering.

Tests run from the repository root (``make test``) with the repository installed (``make install``):
they import simulation_code/ as the package ``so101_sim``, as its modules import each other.
"""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("SO101_QUIET_GL", "1")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("SO101_TEST_RUN_ID", str(os.getpid()))  # per-session names for cross-process test markers

REPO_ROOT = Path(__file__).resolve().parent.parent
SIM_DIR = REPO_ROOT / "simulation_code"

from so101_sim import mujoco_rendering  # noqa: E402,F401  (sets MUJOCO_GL before anything imports mujoco)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """{"smolvla": dir, "pi0": dir}: the tiny VLAs of make_tiny_policies.py, built once per session."""
    from vla_tiny import tiny_policy_dirs

    return tiny_policy_dirs(tmp_path_factory)
