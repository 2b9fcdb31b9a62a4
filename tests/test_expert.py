"""The scripted expert picks up the block: seeded episodes, the edges of the spawn region, seeds the
previous expert missed, determinism, regrasps after failed grasps, and record_dataset's summary of
discarded episodes (the 500-seed figure is in benchmarks/bench_expert.py and
docs/experiments/2026-12-01-scripted-expert-99.md)."""

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest

from so101_sim import envs  # noqa: F401
from so101_sim import so101_mujoco_utils as u
from so101_sim import scripted_expert as se
from so101_sim.scripted_expert import ScriptedExpert

#: Fresh seeds (so101_mujoco_utils.SEED_RANGES["fresh"]) the expert of commit e6d8b29 failed, with
#: the block's (distance m, angle deg): its failures were near the base and in the far corners.
OLD_FAILURES = {50152: (0.100, 0.0), 50350: (0.100, 0.7), 50463: (0.100, -37.0), 50126: (0.104, -30.5),
                50224: (0.111, -32.3), 50375: (0.101, 12.8), 50129: (0.294, -50.1), 50484: (0.299, -57.2)}


@pytest.fixture(scope="module")
def env():
    e = gym.make("SO101PickPlace-v0", obs_mode="state")
    yield e
    e.close()


def run(env, expert, seed=None, block=None, intervene=None, max_steps=150):
    """One episode; returns (info of the last step, actions (T, 6), phases seen in order)."""
    env.reset(seed=seed, options=None if block is None else {"block_pos": block})
    expert.reset()
    actions, phases, info = [], [], {}
    for _ in range(max_steps):
        a = expert.act_in_env(env)
        actions.append(a)
        if not phases or phases[-1] != expert.phase:
            phases.append(expert.phase)
        _, _, term, trunc, info = env.step(a)
        if intervene is not None:
            intervene(env, expert)
        if term or trunc:
            break
    return info, np.array(actions), phases


def polar_block(distance, angle_deg):
    a = np.radians(angle_deg)
    return np.array([-distance * np.sin(a), distance * np.cos(a), u.BLOCK_HALF_SIZE])


def test_expert_succeeds_on_most_seeded_random_episodes(env):
    expert = ScriptedExpert(env.unwrapped.model)
    wins = 0
    for seed in range(100, 106):
        info, _, _ = run(env, expert, seed)
        wins += info["is_success"]
        if info["is_success"]:  # success means lifted >= 5 cm and held between both jaws
            assert info["grasped"] and info["block_pos"][2] >= u.BLOCK_HALF_SIZE + 0.05 - 1e-3
    assert wins >= 5


@pytest.mark.parametrize("seed", sorted(OLD_FAILURES))
def test_expert_succeeds_on_seeds_the_previous_expert_missed(env, seed):
    expert = ScriptedExpert(env.unwrapped.model)
    info, _, _ = run(env, expert, seed)
    assert np.allclose(u.block_polar(env.unwrapped.initial_block_pos), OLD_FAILURES[seed], atol=(1e-3, 0.1))
    assert info["is_success"], f"seed {seed}: block at {OLD_FAILURES[seed]} (m, deg) not picked up"


@pytest.mark.parametrize("distance,angle", [(0.10, 0.0), (0.10, -30.0), (0.10, 45.0), (0.10, 60.0), (0.11, -60.0),
                                            (0.30, 60.0), (0.30, -60.0), (0.30, 0.0)])
def test_expert_picks_blocks_at_the_edges_of_the_spawn_region(env, distance, angle):
    expert = ScriptedExpert(env.unwrapped.model)
    info, _, _ = run(env, expert, seed=0, block=polar_block(distance, angle))
    assert info["is_success"], f"block at {distance} m, {angle} deg not picked up"


