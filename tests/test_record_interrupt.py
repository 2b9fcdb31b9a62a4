"""Ctrl-C during a recording: episodes saved before it stay, the unfinished one is dropped, and
the dataset is finalized and loadable."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SIM_DIR = REPO_ROOT / "simulation_code"


def test_sigint_mid_episode_keeps_saved_episodes(tmp_path):
    root = tmp_path / "interrupted"
    env = dict(os.environ, HF_HUB_OFFLINE="1", SO101_QUIET_GL="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "record_dataset.py", "--input", "scripted", "--output_dir", str(root),
           "--num_episodes", "20", "--image-size", "32", "--repo-id", "local/interrupted", "--seed", "0"]
    proc = subprocess.Popen(cmd, cwd=SIM_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("[record] saved episode 1 "):
                break
        else:
            pytest.fail("recorder did not save 2 episodes in time:\n" + "".join(lines[-30:]))
        assert proc.poll() is None, "".join(lines[-30:])
        time.sleep(0.5)  # well inside episode 2 (an episode takes ~30 control steps)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = "".join(lines) + rest
    assert proc.returncode == 130, output[-3000:]
    saved = re.findall(r"^\[record\] saved episode (\d+) ", output, flags=re.M)
    assert len(saved) >= 2, output[-3000:]
    assert "SIGINT: stopping" in output

    from lerobot.datasets import LeRobotDataset

    ds = LeRobotDataset("local/interrupted", root=root, video_backend="pyav")
    assert ds.num_episodes == len(saved)  # every announced episode, nothing partial
    if len(saved) == 2:
        assert "discarded the unfinished episode" in output
    lengths = [int(x) for x in re.findall(r"^\[record\] saved episode \d+ \((\d+) frames", output, flags=re.M)]
    assert ds.num_frames == sum(lengths)
    ds[ds.num_frames - 1]  # the last saved frame decodes
