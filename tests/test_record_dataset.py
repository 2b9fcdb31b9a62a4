"""record_dataset.py writes a LeRobotDataset v3 that LeRobot itself reloads, in the right units.

Records 2 short scripted episodes (64x64 cameras: video encoding on a small CPU is the slow part)
once per module, then checks them through ``LeRobotDataset(repo_id, root=...)``.
"""

import json
import shutil

import numpy as np
import pytest

from so101_sim import record_dataset as rd
from so101_sim import so101_mujoco_utils as u

REPO_ID = "local/test_so101_record"
IMG = 64


def record(out, *extra):
    """Run the recorder in-process (returns its exit code)."""
    return rd.main(["--input", "scripted", "--output_dir", str(out), "--num_episodes", "2", "--image-size", str(IMG),
                    "--repo-id", REPO_ID, "--seed", "0", *extra])


def load(root):
    from lerobot.datasets import LeRobotDataset

    return LeRobotDataset(REPO_ID, root=root, video_backend="pyav")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("rec") / "so101_two_episodes"
    assert record(root) == 0
    return root


def columns(ds):
    cols = ds.hf_dataset.with_format("numpy")[:]
    return np.stack(cols[u.OBS_STATE]), np.stack(cols["action"]), np.asarray(cols["episode_index"])


def test_reload_counts_features_task(recorded):
    meta = json.loads((recorded / rd.RECORDING_META).read_text())
    ds = load(recorded)
    assert ds.num_episodes == 2
    assert ds.num_frames == sum(e["frames"] for e in meta["episodes"]) > 20
    assert all(e["success"] for e in meta["episodes"]) and [e["seed"] for e in meta["episodes"]] == [0, 1]
    assert ds.meta.robot_type == rd.ROBOT_TYPE == "so_follower" and ds.fps == 10
    for key in (u.OBS_STATE, "action"):
        ft = ds.meta.features[key]
        assert ft["dtype"] == "float32" and tuple(ft["shape"]) == (6,)
        assert list(ft["names"]) == ["shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos", "wrist_flex.pos",
                                     "wrist_roll.pos", "gripper.pos"]
    assert sorted(ds.meta.video_keys) == sorted(u.IMAGE_KEYS)
    for key in u.IMAGE_KEYS:
        assert tuple(ds.meta.features[key]["shape"]) == (IMG, IMG, 3)
    assert list(ds.meta.tasks.index) == [u.DEFAULT_TASK]
    item = ds[ds.num_frames - 1]
    assert item["task"] == u.DEFAULT_TASK
    assert item[u.OBS_STATE].shape == (6,) and item["action"].shape == (6,)
    # the convention, the cameras and the control rate are recorded with the data
    assert "degrees" in meta["units"][u.OBS_STATE] and "0..100" in meta["units"][u.OBS_STATE]
    assert meta["camera_map"] == u.CAMERAS and meta["control_hz"] == meta["fps"] == 10 and meta["steps_per_frame"] == 1
    assert meta["image_size"] == IMG and meta["image_hw"] == [IMG, IMG] and meta["robot_type"] == "so_follower"
    card = (recorded / "README.md").read_text()
    assert "degrees" in card and "lerobot-train" in card


