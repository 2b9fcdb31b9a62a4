"""The sim opened to LeRobot: the installed package, the env plugin (``--env.type=so101_pickplace``)
in ``lerobot-train --env_eval_freq`` and ``lerobot-eval``, and the same ACT checkpoint in our runner
(``--model-type lerobot``) giving the same episodes on the same seeds."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from so101_sim import record_dataset as rd
from so101_sim import so101_mujoco_utils as u

REPO_ID = "local/test_so101_act"
BIN = Path(sys.executable).parent
# a user's shell: no MUJOCO_GL chosen for them (the installed start-up hook picks it), no display
ENV = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "SO101_MUJOCO_GL_AUTO", "DISPLAY", "WAYLAND_DISPLAY")}
ENV.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="disabled",
           SO101_QUIET_GL="1")
# A tiny ACT (LeRobot's ACT with small widths; ResNet18 from scratch: no ImageNet download offline).
TINY_ACT = ["--policy.type=act", "--policy.dim_model=32", "--policy.n_heads=2", "--policy.dim_feedforward=64",
            "--policy.n_encoder_layers=1", "--policy.n_decoder_layers=1", "--policy.n_vae_encoder_layers=1",
            "--policy.latent_dim=8", "--policy.chunk_size=5", "--policy.n_action_steps=5",
            "--policy.pretrained_backbone_weights=null", "--policy.push_to_hub=false", "--policy.device=cpu"]
IMAGE = 48  # pixels: small cameras keep the test in seconds (software rendering)
EPISODE_STEPS = 12
SEED = u.SEED_RANGES["held_out"][0] + 100  # evaluation seeds (never demonstration seeds)


def run(cmd, cwd=None, timeout=900):
    proc = subprocess.run(cmd, env=ENV, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    return log


def test_namespaced_id_from_any_directory_with_nothing_imported(tmp_path):
    """`gym.make("so101_sim/SO101PickPlace-v0")` in a fresh Python outside the repository."""
    code = ("import sys, gymnasium as gym\n"
            "env = gym.make('so101_sim/SO101PickPlace-v0', obs_mode='state')\n"
            "obs, _ = env.reset(seed=3)\n"
            "print(env.spec.id, env.spec.max_episode_steps, sorted(obs), 'envs' in sys.modules)\n")
    env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["so101_sim/SO101PickPlace-v0", "150", "['observation.state']", "False"]


def test_mujoco_gets_a_headless_gl_backend_whoever_imports_it_first(tmp_path):
    """LeRobot's scripts import mujoco before our modules: the start-up hook still picks MUJOCO_GL."""
    code = ("import os, mujoco\n"
            "m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom size=\"0.1\"/></worldbody></mujoco>')\n"
            "r = mujoco.Renderer(m, 24, 32)\n"
            "r.update_scene(mujoco.MjData(m))\n"
            "print(os.environ['MUJOCO_GL'], r.render().shape)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    backend, shape = out.stdout.split(maxsplit=1)
    assert backend in ("egl", "osmesa") and shape.strip() == "(24, 32, 3)"


def test_no_generic_top_level_module_is_installed():
    """What the distribution puts at the top of site-packages: its package, its plugin module, its .pth."""
    from importlib.metadata import distribution

    files = distribution("lerobot_env_so101_sim").files
    top = {f.parts[0].removesuffix(".py") for f in files if ".dist-info" not in f.parts[0] and "__pycache__" not in f.parts}
    assert top <= {"so101_sim", "lerobot_env_so101_sim", "so101_sim.pth"} | {t for t in top if t.startswith("__editable__")}
    import so101_sim.envs as e  # the bare-id module lives inside the package
    assert e.__name__ == "so101_sim.envs"


@pytest.fixture(scope="module")
def act_run(tmp_path_factory):
    """A 2-episode scripted recording and a tiny ACT trained on it by lerobot-train for 2 steps,
    evaluating in the sim (--env.type=so101_pickplace --env_eval_freq=2) during training."""
    tmp = tmp_path_factory.mktemp("act")
    data = tmp / "data"
    assert rd.main(["--input", "scripted", "--output_dir", str(data), "--num_episodes", "2", "--image-size", str(IMAGE),
                    "--repo-id", REPO_ID]) == 0
    out = tmp / "train"
    log = run([str(BIN / "lerobot-train"), f"--dataset.repo_id={REPO_ID}", f"--dataset.root={data}", *TINY_ACT,
               "--steps=2", "--batch_size=2", "--num_workers=0", "--save_freq=2", "--log_freq=1", "--seed=1",
               "--env.type=so101_pickplace", f"--env.observation_height={IMAGE}", f"--env.observation_width={IMAGE}",
               f"--env.episode_length={EPISODE_STEPS}", "--env_eval_freq=2", "--eval.n_episodes=1", "--eval.batch_size=1",
               "--wandb.enable=false", f"--output_dir={out}"], cwd=tmp)  # outside the repository
    return tmp, out / "checkpoints" / "000002" / "pretrained_model", log


def test_lerobot_train_evaluates_in_the_sim(act_run):
    tmp, ckpt, log = act_run
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "config.json").is_file()
    assert json.loads((ckpt / "config.json").read_text())["type"] == "act"
    videos = list((tmp / "train" / "eval").rglob("*.mp4"))
    assert videos, log[-3000:]  # lerobot-train rendered its sim evaluation


