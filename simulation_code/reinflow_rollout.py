"""One ReinFlow iteration's data: the rollout buffer, the rollout loop and the block curriculum.

The shape of CleanRL's PPO and the ReinFlow reference trainer: the vector env's workers wrap
their env in so101_gym_env.ChunkActionWrapper, so one vector-env step executes one action chunk
per env and *is* one decision; :func:`collect_rollout` takes ``T`` such steps for ``N`` envs into
a :class:`RolloutBuffer` preallocated as ``(T, N, ...)``, which then computes the GAE or group
advantages and flattens the valid decisions into the reinflow_engine.RolloutData that PPO
consumes (with the policy's prepared inputs kept from the rollout, never recomputed).
:class:`BlockCurriculum` keeps the per-bin training success that chooses the block positions of
the next rollout (``--block-curriculum``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from so101_sim.reinflow_engine import (ReinFlowAgent, ReinFlowConfig, RolloutData, cat_inputs, compute_gae, critic_features,
                             group_relative_advantages, take_inputs)


class BlockCurriculum:
    """Success statistics per block bin and the sampling weights they give
    (so101_gym_env.BlockCurriculumWrapper): positions where the policy fails more are trained on more.

    Per bin b, ``successes_b`` and ``episodes_b`` are discounted sums over iterations (each
    :meth:`update` first multiplies the old sums by ``decay``); the success estimate is
    ``p_b = (successes_b + 1) / (episodes_b + 2)`` (Laplace), the failure priority ``1 - p_b``,
    and the weights ``uniform / n_bins + (1 - uniform) * (1 - p_b) / sum(1 - p)``: every bin
    keeps at least ``uniform / n_bins`` of the episodes, so improved bins are still trained on.
    Before any episode all ``p_b`` are 1/2, so the weights are uniform.

    Args:
        bins: (n_distance, n_angle), the grid of so101_gym_env.BlockCurriculumWrapper (so
            ``n_bins = n_distance * n_angle``; bin id ``i * n_angle + j``).
        uniform: share of the uniform part, in [0, 1].
        decay: weight of the previous statistics at each update, in [0, 1).

    Raises:
        ValueError: a setting out of range.
    """

    def __init__(self, bins: tuple[int, int], uniform: float = 0.3, decay: float = 0.5):
        bins = tuple(int(b) for b in bins)
        if len(bins) != 2 or min(bins) < 1 or not 0.0 <= uniform <= 1.0 or not 0.0 <= decay < 1.0:
            raise ValueError(f"need bins = (n_distance >= 1, n_angle >= 1), uniform in [0, 1], decay in [0, 1); "
                             f"got {bins}, {uniform}, {decay}")
        self.bins, self.uniform, self.decay = bins, float(uniform), float(decay)
        self.n_bins = bins[0] * bins[1]
        self.successes = np.zeros(self.n_bins)
        self.episodes = np.zeros(self.n_bins)

    def update(self, bins, successes) -> None:
        """Add one iteration's finished episodes: ``bins`` (N,) int bin ids, ``successes`` (N,) bool."""
        bins = np.asarray(bins, int)
        self.successes = self.decay * self.successes + np.bincount(
            bins, weights=np.asarray(successes, np.float64), minlength=self.n_bins)
        self.episodes = self.decay * self.episodes + np.bincount(bins, minlength=self.n_bins)

    def success_estimates(self) -> np.ndarray:
        """(n_bins,) float64 Laplace-smoothed success rate per bin."""
        return (self.successes + 1.0) / (self.episodes + 2.0)

    def weights(self) -> np.ndarray:
        """(n_bins,) float64 sampling probabilities (sum 1); see the class docstring."""
        fail = 1.0 - self.success_estimates()
        return self.uniform / self.n_bins + (1.0 - self.uniform) * fail / fail.sum()

    def state_dict(self) -> dict:
        """Plain-Python state (saved in train_reinflow.py checkpoints as ``block_curriculum``)."""
        return {"bins": list(self.bins), "uniform": self.uniform, "decay": self.decay,
                "successes": self.successes.tolist(), "episodes": self.episodes.tolist()}

    @classmethod
    def from_state_dict(cls, state: dict) -> "BlockCurriculum":
        """Inverse of :meth:`state_dict`."""
        c = cls(state["bins"], state["uniform"], state["decay"])
        c.successes, c.episodes = np.array(state["successes"], np.float64), np.array(state["episodes"], np.float64)
        return c


