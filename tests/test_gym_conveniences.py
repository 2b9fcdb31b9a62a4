"""Gymnasium's own tools on the installed ids: check_env with default arguments (headless),
RecordVideo, and gym.make_vec in both vectorization modes; the LeRobot view passes check_env too."""

import warnings

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
from gymnasium.utils.env_checker import check_env

from so101_sim import so101_mujoco_utils as u
from so101_sim.lerobot_env import LeRobotConvention
from so101_sim.so101_gym_env import SO101PickPlaceEnv

ENV_ID = "so101_sim/SO101PickPlace-v0"


def test_check_env_default_arguments_headless():
    env = gym.make(ENV_ID)  # images, default size; headless the instance lists only rgb_array
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Gymnasium's advice on unbounded Box spaces
        check_env(env.unwrapped)
    env.close()


def test_lerobot_convention_passes_check_env_and_matches_the_env():
    env = LeRobotConvention(SO101PickPlaceEnv(image_size=(24, 32), cameras={"front": "camera_up", "wrist": "camera2"}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=5)
    assert set(obs) == {"agent_pos", "pixels"} and set(obs["pixels"]) == {"front", "wrist"}
    assert obs["pixels"]["front"].shape == (24, 32, 3) and obs["agent_pos"].dtype == np.float32
    q = env.unwrapped.joint_positions
    np.testing.assert_allclose(obs["agent_pos"], u.mujoco_to_lerobot(q.astype(np.float32)), rtol=1e-6)
    # an action in calibrated degrees reaches the actuators as the same target in radians
    target = (u.HOME_POSE_LEROBOT + np.array([10.0, -5.0, 5.0, 0.0, 3.0, 20.0])).astype(np.float32)
    env.step(target)
    np.testing.assert_allclose(env.unwrapped.data.ctrl[env.unwrapped.ids.actuator_ids],
                               u.clip_to_joint_limits(u.lerobot_to_mujoco(target)), atol=1e-6)
    env.close()


def test_record_video_writes_every_frame(tmp_path):
    env = gym.make(ENV_ID, render_mode="rgb_array", obs_mode="state", render_size=(64, 96), max_episode_steps=6)
    env = gym.wrappers.RecordVideo(env, str(tmp_path / "videos"), episode_trigger=lambda ep: True, disable_logger=True)
    env.reset(seed=1)
    done = False
    while not done:
        _, _, term, trunc, _ = env.step(env.unwrapped.joint_positions)  # hold the pose
        done = term or trunc
    env.close()
    videos = sorted((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 1
    frames = iio.imread(videos[0])
    assert frames.shape == (7, 64, 96, 3)  # the reset frame + 6 steps


def test_make_vec_sync_and_async_give_the_same_batch():
    out = {}
    for mode in ("sync", "async"):
        vec = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode=mode, obs_mode="state")
        obs, info = vec.reset(seed=[11, 12])
        assert obs[u.OBS_STATE].shape == (2, u.NUM_JOINTS)
        action = np.stack([vec.single_action_space.low + 0.3 * (vec.single_action_space.high - vec.single_action_space.low)] * 2)
        obs, reward, term, trunc, info = vec.step(action)
        assert reward.shape == (2,) and info["block_pos"].shape == (2, 3)
        out[mode] = (obs[u.OBS_STATE], reward, info["block_pos"])
        vec.close()
    for a, b in zip(out["sync"], out["async"]):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(out["sync"][2][0], out["sync"][2][1])  # seeds 11 and 12 place different blocks
