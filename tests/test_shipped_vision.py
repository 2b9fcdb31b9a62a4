"""The shipped image policies (issue 16 item 4): simulation_code/checkpoints/vision_bc/ (the best
image policy) and smolvla_bc/ (the SmolVLA-architecture one), each a LeRobot pretrained_model
folder written by benchmarks/vision_bc.py with the results it measured on held-out seeds
(vision_bc_results.json). Here: the folder is what the issue asks for (size, files, metadata, no
privileged input) and our runner reproduces the first recorded successful held-out episodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from so101_sim import so101_mujoco_utils as u

CKPTS = Path(u.__file__).resolve().parent / "checkpoints"
MAX_BYTES = 20 * 1024 * 1024  # issue 16 item 4: at most 20 MB each
REPLAYED = 2  # recorded successful episodes replayed per policy (each about 2-10 s on 2 cores)
#: Replays are of recorded *successes*, compared within this relative tolerance, not bit for bit:
#: CPUs with other vector units (AVX-512/AMX against AVX2) round torch's float32 kernels differently,
#: and a closed loop amplifies that. A success ends the episode early, so its return moves little
#: (measured: at most 1.5% here). A failure runs 100-150 steps and can drift anywhere: on a Sapphire
#: Rapids machine smolvla_reinflow's failed seed 0 returned -146.8 against the recorded -11.3.
RETURN_RTOL = 0.05


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("name, policy_type", [("vision_bc", "so101_act"), ("smolvla_bc", "smolvla")])
def test_shipped_folder_is_a_small_camera_only_pretrained_model(name, policy_type):
    folder = CKPTS / name
    cfg = json.loads((folder / "config.json").read_text())
    assert _size(folder) <= MAX_BYTES, f"{folder}: {_size(folder) / 2**20:.1f} MB"
    assert cfg["type"] == policy_type
    if policy_type == "smolvla":
        assert cfg["vlm_model_name"] == "vlm" and (folder / "vlm" / "config.json").is_file()
    inputs = cfg["input_features"]
    assert u.OBS_STATE in inputs and "observation.environment_state" not in inputs  # cameras, not the block pose
    images = sorted(k for k in inputs if k.startswith(u.OBS_IMAGE_PREFIX))
    meta = json.loads((folder / "so101_policy_meta.json").read_text())
    assert sorted(meta["camera_map"].values()) == images and meta["frame"] == "lerobot_degrees"
    # a deployment setting in the config is the one the record names (ACT: temporal ensembling)
    assert cfg.get("temporal_ensemble_coeff") == meta.get("temporal_ensemble_coeff")
    if cfg.get("temporal_ensemble_coeff") is not None:
        assert cfg["n_action_steps"] == 1  # ACTConfig's condition for ensembling
    with safe_open(folder / "model.safetensors", "pt") as f:
        dtypes = {str(f.get_slice(k).get_dtype()) for k in f.keys()}
    assert dtypes <= {"F32", "BF16", "I64"} and ("BF16" in dtypes) == (meta["weights_dtype"] == "bfloat16")
    for proc in ("policy_preprocessor.json", "policy_postprocessor.json"):
        assert (folder / proc).is_file()
    results = json.loads((folder / "vision_bc_results.json").read_text())
    lo, _ = u.SEED_RANGES["held_out"]
    assert results["ours"]["seeds"][0] >= lo and len(results["ours"]["seeds"]) >= 100  # 100 held-out seeds


def _replay_recorded_successes(folder: Path, recorded: dict, tmp_path: Path) -> None:
    """Run the first REPLAYED recorded successful seeds of ``recorded`` (seeds, success, returns)
    through our runner, one episode each (at least one: smolvla_reinflow's deployment check
    recorded 1 success in 10); they must succeed again with the recorded return."""
    from so101_sim import run_mujoco_simulation as rms

    wins = [i for i, ok in enumerate(recorded["success"]) if ok][:REPLAYED]
    assert wins, f"{folder}: no recorded success to replay"
    for i in wins:
        summary = tmp_path / f"summary_{i}.json"
        assert rms.main(["--model-type", "lerobot", "--policy-path", str(folder), "--episodes", "1",
                         "--seed", str(recorded["seeds"][i]), "--headless", "--summary-json", str(summary)]) == 0
        (ep,) = json.loads(summary.read_text())["per_episode"]
        assert ep["seed"] == recorded["seeds"][i] and ep["success"]
        assert ep["return"] == pytest.approx(recorded["returns"][i], rel=RETURN_RTOL, abs=1e-3)


@pytest.mark.parametrize("name", ["vision_bc", "smolvla_bc"])
def test_runner_reproduces_the_recorded_held_out_episodes(name, tmp_path):
    folder = CKPTS / name
    _replay_recorded_successes(folder, json.loads((folder / "vision_bc_results.json").read_text())["ours"], tmp_path)


RL = CKPTS / "smolvla_reinflow"


def test_shipped_reinflow_policy_deploys_as_it_was_evaluated(tmp_path):
    """checkpoints/smolvla_reinflow/ (issue 17 item 4): at most 20 MB, camera-only, LeRobot's sampler
    at the run's K (config num_steps) with the VLM bundled; our runner reproduces the episodes
    reinflow_vision.py recorded for the exported folder."""
    cfg = json.loads((RL / "config.json").read_text())
    results = json.loads((RL / "reinflow_vision_results.json").read_text())
    assert _size(RL) <= MAX_BYTES, f"{RL}: {_size(RL) / 2**20:.1f} MB"
    assert cfg["type"] == "smolvla" and cfg["num_steps"] == int(results["args"]["denoise_steps"])
    assert cfg["vlm_model_name"] == "vlm" and (RL / "vlm" / "config.json").is_file()
    assert "observation.environment_state" not in cfg["input_features"]
    _replay_recorded_successes(RL, results["deployed"], tmp_path)
