"""N environment processes that survive their workers: a small supervisor on Gymnasium's worker.

    from functools import partial
    from so101_sim.parallel_envs import RobustVectorEnv, make_env
    vec = RobustVectorEnv([partial(make_env, "SO101PickPlace-v0", obs_mode="images", image_size=64)] * 8)
    obs, infos = vec.reset(seed=[0, 1, 2, 3, 4, 5, 6, 7])      # obs: dict of (8, ...) arrays
    obs, reward, terminated, truncated, infos = vec.step(actions)  # actions (8, 6) MuJoCo radians
    infos["discarded"]                                             # (8,) bool, see below

Why not ``gymnasium.vector.AsyncVectorEnv`` itself: one failing worker closes the whole vector env
(``_raise_if_errors``), a killed worker surfaces as a bare ``EOFError`` in the middle of
``step_wait`` (the results of the other envs of that step are lost), there is no way to restart a
single worker, and its constructor builds a throw-away env in the parent (a ~10 s MuJoCo compile
here). :class:`RobustVectorEnv` keeps Gymnasium's own worker function
(``gymnasium.vector.async_vector_env._async_worker``: same command protocol, same ``SAME_STEP``
autoreset with ``final_obs``/``final_info``, same info batching through ``VectorEnv._add_info``),
and supervises each worker process separately:

* a worker that dies (killed, segfault), raises (e.g. the env's ``RuntimeError`` on a diverged
  MuJoCo state), times out (``step_timeout`` seconds), or returns a non-finite float observation
  or reward is terminated and restarted; its env is reset with a fresh seed, its step returns the
  reset observation with reward 0, ``terminated = truncated = False`` and
  ``infos["discarded"][i] = True``, and a :class:`EnvRestartWarning` names the env and the cause.
  The caller drops that env's unfinished episode (train_reinflow.py does); the other envs are
  unaffected. ``restarts`` counts restarts, ``restart_log`` lists them.
* processes start with the ``forkserver`` context by default: forking a parent that holds an EGL
  context (the in-process evaluation env renders images) hangs the child here, and spawn/forkserver
  children start clean. Env factories must therefore be importable functions (use
  :func:`make_env`, which imports ``envs`` so the ids are registered in the child).

Used by train_reinflow.py for every policy type (the VLAs' image envs, the flow policy's state
envs), whose workers execute one action chunk per step (``make_env(..., chunk=n)``).
"""

from __future__ import annotations

import multiprocessing as mp
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.async_vector_env import _async_worker
from gymnasium.vector.utils import CloudpickleWrapper, batch_space


class EnvRestartWarning(RuntimeWarning):
    """An env worker failed and was restarted; its episode was discarded."""


class EnvWorkerError(RuntimeError):
    """A worker failed (died, raised, timed out or produced non-finite values)."""


def make_env(env_id: str, reward_terms: tuple[str, ...] | None = None, repeat_block: int = 1,
             curriculum_bins: tuple[int, int] | None = None, chunk: int = 0, **kwargs: Any):
    """``gym.make(env_id, **kwargs)`` after importing ``envs`` (registers the SO-101 ids): an env
    factory that works in spawn/forkserver children. Torch-free (fast worker start).

    ``reward_terms``: train on the sum of these named reward terms only
    (so101_gym_env.RewardTermsWrapper); None = the env's reward. ``curriculum_bins``
    (n_distance, n_angle): block positions drawn by bin weights passed in the reset options
    (so101_gym_env.BlockCurriculumWrapper). ``repeat_block`` > 1: groups of that many
    consecutive episodes from the same block position (so101_gym_env.RepeatBlockWrapper).
    ``chunk`` > 0: one step executes that many actions (so101_gym_env.ChunkActionWrapper; actions
    (chunk, 6)), so a vector-env step is one policy decision."""
    from so101_sim import mujoco_rendering  # noqa: F401  (GL backend before mujoco)

    # isort: split
    from so101_sim import envs  # noqa: F401
    import gymnasium as gym

    from so101_sim.so101_gym_env import BlockCurriculumWrapper, ChunkActionWrapper, RepeatBlockWrapper, RewardTermsWrapper

    env = gym.make(env_id, **kwargs)
    if reward_terms is not None:
        env = RewardTermsWrapper(env, reward_terms)
    if curriculum_bins is not None:
        env = BlockCurriculumWrapper(env, *curriculum_bins)
    if repeat_block > 1:
        env = RepeatBlockWrapper(env, repeat_block)
    return ChunkActionWrapper(env, chunk) if chunk > 0 else env


