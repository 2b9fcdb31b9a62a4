"""Offline behaviour: no cached weights + no Hub -> one clear message and a non-zero exit.

The Hugging Face cache is pointed at an empty folder, so the result does not depend on what the
machine running the tests has downloaded.
"""

from __future__ import annotations

import pytest

from so101_sim import run_mujoco_simulation
from so101_sim.hub_download import PolicyLoadError, PolicyUnavailableOffline
from so101_sim.smolvla_adapter import SmolVLAAdapter


@pytest.fixture
def empty_offline_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def test_default_run_without_weights_prints_one_message_and_fails(empty_offline_cache, capsys):
    rc = run_mujoco_simulation.main(["--headless", "--max-steps", "1"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("error:") == 1 and "Traceback" not in err
    assert "lerobot/smolvla_base" in err  # which repo
    assert "HuggingFaceTB/SmolVLM2-500M-Video-Instruct" in err  # its backbone
    assert "hf download lerobot/smolvla_base" in err  # how to get it
    assert "--policy-path" in err  # how to use a local copy
    assert "make_tiny_policies.py" in err


def test_pi0_message_names_the_gated_tokenizer(empty_offline_cache, capsys):
    rc = run_mujoco_simulation.main(["--model-type", "pi0", "--headless", "--max-steps", "1"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "hf download lerobot/pi0" in err
    assert "google/paligemma-3b-pt-224" in err and "gated" in err


def test_missing_local_directory_is_not_treated_as_a_repo(empty_offline_cache):
    with pytest.raises(PolicyLoadError, match="no such directory"):
        SmolVLAAdapter.load("../outputs/does_not_exist", device="cpu", verbose=False)
    with pytest.raises(PolicyUnavailableOffline, match="someone/some_policy"):
        SmolVLAAdapter.load("someone/some_policy", device="cpu", verbose=False)


def test_training_the_default_vla_offline_points_to_the_offline_flow_training_line(empty_offline_cache, capsys):
    """train_reinflow.py with no flags (SmolVLA) offline without weights: one message, saying what
    is missing and giving the command that trains offline on a CPU (the flow policy)."""
    from so101_sim import train_reinflow

    with pytest.raises(SystemExit) as e:
        train_reinflow.main(["--iterations", "1", "--no-render", "--parallel-envs", "1", "--device", "cpu"])
    msg = str(e.value.code)
    assert "lerobot/smolvla_base" in msg and "hf download lerobot/smolvla_base" in msg
    assert "python train_reinflow.py --model-type flow --init-checkpoint checkpoints/flow_bc.pt" in msg
    assert "Traceback" not in capsys.readouterr().err