@dataclass
class Episode:
    """A training episode that ended in a rollout: return (training reward, raw), length (env
    steps), success, block bin (-1 without a curriculum), sim_unstable."""

    ret: float
    length: int
    success: bool
    bin: int = -1
    sim_unstable: bool = False


class RolloutBuffer:
    """One iteration's decisions of ``n_envs`` envs over ``steps`` vector-env steps, as ``(T, N, ...)``
    arrays allocated once (the chain and log-prob tensors at the first :meth:`add`, in the policy's dtype).

    Per decision ``(t, i)``: ``rewards`` the raw training reward summed over the executed chunk;
    ``terminated`` (true terminal: no bootstrap); ``ends`` (the env's episode ended after it:
    terminated, truncated, a discarded episode or the rollout's end; GAE does not cross it);
    ``episode`` the env's episode index within the rollout (groups, ``--advantage group``);
    ``valid`` (false for the decisions of an episode discarded after a worker restart);
    ``feats`` / ``next_feats`` (T, N, D) float32 critic features of the observation and of the
    one after the decision (the final observation when the episode ended); ``chains``
    (T, N, K+1, chunk, max_action_dim), ``log_probs`` (T, N); ``inputs[t]`` the policy's
    prepared batch of step t.
    """

    def __init__(self, steps: int, n_envs: int, feat_dim: int):
        self.T, self.N = int(steps), int(n_envs)
        shape = (self.T, self.N)
        self.rewards = np.zeros(shape, np.float64)
        self.terminated = np.zeros(shape, bool)
        self.ends = np.zeros(shape, bool)
        self.valid = np.ones(shape, bool)
        self.episode = np.zeros(shape, np.int64)
        self.feats = np.zeros((*shape, feat_dim), np.float32)
        self.next_feats = np.zeros((*shape, feat_dim), np.float32)
        self.chains: torch.Tensor | None = None
        self.log_probs: torch.Tensor | None = None
        self.inputs: list[dict | None] = [None] * self.T
        self.episodes_done = np.zeros(self.N, np.int64)  # complete episodes per env so far
        self._episode_start = np.zeros(self.N, np.int64)  # first step of each env's running episode

    def add(self, t: int, feats: np.ndarray, sample, inputs: dict, reward: np.ndarray, terminated: np.ndarray,
            ended: np.ndarray, next_feats: np.ndarray) -> None:
        """Store step ``t`` of every env (arrays of length N; ``sample`` a reinflow_engine.ChainSample)."""
        if self.chains is None:
            self.chains = torch.zeros((self.T, self.N, *sample.chain.shape[1:]), dtype=sample.chain.dtype)
            self.log_probs = torch.zeros((self.T, self.N), dtype=sample.log_prob.dtype)
        self.chains[t] = sample.chain.cpu()
        self.log_probs[t] = sample.log_prob.cpu()
        self.inputs[t] = inputs
        self.feats[t], self.next_feats[t] = feats, next_feats
        self.rewards[t], self.terminated[t], self.ends[t] = reward, terminated, ended
        self.episode[t] = self.episodes_done
        self.episodes_done += ended
        self._episode_start[ended] = t + 1

    def discard(self, t: int, i: int) -> int:
        """Env ``i``'s worker was restarted at step ``t``: its running episode (from its last end
        through ``t``) is dropped (``valid`` false; ``ends[t]`` true so GAE does not reach into it).
        Returns the number of decisions dropped."""
        start = int(self._episode_start[i])
        self.valid[start : t + 1, i] = False
        self.ends[t, i] = True
        self.terminated[t, i] = False
        self.episode[start : t + 1, i] = -1
        self._episode_start[i] = t + 1
        return t + 1 - start

    def finish(self) -> None:
        """The rollout was cut after the last step: every env's last decision ends its sequence
        (bootstrapped from ``next_feats``, the current observation)."""
        self.ends[-1] = True

    def scaled_rewards(self, cfg: ReinFlowConfig) -> np.ndarray:
        """(T, N) float64 training rewards: summed chunk reward x ``reward_scale``, clipped to
        +-``reward_clip`` (if set)."""
        r = self.rewards * cfg.reward_scale
        return r if cfg.reward_clip is None else np.clip(r, -cfg.reward_clip, cfg.reward_clip)

    def gae(self, values: np.ndarray, next_values: np.ndarray, cfg: ReinFlowConfig) -> tuple[np.ndarray, np.ndarray]:
        """GAE per env over its decisions (reinflow_engine.compute_gae): (advantages, returns), (T, N) float64."""
        adv, ret = np.zeros((self.T, self.N)), np.zeros((self.T, self.N))
        r = self.scaled_rewards(cfg)
        for i in range(self.N):
            adv[:, i], ret[:, i] = compute_gae(r[:, i], values[:, i], next_values[:, i], self.terminated[:, i],
                                               self.ends[:, i], cfg.gamma, cfg.gae_lambda)
        return adv, ret

    def group_advantages(self, group_size: int, cfg: ReinFlowConfig) -> tuple[np.ndarray, np.ndarray]:
        """Group-relative advantages (``--advantage group``): env i's episodes k = 0, 1, ... come in
        groups of ``group_size`` from the same block position (so101_gym_env.RepeatBlockWrapper,
        restarted by each iteration's seeded reset), so episode k belongs to group (i, k // G). An
        episode's return is the sum of its scaled rewards; its advantage, shared by all its
        decisions, is that return minus its group's mean return
        (reinflow_engine.group_relative_advantages). Only complete groups count.

        Returns:
            (keep (T, N) bool: decisions of complete groups, advantages (T, N) float64, 0 elsewhere).
        """
        r = self.scaled_rewards(cfg)
        keep = np.zeros((self.T, self.N), bool)
        adv = np.zeros((self.T, self.N))
        for i in range(self.N):
            complete = int(self.episodes_done[i]) // group_size * group_size
            ep = self.episode[:, i]
            sel = self.valid[:, i] & (ep >= 0) & (ep < complete)
            totals = np.bincount(ep[sel], weights=r[sel, i], minlength=complete)[:complete]
            ep_adv = group_relative_advantages(np.arange(complete) // group_size, totals) if complete else totals
            keep[sel, i] = True
            adv[sel, i] = ep_adv[ep[sel]]
        return keep, adv

    def flatten(self, keep: np.ndarray, advantages: np.ndarray, returns: np.ndarray) -> RolloutData:
        """The decisions where ``keep`` (T, N), env-major (env 0's in time order, then env 1's, ...),
        as the reinflow_engine.RolloutData of the PPO update."""
        t_idx, i_idx = np.nonzero(keep.T)[::-1]  # env-major order
        flat = t_idx * self.N + i_idx  # row in the (T*N) step-major concatenation of the inputs
        inputs = take_inputs(cat_inputs(self.inputs), flat)
        tt, ii = torch.as_tensor(t_idx), torch.as_tensor(i_idx)
        return RolloutData(inputs, torch.as_tensor(self.feats[t_idx, i_idx]), self.chains[tt, ii], self.log_probs[tt, ii],
                           torch.as_tensor(advantages[t_idx, i_idx], dtype=torch.float32),
                           torch.as_tensor(returns[t_idx, i_idx], dtype=torch.float32))


def collect_rollout(vec, agent: ReinFlowAgent, buffer: RolloutBuffer, obs: dict, generator: torch.Generator,
                    n_action_steps: int) -> tuple[dict, list[Episode], dict]:
    """``buffer.T`` decisions of every env of ``vec`` (a vector env of
    so101_gym_env.ChunkActionWrapper envs, same-step autoreset with ``final_obs``/``final_info``,
    ``infos["discarded"]`` after a worker restart: parallel_envs.RobustVectorEnv).

    Each step: the agent samples a noisy chain per env (``generator``), the first
    ``n_action_steps`` actions of each chunk go to the vector env, and the decision is stored.

    Returns:
        (the observation after the last step, the episodes that ended, stats: ``env_steps``
        executed, ``discarded`` episodes, ``sigma_sampled`` mean sampled sigma).
    """
    episodes: list[Episode] = []
    ep_ret, ep_len = np.zeros(buffer.N), np.zeros(buffer.N, np.int64)
    env_steps, discarded, sigmas = 0, 0, []
    feats = critic_features(obs).numpy()
    for t in range(buffer.T):
        chunks, sample, inputs = agent.act(obs, generator)
        sigmas.append(sample.sigma_mean)
        obs, reward, term, trunc, infos = vec.step(chunks[:, :n_action_steps])
        ended = np.asarray(term) | np.asarray(trunc)
        final_obs, final_info = infos.get("final_obs"), infos.get("final_info", {})
        steps = _per_env(infos, final_info, ended, "chunk_steps", 0).astype(np.int64)
        obs_feats = critic_features(obs).numpy()
        next_feats = obs_feats.copy()
        for i in np.flatnonzero(ended):  # bootstrap from the episode's final observation
            next_feats[i] = critic_features({k: np.asarray(v)[None] for k, v in final_obs[i].items()}).numpy()[0]
        buffer.add(t, feats, sample, inputs, reward, term, ended, next_feats)
        ep_ret += reward
        ep_len += steps
        env_steps += int(steps.sum())
        success = _per_env(infos, final_info, ended, "is_success", False).astype(bool)
        unstable = _per_env(infos, final_info, ended, "sim_unstable", False).astype(bool)
        bins = _per_env(infos, final_info, ended, "block_bin", -1).astype(np.int64)
        for i in np.flatnonzero(ended):
            episodes.append(Episode(float(ep_ret[i]), int(ep_len[i]), bool(success[i]), int(bins[i]), bool(unstable[i])))
        for i in np.flatnonzero(infos.get("discarded", np.zeros(buffer.N, bool))):  # worker restarted
            buffer.discard(t, i)
            discarded += 1
            ended[i] = True
        ep_ret[ended], ep_len[ended] = 0.0, 0
        feats = obs_feats  # the next decisions' observations (reset ones where an episode ended)
    buffer.finish()
    return obs, episodes, {"env_steps": env_steps, "discarded": discarded,
                           "sigma_sampled": float(np.mean(sigmas)) if sigmas else float("nan")}


def _per_env(infos: dict, final_info: dict, ended: np.ndarray, key: str, default) -> np.ndarray:
    """Per env, ``key`` of the step's info: from ``final_info`` where the episode ended (the
    autoreset replaced ``infos`` by the reset's), else from ``infos``; ``default`` where absent."""
    n = len(ended)
    out = np.full(n, default, dtype=object)
    for src, rows in ((infos, ~ended), (final_info, ended)):
        if key in src:
            have = np.asarray(src.get("_" + key, np.ones(n, bool)), bool)
            vals = np.asarray(src[key])
            sel = rows & have
            out[sel] = vals[sel]
    return out


__all__ = ["BlockCurriculum", "Episode", "RolloutBuffer", "collect_rollout"]
