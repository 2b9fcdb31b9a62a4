"""Gymnasium environment: the SO-101 arm picks up a red block in MuJoCo.

    import gymnasium as gym, envs            # `import envs` registers the env ids
    env = gym.make("SO101PickPlace-v0")      # random block; see envs/__init__.py for the others
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

Observation (a dict, LeRobot feature names):
    ``observation.state``                 (6,) float32, joint angles, MuJoCo frame, radians
                                          (z-scored SmolVLA frame with ``smolvla_normalize=True``)
    ``observation.images.<name>``         (H, W, 3) uint8 RGB, one per entry of ``cameras``
                                          (default ``camera1|2|3`` = camera_up / wrist_camera /
                                          camera_side, so101_mujoco_utils.CAMERAS), H x W =
                                          ``image_size`` (only with ``obs_mode="images"``);
                                          images of at most 128 px are drawn with low-detail
                                          meshes (``render_lod``; render() keeps the detailed ones)
    ``observation.environment_state``     (7,) float32, block position (m, world frame) and
                                          quaternion (w, x, y, z): privileged state, only with
                                          ``include_env_state=True`` (state-based policies)
Action: (6,) absolute joint position targets, MuJoCo radians, clipped to the joint limits
(z-scored SmolVLA-frame degrees with ``smolvla_normalize=True``). An action with NaN/inf raises
ValueError (a policy bug, not a physics event), before anything is simulated.
Control: ``control_hz`` env steps per simulated second, default 10 Hz (so101_mujoco_utils.CONTROL_HZ:
50 physics steps of 2 ms per env step). Other rates keep the 2 ms physics step and run a whole
number of physics steps per env step chosen so simulated time tracks the control clock exactly
(so101_mujoco_utils.substep_schedule: 30 Hz = 17, 16, 17, ... steps, 3 env steps = 0.1 s).
Reward: the sum of the named terms in ``info["reward_<term>"]`` (so101_mujoco_utils.REWARD_TERMS);
``info["is_success"]`` is the success flag. The terms are per env step (so101_mujoco_utils.
compute_reward_terms): at 30 Hz an episode of the same duration collects about 3x the per-step
terms, and ``approach`` is the distance decrease over one (shorter) step. Episode length (env
steps) comes from the registration, counted at 10 Hz (registration.episode_steps scales it).
Divergence: ``info["sim_unstable"]`` (every reset and step, False normally) turns True when MuJoCo
flagged bad positions/velocities/accelerations/controls during the step
(so101_mujoco_utils.step_and_check); MuJoCo has then reset the state itself, so the step returns
``truncated=True``, every reward term 0, ``is_success=False`` and emits one
``SimulationUnstableWarning``. ``reset(options={"block_pos": ...})`` accepts only positions in the
spawn region (so101_mujoco_utils.check_block_position, else ValueError).
Human mode needs a display: headless, ``render_mode="human"`` raises
``mujoco_rendering.NoDisplayError`` (a RuntimeError) at construction, and an instance's
``metadata["render_modes"]`` lists only ``"rgb_array"``, so ``gymnasium``'s ``check_env`` with
default arguments tests the modes that can work. ``metadata["render_fps"]`` is the control rate.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from so101_sim import mujoco_rendering
from so101_sim import so101_mujoco_utils as u
from so101_sim.so101_mujoco_utils import mujoco


class SO101PickPlaceEnv(gym.Env):
    """SO-101 pick-up-the-red-block task (see the module docstring for spaces and units).

    Args:
        render_mode: None, ``"rgb_array"`` (``render()`` returns the ``render_camera`` view) or
            ``"human"`` (MuJoCo's passive viewer, needs a display; ``mjpython`` on macOS).
        obs_mode: ``"images"`` (state + the ``cameras``) or ``"state"`` (no rendering at all).
        image_size: camera observation size in pixels: an int for height = width (default 256), or
            ``(height, width)``, e.g. ``(480, 640)`` as a real SO-101's OpenCV cameras; at most
            480 x 640 (the offscreen buffer). Stored as ``image_hw = (h, w)``; ``image_size`` keeps
            the int of a square size (else the (h, w) tuple).
        randomize_block: block at a random polar position on reset (else the default position).
        smolvla_normalize: observation state and actions in SmolVLA's z-scored frame.
        include_env_state: add ``observation.environment_state`` (block pose).
        terminate_on_success: end the episode (``terminated=True``) on the first success.
        render_camera: MuJoCo camera used by ``render()`` and videos.
        render_size: (height, width) of ``render()`` frames.
        fast_render: None = automatic (fast on software GL), True/False to force.
        decimate_meshes: draw decimated visual meshes (default; physics is unchanged). False
            draws the full ~400k-triangle meshes (the benchmark's "naive" renderer).
        render_lod: observation cameras draw low-detail visual meshes (~4.8k instead of ~121k
            triangles, so101_mujoco_utils.LOD_FACES; 3 cameras at 96x96 ~10x faster on software
            GL). None = automatic: on with ``obs_mode="images"`` when the larger image side is at
            most so101_mujoco_utils.LOD_MAX_IMAGE_PX (128 px); True/False to force. Stored as
            ``render_lod`` (bool). ``render()`` frames, videos and the viewer always draw the
            detailed meshes, and the physics is the same either way (the low-detail twins have no
            contacts and no mass).
        control_hz: env steps per simulated second (default 10 Hz, so101_mujoco_utils.CONTROL_HZ),
            in (0, 500]; the physics step stays 2 ms and step k runs
            ``so101_mujoco_utils.substep_schedule(control_hz, k)`` physics steps (10 Hz: always 50).
            Reward terms stay per env step (see the module docstring).
        cameras: observation image name -> camera, ``{"front": "camera_up", "wrist": "wrist_camera"}``
            gives ``observation.images.front`` / ``.wrist``; a camera is a MuJoCo camera name
            (camera_up, wrist_camera, camera_side) or a sim key camera1|2|3. None =
            so101_mujoco_utils.CAMERAS (camera1/2/3 = camera_up/wrist_camera/camera_side).

    Raises:
        ValueError: an unknown render mode, observation mode or camera (the message lists the
            cameras), a bad image size, or a control rate outside (0, 500] Hz.
        mujoco_rendering.NoDisplayError: ``render_mode="human"`` without a display (raised here,
            before any window: MuJoCo's failing GLFW initialisation would end the process).
    """

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": int(u.CONTROL_HZ)}

    def __init__(
        self,
        render_mode: str | None = None,
        obs_mode: str = "images",
        image_size: int | tuple[int, int] = u.IMAGE_SIZE,
        randomize_block: bool = True,
        smolvla_normalize: bool = False,
        include_env_state: bool = False,
        terminate_on_success: bool = True,
        render_camera: str = u.CAMERAS["camera3"],
        render_size: tuple[int, int] = (480, 640),
        fast_render: bool | None = None,
        decimate_meshes: bool = True,
        control_hz: float = u.CONTROL_HZ,
        cameras: Mapping[str, str] | None = None,
        render_lod: bool | None = None,
    ):
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        if obs_mode not in ("images", "state"):
            raise ValueError(f"obs_mode must be 'images' or 'state', got {obs_mode!r}")
        if render_camera not in u.CAMERAS.values():
            raise ValueError(f"Unknown camera {render_camera!r}; available: {sorted(u.CAMERAS.values())}")
        self.control_hz = u.check_control_hz(control_hz)
        self.cameras = u.resolve_cameras(cameras)
        self.image_hw = u.image_hw(image_size)
        if render_mode == "human":
            mujoco_rendering.require_display("SO101PickPlaceEnv(render_mode='human')")
        # an instance's own metadata: its control rate, and only the modes that can work here
        self.metadata = {**type(self).metadata, "render_fps": int(round(self.control_hz))}
        if render_mode != "human" and not mujoco_rendering.has_display():  # this instance cannot open a window
            self.metadata["render_modes"] = ["rgb_array"]
        self.render_mode = render_mode
        self.obs_mode = obs_mode
        h, w = self.image_hw
        self.image_size = h if h == w else (h, w)
        self.image_keys = tuple(u.OBS_IMAGE_PREFIX + name for name in self.cameras)
        self.randomize_block = randomize_block
        self.smolvla_normalize = smolvla_normalize
        self.include_env_state = include_env_state
        self.terminate_on_success = terminate_on_success
        self.render_camera = render_camera
        self.render_size = render_size
        self._fast_render = fast_render

        self.render_lod = choose_render_lod(obs_mode, self.image_hw, render_lod)
        self.model = u.load_model(decimate=decimate_meshes, lod=self.render_lod)
        self.data = mujoco.MjData(self.model)
        self.ids = u.SceneIds.from_model(self.model)  # names -> ids, once
        self._obs_renderer: u.CameraRenderer | None = None
        self._video_renderer: u.CameraRenderer | None = None
        self._viewer = None

        lo, hi = u.JOINT_LIMITS_RAD
        if smolvla_normalize:
            lo, hi = u.normalize_action_for_smolvla(lo), u.normalize_action_for_smolvla(hi)
        self._act_low, self._act_high = lo.astype(np.float32), hi.astype(np.float32)
        # unbounded: joints can overshoot their limits slightly under contact
        state_space = spaces.Box(-np.inf, np.inf, (u.NUM_JOINTS,), np.float32)
        self.action_space = spaces.Box(self._act_low, self._act_high, dtype=np.float32)
        obs_spaces: dict[str, spaces.Space] = {u.OBS_STATE: state_space}
        if obs_mode == "images":
            for key in self.image_keys:
                obs_spaces[key] = spaces.Box(0, 255, (*self.image_hw, 3), np.uint8)
        if include_env_state:
            obs_spaces[u.OBS_ENV_STATE] = spaces.Box(-np.inf, np.inf, (7,), np.float32)
        self.observation_space = spaces.Dict(obs_spaces)

        self._initial_block_pos = u.BLOCK_DEFAULT_POS.copy()
        self._prev_distance = 0.0
        self._steps = 0  # env steps since the last reset

    # ---------------------------------------------------------------- gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset the arm to the home pose and place the block (seeded by ``seed``).

        ``options`` may hold ``"block_pos"``: an explicit (3,) block centre, world frame, metres,
        resting on the table inside the spawn region (:func:`so101_mujoco_utils.check_block_position`).
        Returns ``(observation, info)``; info has ``block_pos``, ``is_success=False`` and
        ``sim_unstable=False``.

        Raises:
            ValueError: ``block_pos`` not 3 finite numbers, under/above the table or outside the
                workspace (the message gives the value and the allowed range).
        """
        super().reset(seed=seed)
        if options and "block_pos" in options:
            block = u.check_block_position(options["block_pos"])
        elif self.randomize_block:
            block = u.sample_block_position(self.np_random)
        else:
            block = u.BLOCK_DEFAULT_POS.copy()
        u.reset_scene(self.model, self.data, self.ids, block)
        self._initial_block_pos = u.block_position(self.data, self.ids)
        self._prev_distance = float(np.linalg.norm(u.gripper_position(self.data, self.ids) - self._initial_block_pos))
        self._steps = 0
        if self.render_mode == "human":
            self._sync_viewer()
        return self._get_obs(), {"block_pos": self._initial_block_pos.copy(), "is_success": False, "sim_unstable": False}

    def step(self, action):
        """Apply joint targets for one control step (1 / control_hz s: 0.1 s at the default 10 Hz) of
        :func:`so101_mujoco_utils.substep_schedule` physics steps; see the class docstring for units.

        ``info["sim_unstable"]`` is True when the physics diverged during the step (MuJoCo's
        BADQPOS/BADQVEL/BADQACC/BADCTRL, :func:`so101_mujoco_utils.step_and_check`): MuJoCo has
        reset the state, so the step returns ``truncated=True``, all reward terms 0,
        ``is_success=False`` and warns once (:class:`so101_mujoco_utils.SimulationUnstableWarning`).
        The observation is then MuJoCo's reset state: reset the env.

        Raises:
            ValueError: the action has the wrong shape or contains NaN/inf.
        """
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (u.NUM_JOINTS,):
            raise ValueError(f"action must have shape ({u.NUM_JOINTS},), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains NaN or inf: {action}; check the policy output and its unnormalization")
        action = np.clip(action, self._act_low, self._act_high)
        target = u.unnormalize_action_from_smolvla(action) if self.smolvla_normalize else action
        self.data.ctrl[self.ids.actuator_ids] = u.clip_to_joint_limits(target)
        problems = u.step_and_check(self.model, self.data, nstep=u.substep_schedule(self.control_hz, self._steps))
        self._steps += 1
        unstable = bool(problems)

        gripper = self.data.site_xpos[self.ids.gripper_site]
        block = self.data.xpos[self.ids.block_body]
        if unstable:  # MuJoCo reset the state: nothing of this step is physics, reward nothing
            grasped, success = False, False
            terms = {k: 0.0 for k in u.REWARD_TERMS}
            warnings.warn(u.SimulationUnstableWarning(
                f"SO101PickPlaceEnv: simulation unstable at step {self._steps} ({'; '.join(problems)}); MuJoCo "
                "reset the state, episode truncated (info['sim_unstable'] = True)"), stacklevel=2)
        else:
            grasped = u.is_grasped(self.model, self.data, self.ids)
            terms, success, distance = u.compute_reward_terms(
                gripper, block, self._initial_block_pos, self._prev_distance, grasped
            )
            self._prev_distance = distance
        reward = float(sum(terms.values()))
        info: dict[str, Any] = {f"reward_{k}": v for k, v in terms.items()}
        info["is_success"] = bool(success)
        info["grasped"] = bool(grasped)
        info["block_pos"] = block.copy()
        info["sim_unstable"] = unstable
        terminated = bool(success and self.terminate_on_success)
        if self.render_mode == "human":
            self._sync_viewer()
        return self._get_obs(), reward, terminated, unstable, info

    def render(self):
        """``rgb_array``: (H, W, 3) uint8 frame from ``render_camera``; ``human``: sync the viewer."""
        if self.render_mode == "human":
            self._sync_viewer()
            return None
        if self._video_renderer is None:
            self._video_renderer = u.CameraRenderer(self.model, *self.render_size, fast=self._fast_render)
        return self._video_renderer.render(self.data, self.render_camera)

    def close(self):
        for r in (self._obs_renderer, self._video_renderer):
            if r is not None:
                r.close()
        self._obs_renderer = self._video_renderer = None
        if self._viewer is not None:
            self._viewer.close()
            self._viewer = None

    # ---------------------------------------------------------------- helpers
    @property
    def joint_positions(self) -> np.ndarray:
        """Current joint angles (6,), MuJoCo frame, radians (a copy)."""
        return self.data.qpos[self.ids.qpos_adr].copy()

    @property
    def initial_block_pos(self) -> np.ndarray:
        """Block centre right after the last reset (3,), world frame, metres."""
        return self._initial_block_pos.copy()

    def render_cameras(self) -> dict[str, np.ndarray]:
        """Render the observation cameras (``cameras``): ``{observation.images.<name>: (H, W, 3) uint8
        RGB}``, H x W = ``image_hw``, in the order of ``cameras``; low-detail meshes when
        ``render_lod``."""
        if self._obs_renderer is None:
            self._obs_renderer = u.CameraRenderer(self.model, *self.image_hw, fast=self._fast_render, lod=self.render_lod)
        return {key: self._obs_renderer.render(self.data, cam) for key, cam in zip(self.image_keys, self.cameras.values())}

    def _get_obs(self) -> dict[str, np.ndarray]:
        q = self.data.qpos[self.ids.qpos_adr]
        state = u.normalize_state_for_smolvla(q) if self.smolvla_normalize else q
        obs = {u.OBS_STATE: state.astype(np.float32)}
        if self.obs_mode == "images":
            obs.update(self.render_cameras())
        if self.include_env_state:
            a = self.ids.block_qpos_adr
            obs[u.OBS_ENV_STATE] = self.data.qpos[a : a + 7].astype(np.float32)
        return obs

    def _sync_viewer(self):
        if self._viewer is None:
            mujoco_rendering.require_display("SO101PickPlaceEnv(render_mode='human')")
            import mujoco.viewer

            self._viewer = mujoco.viewer.launch_passive(self.model, self.data)
        self._viewer.sync()


def choose_render_lod(obs_mode: str, image_hw: tuple[int, int], render_lod: bool | None = None) -> bool:
    """Whether an env's observation cameras draw the low-detail meshes (``render_lod``).

    ``render_lod`` True/False is the answer; None (automatic) is True only for image observations
    whose larger side is at most so101_mujoco_utils.LOD_MAX_IMAGE_PX (128 px,
    :func:`so101_mujoco_utils.use_lod`): a state-only env keeps the plain model."""
    if render_lod is not None:
        return bool(render_lod)
    return obs_mode == "images" and u.use_lod(image_hw)


def check_reward_terms(terms) -> tuple[str, ...]:
    """``terms`` as a tuple after checking each is one of so101_mujoco_utils.REWARD_TERMS.

    Raises:
        ValueError: empty, or a name that is not a reward term (lists the valid ones).
    """
    terms = tuple(terms)
    unknown = [t for t in terms if t not in u.REWARD_TERMS]
    if not terms or unknown:
        raise ValueError(f"unknown reward terms {unknown or '(none given)'}; choose 'all' or from {list(u.REWARD_TERMS)}")
    return terms


class RewardTermsWrapper(gym.Wrapper):
    """Replace the reward by the sum of a chosen subset of the env's named reward terms.

    The env's reward is the sum of every term in ``info["reward_<term>"]``
    (so101_mujoco_utils.REWARD_TERMS); this wrapper keeps the info untouched and returns
    ``sum(info["reward_<t>"] for t in terms)`` as the reward, e.g. ``("success",)`` for a sparse
    success reward (50 on the success step, 0 elsewhere). Used by train_reinflow.py
    ``--reward-terms``.

    Raises:
        ValueError: ``terms`` is empty or names a term that is not in REWARD_TERMS.
    """

    def __init__(self, env: gym.Env, terms):
        super().__init__(env)
        self.terms = check_reward_terms(terms)
        self._keys = tuple(f"reward_{t}" for t in self.terms)

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        return obs, float(sum(info[k] for k in self._keys)), terminated, truncated, info


class RepeatBlockWrapper(gym.Wrapper):
    """Start ``repeats`` consecutive episodes from the same block position (groups of episodes
    for a group-relative baseline, train_reinflow.py ``--advantage group``).

    A reset with a ``seed`` (or the first reset after ``repeats`` episodes) places the block as
    the env does (random or default); the next ``repeats - 1`` unseeded resets put it back at
    that episode's initial block centre (``options["block_pos"]``), so the episodes of a group
    start from the same state up to the settling of the contacts (~1e-8 m). ``info`` gains
    ``group_episode``: 0 .. repeats-1, the episode's index within its group.

    Raises:
        ValueError: ``repeats`` < 1.
    """

    def __init__(self, env: gym.Env, repeats: int):
        super().__init__(env)
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.repeats = int(repeats)
        self._count = 0
        self._block: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None or self._block is None or self._count >= self.repeats:
            obs, info = self.env.reset(seed=seed, options=options)
            self._block, self._count = np.asarray(info["block_pos"], np.float64).copy(), 0
        else:
            obs, info = self.env.reset(options={**(options or {}), "block_pos": self._block})
        info["group_episode"] = self._count
        self._count += 1
        return obs, info


class BlockCurriculumWrapper(gym.Wrapper):
    """Place the block by a weighted grid of polar bins instead of uniformly (a curriculum over
    block positions, train_reinflow.py ``--block-curriculum``; reinflow_rollout.BlockCurriculum
    makes the weights).

    The randomised placement (distance :data:`so101_mujoco_utils.BLOCK_DISTANCE_RANGE`, angle
    :data:`so101_mujoco_utils.BLOCK_ANGLE_RANGE_DEG`) is cut into ``n_distance x n_angle`` bins
    (so101_mujoco_utils.block_bin_edges). A reset whose ``options`` hold ``"block_bin_weights"``
    ((n_bins,) non-negative, any scale) stores them for this and later resets; each reset then
    draws a bin with those probabilities and a position uniformly (in distance and angle) inside
    it, from the wrapper's own generator, which a seeded reset re-seeds (so seed s with the same
    weights gives the same positions on every run). Without weights, and when ``options`` give an
    explicit ``"block_pos"``, the env places the block as usual. ``info["block_bin"]`` (reset and
    step) is the bin of the episode's initial block position.

    Raises:
        ValueError: weights of the wrong length, negative, non-finite or all zero.
    """

    def __init__(self, env: gym.Env, n_distance: int = 4, n_angle: int = 3):
        super().__init__(env)
        self.n_distance, self.n_angle = int(n_distance), int(n_angle)
        self.n_bins = self.n_distance * self.n_angle
        self._d_edges, self._a_edges = u.block_bin_edges(self.n_distance, self.n_angle)
        self._weights: np.ndarray | None = None
        self._rng = np.random.default_rng(0)
        self._bin = 0

    def set_weights(self, weights) -> None:
        """Bin probabilities for the next resets: (n_bins,) >= 0, normalised here.

        Raises:
            ValueError: see the class docstring.
        """
        w = np.asarray(weights, np.float64)
        if w.shape != (self.n_bins,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"block_bin_weights must be {self.n_bins} finite non-negative numbers with a "
                             f"positive sum ({self.n_distance} distance x {self.n_angle} angle bins), got {weights!r}")
        self._weights = w / w.sum()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        options = dict(options or {})
        if "block_bin_weights" in options:
            self.set_weights(options.pop("block_bin_weights"))
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        if self._weights is not None and "block_pos" not in options:
            b = int(self._rng.choice(self.n_bins, p=self._weights))
            i, j = divmod(b, self.n_angle)
            options["block_pos"] = u.sample_block_position(
                self._rng, self._d_edges[i : i + 2], self._a_edges[j : j + 2])
        obs, info = self.env.reset(seed=seed, options=options or None)
        self._bin = u.block_bin(info["block_pos"], self.n_distance, self.n_angle)
        info["block_bin"] = self._bin
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["block_bin"] = self._bin
        return obs, reward, terminated, truncated, info


class ChunkActionWrapper(gym.Wrapper):
    """One ``step`` executes an action chunk, so one (vector-)env step is one policy decision (the
    ReinFlow reference trainer's shape; reinflow_rollout.collect_rollout).

    ``step(actions)`` takes ``(n, 6)`` float32 MuJoCo-radian joint targets (the first
    ``n_action_steps`` actions of a chunk), steps the wrapped env on each in turn and stops early
    when the episode terminates or is truncated. It returns the last observation, the *sum* of the
    rewards (float), the last ``terminated`` / ``truncated`` and the last info, in which
    ``chunk_steps`` is the number of env steps executed (1..n), ``is_success`` is true if any step
    succeeded and ``sim_unstable`` if any step diverged.

    Args:
        env: an SO-101 env (any wrapper stack whose actions are (6,) joint targets).
        n: actions per chunk (>= 1).
    """

    def __init__(self, env: gym.Env, n: int):
        super().__init__(env)
        if int(n) < 1:
            raise ValueError(f"ChunkActionWrapper needs n >= 1 actions per chunk, got {n}")
        self.n = int(n)
        low, high = env.action_space.low, env.action_space.high
        self.action_space = spaces.Box(np.tile(low, (self.n, 1)), np.tile(high, (self.n, 1)), dtype=env.action_space.dtype)

    def step(self, actions):
        actions = np.asarray(actions)
        if actions.shape != self.action_space.shape:
            raise ValueError(f"ChunkActionWrapper: expected actions of shape {self.action_space.shape}, got {actions.shape}")
        total, success, unstable = 0.0, False, False
        for k, a in enumerate(actions, start=1):
            obs, reward, terminated, truncated, info = self.env.step(a)
            total += float(reward)
            success |= bool(info.get("is_success", False))
            unstable |= bool(info.get("sim_unstable", False))
            if terminated or truncated:
                break
        info = dict(info, chunk_steps=k, is_success=success, sim_unstable=unstable)
        return obs, total, terminated, truncated, info
