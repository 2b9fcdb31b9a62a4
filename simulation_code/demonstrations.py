"""Demonstrations for behaviour cloning (train_flow_bc.py), as frame arrays in MuJoCo radians.

* :func:`load_lerobot_demonstrations`: a LeRobotDataset recorded by record_dataset.py (LeRobot
  calibrated units converted back to MuJoCo radians; the block pose from its column or replayed
  from the stored episode seeds).
* :func:`scripted_demonstrations`: straight from the env and the scripted expert, in memory.
* :func:`chunk_targets`: per-frame actions -> action chunks (the BC targets).

Every function returns / takes frames ordered by episode, then time.
"""

from __future__ import annotations

import numpy as np

from so101_sim import envs  # registers the env ids
from so101_sim import so101_mujoco_utils as u


def chunk_targets(actions: np.ndarray, episode_index: np.ndarray, chunk_size: int) -> np.ndarray:
    """Action chunks from per-frame actions: chunk i = actions[i : i + chunk_size] of the same
    episode, padded by repeating the episode's last action.

    Args:
        actions: (N, 6) frames ordered by episode then time.
        episode_index: (N,) int episode id per frame.
    Returns:
        (N, chunk_size, 6) float32.
    """
    n = len(actions)
    out = np.empty((n, chunk_size, actions.shape[1]), np.float32)
    ends = {}
    for i in range(n - 1, -1, -1):
        ends.setdefault(int(episode_index[i]), i)
    for i in range(n):
        last = ends[int(episode_index[i])]
        idx = np.minimum(np.arange(i, i + chunk_size), last)
        out[i] = actions[idx]
    return out


def scripted_demonstrations(num_episodes: int, seed: int, env_id: str | None = None,
                            only_successful: bool = True) -> dict[str, np.ndarray]:
    """Demonstrations straight from the env + scripted expert, in memory (development/tests;
    the benchmark records a LeRobotDataset with ``record_dataset.py``).

    Episode j uses seed ``seed + j``. Returns frames ordered by episode: ``state`` (N, 6) and
    ``action`` (N, 6) MuJoCo radians, ``env_state`` (N, 7), ``episode_index`` (N,) int64.
    """
    import gymnasium as gym

    from so101_sim.scripted_expert import ScriptedExpert

    env = gym.make(env_id or envs.DEFAULT_ENV_ID, obs_mode="state", include_env_state=True)
    expert = ScriptedExpert(env.unwrapped.model, control_hz=env.unwrapped.control_hz)
    cols: dict[str, list] = {"state": [], "env_state": [], "action": [], "episode_index": []}
    ep = 0
    for j in range(num_episodes):
        obs, _ = env.reset(seed=seed + j)
        expert.reset()
        rows: dict[str, list] = {k: [] for k in cols}
        done, success = False, False
        while not done:
            a = expert.act_in_env(env)
            rows["state"].append(obs[u.OBS_STATE])
            rows["env_state"].append(obs[u.OBS_ENV_STATE])
            rows["action"].append(np.asarray(a, np.float32))
            rows["episode_index"].append(ep)
            obs, _, term, trunc, info = env.step(a)
            success |= bool(info["is_success"])
            done = term or trunc
        if success or not only_successful:
            for k in cols:
                cols[k].extend(rows[k])
            ep += 1
    env.close()
    return {k: np.asarray(v, np.int64 if k == "episode_index" else np.float32) for k, v in cols.items()}


