"""smolvla_modifications/check_lerobot_internals.py: the LeRobot internals the adapters rely on."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from conftest import REPO_ROOT


@pytest.fixture(scope="module")
def checker():
    path = REPO_ROOT / "smolvla_modifications" / "check_lerobot_internals.py"
    spec = importlib.util.spec_from_file_location("check_lerobot_internals", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_installed_lerobot_has_every_internal_the_adapters_use(checker):
    import lerobot

    assert checker.check() == []
    assert getattr(lerobot, "__version__", checker.CHECKED_VERSION) == checker.CHECKED_VERSION


def test_check_detects_a_changed_signature(checker, monkeypatch):
    from lerobot.policies.smolvla import modeling_smolvla

    def denoise_step(self, x_t, timestep, prefix_pad_masks=None, past_key_values=None):  # reordered
        raise AssertionError

    monkeypatch.setattr(modeling_smolvla.VLAFlowMatching, "denoise_step", denoise_step)
    problems = checker.check()
    assert len(problems) == 1 and "VLAFlowMatching.denoise_step signature changed" in problems[0]


def test_check_detects_a_removed_name_and_source_assumption(checker, monkeypatch):
    from lerobot.policies.pi0 import modeling_pi0

    monkeypatch.delattr(modeling_pi0, "get_gemma_config")
    monkeypatch.setattr(checker, "SOURCE_FRAGMENTS",
                        [("lerobot.policies.pi0.modeling_pi0", "1 * 16 * head_dim", "heads assumption")])
    problems = checker.check()
    assert any("get_gemma_config is gone" in p for p in problems)
    assert any("1 * 16 * head_dim" in p for p in problems)


def test_script_exit_status(checker, capsys):
    assert checker.main() == 0
    assert "OK:" in capsys.readouterr().out
