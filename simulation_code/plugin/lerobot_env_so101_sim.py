"""LeRobot env plugin of the SO-101 sim: ``--env.type=so101_pickplace``.

LeRobot 0.6.1 imports every installed distribution whose name starts with ``lerobot_env_``
(lerobot/utils/import_utils.py::register_third_party_plugins), importing the module of the same
name: this one. The config itself is :class:`so101_sim.lerobot_env_config.SO101PickPlaceEnvConfig`.
"""

from so101_sim.lerobot_env_config import SO101PickPlaceEnvConfig

__all__ = ["SO101PickPlaceEnvConfig"]