def test_every_corner_of_the_spawn_region_has_a_collision_free_top_down_grasp():
    """plan() finds a grasp (IK residual < MAX_GRASP_RESIDUAL, jaws within the planned tilt) at the
    extremes of BLOCK_DISTANCE_RANGE x BLOCK_ANGLE_RANGE_DEG."""
    expert = ScriptedExpert(u.load_model())
    quat = np.array([1.0, 0.0, 0.0, 0.0])
    for distance in (u.BLOCK_DISTANCE_RANGE[0], 0.11, u.BLOCK_DISTANCE_RANGE[1]):
        for angle in (u.BLOCK_ANGLE_RANGE_DEG[0], -30.0, 0.0, 30.0, u.BLOCK_ANGLE_RANGE_DEG[1]):
            block = polar_block(distance, angle)
            plan = expert.plan(u.home_pose_rad(), block, quat)
            assert plan is not None, f"no grasp at {distance} m, {angle} deg"
            pos, rot = expert.grasp_pose(plan.q_grasp)
            assert np.linalg.norm(pos - plan.grasp_pos) < se.MAX_GRASP_RESIDUAL
            assert np.linalg.norm(pos[:2] - block[:2]) < se.GRASP_OFFSET + 0.003  # between the jaws
            assert rot[2, 2] > np.cos(np.radians(max(se.GRASP_TILTS_DEG) + se.MAX_GRASP_TILT_DEG))
            assert np.all(plan.q_grasp >= u.JOINT_LIMITS_RAD[0]) and np.all(plan.q_grasp <= u.JOINT_LIMITS_RAD[1])


def _distance_at_close(env, expert, seed):
    """(grasp-point distance (m) to the plan's grasp pose on the step the expert starts closing, success)."""
    env.reset(seed=seed)
    expert.reset()
    dist, info = None, {}
    for _ in range(150):
        a = expert.act_in_env(env)
        if dist is None and expert.phase == "close":
            dist = float(np.linalg.norm(expert.grasp_pose(env.unwrapped.joint_positions)[0] - expert.plan_.grasp_pos))
        _, _, term, trunc, info = env.step(a)
        if term or trunc:
            break
    return dist, bool(info["is_success"])


def test_a_lenient_close_tolerance_closes_further_from_the_grasp_pose_and_still_picks(env):
    tight, loose = ScriptedExpert(env.unwrapped.model), ScriptedExpert(env.unwrapped.model, close_tol=0.015)
    for e in (tight, loose):  # slow steps pass through the 6-15 mm band, as a hovering student does
        e.max_step_rad = 0.04
    for seed in (50000, 50001):
        d_tight, ok_tight = _distance_at_close(env, tight, seed)
        d_loose, ok_loose = _distance_at_close(env, loose, seed)
        assert ok_tight and ok_loose
        assert d_tight < se.DESCEND_TOL <= d_loose < 0.015  # the lenient expert closes higher in the descent


def test_expert_is_deterministic(env):
    """Two experts, and one expert twice, choose bit-identical actions on the same seeded episode."""
    a = ScriptedExpert(env.unwrapped.model)
    b = ScriptedExpert(env.unwrapped.model)
    _, first, _ = run(env, a, 50463)
    _, second, _ = run(env, b, 50463)
    _, again, _ = run(env, a, 50463)
    assert len(first) > 10
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, again)


def _move_block_once(phase, shift):
    """An ``intervene`` callback: the first time the expert is in ``phase``, teleport the block by
    ``shift`` (3,) m on the table, at rest."""
    done = []

    def intervene(env, expert):
        if expert.phase == phase and not done:
            base = env.unwrapped
            a = base.ids.block_qpos_adr
            base.data.qpos[a : a + 3] = [*(base.data.qpos[a : a + 2] + shift[:2]), u.BLOCK_HALF_SIZE]
            base.data.qpos[a + 3 : a + 7] = (1.0, 0.0, 0.0, 0.0)
            base.data.qvel[base.ids.block_dof_adr : base.ids.block_dof_adr + 6] = 0.0
            u.mujoco.mj_forward(base.model, base.data)
            done.append(True)

    return intervene


@pytest.mark.parametrize("phase", ["close", "lift"])
def test_a_failed_grasp_ends_in_a_retreat_and_a_new_grasp(env, phase):
    """The block is taken from between the closing jaws (or just after the lift starts): the jaws
    close on nothing, the expert retreats with the gripper open, plans again and picks it up."""
    expert = ScriptedExpert(env.unwrapped.model)
    info, _, phases = run(env, expert, 50000, intervene=_move_block_once(phase, np.array([0.04, 0.03, 0.0])))
    assert "retreat" in phases and phases.index("retreat") > phases.index("close")
    assert expert.attempts >= 2
    assert info["is_success"]


