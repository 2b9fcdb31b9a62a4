"""The one table of seed ranges (so101_mujoco_utils.SEED_RANGES): disjoint, and every script's
default seeds fall in the range of their use, so evaluation never reuses a training,
demonstration or monitoring episode."""

import itertools

import pytest

from so101_sim import so101_mujoco_utils as u


def test_ranges_are_disjoint_and_ordered():
    spans = sorted(u.SEED_RANGES.values())
    for (a0, a1), (b0, b1) in itertools.pairwise(spans):
        assert a0 < a1 <= b0 < b1
    assert spans[0][0] == 0 and spans[-1][1] <= 2**31 - 1  # valid numpy/Gymnasium seeds


def test_default_seeds_lie_in_their_ranges():
    from so101_sim import record_dataset
    from so101_sim import run_mujoco_simulation
    from so101_sim import train_flow_bc
    from so101_sim import train_reinflow

    sim = run_mujoco_simulation.parse_args([])
    assert u.seed_block_problem("held_out", sim.seed, sim.episodes) is None
    rec = record_dataset.parse_args(["--input", "scripted", "--output_dir", "/nonexistent_dir_for_parse/x"])
    assert u.seed_block_problem("demonstrations", rec.seed, rec.num_episodes) is None
    bc = train_flow_bc.parse_args(["--scripted-episodes", "3"])
    assert u.seed_block_problem("demonstrations", bc.demo_seed, 3) is None
    assert u.seed_block_problem("held_out", bc.eval_seed, bc.eval_episodes) is None
    shipped = u.REPO_ROOT / "simulation_code" / "checkpoints" / "flow_bc.pt"
    rl = train_reinflow.parse_args(["--model-type", "flow", "--init-checkpoint", str(shipped)])
    assert u.seed_block_problem("monitoring", rl.eval_seed, rl.eval_episodes) is None


@pytest.mark.parametrize("seed,n_envs", [(0, 1), (3, 2), (2**31 - 2, 8), (123456, 64)])
def test_training_reset_seeds_lie_in_the_training_range(seed, n_envs):
    from so101_sim import train_reinflow

    lo, hi = u.SEED_RANGES["training"]
    for it in (0, 1, 999, 10**6):
        seeds = train_reinflow.train_reset_seeds(train_reinflow.iteration_seed(seed, it), n_envs)
        assert len(set(seeds)) == n_envs and lo <= min(seeds) and max(seeds) < hi


def test_seed_block_problem_names_the_clash():
    assert u.seed_block_problem("held_out", 0, 100) is None
    msg = u.seed_block_problem("held_out", 4990, 100)
    assert "4990..5089" in msg and "demonstrations" in msg
    assert u.seed_block_problem("monitoring", 0, 10) is not None
