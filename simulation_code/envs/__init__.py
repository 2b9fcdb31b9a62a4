"""``import envs`` (from simulation_code/): register the bare env ids (``SO101PickPlace-v0``, ...).

The table of ids, episode lengths and arguments lives in :mod:`so101_sim.registration`; the
installed package also registers the same envs as ``so101_sim/SO101PickPlace-v0`` etc. whenever
Gymnasium is imported.
"""

from so101_sim.registration import DEFAULT_ENV_ID, ENV_KWARGS, FIXED_BLOCK_ENV_ID, MAX_EPISODE_STEPS, register_envs

__all__ = ["DEFAULT_ENV_ID", "ENV_KWARGS", "FIXED_BLOCK_ENV_ID", "MAX_EPISODE_STEPS"]

register_envs(namespace=None)