def test_lerobot_eval_and_our_runner_give_the_same_episodes(act_run):
    tmp, ckpt, _ = act_run
    n = 3
    ev = tmp / "eval"
    run([str(BIN / "lerobot-eval"), "--env.type=so101_pickplace", f"--env.observation_height={IMAGE}",
         f"--env.observation_width={IMAGE}", f"--env.episode_length={EPISODE_STEPS}", f"--policy.path={ckpt}",
         f"--eval.n_episodes={n}", "--eval.batch_size=1", "--policy.device=cpu", f"--seed={SEED}", f"--output_dir={ev}"],
        cwd=tmp)
    info = json.loads((ev / "eval_info.json").read_text())
    assert info["overall"]["n_episodes"] == n and "pc_success" in info["overall"]
    theirs = info["per_task"][0]["metrics"]  # episode i of `--seed S` has seed S + i (lerobot_eval.eval_policy)

    from so101_sim import run_mujoco_simulation as rms

    summary = tmp / "ours.json"
    assert rms.main(["--model-type", "lerobot", "--policy-path", str(ckpt), "--episodes", str(n), "--seed", str(SEED),
                     "--headless", "--max-steps", str(EPISODE_STEPS), "--summary-json", str(summary)]) == 0
    ours = json.loads(summary.read_text())
    assert [e["seed"] for e in ours["per_episode"]] == [SEED + i for i in range(n)]
    returns = [e["return"] for e in ours["per_episode"]]
    assert len(set(np.round(returns, 3))) == n  # different blocks, different episodes: the match below means something
    np.testing.assert_allclose(returns, theirs["sum_rewards"], rtol=1e-4, atol=1e-3)
    assert [e["success"] for e in ours["per_episode"]] == theirs["successes"]
    assert 100 * np.mean(theirs["successes"]) == info["overall"]["pc_success"]


