"""LeRobot's own training entry point (``lerobot-train``) trains on a dataset recorded by
record_dataset.py, offline, with a tiny random SmolVLA, and writes a checkpoint."""

import os
import subprocess
import sys
from pathlib import Path

from so101_sim import record_dataset as rd

REPO_ID = "local/test_so101_train"


def lerobot_train_command() -> list[str]:
    """The installed ``lerobot-train`` console script (next to this Python), else the module."""
    exe = Path(sys.executable).with_name("lerobot-train")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "lerobot.scripts.lerobot_train"]


def test_lerobot_train_runs_on_recorded_dataset(tmp_path):
    from so101_sim.make_tiny_policies import build_tiny_smolvlm  # issue #3's tiny SmolVLM folder (config + tokenizer)

    data = tmp_path / "so101_train"
    assert rd.main(["--input", "scripted", "--output_dir", str(data), "--num_episodes", "2", "--image-size", "64",
                    "--repo-id", REPO_ID]) == 0
    vlm = build_tiny_smolvlm(tmp_path / "tiny_smolvlm")
    out = tmp_path / "train_out"
    cmd = lerobot_train_command() + [
        f"--dataset.repo_id={REPO_ID}", f"--dataset.root={data}",
        "--policy.type=smolvla", f"--policy.vlm_model_name={vlm}", "--policy.load_vlm_weights=false",
        "--policy.num_vlm_layers=4", "--policy.resize_imgs_with_padding=[64,64]",
        "--policy.chunk_size=10", "--policy.n_action_steps=10",
        "--policy.push_to_hub=false", "--policy.device=cpu",
        "--steps=2", "--batch_size=2", "--num_workers=0", "--save_freq=2", "--log_freq=1",
        "--wandb.enable=false", f"--output_dir={out}",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    ckpt = out / "checkpoints" / "000002" / "pretrained_model"
    assert (ckpt / "model.safetensors").is_file(), log[-4000:]
    assert (ckpt / "config.json").is_file() and (ckpt / "train_config.json").is_file()
    # the normaliser was fitted on the recorded data (LeRobot units), not left empty
    assert any(p.name.endswith("normalizer_processor.safetensors") for p in ckpt.iterdir())
