"""The Gymnasium env: API compliance, spaces, determinism, reward terms, errors."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from so101_sim import envs
from so101_sim import so101_mujoco_utils as u
from so101_sim.so101_gym_env import SO101PickPlaceEnv


@pytest.mark.parametrize("env_id", list(envs.MAX_EPISODE_STEPS))
def test_registered_envs_pass_gymnasium_check_env(env_id):
    # the Human variant opens a viewer; headless we check the same env with render_mode=None
    env = gym.make(env_id, render_mode=None, obs_mode="state")
    assert env.spec.max_episode_steps == envs.MAX_EPISODE_STEPS[env_id]
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_check_env_with_images_and_rgb_array():
    env = SO101PickPlaceEnv(render_mode="rgb_array", image_size=64, render_size=(48, 64))
    check_env(env)
    env.close()


def test_observation_spaces_and_image_content():
    env = gym.make("SO101PickPlace-v0", image_size=96)
    obs, info = env.reset(seed=3)
    assert set(obs) == {u.OBS_STATE, *u.IMAGE_KEYS}
    assert obs[u.OBS_STATE].shape == (6,) and obs[u.OBS_STATE].dtype == np.float32
    for key in u.IMAGE_KEYS:
        img = obs[key]
        assert img.shape == (96, 96, 3) and img.dtype == np.uint8
        assert img.std() > 5  # a real picture, not a blank buffer
    # the three cameras see different things
    assert not np.array_equal(obs[u.IMAGE_KEYS[0]], obs[u.IMAGE_KEYS[2]])
    # the top camera sees the red block: some strongly red pixels
    top = obs[u.IMAGE_KEYS[0]].astype(int)
    assert ((top[..., 0] > 150) & (top[..., 1] < 80) & (top[..., 2] < 80)).sum() > 0
    np.testing.assert_allclose(obs[u.OBS_STATE], u.home_pose_rad(), atol=0.02)
    env.close()


def _rollout(seed, actions, **kw):
    env = gym.make("SO101PickPlace-v0", obs_mode="state", include_env_state=True, **kw)
    obs, _ = env.reset(seed=seed)
    out = [obs[u.OBS_STATE].copy(), obs[u.OBS_ENV_STATE].copy()]
    rewards = []
    for a in actions:
        obs, r, *_ = env.step(a)
        out += [obs[u.OBS_STATE].copy(), obs[u.OBS_ENV_STATE].copy()]
        rewards.append(r)
    env.close()
    return np.concatenate(out), np.array(rewards)


def test_same_seed_same_actions_identical_observations():
    rng = np.random.default_rng(0)
    actions = u.clip_to_joint_limits(u.home_pose_rad() + rng.normal(0, 0.3, (15, 6))).astype(np.float32)
    a, ra = _rollout(7, actions)
    b, rb = _rollout(7, actions)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ra, rb)
    c, _ = _rollout(8, actions)  # another seed puts the block elsewhere
    assert not np.array_equal(a, c)


def test_block_placement_follows_the_polar_ranges():
    env = gym.make("SO101PickPlace-v0", obs_mode="state")
    for seed in range(20):
        _, info = env.reset(seed=seed)
        x, y, z = info["block_pos"]
        dist, ang = np.hypot(x, y), np.degrees(np.arctan2(-x, y))
        assert 0.1 - 1e-3 <= dist <= 0.3 + 1e-3 and -60.5 <= ang <= 60.5
        assert z == pytest.approx(u.BLOCK_HALF_SIZE, abs=1e-3)
    fixed = gym.make("SO101PickPlaceNoRandom-v0", obs_mode="state")
    _, info = fixed.reset(seed=5)
    np.testing.assert_allclose(info["block_pos"], u.BLOCK_DEFAULT_POS, atol=1e-3)


def test_reward_is_the_sum_of_named_terms_and_terms_match_their_definitions():
    env = gym.make("SO101PickPlace-v0", obs_mode="state")
    env.reset(seed=1)
    base = env.unwrapped
    rng = np.random.default_rng(1)
    prev = np.linalg.norm(base.data.site_xpos[base.ids.gripper_site] - base.initial_block_pos)
    for _ in range(10):
        action = u.clip_to_joint_limits(base.joint_positions + rng.normal(0, 0.2, 6)).astype(np.float32)
        _, reward, _, _, info = env.step(action)
        terms = {k[len("reward_"):]: v for k, v in info.items() if k.startswith("reward_")}
        assert set(terms) == set(u.REWARD_TERMS)
        assert reward == pytest.approx(sum(terms.values()))
        dist = np.linalg.norm(base.data.site_xpos[base.ids.gripper_site] - base.initial_block_pos)
        assert terms["distance"] == pytest.approx(-2.0 * dist)
        assert terms["approach"] == pytest.approx(5.0 * (prev - dist))
        prev = dist
    env.close()


def test_reward_terms_wrapper_sums_only_the_chosen_terms_and_rejects_unknown_names():
    from so101_sim.so101_gym_env import RewardTermsWrapper

    full = gym.make("SO101PickPlace-v0", obs_mode="state")
    part = RewardTermsWrapper(gym.make("SO101PickPlace-v0", obs_mode="state"), ("distance", "success"))
    full.reset(seed=4)
    part.reset(seed=4)
    rng = np.random.default_rng(4)
    for _ in range(5):
        action = rng.uniform(*u.JOINT_LIMITS_RAD).astype(np.float32)
        _, r_full, *_, info_full = full.step(action)
        _, r_part, *_, info_part = part.step(action)
        assert {k: v for k, v in info_part.items() if k != "block_pos"} == pytest.approx(
            {k: v for k, v in info_full.items() if k != "block_pos"})  # same episode, info untouched
        assert r_part == pytest.approx(info_full["reward_distance"] + info_full["reward_success"])
        assert r_part != pytest.approx(r_full)  # the approach/proximity terms are left out
    for bad in ((), ("succes",)):
        with pytest.raises(ValueError, match="reward terms"):
            RewardTermsWrapper(gym.make("SO101PickPlace-v0", obs_mode="state"), bad)


def test_repeat_block_wrapper_starts_groups_of_episodes_from_the_same_block_position():
    from so101_sim.so101_gym_env import RepeatBlockWrapper

    env = RepeatBlockWrapper(gym.make("SO101PickPlace-v0", obs_mode="state", include_env_state=True), 3)
    key = u.OBS_ENV_STATE
    starts, groups = [], []
    for i in range(7):
        obs, info = env.reset(seed=11 if i == 0 else None)
        starts.append(obs[key][:3])
        groups.append(info["group_episode"])
        env.step(env.action_space.sample())  # the block may move during the episode; not the next start
    assert groups == [0, 1, 2, 0, 1, 2, 0]
    for a, b in ((0, 1), (0, 2), (3, 4), (3, 5)):
        np.testing.assert_allclose(starts[a], starts[b], atol=1e-6)
    assert np.linalg.norm(starts[0][:2] - starts[3][:2]) > 1e-3 and np.linalg.norm(starts[3][:2] - starts[6][:2]) > 1e-3
    fresh = gym.make("SO101PickPlace-v0", obs_mode="state", include_env_state=True)
    np.testing.assert_allclose(fresh.reset(seed=11)[0][key][:3], starts[0], atol=1e-6)  # group 0 = the seeded reset
    obs, info = env.reset(seed=11)  # a seeded reset starts a new group
    assert info["group_episode"] == 0
    with pytest.raises(ValueError, match="repeats"):
        RepeatBlockWrapper(fresh, 0)


def test_block_polar_inverts_the_placement_and_bins_follow_the_edges():
    rng = np.random.default_rng(0)
    d_edges, a_edges = u.block_bin_edges(4, 3)
    assert d_edges.tolist() == pytest.approx([0.10, 0.15, 0.20, 0.25, 0.30])
    assert a_edges.tolist() == pytest.approx([-60.0, -20.0, 20.0, 60.0])
    for _ in range(50):
        state = rng.bit_generator.state
        pos = u.sample_block_position(rng)
        rng2 = np.random.default_rng()
        rng2.bit_generator.state = state
        dist, ang = rng2.uniform(*u.BLOCK_DISTANCE_RANGE), rng2.uniform(*u.BLOCK_ANGLE_RANGE_DEG)
        assert u.block_polar(pos) == pytest.approx((dist, ang))  # same draws, recovered from x, y
        i = int(dist // 0.05) - 2  # 0.10-0.15 m -> 0, ...
        j = 0 if ang < -20 else (1 if ang < 20 else 2)
        assert u.block_bin(pos, 4, 3) == i * 3 + j
    assert u.block_bin([0.0, 0.05, 0.0], 4, 3) == 1  # closer than the range, straight ahead: nearest bin
    with pytest.raises(ValueError, match="bin"):
        u.block_bin_edges(0, 3)


def test_block_curriculum_wrapper_places_blocks_in_the_weighted_bins_reproducibly():
    from so101_sim.so101_gym_env import BlockCurriculumWrapper

    def make():
        return BlockCurriculumWrapper(gym.make("SO101PickPlace-v0", obs_mode="state", include_env_state=True), 4, 3)

    env, plain = make(), gym.make("SO101PickPlace-v0", obs_mode="state", include_env_state=True)
    key = u.OBS_ENV_STATE
    # no weights: the env's own placement, and the bin is reported
    obs, info = env.reset(seed=7)
    np.testing.assert_allclose(obs[key], plain.reset(seed=7)[0][key])
    assert info["block_bin"] == u.block_bin(obs[key][:3], 4, 3)
    # one-hot weights on bin 5 (0.15-0.20 m, 20-60 deg): every episode starts there, step infos too
    w = np.zeros(12)
    w[5] = 3.0
    starts = []
    for k in range(6):
        obs, info = env.reset(seed=21 if k == 0 else None, options={"block_bin_weights": w} if k == 0 else None)
        dist, ang = u.block_polar(obs[key][:3])
        assert 0.15 <= dist <= 0.20 and 20.0 <= ang <= 60.0 and info["block_bin"] == 5
        assert env.step(env.action_space.sample())[-1]["block_bin"] == 5
        starts.append(obs[key][:2])
    assert len({tuple(np.round(s, 6)) for s in starts}) == 6  # different positions inside the bin
    # two bins with weights 1:3 -> about a quarter of the episodes in the first
    again = make()
    w2 = np.zeros(12)
    w2[0], w2[11] = 1.0, 3.0
    bins = [again.reset(seed=3 if k == 0 else None, options={"block_bin_weights": w2} if k == 0 else None)[1]["block_bin"]
            for k in range(200)]
    assert set(bins) == {0, 11} and 0.15 < bins.count(0) / 200 < 0.35
    # same seed and weights -> the same positions on a fresh env
    fresh = make()
    for k in range(6):
        obs, _ = fresh.reset(seed=21 if k == 0 else None, options={"block_bin_weights": w} if k == 0 else None)
        np.testing.assert_allclose(obs[key][:2], starts[k])
    for bad in (np.zeros(12), np.ones(11), -np.ones(12), np.full(12, np.nan)):
        with pytest.raises(ValueError, match="block_bin_weights"):
            fresh.reset(options={"block_bin_weights": bad})


def test_block_curriculum_weights_favour_the_bins_with_lower_success():
    from so101_sim.reinflow_rollout import BlockCurriculum

    cur = BlockCurriculum((1, 3), uniform=0.4, decay=0.5)
    np.testing.assert_allclose(cur.weights(), np.full(3, 1 / 3))  # no episodes yet: uniform
    cur.update([0, 0, 0, 1, 1, 1, 1], [True, True, True, True, False, False, False])
    cur.update([0, 1], [True, False])
    succ, eps = np.array([0.5 * 3 + 1, 0.5 * 1 + 0, 0]), np.array([0.5 * 3 + 1, 0.5 * 4 + 1, 0])
    np.testing.assert_allclose(cur.success_estimates(), (succ + 1) / (eps + 2))
    fail = 1 - (succ + 1) / (eps + 2)
    np.testing.assert_allclose(cur.weights(), 0.4 / 3 + 0.6 * fail / fail.sum())
    assert cur.weights().sum() == pytest.approx(1.0) and cur.weights()[1] > cur.weights()[2] > cur.weights()[0]
    back = BlockCurriculum.from_state_dict(cur.state_dict())
    assert back.bins == (1, 3) and back.n_bins == 3
    np.testing.assert_array_equal(back.weights(), cur.weights())
    for bad in (((0, 3), 0.3, 0.5), ((3,), 0.3, 0.5), ((1, 3), 1.5, 0.5), ((1, 3), 0.3, 1.0)):
        with pytest.raises(ValueError):
            BlockCurriculum(*bad)


def test_displacement_penalty_and_success_flag_from_the_reward_function():
    init = np.array([0.0, 0.3, 0.0125])
    terms, success, _ = u.compute_reward_terms(init + [0, 0, 0.1], init + [0.1, 0, 0], init, 0.1, False)
    assert terms["displacement"] == pytest.approx(-5.0 * np.expm1(20.0 * 0.05))
    assert not success and terms["success"] == 0
    terms, success, _ = u.compute_reward_terms(init + [0, 0, 0.06], init + [0, 0, 0.06], init, 0.1, True)
    assert success and terms["success"] == 50.0 and terms["height"] == pytest.approx(20 * 0.05)
    _, lifted_not_held, _ = u.compute_reward_terms(init, init + [0, 0, 0.06], init, 0.1, False)
    assert not lifted_not_held


def test_episode_is_truncated_at_the_registered_length():
    env = gym.make("SO101PickPlace-v0", obs_mode="state", max_episode_steps=5)
    env.reset(seed=0)
    hold = u.home_pose_rad().astype(np.float32)
    flags = [env.step(hold)[3] for _ in range(5)]
    assert flags == [False] * 4 + [True]


def test_nan_action_and_wrong_shape_raise():
    env = SO101PickPlaceEnv(obs_mode="state")
    env.reset(seed=0)
    bad = u.home_pose_rad().astype(np.float32)
    bad[2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        env.step(bad)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="Unknown camera"):
        SO101PickPlaceEnv(render_camera="nope")


def test_actions_are_clipped_to_the_joint_limits():
    env = SO101PickPlaceEnv(obs_mode="state")
    env.reset(seed=0)
    env.step(np.full(6, 10.0, np.float32))
    np.testing.assert_allclose(env.data.ctrl[env.ids.actuator_ids], u.JOINT_LIMITS_RAD[1])


def test_smolvla_normalized_mode_round_trips_state_and_actions():
    env = SO101PickPlaceEnv(obs_mode="state", smolvla_normalize=True)
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(obs[u.OBS_STATE], u.normalize_state_for_smolvla(env.joint_positions), rtol=1e-5)
    target = u.home_pose_rad()
    target[0] = 0.3
    env.step(u.normalize_action_for_smolvla(target).astype(np.float32))
    np.testing.assert_allclose(env.data.ctrl[env.ids.actuator_ids], target, atol=1e-5)


# ----------------------------------------------------------------------------- control rate, cameras, image size
def test_30hz_substeps_track_the_control_clock_and_10hz_is_unchanged():
    dt = u.PHYSICS_TIMESTEP
    assert [u.substep_schedule(30, k) for k in range(6)] == [17, 16, 17, 17, 16, 17]
    assert all(u.substep_schedule(10, k) == u.PHYSICS_SUBSTEPS == 50 for k in range(2000))
    env = SO101PickPlaceEnv(obs_mode="state", control_hz=30)
    assert env.metadata["render_fps"] == 30 and SO101PickPlaceEnv.metadata["render_fps"] == 10
    env.reset(seed=0)
    t0, hold = env.data.time, u.home_pose_rad().astype(np.float32)
    for k in range(1, 91):
        env.step(hold)
        assert abs((env.data.time - t0) - k / 30) <= dt / 2 + 1e-9, k  # never more than half a physics step off
        if k % 3 == 0:
            assert env.data.time - t0 == pytest.approx(k / 30, abs=1e-9)  # 3 steps = exactly 0.1 s
    assert env.data.time - t0 == pytest.approx(3.0, abs=1e-9)
    # 10 Hz: one env step is exactly mj_step x 50 from the same state (bit-identical)
    env10 = SO101PickPlaceEnv(obs_mode="state")
    assert env10.control_hz == 10 and env10.metadata["render_fps"] == 10
    env10.reset(seed=2)
    twin = mujoco_copy(env10)
    target = u.clip_to_joint_limits(u.home_pose_rad() + 0.2).astype(np.float32)
    twin.ctrl[env10.ids.actuator_ids] = u.clip_to_joint_limits(np.asarray(target, np.float64))
    u.mujoco.mj_step(env10.model, twin, nstep=50)
    env10.step(target)
    np.testing.assert_array_equal(env10.data.qpos, twin.qpos)
    assert env10.data.time == twin.time


def mujoco_copy(env):
    data = u.mujoco.MjData(env.model)
    u.mujoco.mj_copyData(data, env.model, env.data)
    return data


def test_30hz_env_passes_check_env_with_non_square_custom_cameras():
    env = SO101PickPlaceEnv(control_hz=30, image_size=(32, 48), cameras={"front": "camera_up", "wrist": "wrist_camera"})
    check_env(env, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("bad", [0, -10, 501, float("nan"), float("inf"), "fast"])
def test_bad_control_rates_are_refused(bad):
    with pytest.raises(ValueError, match="control_hz"):
        SO101PickPlaceEnv(obs_mode="state", control_hz=bad)
    with pytest.raises(ValueError, match="control_hz"):
        u.substep_schedule(bad, 0)
    assert u.substep_schedule(500, 7) == 1  # one physics step per control step is the limit


def test_non_square_images_and_the_image_size_attribute():
    env = SO101PickPlaceEnv(image_size=(48, 64))
    obs, _ = env.reset(seed=3)
    assert env.image_hw == (48, 64) and env.image_size == (48, 64)
    for key in u.IMAGE_KEYS:
        assert obs[key].shape == (48, 64, 3) and obs[key].dtype == np.uint8 and obs[key].std() > 5
        assert env.observation_space[key].shape == (48, 64, 3)
    env.close()
    square = SO101PickPlaceEnv(obs_mode="state", image_size=40)
    assert square.image_size == 40 and square.image_hw == (40, 40)
    # the largest image is the scene's offscreen buffer
    assert (square.model.vis.global_.offheight, square.model.vis.global_.offwidth) == u.MAX_IMAGE_HW == (480, 640)
    for bad in ((481, 640), (480, 641), (0, 10), (10, 20, 3), 12.5, "big"):
        with pytest.raises(ValueError, match="image_size"):
            SO101PickPlaceEnv(obs_mode="state", image_size=bad)


def test_custom_camera_names_render_the_named_cameras():
    named = SO101PickPlaceEnv(image_size=32, cameras={"front": "camera_up", "wrist": "camera2"})
    default = SO101PickPlaceEnv(image_size=32)
    obs, _ = named.reset(seed=5)
    ref, _ = default.reset(seed=5)
    assert set(obs) == {u.OBS_STATE, "observation.images.front", "observation.images.wrist"}
    assert named.cameras == {"front": "camera_up", "wrist": "wrist_camera"}
    assert named.image_keys == ("observation.images.front", "observation.images.wrist")
    np.testing.assert_array_equal(obs["observation.images.front"], ref["observation.images.camera1"])  # camera_up
    np.testing.assert_array_equal(obs["observation.images.wrist"], ref["observation.images.camera2"])  # wrist_camera
    assert set(named.render_cameras()) == set(named.image_keys)
    named.close()
    default.close()


def test_unknown_or_badly_named_cameras_raise():
    with pytest.raises(ValueError, match=r"Unknown camera 'nope'.*camera_up.*wrist_camera.*camera_side"):
        SO101PickPlaceEnv(obs_mode="state", cameras={"front": "nope"})
    for bad in ({}, {"a.b": "camera_up"}, {"": "camera_up"}, {"a b": "camera_up"}):
        with pytest.raises(ValueError, match="camera"):
            SO101PickPlaceEnv(obs_mode="state", cameras=bad)
