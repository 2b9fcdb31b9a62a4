"""parallel_envs.RobustVectorEnv: Gymnasium-compatible batching and SAME_STEP autoreset; a worker
that is killed (SIGKILL) or produces a NaN state is restarted, its episode flagged as discarded
with a warning, and the other env keeps stepping. Small: 2 envs, 32 px images, 3-step episodes."""

from __future__ import annotations

import os
import signal
import time
from functools import partial

import numpy as np
from so101_sim import parallel_envs as pe
import pytest

KW = {"obs_mode": "images", "image_size": 32, "include_env_state": True, "max_episode_steps": 3}


def _claim(marker) -> bool:
    """Create ``marker`` atomically; True for the one worker that created it (both workers reach
    their 2nd step at about the same time, so check-then-write would let both fire)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def nan_env(env_id, marker, **kwargs):
    """Env whose first life returns a NaN joint state at its 2nd step (``marker`` file: only once,
    so the restarted worker behaves; a per-test path, so concurrent runs cannot interfere)."""
    import gymnasium as gym

    env = pe.make_env(env_id, **kwargs)

    class NaNState(gym.Wrapper):
        steps = 0

        def step(self, action):
            obs, r, te, tr, info = self.env.step(action)
            NaNState.steps += 1
            if NaNState.steps == 2 and _claim(marker):
                obs = dict(obs, **{"observation.state": np.full(6, np.nan, np.float32)})
            return obs, r, te, tr, info

    return NaNState(env)


@pytest.fixture(scope="module")
def vec():
    v = pe.RobustVectorEnv([partial(pe.make_env, "SO101PickPlace-v0", **KW)] * 2)
    yield v
    v.close()


def test_batching_autoreset_and_killed_worker(vec):
    obs, infos = vec.reset(seed=[5, 6])
    assert obs["observation.images.camera1"].shape == (2, 32, 32, 3) and obs["observation.state"].shape == (2, 6)
    assert not infos["discarded"].any()
    again, _ = vec.reset(seed=[5, 6])
    np.testing.assert_array_equal(again["observation.environment_state"], obs["observation.environment_state"])
    act = np.tile(obs["observation.state"][:1], (2, 1))
    for _ in range(2):
        obs, r, te, tr, infos = vec.step(act)
    obs, r, te, tr, infos = vec.step(act)  # 3rd step: time limit, same-step autoreset
    assert tr.all() and infos["_final_obs"].all() and infos["final_obs"][0]["observation.state"].shape == (6,)
    assert "is_success" in infos["final_info"]
    old = vec.worker_pids()
    os.kill(old[0], signal.SIGKILL)
    time.sleep(0.5)
    with pytest.warns(pe.EnvRestartWarning, match="env 0"):
        obs, r, te, tr, infos = vec.step(act)
    assert infos["discarded"].tolist() == [True, False]
    assert r[0] == 0.0 and not te[0] and not tr[0] and r[1] != 0.0  # env 1 stepped normally
    assert vec.restarts == 1 and vec.worker_pids()[0] != old[0] and vec.worker_pids()[1] == old[1]
    obs, r, te, tr, infos = vec.step(act)  # training goes on
    assert not infos["discarded"].any() and np.isfinite(obs["observation.state"]).all()


def test_nan_state_restarts_the_worker(tmp_path):
    marker = tmp_path / "nan_done"
    v = pe.RobustVectorEnv([partial(nan_env, "SO101PickPlace-v0", str(marker), **KW)] * 2)
    try:
        obs, _ = v.reset(seed=0)
        act = np.tile(obs["observation.state"][:1], (2, 1))
        v.step(act)
        with pytest.warns(pe.EnvRestartWarning, match="non-finite"):
            obs, r, te, tr, infos = v.step(act)
        assert infos["discarded"].sum() == 1 and v.restarts == 1 and marker.exists()
        assert np.isfinite(obs["observation.state"]).all()
    finally:
        v.close()
