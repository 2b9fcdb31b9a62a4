"""Two CPU processes (gloo) under ``accelerate launch``: one ReinFlow iteration of the tiny SmolVLA,
each rank with its own env and seeds; afterwards both ranks hold identical weights (policy
trainable groups, noise head, critic incl. its input normaliser), the weights moved away from
the base, and only rank 0 wrote the checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from so101_sim import checkpoint_io as ckio
import pytest
from so101_sim import reinflow_vla as rv
import torch

SIM_DIR = Path(__file__).resolve().parent.parent / "simulation_code"


def test_two_ranks_end_with_identical_weights(tiny_dirs, tmp_path):
    accelerate = Path(sys.executable).parent / "accelerate"
    if not accelerate.exists():
        pytest.skip("accelerate CLI not installed")
    state_dir, ck = tmp_path / "state", tmp_path / "rl.pt"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", SO101_QUIET_GL="1", OMP_NUM_THREADS="1",
               CUDA_VISIBLE_DEVICES="", SO101_RANK_STATE_DIR=str(state_dir))
    # --multi_gpu selects accelerate's torch.distributed launcher; on CPU the ranks use gloo
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29731",
           str(Path(__file__).with_name("rank_state_hook.py")), "--model-type", "smolvla", "--policy-path", str(tiny_dirs["smolvla"]),
           "--parallel-envs", "1", "--image-size", "32", "--max-episode-steps", "4", "--rollout-steps", "6",
           "--iterations", "1", "--eval-every", "0", "--critic-warmup-iters", "0", "--epochs", "1", "--batch-size", "2",
           "--grad-accum", "1", "--policy-lr", "1e-3", "--target-kl", "0", "--device", "cpu", "--quiet",
           "--no-render", "--checkpoint", str(ck)]
    r = subprocess.run(cmd, cwd=SIM_DIR, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "[rank 0/2]" in out and "[rank 1/2]" in out and "(rank 1: written by rank 0)" in out
    a, b = torch.load(state_dir / "rank0.pt"), torch.load(state_dir / "rank1.pt")
    for part in ("policy", "noise_head", "critic"):
        assert a[part].keys() == b[part].keys() and a[part]
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs between ranks"
    assert float(a["critic"]["norm.count"]) > 3  # the normaliser saw both ranks' decisions (2 each)
    base = rv.load_policy("smolvla", str(tiny_dirs["smolvla"]), device="cpu", verbose=False)
    base_params = dict(base.model.named_parameters())
    assert any(not torch.equal(v, base_params[n].detach()) for n, v in a["policy"].items())  # it trained
    ckpt = ckio.load(ck)  # rank 0's checkpoint holds the same weights
    for n, v in ckpt.policy_state.items():
        assert torch.equal(v, a["policy"][n])
    assert ckpt.history[-1]["env_steps"] == 2 * 2 * 4  # both ranks: ceil(6 / 5) chunks each, cut at the 4-step episode end
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rl.csv", "rl.pt", "state"]
