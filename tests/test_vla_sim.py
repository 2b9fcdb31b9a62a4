"""Both tiny VLAs run end to end in the env through run_mujoco_simulation.main (headless, images,
video, summary JSON), executing n_action_steps of each chunk."""

from __future__ import annotations

import json

import pytest

from so101_sim import run_mujoco_simulation



@pytest.mark.parametrize("model_type,frame,n_cams", [("smolvla", "smolvla_absolute", 3), ("pi0", "lerobot_degrees", 2)])
def test_tiny_policy_runs_end_to_end(tiny_dirs, tmp_path, capsys, model_type, frame, n_cams):
    summary_path = tmp_path / "summary.json"
    rc = run_mujoco_simulation.main([
        "--model-type", model_type, "--policy-path", str(tiny_dirs[model_type]), "--headless",
        "--episodes", "1", "--max-steps", "3", "--n-action-steps", "2", "--device", "cpu",
        "--video-dir", str(tmp_path / "videos"), "--summary-json", str(summary_path),
    ])
    out = capsys.readouterr().out
    assert rc == 0
    summary = json.loads(summary_path.read_text())
    ep = summary["per_episode"][0]
    assert summary["policy"] == model_type and ep["length"] == 3
    video = tmp_path / "videos" / "episode_000.mp4"
    assert ep["video"] == str(video) and video.stat().st_size > 1000
    info = summary["policy_info"]
    assert info["frame"] == frame and info["task"] == "pick up the red block"
    assert len(info["camera_map"]) == n_cams
    assert info["n_action_steps"] == 2 and info["inferences"] == 2  # 3 steps, 2 per chunk -> 2 chunks
    # debug output for the inferences made (at most 3), with the state in every frame
    assert f"[{model_type} debug 2/3] state SmolVLA abs deg" in out
    assert f"[{model_type} debug 3/3]" not in out
    assert f"{model_type}: success" in out


def test_wrong_camera_map_exits_with_one_message(tiny_dirs, capsys):
    rc = run_mujoco_simulation.main(["--model-type", "pi0", "--policy-path", str(tiny_dirs["pi0"]), "--headless",
                                     "--max-steps", "1", "--camera-map", "camera1=front"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("error:") == 1
    assert "observation.images.top, observation.images.wrist" in err
