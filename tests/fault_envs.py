"""Env factories that fail on purpose, for the fault tests. Torch-free, so that the env worker
processes (forkserver children, which import this module to unpickle the factory) start fast."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal

from so101_sim import parallel_envs

#: The real factory, taken at import: tests replace ``parallel_envs.make_env`` with the factories
#: below (import this module before patching).
_make_env = parallel_envs.make_env


def claim(marker) -> bool:
    """Create ``marker`` atomically; True for the one process that created it (several workers
    reach the same step at about the same time, so check-then-write would let them all fire)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def killed_env(env_id, marker, at_step=3, **kwargs):
    """``parallel_envs.make_env(env_id, **kwargs)`` whose worker process SIGKILLs itself at its
    ``at_step``-th step, once per ``marker`` file (the restarted worker behaves). Only in a
    ``RobustVectorEnv`` worker: the same factory also builds the in-process evaluation env,
    which must not kill the training process."""
    import gymnasium as gym

    env = _make_env(env_id, **kwargs)
    in_worker = mp.current_process().name.startswith("RobustVectorEnv-worker")

    class KilledAtStep(gym.Wrapper):
        steps = 0

        def step(self, action):
            KilledAtStep.steps += 1
            if in_worker and KilledAtStep.steps == at_step and claim(marker):
                os.kill(os.getpid(), signal.SIGKILL)
            return self.env.step(action)

    return KilledAtStep(env)
