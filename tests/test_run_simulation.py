"""The main job end to end: run_mujoco_simulation.py with the scripted expert, videos, summary."""

import json
import subprocess
import sys

import imageio.v3 as iio
import pytest

from so101_sim import rollout_utils as ru
from so101_sim import run_mujoco_simulation
from conftest import SIM_DIR


def test_scripted_run_writes_videos_and_a_consistent_summary(tmp_path, capsys):
    videos, summary_path = tmp_path / "videos", tmp_path / "summary.json"
    rc = run_mujoco_simulation.main([
        "--model-type", "scripted", "--episodes", "2", "--seed", "10", "--headless",
        "--video-dir", str(videos), "--summary-json", str(summary_path),
    ])
    assert rc == 0
    summary = json.loads(summary_path.read_text())
    eps = summary["per_episode"]
    assert summary["policy"] == "scripted" and summary["seeds"] == [10, 11] and len(eps) == 2
    assert summary["success_rate"] == pytest.approx(sum(e["success"] for e in eps) / 2)
    assert summary["mean_return"] == pytest.approx(sum(e["return"] for e in eps) / 2)
    lo, hi = summary["success_rate_ci95"]
    assert 0 <= lo <= summary["success_rate"] <= hi <= 1
    for i, ep in enumerate(eps):
        video = videos / f"episode_{i:03d}.mp4"
        assert ep["video"] == str(video.resolve())  # outside the repository: absolute
        frames = iio.imread(video, plugin="pyav")  # (T, H, W, 3)
        # the reset frame, one per step, and ~1 s more after a success (tests/test_cli_truth.py)
        assert len(frames) == ep["length"] + 1 + ep["video_tail_frames"]
        assert ep["video_tail_frames"] == (ru.VIDEO_TAIL_STEPS if ep["success"] else 0)
        assert frames[0].shape == (480, 640, 3)
    assert not list(videos.glob("*.partial.mp4"))
    out = capsys.readouterr().out
    assert f"success {summary['success_rate']:.0%}" in out
    # no divergence: counted as 0 in the JSON, not mentioned in the line (tests/test_reliability_env.py: 1)
    assert summary["unstable_episodes"] == 0 and not any(e["sim_unstable"] for e in eps)
    assert "unstable" not in out


def test_same_seed_gives_the_same_episodes(tmp_path):
    runs = []
    for k in range(2):
        path = tmp_path / f"s{k}.json"
        run_mujoco_simulation.main(["--model-type", "scripted", "--episodes", "1", "--seed", "4",
                                    "--headless", "--summary-json", str(path)])
        runs.append(json.loads(path.read_text())["per_episode"][0])
    assert runs[0]["return"] == runs[1]["return"] and runs[0]["length"] == runs[1]["length"]


def test_without_display_and_without_headless_exits_with_a_hint():
    out = subprocess.run([sys.executable, "run_mujoco_simulation.py", "--model-type", "scripted", "--episodes", "1"],
                         cwd=SIM_DIR, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "SO101_QUIET_GL": "1"})
    assert out.returncode == 2 and "--headless" in out.stderr


def test_help_lists_every_flag():
    out = subprocess.run([sys.executable, "run_mujoco_simulation.py", "--help"], cwd=SIM_DIR,
                         capture_output=True, text=True, check=True).stdout
    for flag in ("--model-type", "--episodes", "--headless", "--seed", "--max-steps", "--video-dir", "--summary-json"):
        assert flag in out