def load_lerobot_demonstrations(root: str, env_id: str | None = None) -> dict[str, np.ndarray]:
    """Frames of a LeRobotDataset v3 recorded by ``record_dataset.py`` (no video decoding).

    ``observation.state`` / ``action`` are converted from LeRobot calibrated units (degrees,
    gripper 0..100) to MuJoCo radians with :func:`so101_mujoco_utils.lerobot_to_mujoco`.
    The flow policy also needs the block pose: if the dataset has an
    ``observation.environment_state`` column it is used; otherwise it is *reconstructed by
    replay*: each episode is reset with the seed the recorder stored in its ``episode_seed`` column
    (:data:`so101_mujoco_utils.EPISODE_SEED`; older recordings: ``meta/so101_recording.json``) and
    its stored actions are executed (control rate / dataset fps control steps per frame), recording
    the block pose before each frame. The env id comes from ``env_id``, else the recording sidecar,
    else envs.DEFAULT_ENV_ID (LeRobot's dataset tools drop the sidecar: pass ``env_id`` for a
    fixed-block recording). The recorder stores actions so that replay is exact; the replayed joint
    angles are checked against the recorded ``observation.state``.

    Returns:
        like :func:`scripted_demonstrations`.
    Raises:
        KeyError: no environment_state column and no seeds (column or sidecar).
        RuntimeError: replay does not reproduce the recorded joint states (> 1e-3 rad).
    """
    import json
    import logging
    from pathlib import Path

    logging.getLogger("lerobot.utils.import_utils").setLevel(logging.ERROR)  # torchcodec -> pyav notice
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = Path(root)
    ds = LeRobotDataset(f"local/{root.name}", root=root)
    hf = ds.hf_dataset.with_format("numpy")
    ep = np.asarray(hf["episode_index"], np.int64)
    fi = np.asarray(hf["frame_index"], np.int64)
    order = np.lexsort((fi, ep))
    action64 = u.lerobot_to_mujoco(np.stack(hf["action"])[order].astype(np.float32))  # as the recorder executes
    out = {
        "state": u.lerobot_to_mujoco(np.stack(hf[u.OBS_STATE])[order]).astype(np.float32),
        "action": action64.astype(np.float32),
        "episode_index": ep[order],
    }
    if u.OBS_ENV_STATE in hf.column_names:
        out["env_state"] = np.stack(hf[u.OBS_ENV_STATE])[order].astype(np.float32)
        return out
    meta_path = root / "meta" / "so101_recording.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if u.EPISODE_SEED in hf.column_names:
        seed_col = np.asarray(hf[u.EPISODE_SEED], np.int64).reshape(-1)[order]
        seeds = {int(e): int(s) for e, s in zip(out["episode_index"], seed_col)}
    elif meta:
        seeds = {int(e["episode_index"]): int(e["seed"]) for e in meta["episodes"]}
    else:
        raise KeyError(f"{root}: no {u.OBS_ENV_STATE!r} column and no {u.EPISODE_SEED!r} column or "
                       f"{meta_path.name} with episode seeds to replay")
    # the recorder's control rate and control steps per frame (sidecar; without one: every step a frame at fps)
    control_hz = float(meta.get("control_hz", u.CONTROL_HZ)) if meta else float(ds.fps)
    k = int(meta.get("steps_per_frame", 1)) if meta else 1
    out["env_state"] = _replay_env_state(dict(out, action=action64), seeds, env_id or meta.get("env_id", envs.DEFAULT_ENV_ID),
                                         k, root, control_hz)
    return out


def _replay_env_state(frames: dict, seeds: dict[int, int], env_id: str, k: int, root, control_hz: float) -> np.ndarray:
    import gymnasium as gym

    env = gym.make(env_id, obs_mode="state", include_env_state=True, terminate_on_success=False,
                   control_hz=control_hz, max_episode_steps=10**9, disable_env_checker=True)
    env_state = np.zeros((len(frames["state"]), 7), np.float32)
    worst = 0.0
    try:
        for e in np.unique(frames["episode_index"]):
            idx = np.flatnonzero(frames["episode_index"] == e)
            if int(e) not in seeds:
                raise KeyError(f"{root}: episode {e} has no recorded seed")
            obs, _ = env.reset(seed=seeds[int(e)])
            for i in idx:
                worst = max(worst, float(np.abs(obs[u.OBS_STATE] - frames["state"][i]).max()))
                env_state[i] = obs[u.OBS_ENV_STATE]
                for _ in range(k):
                    obs, *_ = env.step(frames["action"][i])
    finally:
        env.close()
    if worst > 1e-3:
        raise RuntimeError(f"{root}: replaying the stored actions does not reproduce the recorded joint states "
                           f"(max deviation {worst:.2e} rad); cannot reconstruct the block pose")
    return env_state


__all__ = ["chunk_targets", "load_lerobot_demonstrations", "scripted_demonstrations"]
