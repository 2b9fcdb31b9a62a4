"""LeRobot env plugin of the SO-101 sim: ``--env.type=so101_pickplace``.

LeRobot 0.6.1 imports every installed distribution whose name starts with ``lerobot_env_``
(lerobot/utils/import_utils.py::register_third_party_plugins), importing the module of the same
name: this one. The config itself is :class:`so101_sim.lerobot_env_config.SO101PickPlaceEnvConfig`.
Importing it also registers the policy type ``so101_act`` (:mod:`so101_sim.so101_act_policy`: ACT
with a truncated backbone), so ``lerobot-train --policy.type=so101_act`` and ``lerobot-eval`` on such
a checkpoint work wherever this distribution is installed.
"""

from so101_sim.lerobot_env_config import SO101PickPlaceEnvConfig
from so101_sim.so101_act_policy import SO101ACTConfig

__all__ = ["SO101ACTConfig", "SO101PickPlaceEnvConfig"]
