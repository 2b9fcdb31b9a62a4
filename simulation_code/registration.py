"""The SO-101 sim's Gymnasium ids, in one table, and the function that registers them.

Two forms of each id point at the same env (:class:`so101_sim.so101_gym_env.SO101PickPlaceEnv`):

* namespaced, ``so101_sim/SO101PickPlace-v0``: registered in every Python of an environment where the
  package is installed (``make install`` / ``pip install -e .``) as soon as Gymnasium is imported, so
  ``gym.make("so101_sim/SO101PickPlace-v0")`` works from any directory with nothing imported first
  (:mod:`so101_sim.import_hooks`);
* bare, ``SO101PickPlace-v0``: registered by ``import envs`` from simulation_code/ (the flat
  scripts' form, kept from the seed) or ``from so101_sim import envs``.

| id                          | block      | render_mode | max_episode_steps (10 Hz) |
|-----------------------------|------------|-------------|---------------------------|
| SO101PickPlace-v0           | randomized | None        | 150 (15 s)                |
| SO101PickPlaceNoRandom-v0   | fixed      | None        | 150 (15 s)                |
| SO101PickPlaceHuman-v0      | randomized | "human"     | 1000 (100 s)              |

Keyword arguments of ``gym.make`` go to the env's constructor. The episode lengths are control
steps at the default 10 Hz; a run at another ``control_hz`` passes ``max_episode_steps`` itself
(:func:`episode_steps`). This module imports nothing heavy: Gymnasium is imported by
:func:`register_envs` only, and the env class only when an env is made.
"""

#: Gymnasium namespace of the installed ids (``<NAMESPACE>/<id>``); also LeRobot's ``package_name``.
NAMESPACE = "so101_sim"
#: The env id every script uses unless told otherwise (``--env-id``), and its fixed-block twin.
DEFAULT_ENV_ID = "SO101PickPlace-v0"
FIXED_BLOCK_ENV_ID = "SO101PickPlaceNoRandom-v0"
#: Episode lengths, in control steps at the default 10 Hz (one place for these numbers).
MAX_EPISODE_STEPS = {"SO101PickPlace-v0": 150, "SO101PickPlaceNoRandom-v0": 150, "SO101PickPlaceHuman-v0": 1000}
#: Constructor arguments of each id.
ENV_KWARGS = {
    "SO101PickPlace-v0": {"randomize_block": True},
    "SO101PickPlaceNoRandom-v0": {"randomize_block": False},
    "SO101PickPlaceHuman-v0": {"randomize_block": True, "render_mode": "human"},
}
#: Every id is made by :func:`make_env` (the env, or with ``convention="lerobot"`` LeRobot's view of it).
ENTRY_POINT = "so101_sim.registration:make_env"
#: ``gym.make(..., convention=...)``: the env's own observation/action or LeRobot's gym-side convention.
CONVENTIONS = ("so101", "lerobot")
#: The registration's control rate (Hz) that MAX_EPISODE_STEPS counts in (so101_mujoco_utils.CONTROL_HZ).
REGISTERED_CONTROL_HZ = 10.0


def namespaced(env_id: str) -> str:
    """``"SO101PickPlace-v0"`` -> ``"so101_sim/SO101PickPlace-v0"``; an id that has a namespace is returned as is."""
    return env_id if "/" in env_id else f"{NAMESPACE}/{env_id}"


def bare(env_id: str) -> str:
    """``"so101_sim/SO101PickPlace-v0"`` -> ``"SO101PickPlace-v0"`` (the key of the tables above).

    Raises:
        ValueError: the id is not one of ours (namespaced or bare).
    """
    name = env_id.removeprefix(NAMESPACE + "/")
    if name not in ENV_KWARGS:
        known = ", ".join(list(ENV_KWARGS) + [namespaced(k) for k in ENV_KWARGS])
        raise ValueError(f"unknown SO-101 env id {env_id!r}; choose one of {known}")
    return name


def episode_steps(env_id: str, control_hz: float = REGISTERED_CONTROL_HZ) -> int:
    """The registered episode length of ``env_id`` in control steps at ``control_hz`` (same duration in
    seconds: 150 steps at 10 Hz = 450 at 30 Hz).

    Raises:
        ValueError: unknown ``env_id``, or ``control_hz`` <= 0.
    """
    if control_hz <= 0:
        raise ValueError(f"control_hz must be > 0, got {control_hz}")
    return round(MAX_EPISODE_STEPS[bare(env_id)] * control_hz / REGISTERED_CONTROL_HZ)


def make_env(convention: str = "so101", task: str | None = None, **kwargs):
    """The registered entry point: :class:`so101_sim.so101_gym_env.SO101PickPlaceEnv` ``(**kwargs)``;
    with ``convention="lerobot"`` wrapped in :class:`so101_sim.lerobot_env.LeRobotConvention`
    (``agent_pos`` / ``pixels/<camera>`` in LeRobot calibrated degrees, what ``lerobot-eval`` steps)
    whose ``task_description`` is ``task`` (default so101_mujoco_utils.DEFAULT_TASK).

    Raises:
        ValueError: an unknown ``convention``, ``task`` without ``convention="lerobot"`` (and
            whatever the env's constructor raises).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if task is not None and convention != "lerobot":
        raise ValueError("task= is the language instruction of convention='lerobot'; the so101 env takes no task")
    from so101_sim.so101_gym_env import SO101PickPlaceEnv

    env = SO101PickPlaceEnv(**kwargs)
    if convention == "lerobot":
        from so101_sim.lerobot_env import LeRobotConvention

        env = LeRobotConvention(env) if task is None else LeRobotConvention(env, task=task)
    return env


def register_envs(namespace: str | None = NAMESPACE) -> list[str]:
    """Register every id of the table with Gymnasium, as ``<namespace>/<id>`` (default) or bare
    (``namespace=None``); ids already registered are left alone. Returns the ids.

    This is also the ``gymnasium.envs`` entry point in pyproject.toml (read by Gymnasium 0.26-0.29;
    Gymnasium 1.x no longer reads entry points, hence :mod:`so101_sim.import_hooks`).
    """
    # from the submodule: the start-up hook calls this while `gymnasium/__init__.py` is still running
    from gymnasium.envs.registration import register, registry

    ids = []
    for name, kwargs in ENV_KWARGS.items():
        env_id = name if namespace is None else f"{namespace}/{name}"
        if env_id not in registry:
            register(id=env_id, entry_point=ENTRY_POINT, max_episode_steps=MAX_EPISODE_STEPS[name], kwargs=kwargs)
        ids.append(env_id)
    return ids
