"""The scripted expert picks up the block (a handful of seeded episodes; the 50-episode figure is
in benchmarks/bench_expert.py)."""

import gymnasium as gym
import numpy as np

from so101_sim import envs  # noqa: F401
from so101_sim import so101_mujoco_utils as u
from so101_sim.scripted_expert import ScriptedExpert


def test_expert_succeeds_on_most_seeded_random_episodes():
    env = gym.make("SO101PickPlace-v0", obs_mode="state")
    expert = ScriptedExpert(env.unwrapped.model)
    wins = 0
    for seed in range(100, 106):
        env.reset(seed=seed)
        expert.reset()
        done, info = False, {}
        while not done:
            _, _, term, trunc, info = env.step(expert.act_in_env(env))
            done = term or trunc
        wins += info["is_success"]
        if info["is_success"]:  # success means lifted >= 5 cm and held between both jaws
            assert info["grasped"] and info["block_pos"][2] >= u.BLOCK_HALF_SIZE + 0.05 - 1e-3
    assert wins >= 5


def test_ik_reaches_the_target_with_jaws_down():
    model = u.load_model()
    expert = ScriptedExpert(model)
    target = np.array([0.1, 0.22, 0.05])
    q = expert.solve_ik(u.home_pose_rad(), target, block_yaw=0.0)
    pos, rot = expert.grasp_pose(q)
    np.testing.assert_allclose(pos, target, atol=2e-3)
    assert rot[:, 2] @ np.array([0, 0, 1.0]) > 0.99  # gripper +z up, jaws pointing down
    assert np.all(q >= u.JOINT_LIMITS_RAD[0] - 1e-9) and np.all(q <= u.JOINT_LIMITS_RAD[1] + 1e-9)


def test_expert_commands_bounded_steps_from_the_measured_state():
    env = gym.make("SO101PickPlace-v0", obs_mode="state")
    expert = ScriptedExpert(env.unwrapped.model)
    env.reset(seed=0)
    for _ in range(5):
        q = env.unwrapped.joint_positions
        a = expert.act_in_env(env)
        assert np.abs(a[:5] - q[:5]).max() <= 0.12 + 1e-6
        env.step(a)
