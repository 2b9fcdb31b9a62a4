"""record_dataset.py --schema so101_follower writes exactly what a real SO-101 writes with
``lerobot-record --robot.type=so101_follower`` and two 640x480 cameras, so a sim dataset merges with
a real one through LeRobot's ``aggregate_datasets``.

The real-robot side is derived without hardware (record_dataset.real_robot_features, as LeRobot's
lerobot_record.py does it). The sim dataset is recorded once per module with the full preset
(480x640, 30 fps) but only 5 frames per episode (--max-steps 5 --keep-failed): rendering and
encoding two 480x640 cameras is the slow part on a small CPU.
"""

import json

import numpy as np
import pytest

from so101_sim import record_dataset as rd
from so101_sim import so101_mujoco_utils as u

SIM_ID, REAL_ID, MERGED_ID = "local/test_sim_real_schema", "local/test_real_so101", "local/test_merged"
PRESET = ["--schema", "so101_follower"]
FRAMES = 5  # per sim episode
REAL_FRAMES = 3


def _schema(features: dict) -> dict:
    """A dataset's own features (LeRobot's index columns left out), each as (dtype, shape, names,
    is_depth_map): what lerobot-record chooses, not what the video encoder adds after encoding."""
    from lerobot.utils.constants import DEFAULT_FEATURES

    return {key: (ft["dtype"], tuple(ft["shape"]), None if ft["names"] is None else list(ft["names"]),
                  (ft.get("info") or {}).get("is_depth_map"))
            for key, ft in features.items() if key not in DEFAULT_FEATURES}


@pytest.fixture(scope="module")
def real_features():
    return rd.real_robot_features()


@pytest.fixture(scope="module")
def sim_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim") / "sim_preset"
    assert rd.main(["--input", "scripted", "--output_dir", str(root), "--num_episodes", "2", "--repo-id", SIM_ID,
                    "--seed", "0", "--max-steps", str(FRAMES), "--keep-failed", *PRESET]) == 0
    return root


@pytest.fixture(scope="module")
def real_root(tmp_path_factory, real_features):
    """A tiny 'real' dataset: LeRobotDataset.create with the real robot's features, fps and
    robot_type, one episode of REAL_FRAMES synthetic frames (state[0] = 77, 78, 79)."""
    from lerobot.datasets import LeRobotDataset
    from lerobot.robots.so_follower import SO101Follower

    root = tmp_path_factory.mktemp("real") / "real"
    ds = LeRobotDataset.create(REAL_ID, fps=rd.REAL_FPS, features=real_features, root=root,
                               robot_type=SO101Follower.name, use_videos=True)
    for i in range(REAL_FRAMES):
        state = np.full(6, 10.0, np.float32)
        state[0] = 77.0 + i
        frame = {"observation.state": state, "action": state.copy(), "task": "real task"}
        for key in ("observation.images.front", "observation.images.wrist"):
            frame[key] = np.full((*rd.REAL_IMAGE_HW, 3), 40 * (i + 1), np.uint8)
        ds.add_frame(frame)
    ds.save_episode()
    ds.finalize()
    return root


def test_robot_type_is_what_lerobots_so101_follower_reports(tmp_path):
    from lerobot.robots.so_follower import SO101Follower, SO101FollowerConfig
    from lerobot.robots.utils import make_robot_from_config

    assert rd.ROBOT_TYPE == SO101Follower.name == "so_follower"
    # what lerobot-record --robot.type=so101_follower builds (and writes as robot_type)
    robot = make_robot_from_config(SO101FollowerConfig(port="/dev/null", calibration_dir=tmp_path))
    assert type(robot) is SO101Follower
    assert robot.name == rd.ROBOT_TYPE
    assert rd.parse_args(["--input", "scripted", *PRESET]).robot_type == rd.ROBOT_TYPE


