"""``--env.type=so101_pickplace``: the SO-101 sim as a LeRobot env type (lerobot-eval, lerobot-train).

Imported by LeRobot through the plugin module ``lerobot_env_so101_sim`` (simulation_code/plugin/);
the env it makes is ``gym.make("so101_sim/<task>", convention="lerobot", ...)``, i.e.
:class:`so101_sim.lerobot_env.LeRobotConvention` (units, seeds and commands: docs/lerobot.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.envs.configs import EnvConfig

from so101_sim import registration
from so101_sim import so101_mujoco_utils as u
from so101_sim.lerobot_env import AGENT_POS, PIXELS


def parse_cameras(spec: str) -> dict[str, str]:
    """``"front=camera_up,wrist=wrist_camera"`` -> ``{"front": "camera_up", "wrist": "wrist_camera"}``
    (image name -> MuJoCo camera; sim keys camera1|2|3 are resolved), the parser of
    ``record_dataset.py --cameras`` (cli_args.camera_names); ``""`` -> {} (no images).

    Raises:
        ValueError: a malformed entry, a repeated name or an unknown camera (names it).
    """
    import argparse

    from so101_sim import cli_args

    if not spec.strip():
        return {}
    try:
        return cli_args.camera_names(spec)
    except argparse.ArgumentTypeError as e:
        raise ValueError(f"--env.cameras: {e}") from None


#: ``--env.cameras`` default: the sim's three cameras under their own names (this repo's datasets).
DEFAULT_CAMERAS = ",".join(f"{k}={v}" for k, v in u.CAMERAS.items())


@EnvConfig.register_subclass("so101_pickplace")
@dataclass
class SO101PickPlaceEnvConfig(EnvConfig):
    """``--env.type=so101_pickplace``: the SO-101 pick-up task for lerobot-eval / lerobot-train.

    Fields (``--env.<field>``): ``task`` the env id (registration.ENV_KWARGS: random or fixed
    block), ``fps`` the control rate in Hz (the env's ``control_hz``; 10 default), ``episode_length``
    in control steps (None: the registration's duration at ``fps``), ``obs_type``
    (``pixels_agent_pos`` or ``agent_pos``), ``cameras`` (image name = sim camera, comma-separated),
    ``observation_height`` / ``observation_width`` (pixels), ``task_description`` (the language
    instruction). ``features`` / ``features_map`` follow from them: ``agent_pos`` ->
    ``observation.state`` (6,), ``pixels/<name>`` -> ``observation.images.<name>`` (H, W, 3),
    ``action`` (6,), all in LeRobot calibrated units.
    """

    task: str | None = registration.DEFAULT_ENV_ID
    fps: int = int(registration.REGISTERED_CONTROL_HZ)
    episode_length: int | None = None
    obs_type: str = "pixels_agent_pos"
    cameras: str = DEFAULT_CAMERAS
    observation_height: int = u.IMAGE_SIZE
    observation_width: int = u.IMAGE_SIZE
    task_description: str = u.DEFAULT_TASK
    features: dict = field(default_factory=dict)
    features_map: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.obs_type not in ("pixels_agent_pos", "agent_pos"):
            raise ValueError(f"--env.obs_type must be pixels_agent_pos or agent_pos, got {self.obs_type!r}")
        registration.bare(self.task)  # an unknown id fails here, with the list
        self.features = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(u.NUM_JOINTS,)),
                         AGENT_POS: PolicyFeature(type=FeatureType.STATE, shape=(u.NUM_JOINTS,))}
        self.features_map = {"action": "action", AGENT_POS: u.OBS_STATE}
        for name in self.camera_map:
            key = f"{PIXELS}/{name}"
            self.features[key] = PolicyFeature(type=FeatureType.VISUAL,
                                                shape=(self.observation_height, self.observation_width, 3))
            self.features_map[key] = u.OBS_IMAGE_PREFIX + name

    @property
    def camera_map(self) -> dict[str, str]:
        """Image name -> sim camera ({} with ``obs_type=agent_pos``)."""
        return parse_cameras(self.cameras) if self.obs_type == "pixels_agent_pos" else {}

    @property
    def package_name(self) -> str:
        return registration.NAMESPACE

    @property
    def gym_id(self) -> str:
        return registration.namespaced(self.task)

    @property
    def gym_kwargs(self) -> dict:
        cams = self.camera_map
        steps = self.episode_length or registration.episode_steps(self.task, self.fps)
        kwargs = {"convention": "lerobot", "task": self.task_description, "obs_mode": "images" if cams else "state", "control_hz": float(self.fps),
                  "max_episode_steps": steps}
        if cams:
            kwargs.update(cameras=cams, image_size=(self.observation_height, self.observation_width))
        return kwargs
