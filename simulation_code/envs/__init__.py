"""Register the SO-101 environments with Gymnasium: ``import envs`` (from simulation_code/).

| id                          | block      | render_mode | max_episode_steps (10 Hz) |
|-----------------------------|------------|-------------|---------------------------|
| SO101PickPlace-v0           | randomized | None        | 150 (15 s)                |
| SO101PickPlaceNoRandom-v0   | fixed      | None        | 150 (15 s)                |
| SO101PickPlaceHuman-v0      | randomized | "human"     | 1000 (100 s)              |

Keyword arguments of ``gym.make`` go to :class:`so101_gym_env.SO101PickPlaceEnv`.
"""

import gymnasium as gym

#: The env id every script uses unless told otherwise (``--env-id``), and its fixed-block twin.
DEFAULT_ENV_ID = "SO101PickPlace-v0"
FIXED_BLOCK_ENV_ID = "SO101PickPlaceNoRandom-v0"
#: Episode lengths, in control steps (one place for these numbers).
MAX_EPISODE_STEPS = {"SO101PickPlace-v0": 150, "SO101PickPlaceNoRandom-v0": 150, "SO101PickPlaceHuman-v0": 1000}

_ENTRY = "so101_gym_env:SO101PickPlaceEnv"
_KWARGS = {
    "SO101PickPlace-v0": {"randomize_block": True},
    "SO101PickPlaceNoRandom-v0": {"randomize_block": False},
    "SO101PickPlaceHuman-v0": {"randomize_block": True, "render_mode": "human"},
}

for _env_id, _kwargs in _KWARGS.items():
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point=_ENTRY, max_episode_steps=MAX_EPISODE_STEPS[_env_id], kwargs=_kwargs)