def test_the_preset_features_are_exactly_the_real_robots(real_features):
    args = rd.parse_args(["--input", "scripted", *PRESET])
    assert (args.fps, args.image_size, args.cameras) == (30, (480, 640), {"front": "camera_up", "wrist": "wrist_camera"})
    assert rd.features_for(args) == real_features  # the same dict: names, dtypes, shapes, info
    assert set(real_features) == {"action", "observation.state", "observation.images.front", "observation.images.wrist"}
    for key in ("observation.images.front", "observation.images.wrist"):
        assert real_features[key]["dtype"] == "video" and tuple(real_features[key]["shape"]) == (480, 640, 3)
    assert real_features["action"]["names"] == list(u.LEROBOT_MOTOR_NAMES)
    # explicit flags override the preset; the features follow them
    small = rd.parse_args(["--input", "scripted", *PRESET, "--image-size", "48x64", "--fps", "15"])
    assert (small.fps, small.image_size) == (15, (48, 64))
    assert rd.features_for(small)["observation.images.wrist"]["shape"] == (48, 64, 3)
    # the default sim schema is not the real one (camera1..3 and the seed column)
    assert set(rd.features_for(rd.parse_args(["--input", "scripted"]))) == {"action", "observation.state", u.EPISODE_SEED,
                                                                           *u.IMAGE_KEYS}


def test_a_preset_recording_has_the_real_schema_fps_and_robot_type(sim_root, real_features, real_root):
    from lerobot.datasets import LeRobotDatasetMetadata

    sim = LeRobotDatasetMetadata(SIM_ID, root=sim_root)
    real = LeRobotDatasetMetadata(REAL_ID, root=real_root)
    assert sim.fps == real.fps == 30 and sim.robot_type == real.robot_type == rd.ROBOT_TYPE
    assert _schema(sim.features) == _schema(real.features) == _schema(real_features)
    assert sim.features == real.features  # index columns and the encoder's settings too
    assert sim.total_episodes == 2 and sim.total_frames == 2 * FRAMES
    # the sidecar keeps what a policy needs to run in the sim with the same cameras and rate
    meta = json.loads((sim_root / rd.RECORDING_META).read_text())
    assert meta["camera_map"] == {"front": "camera_up", "wrist": "wrist_camera"}
    assert meta["control_hz"] == meta["fps"] == 30 and meta["image_hw"] == [480, 640]
    assert meta["schema"] == "so101_follower" and [e["seed"] for e in meta["episodes"]] == [0, 1]


def test_sim_and_real_datasets_merge_with_lerobots_aggregate(sim_root, real_root, tmp_path):
    from lerobot.datasets import LeRobotDataset
    from lerobot.datasets.aggregate import aggregate_datasets

    merged_root = tmp_path / "merged"
    aggregate_datasets([SIM_ID, REAL_ID], MERGED_ID, roots=[sim_root, real_root], aggr_root=merged_root)
    sim = LeRobotDataset(SIM_ID, root=sim_root, video_backend="pyav")
    merged = LeRobotDataset(MERGED_ID, root=merged_root, video_backend="pyav")
    assert merged.num_episodes == 2 + 1 and merged.num_frames == 2 * FRAMES + REAL_FRAMES
    assert merged.fps == 30 and merged.meta.robot_type == rd.ROBOT_TYPE
    assert set(merged.meta.tasks.index) == {u.DEFAULT_TASK, "real task"}
    cols = merged.hf_dataset.with_format("numpy")[:]
    state, episode = np.stack(cols["observation.state"]), np.asarray(cols["episode_index"])
    # the sim frames, as recorded
    sim_state = np.stack(sim.hf_dataset.with_format("numpy")[:]["observation.state"])
    np.testing.assert_array_equal(state[episode < 2], sim_state)
    # the real frames: state[0] = 77, 78, 79 in the last episode
    np.testing.assert_array_equal(state[episode == 2][:, 0], [77.0, 78.0, 79.0])
    # both sources' videos decode from the merged dataset
    first_sim, last_real = merged[0], merged[merged.num_frames - 1]
    assert last_real["task"] == "real task" and first_sim["task"] == u.DEFAULT_TASK
    img = last_real["observation.images.front"]
    assert tuple(img.shape) == (3, 480, 640) and float(img.mean()) == pytest.approx(120 / 255, abs=0.03)
    own = sim[0]["observation.images.wrist"]
    assert tuple(own.shape) == (3, 480, 640)
    np.testing.assert_allclose(first_sim["observation.images.wrist"].numpy(), own.numpy(), atol=1e-6)
