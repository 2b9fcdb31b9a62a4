"""analyze_predictions.py: per-joint statistics, collapse flags, files, on a synthetic dataset."""

import json

import numpy as np
import pytest

from so101_sim import analyze_predictions as ap
from so101_sim import so101_mujoco_utils as u

FPS = 10


@pytest.fixture(scope="module")
def synthetic_dataset(tmp_path_factory):
    """4 episodes of smooth joint motion (LeRobot units); action(t) = state(t+1)."""
    from lerobot.datasets import LeRobotDataset

    root = tmp_path_factory.mktemp("ds") / "synthetic"
    names = list(u.LEROBOT_MOTOR_NAMES)
    features = {"observation.state": {"dtype": "float32", "shape": (6,), "names": names},
                "action": {"dtype": "float32", "shape": (6,), "names": names}}
    ds = LeRobotDataset.create(repo_id="local/synthetic", fps=FPS, features=features, root=root,
                               robot_type="so101_follower", use_videos=False)
    rng = np.random.default_rng(0)
    for _ep in range(4):
        phase = rng.uniform(0, 2 * np.pi, 6)
        t = np.arange(41) / FPS
        traj = 20 * np.sin(1.3 * t[:, None] + phase) + np.array([0, -30, 40, 20, 0, 0])
        traj[:, 5] = 50 + 40 * np.sin(0.9 * t + phase[5])  # gripper 10..90
        for i in range(40):
            ds.add_frame({"observation.state": traj[i].astype(np.float32),
                          "action": traj[i + 1].astype(np.float32), "task": "pick up the red block"})
        ds.save_episode()
    ds.finalize()
    return LeRobotDataset("local/synthetic", root=root)


class EchoPolicy:
    """Predicts the observed state (a good predictor of the next state) for every joint except
    ``constant_joint``, for which it always predicts the same value (a collapsed joint)."""

    def __init__(self, constant_joint=2):
        self.j = constant_joint
        self.calls = 0

    def predict_action_chunk(self, observation, task=None):
        self.calls += 1
        q = np.array(observation[u.OBS_STATE], dtype=np.float64)
        q[self.j] = 0.1  # radians, whatever the input
        return np.repeat(q[None], 5, axis=0).astype(np.float32)


def test_constant_joint_is_flagged_and_the_others_are_not(synthetic_dataset, tmp_path):
    policy = EchoPolicy(constant_joint=2)
    result = ap.analyze(policy, synthetic_dataset, tmp_path, split_episodes=1, make_plots=True)
    assert result["collapsed_joints"] == ["elbow_flex"]
    assert result["val"]["collapsed"] == [False, False, True, False, False, False]
    assert result["train_episodes"] == [0, 1, 2] and result["val_episodes"] == [3]
    assert policy.calls == synthetic_dataset.num_frames
    for name in ("statistics.json", "predictions.npz", "scatter_val.png", "scatter_train.png",
                 "timeseries_val.png", "timeseries_train.png", "error_histograms.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "statistics.json").read_text())["collapsed_joints"] == ["elbow_flex"]


def test_r2_and_errors_match_an_independent_computation(synthetic_dataset, tmp_path):
    result = ap.analyze(EchoPolicy(), synthetic_dataset, tmp_path, split_episodes=1, make_plots=False)
    data = np.load(tmp_path / "predictions.npz")
    pred, gt, obs = data["val_pred"], data["val_gt"], data["val_obs"]
    assert pred.shape == gt.shape == obs.shape == (40, 6)
    # ground truth read back independently from the parquet file of the dataset
    frames = synthetic_dataset.hf_dataset.with_format("numpy")
    ep = np.asarray(frames["episode_index"])
    np.testing.assert_allclose(gt, np.asarray(frames["action"])[ep == 3], atol=1e-5)
    # the echo policy predicts the observed state, converted to radians and back
    expected = obs.copy()
    expected[:, 2] = np.degrees(0.1)
    np.testing.assert_allclose(pred, expected, atol=1e-3)
    for j in range(6):
        resid = gt[:, j] - pred[:, j]
        r2 = 1 - np.mean(resid**2) / np.var(gt[:, j])
        assert result["val"]["mean_abs_error"][j] == pytest.approx(np.mean(np.abs(resid)), rel=1e-6)
        assert result["val"]["max_abs_error"][j] == pytest.approx(np.max(np.abs(resid)), rel=1e-6)
        assert result["val"]["r2"][j] == pytest.approx(r2, rel=1e-6, abs=1e-9)
    assert result["val"]["r2"][0] > 0.8  # tracking joints really track


def test_likely_causes_name_a_joint_that_barely_moves(synthetic_dataset):
    import copy

    ds = copy.copy(synthetic_dataset)
    ds.meta = copy.copy(synthetic_dataset.meta)
    stats = copy.deepcopy(synthetic_dataset.meta.stats)
    stats["action"]["std"] = np.array([10, 10, 0.5, 10, 10, 10.0])
    ds.meta.stats = stats
    causes = ap.likely_causes(2, ds, EchoPolicy())
    assert any("elbow_flex" in c and "barely moves" in c for c in causes)
    assert ap.likely_causes(0, ds, EchoPolicy()) == []


def test_unknown_episode_is_a_clear_error(synthetic_dataset, tmp_path):
    with pytest.raises(ValueError, match=r"episodes \[9\] are not in the dataset"):
        ap.analyze(EchoPolicy(), synthetic_dataset, tmp_path, episodes=[0, 9])
