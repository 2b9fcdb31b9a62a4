"""dataset_stats.py on a small synthetic LeRobotDataset with hand-computable numbers."""

import numpy as np
import pytest

from so101_sim import dataset_stats as dsx
from so101_sim import so101_mujoco_utils as u

NAMES = list(u.LEROBOT_MOTOR_NAMES)
# two episodes (4 + 3 frames); joint 4 (wrist_roll) never moves; gripper closed (< 10) in 3 of 7
GRIPPER = [0.0, 5.0, 50.0, 100.0, 0.0, 20.0, 100.0]
EPISODES = [0, 0, 0, 0, 1, 1, 1]


def synthetic_arrays():
    n = len(GRIPPER)
    action = np.zeros((n, 6), dtype=np.float32)
    action[:, 0] = [0, 10, 20, 30, -5, 0, 5]
    action[:, 1] = np.linspace(-90, 0, n)
    action[:, 2] = np.linspace(80, 10, n)
    action[:, 3] = np.linspace(60, 90, n)
    action[:, 4] = -84.0
    action[:, 5] = GRIPPER
    state = action + 0.5  # same spread, offset
    return state, action, np.array(EPISODES)


@pytest.fixture(scope="module")
def synthetic_dataset(tmp_path_factory):
    from lerobot.datasets import LeRobotDataset

    root = tmp_path_factory.mktemp("stats") / "synthetic"
    joint = {"dtype": "float32", "shape": (6,), "names": NAMES}
    features = {"observation.state": joint, "action": dict(joint),
                "observation.images.camera1": {"dtype": "video", "shape": (32, 32, 3),
                                               "names": ["height", "width", "channels"]}}
    ds = LeRobotDataset.create("local/synthetic", fps=10, features=features, root=root, robot_type="so101_follower")
    state, action, ep = synthetic_arrays()
    rng = np.random.default_rng(0)
    for e in (0, 1):
        for i in np.flatnonzero(ep == e):
            ds.add_frame({"observation.state": state[i], "action": action[i], "task": "pick up the red block",
                          "observation.images.camera1": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)})
        ds.save_episode(parallel_encoding=False)
    ds.finalize()
    return root


def test_compute_stats_by_hand():
    state, action, ep = synthetic_arrays()
    s = dsx.compute_stats(state, action, ep, gripper_index=5)
    assert s["frames"] == 7 and s["episodes"] == 2
    assert s["gripper_closed_fraction"] == pytest.approx(3 / 7)
    # the jump across the episode boundary (100 -> 0) is not a jump
    assert s["max_action_jump"][5] == pytest.approx(80.0)
    assert s["max_action_jump"][0] == pytest.approx(10.0)
    np.testing.assert_allclose(s["action"]["mean"], action.mean(0), rtol=1e-6)
    np.testing.assert_allclose(s["state"]["std"], state.std(0), rtol=1e-5)
    assert s["action"]["min"][5] == 0.0 and s["action"]["max"][5] == 100.0
    # start states: (0.5, ...) and (-4.5, ...) -> std 2.5 for joint 0
    assert s["start_state_std"][0] == pytest.approx(2.5)
    assert dsx.epochs(20000, 64, 100832) == pytest.approx(12.695, abs=1e-3)


def test_warnings():
    state, action, ep = synthetic_arrays()
    s = dsx.compute_stats(state, action, ep, gripper_index=5)
    warns = dsx.find_warnings(s, NAMES, steps=100, batch_size=7)
    assert any("wrist_roll.pos" in w and "near-zero std" in w for w in warns)
    epoch_warn = [w for w in warns if "epochs" in w]
    assert len(epoch_warn) == 1 and "100.0 epochs" in epoch_warn[0] and "--steps=5 gives 5 epochs" in epoch_warn[0]
    # 1 epoch: no epoch warning; a moving wrist: no std warning
    action[:, 4] = np.arange(7)
    state[:, 4] = np.arange(7)
    s = dsx.compute_stats(state, action, ep, gripper_index=5)
    assert dsx.find_warnings(s, NAMES, steps=1, batch_size=7) == []
    # a gripper that is never closed is flagged
    action[:, 5] = 50.0
    s = dsx.compute_stats(state, action, ep, gripper_index=5)
    assert any("never closed" in w for w in dsx.find_warnings(s, NAMES, steps=1, batch_size=7))


def test_cli_on_a_lerobot_dataset(synthetic_dataset, tmp_path, capsys):
    png = tmp_path / "hist.png"
    assert dsx.main([str(synthetic_dataset), "--steps", "100", "--batch-size", "7", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "episodes   2    frames 7    fps 10" in out
    assert "'pick up the red block'" in out
    assert "observation.images.camera1 32x32" in out
    assert "gripper closed (action < 10) in 42.9 % of frames" in out
    assert "100.00 epochs" in out and "WARNING" in out and "wrist_roll.pos" in out
    for name in NAMES:
        assert name in out
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_dataset_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # refused by the argument parser (cli_args.lerobot_dataset_dir)
        dsx.main([str(tmp_path / "nothing")])
    assert e.value.code == 2 and "no such dataset folder" in capsys.readouterr().err
