"""Recording under faults: SIGKILL at any moment (also during a --resume append), a full disk, and
LeRobot's own dataset tools. Every episode announced as saved must stay loadable with
``LeRobotDataset(repo_id, root=DIR)`` with nothing else run first, and ``--resume`` must append
after them.

The kill points are spread over the whole run (between and inside episodes, during encoding and
publishing) by killing at fixed delays after each "saved episode" line; the ENOSPC test needs root
(a small tmpfs), which CI has.
"""

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from so101_sim import durable_dataset as dd
from so101_sim import record_dataset as rd
from so101_sim import so101_mujoco_utils as u

REPO_ROOT = Path(__file__).resolve().parent.parent
SIM_DIR = REPO_ROOT / "simulation_code"
REPO_ID = "local/faults"
ENV = dict(os.environ, HF_HUB_OFFLINE="1", SO101_QUIET_GL="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
SAVED = re.compile(r"^\[record\] saved episode (\d+) \((\d+) frames", re.M)


def load(root):
    from lerobot.datasets import LeRobotDataset

    return LeRobotDataset(REPO_ID, root=root, video_backend="pyav")


def recorder(root, n, *extra):
    cmd = [sys.executable, "record_dataset.py", "--input", "scripted", "--output_dir", str(root), "--num_episodes",
           str(n), "--image-size", "32", "--repo-id", REPO_ID, "--seed", "0", *extra]
    return subprocess.Popen(cmd, cwd=SIM_DIR, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill_after_saves(proc, n_saved: int, delay: float, timeout: float = 300) -> str:
    """Read the recorder's output until it announced ``n_saved`` episodes, wait ``delay`` s, SIGKILL."""
    out, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out.append(line)
        if len(SAVED.findall("".join(out))) >= n_saved:
            break
    time.sleep(delay)
    proc.kill()
    rest, _ = proc.communicate(timeout=60)
    return "".join(out) + rest


def check_loads_announced(root, output: str, at_least: int) -> list[int]:
    """The dataset loads as is and holds exactly the announced episodes (frame counts match)."""
    lengths = [int(n) for _, n in SAVED.findall(output)]
    assert len(lengths) >= at_least, output[-2000:]
    ds = load(root)
    assert ds.num_episodes == len(lengths), output[-2000:]
    assert ds.num_frames == sum(lengths)
    ds[ds.num_frames - 1]  # the last announced frame decodes
    seeds = np.asarray(ds.hf_dataset.with_format("numpy")[u.EPISODE_SEED]).reshape(-1)
    return sorted({int(s) for s in seeds})


def test_sigkill_keeps_every_announced_episode_and_resume_appends(tmp_path):
    """SIGKILL right after episode 0 was published; then a --resume SIGKILLed 0.6 s after its first
    save (inside or around the next save); then a clean --resume."""
    root = tmp_path / "ds"
    out1 = kill_after_saves(recorder(root, 20), 1, 0.0)
    seeds = check_loads_announced(root, out1, 1)
    n1 = len(SAVED.findall(out1))

    out2 = kill_after_saves(recorder(root, 20, "--resume"), 1, 0.6)  # killed during the append
    check_loads_announced(root, out1 + out2, n1 + 1)
    n2 = n1 + len(SAVED.findall(out2))

    assert rd.main(["--input", "scripted", "--output_dir", str(root), "--num_episodes", "1", "--image-size", "32",
                    "--repo-id", REPO_ID, "--resume"]) == 0
    ds = load(root)
    assert ds.num_episodes == n2 + 1
    all_seeds = sorted({int(s) for s in np.asarray(ds.hf_dataset.with_format("numpy")[u.EPISODE_SEED]).reshape(-1)})
    assert all_seeds[: len(seeds)] == seeds and len(all_seeds) == n2 + 1  # new seeds, none reused
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "ds"]
    assert leftovers == [], leftovers  # the hidden staging/commit folders were cleaned up


#: A keyboard recording driven by a scripted person (tests/fake_teleop.py) through record_dataset.main:
#: start, 6 frames, stop (saved), over and over, in real time (10 Hz), the viewer off.
TELEOP_SCRIPT = """
import sys
sys.path[:0] = [{sim!r}, {tests!r}]
from so101_sim import record_dataset as rd
from so101_sim import teleop_common as tc
from fake_teleop import ScheduledPerson
rd.make_source = lambda args: ScheduledPerson({{0: [tc.EVENT_TOGGLE], 6: [tc.EVENT_TOGGLE]}}, period=7)
sys.exit(rd.main(["--input", "keyboard", "--no-viewer", "--output_dir", {root!r}, "--num_episodes", "50",
                  "--image-size", "32", "--repo-id", {repo!r}, *sys.argv[1:]]))
"""


def test_sigkill_during_teleop_recording_and_its_resume(tmp_path):
    """The same guarantee for a person's input (--input keyboard with a scripted person): SIGKILL
    inside the loop, then during a --resume append."""
    root = tmp_path / "kb"
    script = tmp_path / "teleop.py"
    script.write_text(TELEOP_SCRIPT.format(sim=str(SIM_DIR), tests=str(Path(__file__).parent), root=str(root),
                                           repo=REPO_ID))

    def run(*extra):
        return subprocess.Popen([sys.executable, str(script), *extra], cwd=SIM_DIR, env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    out1 = kill_after_saves(run(), 2, 0.3)
    check_loads_announced(root, out1, 2)
    out2 = kill_after_saves(run("--resume"), 1, 0.45)
    check_loads_announced(root, out1 + out2, len(SAVED.findall(out1)) + 1)
    assert all(int(n) == 6 for _, n in SAVED.findall(out1 + out2))  # whole episodes only


def kill_after_start(proc, delay: float, timeout: float = 300) -> str:
    """SIGKILL ``delay`` s after the recorder announced its start (first episode under way)."""
    out, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        out.append(line)
        if not line or line.startswith("[record] scripted -> "):
            break
    time.sleep(delay)
    proc.kill()
    return "".join(out) + proc.communicate(timeout=60)[0]


def test_kill_before_first_episode_leaves_nothing_and_overwrite_keeps_old_until_saved(tmp_path):
    root = tmp_path / "ds"
    out = kill_after_start(recorder(root, 3), 0.0)  # a 32 px scripted episode can be saved within 0.2 s
    assert not SAVED.findall(out), out[-2000:]
    assert not root.exists()  # nothing half-made where the dataset goes
    # --overwrite killed before its first save keeps the old dataset whole
    assert rd.main(["--input", "scripted", "--output_dir", str(root), "--num_episodes", "1", "--image-size", "32",
                    "--repo-id", REPO_ID, "--seed", "5"]) == 0
    out = kill_after_start(recorder(root, 3, "--overwrite", "--seed", "100"), 0.2)
    assert "replaced when the first new episode is saved" in out and not SAVED.findall(out), out[-2000:]
    ds = load(root)
    assert ds.num_episodes == 1
    assert set(np.asarray(ds.hf_dataset.with_format("numpy")[u.EPISODE_SEED]).reshape(-1).tolist()) == {5}


def test_crash_inside_publish_leaves_previous_state(tmp_path, monkeypatch):
    """A failure at the worst moment, between building the new tree and swapping it in, leaves the
    dataset as it was; the next run cleans up and resumes."""
    root = tmp_path / "ds"
    assert rd.main(["--input", "scripted", "--output_dir", str(root), "--num_episodes", "1", "--image-size", "32",
                    "--repo-id", REPO_ID]) == 0

    def boom(a, b):
        raise KeyboardInterrupt("killed between clone and swap")

    monkeypatch.setattr(dd, "_exchange", boom)
    with pytest.raises(KeyboardInterrupt):
        rd.main(["--input", "scripted", "--output_dir", str(root), "--num_episodes", "1", "--image-size", "32",
                 "--repo-id", REPO_ID, "--resume"])
    assert load(root).num_episodes == 1
    monkeypatch.undo()
    assert rd.main(["--input", "scripted", "--output_dir", str(root), "--num_episodes", "1", "--image-size", "32",
                    "--repo-id", REPO_ID, "--resume"]) == 0
    assert load(root).num_episodes == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_two_rename_fallback_is_recovered(tmp_path):
    """Where no atomic exchange exists, a kill between the two renames is repaired by recover()."""
    root = tmp_path / "ds"
    root.mkdir()
    (root / "marker").write_text("old")
    aside = tmp_path / ".ds.old"
    os.rename(root, aside)  # the state after the first of the two renames
    dd.recover(root)
    assert (root / "marker").read_text() == "old" and not aside.exists()


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 6 MB tmpfs (root only; CI runs as root)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_keeps_completed_episodes(small_tmpfs):
    """ENOSPC mid-recording: one clear error line, exit 1, and after space is freed the dataset
    loads with every announced episode and --resume appends."""
    root = small_tmpfs / "ds"
    filler = small_tmpfs / "filler"
    args = ["--input", "scripted", "--output_dir", str(root), "--image-size", "64", "--repo-id", REPO_ID]
    assert rd.main([*args, "--num_episodes", "1"]) == 0
    used = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    free = shutil.disk_usage(small_tmpfs).free
    with open(filler, "wb") as f:  # leave room for about one more episode (twice: staging + publish)
        f.write(b"\0" * max(0, free - 3 * used))
    full = subprocess.run([sys.executable, "record_dataset.py", *args, "--num_episodes", "50", "--resume"],
                          cwd=SIM_DIR, env=ENV, capture_output=True, text=True, timeout=600)
    output = full.stdout + full.stderr
    assert full.returncode == 1, output[-3000:]
    assert "Traceback" not in full.stderr, full.stderr[-3000:]
    errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on device" in errors[0] and "--resume" in errors[0], full.stderr[-2000:]
    n = 1 + len(SAVED.findall(output))
    assert n < 51  # the disk really filled up
    filler.unlink()  # free the space
    assert load(root).num_episodes == n
    assert not dd.staging_path(root).exists()  # the failed staging copy was removed
    assert rd.main([*args, "--num_episodes", "1", "--resume"]) == 0
    assert load(root).num_episodes == n + 1


def test_is_disk_full_follows_the_cause_chain():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("encoding failed") from inner
    except RuntimeError as outer:
        assert dd.is_disk_full(outer)
    assert not dd.is_disk_full(RuntimeError("something else"))


def test_seeds_survive_lerobot_dataset_tools(tmp_path):
    """LeRobot's delete_episodes drops our meta/ sidecar; the episode_seed column survives, and the
    flow BC loader still replays the block pose from it."""
    from so101_sim import demonstrations
    from lerobot.datasets.dataset_tools import delete_episodes

    root = tmp_path / "three"
    assert rd.main(["--input", "scripted", "--output_dir", str(root), "--num_episodes", "3", "--image-size", "32",
                    "--repo-id", REPO_ID, "--seed", "7"]) == 0
    src = load(root)
    out = tmp_path / "two"
    delete_episodes(src, episode_indices=[1], output_dir=out, repo_id="local/two")
    assert not (out / rd.RECORDING_META).exists()  # LeRobot's tool dropped the sidecar...
    demos = demonstrations.load_lerobot_demonstrations(out)  # ...and the replay still works from the column
    assert sorted(set(demos["episode_index"].tolist())) == [0, 1]
    # block pose at each episode's first frame == the env's block pose for seeds 7 and 9
    import gymnasium as gym

    from so101_sim import envs  # noqa: F401

    env = gym.make("SO101PickPlace-v0", obs_mode="state", include_env_state=True)
    try:
        for e, seed in ((0, 7), (1, 9)):
            first = np.flatnonzero(demos["episode_index"] == e)[0]
            obs, _ = env.reset(seed=seed)
            np.testing.assert_allclose(demos["env_state"][first], obs[u.OBS_ENV_STATE], atol=1e-6)
    finally:
        env.close()
    # --resume on the tool's output continues after the stored seeds (8 is gone, 9 is the highest)
    assert rd.main(["--input", "scripted", "--output_dir", str(out), "--num_episodes", "1", "--image-size", "32",
                    "--repo-id", "local/two", "--resume"]) == 0
    seeds = np.asarray(load_as(out, "local/two").hf_dataset.with_format("numpy")[u.EPISODE_SEED]).reshape(-1)
    assert sorted(set(seeds.tolist())) == [7, 9, 10]


def load_as(root, repo_id):
    from lerobot.datasets import LeRobotDataset

    return LeRobotDataset(repo_id, root=root, video_backend="pyav")