def test_a_face_pair_that_failed_in_place_is_not_tried_again():
    expert = ScriptedExpert(u.load_model())
    block, quat = polar_block(0.2, 20.0), np.array([1.0, 0.0, 0.0, 0.0])
    first = expert.plan(u.home_pose_rad(), block, quat)
    expert.failed_faces.append((block.copy(), first.face))
    second = expert.plan(u.home_pose_rad(), block, quat)
    assert second is not None and second.face != first.face


def test_ik_reaches_the_target_with_jaws_down():
    model = u.load_model()
    expert = ScriptedExpert(model)
    target = np.array([0.1, 0.22, 0.05])
    q = expert.solve_ik(u.home_pose_rad(), target, block_yaw=0.0)
    pos, rot = expert.grasp_pose(q)
    np.testing.assert_allclose(pos, target, atol=2e-3)
    assert rot[:, 2] @ np.array([0, 0, 1.0]) > 0.99  # gripper +z up, jaws pointing down
    assert np.all(q >= u.JOINT_LIMITS_RAD[0] - 1e-9) and np.all(q <= u.JOINT_LIMITS_RAD[1] + 1e-9)


def test_expert_commands_bounded_steps_from_the_measured_state(env):
    expert = ScriptedExpert(env.unwrapped.model)
    env.reset(seed=0)
    for _ in range(5):
        q = env.unwrapped.joint_positions
        a = expert.act_in_env(env)
        assert np.abs(a[:5] - q[:5]).max() <= 0.12 + 1e-6
        env.step(a)


def test_at_30_hz_the_step_cap_is_a_third_and_the_pick_still_succeeds():
    env = gym.make("SO101PickPlace-v0", obs_mode="state", control_hz=30.0, max_episode_steps=450)
    expert = ScriptedExpert(env.unwrapped.model, control_hz=30.0)
    assert expert.max_step_rad == pytest.approx(se.MAX_STEP_RAD / 3)
    assert expert.close_steps == 3 * se.CLOSE_STEPS
    info, actions, _ = run(env, expert, 50152, max_steps=450)
    env.close()
    assert info["is_success"]


class _FakeRecorder:
    """What record_dataset.record_scripted uses of a Recorder, without a dataset on disk."""

    def __init__(self, keep_failed: bool):
        self.args = SimpleNamespace(num_episodes=1, max_steps=60, fps=10, keep_failed=keep_failed, seed=50000,
                                     expert_noise=0.0, student=None, expert_close_tol=se.DESCEND_TOL)
        self.stop = SimpleNamespace(requested=False)
        self.saved_this_run, self.seed, self.saved, self.discarded = 0, None, [], []

    def next_seed(self):
        self.seed = self.args.seed + len(self.saved) + len(self.discarded)
        return self.seed

    def add_frame(self, *args):
        pass

    def save(self, seed, success, frames):
        self.saved.append((seed, success))
        self.saved_this_run += 1

    def discard(self, why):
        self.discarded.append(why)


@pytest.mark.parametrize("keep_failed", [False, True])
def test_record_scripted_keeps_successes_and_says_how_many_it_discarded(env, monkeypatch, capsys, keep_failed):
    from so101_sim import record_dataset as rd

    rec = _FakeRecorder(keep_failed)
    original = ScriptedExpert.act_in_env

    def fails_on_the_first_seed(self, env):  # the first episode holds the home pose: a failure
        return u.home_pose_rad().astype(np.float32) if rec.seed == rec.args.seed else original(self, env)

    monkeypatch.setattr(ScriptedExpert, "act_in_env", fails_on_the_first_seed)
    rd.record_scripted(rec, env)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    if keep_failed:
        assert rec.saved == [(50000, False)] and not rec.discarded
        assert "1 episodes saved, 0 failed episodes discarded" in last and "--keep-failed" in last
    else:
        assert rec.saved == [(50001, True)] and len(rec.discarded) == 1
        assert "1 episodes saved, 1 failed episodes discarded (2 attempts" in last