class RobustVectorEnv(VectorEnv):
    """Gymnasium-style vector env (``SAME_STEP`` autoreset) whose workers are restarted on failure.

    Args:
        env_fns: one picklable factory per env (module-level functions / partials; see module doc).
        context: multiprocessing start method (``forkserver`` default, ``spawn``; ``fork`` only
            when the parent never created a GL context).
        step_timeout: seconds a reset/step may take before the worker counts as hung.
        max_restarts: total restarts allowed before :class:`EnvWorkerError` is raised (a broken
            env factory must not loop forever).
        restart_seed: base of the seeds used to reset restarted envs (restart r of the run uses
            ``restart_seed + 7_919 * r + env index``).

    Attributes:
        num_envs, single_observation_space, single_action_space, observation_space, action_space.
        restarts: number of worker restarts so far; restart_log: list of dicts (env, cause, seed).
    """

    def __init__(self, env_fns: Sequence[Callable], *, context: str | None = "forkserver", step_timeout: float = 300.0,
                 max_restarts: int = 100, restart_seed: int = 900_000_000):
        self.env_fns = list(env_fns)
        if not self.env_fns:
            raise ValueError("RobustVectorEnv needs at least one env factory")
        self.num_envs = len(self.env_fns)
        self.step_timeout = float(step_timeout)
        self.max_restarts = int(max_restarts)
        self.restart_seed = int(restart_seed)
        self.restarts = 0
        self.restart_log: list[dict] = []
        self.closed = False
        self._ctx = mp.get_context(context)
        self._errors = self._ctx.Queue()
        self._pipes: list[Any] = [None] * self.num_envs
        self._procs: list[Any] = [None] * self.num_envs
        for i in range(self.num_envs):  # all workers build their env concurrently
            self._start(i)
        self.single_observation_space = self._call(0, "observation_space")
        self.single_action_space = self._call(0, "action_space")
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}
        self.render_mode = None

    # ------------------------------------------------------------------ workers
    def _start(self, i: int) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_async_worker, name=f"RobustVectorEnv-worker-{i}", daemon=True,
                                 args=(i, CloudpickleWrapper(self.env_fns[i]), child, parent, None, self._errors,
                                       AutoresetMode.SAME_STEP, None))
        proc.start()
        child.close()
        self._pipes[i], self._procs[i] = parent, proc

    def _kill(self, i: int) -> None:
        pipe, proc = self._pipes[i], self._procs[i]
        if proc is not None and proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        elif proc is not None:
            proc.join(timeout=1)
        if pipe is not None:
            pipe.close()
        self._pipes[i] = self._procs[i] = None

    def _recv(self, i: int):
        """The worker's reply; raises :class:`EnvWorkerError` (with the worker's traceback when it
        reported one) if it died, raised or timed out."""
        pipe = self._pipes[i]
        try:
            if not pipe.poll(self.step_timeout):
                raise EnvWorkerError(f"env {i}: no reply within {self.step_timeout:.0f} s (hung worker)")
            result, ok = pipe.recv()
        except (EOFError, OSError, BrokenPipeError) as e:
            code = self._procs[i].exitcode if self._procs[i] is not None else None
            raise EnvWorkerError(f"env {i}: worker process died (exit code {code}, {type(e).__name__})") from e
        if not ok:
            raise EnvWorkerError(f"env {i}: worker raised {self._worker_error(i)}")
        return result

    def _worker_error(self, i: int) -> str:
        msgs = []
        try:
            while True:
                index, etype, value, _trace = self._errors.get(timeout=1.0 if not msgs else 0.01)
                msgs.append(f"{getattr(etype, '__name__', etype)}: {value}" + ("" if index == i else f" (env {index})"))
        except Exception:  # noqa: BLE001  (queue.Empty)
            pass
        return "; ".join(msgs) or "an exception"

    def _send(self, i: int, msg) -> None:
        try:
            self._pipes[i].send(msg)
        except (OSError, BrokenPipeError, ValueError) as e:
            raise EnvWorkerError(f"env {i}: cannot send to worker ({type(e).__name__})") from e

    def _call(self, i: int, name: str):
        self._send(i, ("_call", (name, (), {})))
        return self._recv(i)

    def worker_pids(self) -> list[int]:
        """Process ids of the env workers (index = env index)."""
        return [p.pid for p in self._procs]

    def _restart(self, i: int, cause: str, reset_kwargs: dict | None = None) -> tuple[dict, dict, int]:
        """Kill worker i, start a new one, reset it; returns (obs, info, seed). Retries a failing
        reset a few times (each counts as a restart)."""
        while True:
            self.restarts += 1
            if self.restarts > self.max_restarts:
                raise EnvWorkerError(f"more than {self.max_restarts} env worker restarts; last: {cause}")
            seed = self.restart_seed + 7_919 * self.restarts + i
            kw = dict(reset_kwargs or {}, seed=seed)
            self.restart_log.append({"env": i, "cause": cause, "seed": seed})
            warnings.warn(f"env {i} failed ({cause}); worker restarted, its episode discarded (reset seed {seed})",
                          EnvRestartWarning, stacklevel=3)
            self._kill(i)
            self._start(i)
            try:
                self._send(i, ("reset", kw))
                obs, info = self._recv(i)
                if not _finite(obs):
                    raise EnvWorkerError(f"env {i}: non-finite observation after reset")
                return obs, info, seed
            except EnvWorkerError as e:
                cause = str(e)

    # ------------------------------------------------------------------ gymnasium API
    def _send_all(self, messages: list) -> dict[int, str]:
        """Send ``messages[i]`` to worker i; returns {env index: error} for the workers that failed."""
        failed: dict[int, str] = {}
        for i, msg in enumerate(messages):
            try:
                self._send(i, msg)
            except EnvWorkerError as e:
                failed[i] = str(e)
        return failed

    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict | None = None):
        """Reset every env. ``seed``: None, an int (env i gets seed + i) or one seed per env.

        Returns:
            (obs, infos): obs batched like ``AsyncVectorEnv`` (dict of (N, ...) arrays); infos as
            Gymnasium batches them, plus ``infos["discarded"]`` (N,) bool (True where a worker had
            to be restarted during the reset; that env was reset with a restart seed instead).
        """
        self._check_open()
        if seed is None:
            seeds = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = [None if s is None else int(s) for s in seed]
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} envs")
        failed = self._send_all([("reset", {"seed": s, "options": options}) for s in seeds])
        results: list[Any] = [None] * self.num_envs
        for i in range(self.num_envs):
            if i in failed:
                continue
            try:
                results[i] = self._recv(i)
                if not _finite(results[i][0]):
                    raise EnvWorkerError(f"env {i}: non-finite observation after reset")
            except EnvWorkerError as e:
                failed[i] = str(e)
        discarded = np.zeros(self.num_envs, bool)
        for i, cause in failed.items():
            obs, info, _ = self._restart(i, cause, {"options": options})
            results[i] = (obs, info)
            discarded[i] = True
        infos: dict[str, Any] = {}
        for i, (_, info) in enumerate(results):
            infos = self._add_info(infos, info, i)
        infos["discarded"] = discarded
        return _stack([r[0] for r in results]), infos

    def step(self, actions):
        """Step every env with ``actions[i]`` (batched like ``action_space``); see the class doc
        for what a failed env returns. Returns (obs, rewards (N,) float64, terminated (N,) bool,
        truncated (N,) bool, infos with ``final_obs``/``final_info`` and ``discarded``)."""
        self._check_open()
        failed = self._send_all([("step", actions[i]) for i in range(self.num_envs)])
        results: list[Any] = [None] * self.num_envs
        for i in range(self.num_envs):
            if i in failed:
                continue
            try:
                res = self._recv(i)
                obs, rew, _term, _trunc, info = res
                final = info.get("final_obs") if isinstance(info, dict) else None
                if not (_finite(obs) and np.isfinite(rew) and (final is None or _finite(final))):
                    raise EnvWorkerError(f"env {i}: non-finite observation or reward (NaN state)")
                results[i] = res
            except EnvWorkerError as e:
                failed[i] = str(e)
        discarded = np.zeros(self.num_envs, bool)
        for i, cause in failed.items():
            obs, info, _ = self._restart(i, cause)
            results[i] = (obs, 0.0, False, False, info)
            discarded[i] = True
        infos: dict[str, Any] = {}
        for i, r in enumerate(results):
            infos = self._add_info(infos, r[4], i)
        infos["discarded"] = discarded
        return (_stack([r[0] for r in results]), np.array([r[1] for r in results], np.float64),
                np.array([r[2] for r in results], np.bool_), np.array([r[3] for r in results], np.bool_), infos)

    def close(self, **kwargs) -> None:
        """Ask every worker to close its env, then make sure the processes are gone."""
        if self.closed:
            return
        for i in range(self.num_envs):
            if self._pipes[i] is None:
                continue
            try:
                self._send(i, ("close", None))
                if self._pipes[i].poll(10):
                    self._pipes[i].recv()
            except (EnvWorkerError, EOFError, OSError):
                pass
            self._kill(i)
        self._errors.close()
        self.closed = True

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("RobustVectorEnv is closed")

    def __del__(self):
        if not getattr(self, "closed", True):
            try:
                self.close()
            except Exception:  # noqa: BLE001
                pass


def _finite(obs) -> bool:
    """True unless a floating-point array in ``obs`` (array or dict of arrays) has NaN/inf."""
    if isinstance(obs, dict):
        return all(_finite(v) for v in obs.values())
    a = np.asarray(obs)
    return not np.issubdtype(a.dtype, np.floating) or bool(np.isfinite(a).all())


def _stack(items: list):
    if isinstance(items[0], dict):
        return {k: np.stack([np.asarray(o[k]) for o in items]) for k in items[0]}
    return np.stack([np.asarray(o) for o in items])


__all__ = ["EnvRestartWarning", "EnvWorkerError", "RobustVectorEnv", "make_env"]