def test_state_action_round_trip_to_sim_and_video_decodes(recorded):
    """Replaying the stored actions (decoded to MuJoCo radians) from the stored seeds reproduces
    every stored state within 1e-4 rad; decoded video frames show the right camera."""
    import gymnasium as gym

    from so101_sim import envs  # noqa: F401

    meta = json.loads((recorded / rd.RECORDING_META).read_text())
    ds = load(recorded)
    state, action, ep_index = columns(ds)
    assert state.dtype == np.float32 and action.dtype == np.float32
    # LeRobot units: body joints in degrees, gripper 0..100 (0 = closed by the expert)
    assert np.abs(state[:, :5]).max() > 30.0
    assert action[:, 5].min() == pytest.approx(0.0, abs=1e-3) and action[:, 5].max() <= 100.0

    env = gym.make("SO101PickPlace-v0", obs_mode="images", image_size=IMG, terminate_on_success=False,
                   max_episode_steps=10**9)
    try:
        checked_images = 0
        for ep in meta["episodes"]:
            idx = np.flatnonzero(ep_index == ep["episode_index"])
            obs, _ = env.reset(seed=ep["seed"])
            for n, i in enumerate(idx):
                np.testing.assert_allclose(rd.from_dataset_units(state[i]), env.unwrapped.joint_positions, atol=1e-4,
                                           err_msg=f"episode {ep['episode_index']} frame {n}")
                if n in (0, len(idx) // 2):
                    item = ds[int(i)]
                    diffs = {}
                    for key in u.IMAGE_KEYS:
                        img = item[key]
                        assert tuple(img.shape) == (3, IMG, IMG) and 0.0 <= float(img.min()) <= float(img.max()) <= 1.0
                        decoded = img.numpy().transpose(1, 2, 0)
                        diffs[key] = {k: float(np.abs(decoded - obs[k] / 255.0).mean()) for k in u.IMAGE_KEYS}
                    for key in u.IMAGE_KEYS:  # lossy video, but each camera is closest to itself
                        assert diffs[key][key] < 0.05, (key, diffs[key])
                        assert diffs[key][key] == min(diffs[key].values()), (key, diffs[key])
                    checked_images += 1
                obs, *_ = env.step(rd.from_dataset_units(action[i]))
        assert checked_images == 4
    finally:
        env.close()


def test_refuses_to_overwrite_and_resumes(recorded, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:  # refused by parse_args, before anything is opened
        record(recorded)
    assert exc.value.code == 2 and "--resume" in capsys.readouterr().err
    not_a_dataset = tmp_path / "notes"
    not_a_dataset.mkdir()
    (not_a_dataset / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as exc:
        record(not_a_dataset, "--overwrite")
    assert exc.value.code == 2 and "not a LeRobot dataset" in capsys.readouterr().err
    assert (not_a_dataset / "keep.txt").exists()
    # --resume with another image size is refused with the fix
    copy = tmp_path / "copy"
    shutil.copytree(recorded, copy)
    with pytest.raises(SystemExit, match="--image-size 64"):
        rd.main(["--input", "scripted", "--output_dir", str(copy), "--num_episodes", "1", "--image-size", "32",
                 "--repo-id", REPO_ID, "--resume"])
    # ... and so are other cameras, another fps and an explicit other robot_type
    resume = ["--input", "scripted", "--output_dir", str(copy), "--num_episodes", "1", "--image-size", str(IMG),
              "--repo-id", REPO_ID, "--resume"]
    with pytest.raises(SystemExit, match="pass --cameras camera1=camera_up,camera2=wrist_camera,camera3=camera_side"):
        rd.main(resume + ["--cameras", "front=camera_up,wrist=wrist_camera"])
    with pytest.raises(SystemExit, match="recorded at 10 fps, this run asks for 30; pass --fps 10"):
        rd.main(resume + ["--fps", "30"])
    with pytest.raises(SystemExit, match="pass --robot-type so_follower"):
        rd.main(resume + ["--robot-type", "so101_follower"])
    # --resume appends, with the next seed
    assert rd.main(["--input", "scripted", "--output_dir", str(copy), "--num_episodes", "1", "--image-size", str(IMG),
                    "--repo-id", REPO_ID, "--resume"]) == 0
    ds = load(copy)
    assert ds.num_episodes == 3
    meta = json.loads((copy / rd.RECORDING_META).read_text())
    assert [e["seed"] for e in meta["episodes"]] == [0, 1, 2]
    assert ds.num_frames == sum(e["frames"] for e in meta["episodes"])
    ds[ds.num_frames - 1]  # last frame of the appended episode decodes


def test_fps_is_the_control_rate_and_episode_caps_keep_their_seconds(capsys):
    base = ["--input", "scripted", "--output_dir", "x"]
    assert rd.parse_args(base).max_steps == 150 and rd.parse_args(base + ["--fps", "30"]).max_steps == 450
    teleop = ["--input", "keyboard", "--output_dir", "x"]
    assert rd.parse_args(teleop).max_steps == rd.TELEOP_MAX_STEPS == 600
    assert rd.parse_args(teleop + ["--fps", "30"]).max_steps == 1800
    assert rd.parse_args(base + ["--fps", "30", "--max-steps", "7"]).max_steps == 7  # explicit: frames at --fps
    assert rd.parse_args(base + ["--fps", "500"]).fps == 500
    for bad, message in ((["--fps", "501"], "argument --fps: must be at most 500"),
                         (["--fps", "0"], "argument --fps: must be an integer >= 1"),
                         (["--image-size", "480x641"], "argument --image-size: must be an integer in [16, 480]"),
                         (["--image-size", "64x"], "or HxW with H in [16, 480] and W in [16, 640]"),
                         (["--image-size", "64x24"], f"at least {rd.MIN_VIDEO_WIDTH} px wide"),
                         (["--cameras", "front=nope"], "Unknown camera 'nope'"),
                         (["--cameras", "front"], "must look like <name>=<camera>"),
                         (["--cameras", "a=camera1,a=camera2"], "given twice"),
                         (["--schema", "real"], "argument --schema: invalid choice"),
                         (["--robot-type", " "], "argument --robot-type: must be a non-empty name")):
        with pytest.raises(SystemExit) as exc:
            rd.parse_args(base + bad)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and "Traceback" not in err, (bad, err)


def test_camera_and_image_size_flags_parse():
    from so101_sim import cli_args

    assert cli_args.camera_names(rd.SIM_CAMERAS) == u.CAMERAS  # the default --cameras is the sim's camera1..3
    assert cli_args.camera_names(rd.REAL_CAMERAS) == {"front": "camera_up", "wrist": "wrist_camera"}
    assert cli_args.camera_names(" top = camera3 , w=camera2") == {"top": "camera_side", "w": "wrist_camera"}
    assert cli_args.image_size_hw("256") == 256 and cli_args.image_size_hw("480x640") == (480, 640)
    assert cli_args.image_size_hw("16X16") == (16, 16)
    args = rd.parse_args(["--input", "scripted", "--output_dir", "x", "--cameras", "top=camera_up", "--image-size",
                          "32x48"])
    assert args.cameras == {"top": "camera_up"} and args.image_size == (32, 48)
    assert rd.features_for(args)["observation.images.top"]["shape"] == (32, 48, 3)
    assert set(rd.features_for(args)) == {u.OBS_STATE, "action", u.EPISODE_SEED, "observation.images.top"}


def test_another_fps_records_every_control_step_at_that_rate(tmp_path):
    """--fps 5 with two renamed, non-square cameras: the env runs at 5 Hz (100 physics steps a
    frame) and every step is a frame; replaying the stored actions in a 5 Hz env reproduces the
    stored states, and the videos have the asked size."""
    import gymnasium as gym

    from so101_sim import envs  # noqa: F401

    root = tmp_path / "fps5"
    assert rd.main(["--input", "scripted", "--output_dir", str(root), "--num_episodes", "1", "--image-size", "32x48",
                    "--repo-id", REPO_ID, "--fps", "5", "--cameras", "top=camera_up,side=camera3", "--seed", "0"]) == 0
    ds = load(root)
    meta = json.loads((root / rd.RECORDING_META).read_text())
    assert ds.fps == 5 and meta["control_hz"] == 5 and meta["steps_per_frame"] == 1
    assert meta["camera_map"] == {"top": "camera_up", "side": "camera_side"} and meta["image_hw"] == [32, 48]
    assert sorted(ds.meta.video_keys) == ["observation.images.side", "observation.images.top"]
    assert ds.num_frames == meta["episodes"][0]["frames"] and meta["episodes"][0]["success"]
    assert tuple(ds[0]["observation.images.top"].shape) == (3, 32, 48)
    state, action, _ = columns(ds)
    env = gym.make("SO101PickPlace-v0", obs_mode="state", control_hz=5, terminate_on_success=False,
                   max_episode_steps=10**9)
    env.reset(seed=0)
    for i in range(ds.num_frames):
        np.testing.assert_allclose(rd.from_dataset_units(state[i]), env.unwrapped.joint_positions, atol=1e-4, err_msg=str(i))
        env.step(rd.from_dataset_units(action[i]))
    env.close()
    # seed 0 takes ~33 frames at 10 fps; at 5 fps the expert (a fixed step per frame) needs fewer frames
    # but more simulated time, and keeps recording 0.5 s (2 frames) after the success
    assert 10 <= ds.num_frames <= 40
    assert rd.parse_args(["--input", "scripted"]).output_dir == u.REPO_ROOT / "datasets" / "so101_scripted"


def test_expert_noise_executes_perturbed_targets_and_stores_clean_labels(tmp_path, capsys):
    """DART (--expert-noise): replaying label + the episode's seeded noise reproduces the recorded
    states; every label is the expert's own action at the recorded (perturbed) state; the states
    leave the noiseless path; the sigma is in the episode record; the flag is refused where it has
    no meaning."""
    import gymnasium as gym

    from so101_sim import envs  # noqa: F401
    from so101_sim.scripted_expert import ScriptedExpert

    root, sigma = tmp_path / "dart", 0.03
    assert rd.main(["--input", "scripted", "--output_dir", str(root), "--num_episodes", "1", "--image-size", "32x48",
                    "--repo-id", REPO_ID, "--seed", "0", "--expert-noise", str(sigma), "--expert-close-tol", "0.015"]) == 0
    meta = json.loads((root / rd.RECORDING_META).read_text())
    episode = meta["episodes"][0]
    assert episode["expert_noise_rad"] == sigma and episode["expert_close_tol_m"] == 0.015 and episode["success"]
    seed = episode["seed"]  # the first seed the noisy expert succeeded on
    state, action, _ = columns(load(root))
    env = gym.make("SO101PickPlace-v0", obs_mode="state", terminate_on_success=False, max_episode_steps=10**9)
    clean_env = gym.make("SO101PickPlace-v0", obs_mode="state", terminate_on_success=False, max_episode_steps=10**9)
    env.reset(seed=seed), clean_env.reset(seed=seed)
    expert, clean_expert = (ScriptedExpert(env.unwrapped.model, close_tol=0.015) for _ in range(2))
    expert.reset(), clean_expert.reset()
    noise = rd.ExpertNoise(sigma, u.CONTROL_HZ, seed)
    offsets, gap = [], 0.0
    for i in range(len(state)):
        np.testing.assert_allclose(rd.from_dataset_units(state[i]), env.unwrapped.joint_positions, atol=1e-4, err_msg=str(i))
        label = rd.from_dataset_units(action[i])
        np.testing.assert_allclose(rd.executable_action(expert.act_in_env(env))[1], label, atol=1e-5, err_msg=str(i))
        target = rd.executable_action(noise.apply(label))[1]
        offsets.append(target[:5] - label[:5])
        assert target[u.GRIPPER_INDEX] == label[u.GRIPPER_INDEX]  # no noise on the gripper
        env.step(target)
        clean_env.step(rd.executable_action(clean_expert.act_in_env(clean_env))[1])
        gap = max(gap, float(np.abs(env.unwrapped.joint_positions - clean_env.unwrapped.joint_positions).max()))
    env.close(), clean_env.close()
    offsets = np.asarray(offsets)
    assert 0.3 * sigma < offsets.std() < 2.0 * sigma  # the executed noise has about the asked size
    assert gap > 0.02  # the states left the noiseless path (radians)
    capsys.readouterr()
    for bad in (["--input", "keyboard", "--expert-noise", "0.05"], ["--input", "scripted", "--expert-noise", "1"],
                ["--input", "keyboard", "--expert-close-tol", "0.01"], ["--input", "scripted", "--expert-close-tol", "0.1"]):
        with pytest.raises(SystemExit) as e:
            rd.parse_args(bad)
        assert e.value.code == 2 and f"argument {bad[2]}:" in capsys.readouterr().err


def test_student_acts_and_the_expert_labels(tmp_path, capsys):
    """DAgger (--student): the env executes the student's actions (a replay running the same
    student from the same seed reproduces every recorded state), each label is the expert's action
    at that state, a failed episode is kept, and a student that reads other observations is
    refused before anything is written."""
    import gymnasium as gym

    from so101_sim import cli_args, policy_registry
    from so101_sim import envs  # noqa: F401
    from so101_sim.scripted_expert import ScriptedExpert

    student_dir = u.REPO_ROOT / "simulation_code" / "checkpoints" / "smolvla_bc"  # 64 px camera1/camera2, 10 Hz
    cams = "camera1=camera_up,camera2=wrist_camera"
    root = tmp_path / "dagger"
    assert rd.main(["--input", "scripted", "--output_dir", str(root), "--num_episodes", "1", "--image-size", "64",
                    "--repo-id", REPO_ID, "--seed", "0", "--cameras", cams, "--max-steps", "12",
                    "--student", str(student_dir)]) == 0
    episode = json.loads((root / rd.RECORDING_META).read_text())["episodes"][0]
    assert episode["seed"] == 0 and episode["frames"] == 12 and not episode["success"]  # kept although it failed
    assert episode["executor"] == f"student {student_dir}"
    state, action, _ = columns(load(root))
    env = gym.make("SO101PickPlace-v0", obs_mode="images", image_size=64, cameras=cli_args.camera_names(cams),
                   terminate_on_success=False, max_episode_steps=10**9)
    student = policy_registry.load_policy("lerobot", str(student_dir))
    obs, _ = env.reset(seed=0)
    student.reset(0)
    expert = ScriptedExpert(env.unwrapped.model)
    expert.reset()
    moved = 0.0
    for i in range(len(state)):
        np.testing.assert_allclose(rd.from_dataset_units(state[i]), env.unwrapped.joint_positions, atol=1e-4, err_msg=str(i))
        label = rd.executable_action(expert.act_in_env(env))[1]
        np.testing.assert_allclose(rd.from_dataset_units(action[i]), label, atol=1e-5, err_msg=str(i))
        executed = rd.executable_action(student.act(obs))[1]
        moved = max(moved, float(np.abs(executed - label).max()))
        obs, *_ = env.step(executed)
    env.close()
    assert moved > 1e-3  # the student's actions are not the labels: the replay checks whose actions ran
    capsys.readouterr()
    other = tmp_path / "dagger96"
    assert rd.main(["--input", "scripted", "--output_dir", str(other), "--num_episodes", "1", "--image-size", "96",
                    "--repo-id", REPO_ID, "--cameras", cams, "--student", str(student_dir)]) == 2
    err = capsys.readouterr().err
    assert "image size (64, 64) (this recording: (96, 96))" in err and not other.exists()
    with pytest.raises(SystemExit) as e:
        rd.parse_args(["--input", "scripted", "--student", str(student_dir), "--expert-noise", "0.02"])
    assert e.value.code == 2 and "--student" in capsys.readouterr().err


def test_executable_action_is_what_the_dataset_stores():
    q = u.home_pose_rad() + 0.123456789
    stored, target = rd.executable_action(q)
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(rd.from_dataset_units(stored), target)
    np.testing.assert_allclose(target, q, atol=1e-5)


def test_crash_mid_episode_keeps_earlier_episodes(tmp_path, monkeypatch):
    """An exception inside episode 1 propagates, and episode 0 stays saved and loadable."""
    from so101_sim import scripted_expert

    calls = {"n": 0}
    original = scripted_expert.ScriptedExpert.act_in_env

    def flaky(self, env):
        calls["n"] += 1
        if calls["n"] == 50:  # episode 0 takes < 45 steps with seed 0
            raise RuntimeError("simulated crash")
        return original(self, env)

    monkeypatch.setattr(scripted_expert.ScriptedExpert, "act_in_env", flaky)
    root = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        record(root)
    ds = load(root)
    assert ds.num_episodes == 1
    assert not (root / "images").exists()  # the unfinished episode's temporary frames are gone
    ds[ds.num_frames - 1]


def test_teleop_loop_toggle_reset_quit(tmp_path):
    """The human-input loop with a scripted stand-in for a person: start, stop (saved), start,
    reset (discarded), quit. Only the stopped episode is in the dataset."""
    import gymnasium as gym

    from so101_sim import envs  # noqa: F401
    from so101_sim import teleop_common as tc

    from fake_teleop import ScheduledPerson

    args = rd.parse_args(["--input", "keyboard", "--output_dir", str(tmp_path / "teleop"), "--image-size", "32",
                          "--num_episodes", "5", "--repo-id", REPO_ID])
    ds, created, meta = rd.open_dataset(args, rd.features_for(args))
    stop = rd.GracefulStop()
    rec = rd.Recorder(ds, meta, args, stop)
    env = gym.make("SO101PickPlace-v0", obs_mode="images", image_size=32, terminate_on_success=False,
                   max_episode_steps=10**9)
    # start, stop (saved), start, reset (discarded), start+stop (empty), quit
    person = ScheduledPerson({0: [tc.EVENT_TOGGLE], 6: [tc.EVENT_TOGGLE], 7: [tc.EVENT_TOGGLE], 10: [tc.EVENT_RESET],
                              11: [tc.EVENT_TOGGLE, tc.EVENT_TOGGLE], 12: [tc.EVENT_QUIT]})
    try:
        rd.record_teleop(rec, env, person, realtime=False)
    finally:
        rec.discard("test end")
        ds.close()
        env.close()
    assert created and person.resets == 4  # start, after the save, after the reset, after the empty one
    reloaded = load(ds.root)
    assert reloaded.num_episodes == 1 and reloaded.num_frames == 6
    _, action, _ = columns(reloaded)
    assert np.all(np.diff(action[:, 0]) > 0)  # the commanded pan ramp was recorded in order


def test_keyboard_without_display_exits_clearly(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out = tmp_path / "kb"
    assert rd.main(["--input", "keyboard", "--output_dir", str(out)]) == 2
    assert "needs a display" in capsys.readouterr().err
    assert not out.exists()


def test_physical_without_port_exits_clearly(tmp_path, capsys):
    assert rd.main(["--input", "physical", "--output_dir", str(tmp_path / "p")]) == 2
    assert "--port" in capsys.readouterr().err