def test_runner_names_the_inputs_a_checkpoint_needs_that_the_sim_lacks(act_run, tmp_path, capsys):
    _, ckpt, _ = act_run
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["input_features"]["observation.images.overhead_cam"] = {"type": "VISUAL", "shape": [3, IMAGE, IMAGE]}
    cfg["input_features"]["observation.environment_state"] = {"type": "ENV", "shape": [7]}
    (bad / "config.json").write_text(json.dumps(cfg))
    from so101_sim import run_mujoco_simulation as rms

    assert rms.main(["--model-type", "lerobot", "--policy-path", str(bad), "--episodes", "1", "--headless"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "observation.environment_state" in err[0], err
    del cfg["input_features"]["observation.environment_state"]
    (bad / "config.json").write_text(json.dumps(cfg))
    assert rms.main(["--model-type", "lerobot", "--policy-path", str(bad), "--episodes", "1", "--headless"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "observation.images.overhead_cam" in err[0] and "--camera-map" in err[0], err
    del cfg["input_features"]["observation.images.overhead_cam"]
    for key in [k for k in cfg["input_features"] if k.startswith(u.OBS_IMAGE_PREFIX)]:
        cfg["input_features"][key]["shape"] = [3, 600, 800]
    (bad / "config.json").write_text(json.dumps(cfg))
    assert rms.main(["--model-type", "lerobot", "--policy-path", str(bad), "--episodes", "1", "--headless"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "600x800" in err[0] and "480x640" in err[0], err


def test_lerobot_edit_dataset_deletes_an_episode_of_a_recording(act_run):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    tmp, _, _ = act_run
    src = LeRobotDataset(REPO_ID, root=tmp / "data")
    run([str(BIN / "lerobot-edit-dataset"), f"--repo_id={REPO_ID}", f"--root={tmp / 'data'}",
         f"--new_repo_id={REPO_ID}_ep1", f"--new_root={tmp / 'edited'}", "--operation.type=delete_episodes",
         "--operation.episode_indices=[0]"])
    edited = LeRobotDataset(f"{REPO_ID}_ep1", root=tmp / "edited")
    kept = [i for i in range(src.num_frames) if int(src.hf_dataset[i]["episode_index"]) == 1]
    assert edited.num_episodes == 1 and edited.num_frames == len(kept)
    np.testing.assert_array_equal(np.stack([edited.hf_dataset[i][u.OBS_STATE] for i in range(edited.num_frames)]),
                                  np.stack([src.hf_dataset[i][u.OBS_STATE] for i in kept]))
    assert edited.features.keys() == src.features.keys()


def test_replaying_a_recorded_episode_as_lerobot_replay_reads_it_reproduces_it(act_run):
    """lerobot-replay's data path (LeRobotDataset(episodes=[i]).select_columns("action"), actions by
    feature name) stepped through the LeRobot view of the env, from the episode's recorded seed."""
    import gymnasium as gym
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    tmp, _, _ = act_run
    ds = LeRobotDataset(REPO_ID, root=tmp / "data", episodes=[1])
    actions = ds.select_columns("action")
    names = ds.features["action"]["names"]
    assert list(names) == list(u.LEROBOT_MOTOR_NAMES)
    states = np.stack([ds.hf_dataset[i][u.OBS_STATE].numpy() for i in range(ds.num_frames)])
    seed = int(ds.hf_dataset[0][u.EPISODE_SEED])
    env = gym.make("so101_sim/SO101PickPlace-v0", convention="lerobot", obs_mode="state")
    obs, _ = env.reset(seed=seed)
    np.testing.assert_allclose(obs["agent_pos"], states[0], atol=1e-3)
    for i in range(ds.num_frames - 1):
        action = np.array([actions[i]["action"][names.index(n)] for n in names], np.float32)
        obs, *_ = env.step(action)
        np.testing.assert_allclose(obs["agent_pos"], states[i + 1], atol=1e-3, err_msg=f"frame {i + 1}")
    env.close()
    assert len(states) > 10


def test_so101_act_plugin_trains_in_lerobot_train_and_runs_in_both_evaluators(act_run):
    """``--policy.type=so101_act`` (ACT with a truncated ResNet, registered by this distribution's
    plugin module): stock lerobot-train trains it on the recording, the checkpoint holds no dropped
    stage, and lerobot-eval and our runner give the same episode with it."""
    from safetensors import safe_open

    tmp, _, _ = act_run
    out = tmp / "train_so101_act"
    flags = [f for f in TINY_ACT if not f.startswith("--policy.type=")]
    run([str(BIN / "lerobot-train"), f"--dataset.repo_id={REPO_ID}", f"--dataset.root={tmp / 'data'}",
         "--policy.type=so101_act", "--policy.backbone_stages=2", *flags, "--steps=2", "--batch_size=2",
         "--num_workers=0", "--save_freq=2", "--log_freq=1", "--seed=1", "--wandb.enable=false", f"--output_dir={out}"],
        cwd=tmp)
    ckpt = out / "checkpoints" / "000002" / "pretrained_model"
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["type"] == "so101_act" and cfg["backbone_stages"] == 2
    with safe_open(ckpt / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert any(".layer2." in k for k in keys) and not any(".layer3." in k or ".layer4." in k for k in keys)
    ev = tmp / "eval_so101_act"
    run([str(BIN / "lerobot-eval"), "--env.type=so101_pickplace", f"--env.observation_height={IMAGE}",
         f"--env.observation_width={IMAGE}", f"--env.episode_length={EPISODE_STEPS}", f"--policy.path={ckpt}",
         "--eval.n_episodes=1", "--eval.batch_size=1", "--policy.device=cpu", f"--seed={SEED}", f"--output_dir={ev}"],
        cwd=tmp)
    theirs = json.loads((ev / "eval_info.json").read_text())["per_task"][0]["metrics"]
    from so101_sim import run_mujoco_simulation as rms

    summary = tmp / "ours_so101_act.json"
    assert rms.main(["--model-type", "lerobot", "--policy-path", str(ckpt), "--episodes", "1", "--seed", str(SEED),
                     "--headless", "--max-steps", str(EPISODE_STEPS), "--summary-json", str(summary)]) == 0
    (ep,) = json.loads(summary.read_text())["per_episode"]
    np.testing.assert_allclose([ep["return"]], theirs["sum_rewards"], rtol=1e-4, atol=1e-3)
