"""benchmarks/reinflow_vision.py (issue 17 item 1) end to end on the shipped smolvla_bc, tiny sizes:
the BC start point (``run_reinflow_inference.py --base``) and a ReinFlow checkpoint whose policy
did not change (one critic warm-up iteration) are evaluated by the same sampler, so every held-out
episode repeats exactly; the results file, the kept checkpoint and the shipped export (a LeRobot
folder with num_steps = K and its VLM) are what the table reports, and the export run through
LeRobot's own sampler repeats the benchmark's episodes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
BC = REPO / "simulation_code" / "checkpoints" / "smolvla_bc"


def _module():
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("reinflow_vision", REPO / "benchmarks" / "reinflow_vision.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_an_unchanged_policy_repeats_the_bc_episodes_and_ships_a_lerobot_folder(tmp_path, capsys):
    rv = _module()
    ship = tmp_path / "smolvla_reinflow"
    assert rv.main(["--out", str(tmp_path / "out"), "--eval-episodes", "2", "--monitor-episodes", "1", "--iterations", "1",
                    "--rollout-steps", "40", "--eval-every", "1", "--ship", "--ship-dir", str(ship), "--deploy-episodes", "2",
                    "--reinflow-args", "--reward-terms success --reward-scale 0.02 --critic-warmup-iters 2 "
                                       "--max-episode-steps 30"]) == 0
    out = tmp_path / "out"
    res = json.loads((out / "results.json").read_text())
    before = json.loads((out / "eval_bc.json").read_text())["per_episode"]
    after = json.loads((out / "eval_reinflow.json").read_text())["per_episode"]
    # the warm-up iteration trains only the critic: the same policy, the same sampler, the same episodes
    assert [e["seed"] for e in before] == [e["seed"] for e in after] == [0, 1]
    assert [e["return"] for e in before] == [e["return"] for e in after]
    assert res["gain_points"] == 0 and res["reinflow_iterations"] == 1 and res["reinflow_env_steps"] == 80
    assert sum(n for _, n in (v["before"] for v in res["by_distance"].values())) == 2
    assert res["image_size"] == json.loads((BC / "config.json").read_text())["resize_imgs_with_padding"][0]
    printed = capsys.readouterr().out
    assert "BC (smolvla_bc)" in printed and "gain +0 points on 2 held-out episodes (K = 4)" in printed
    config = json.loads((ship / "config.json").read_text())
    assert config["num_steps"] == 4 and config["vlm_model_name"] == "vlm" and (ship / "vlm").is_dir()
    assert json.loads((ship / "reinflow_vision_results.json").read_text())["after"] == res["after"]
    assert (out / "curves.png").stat().st_size > 0
    # the export through LeRobot's own sampler (our runner seeds torch per episode): the same two episodes
    deployed = json.loads((out / "results.json").read_text())["deployed"]
    assert deployed["same_outcome_as_benchmark"] == 2 and 0 <= deployed["lerobot_eval_success"] <= 1
    ours = json.loads((out / "deployed" / "eval_ours.json").read_text())
    assert [e["seed"] for e in ours["per_episode"]] == [0, 1]  # returns drift apart by float noise over 150 steps


def test_bad_inputs_name_the_flag(tmp_path, capsys):
    rv = _module()
    for argv, words in ((["--policy-path", str(tmp_path)], "no config.json there"),
                        (["--eval-episodes", "9000"], "held")):
        with pytest.raises(SystemExit) as e:
            rv.parse_args(argv)
        assert e.value.code == 2 and words in capsys.readouterr().err


def test_base_needs_a_vla_and_a_policy_path(capsys):
    from so101_sim import run_reinflow_inference as rri

    for argv in (["--base"], ["--base", "--model-type", "smolvla"],
                 ["--base", "--model-type", "smolvla", "--policy-path", str(BC), "--stochastic"]):
        with pytest.raises(SystemExit) as e:
            rri.parse_args(argv)
        assert e.value.code == 2 and "argument --base" in capsys.readouterr().err


def test_the_update_timing_runs_a_real_ppo_update_on_a_tiny_smolvla(tiny_dirs):
    """bench_rollout.update_memory (the GPU rows and --policy-path's update time) runs one PPO
    epoch through the current engine: the ratio starts at 1 and only the expert preset trains."""
    from so101_sim import reinflow_vla as rv

    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_rollout", REPO / "benchmarks" / "bench_rollout.py")
    br = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(br)
    pol = rv.load_policy("smolvla", str(tiny_dirs["smolvla"]), device="cpu", verbose=False)
    before = {n: p.detach().clone() for n, p in pol.model.named_parameters()}
    r = br.update_memory(pol, "smolvla", "expert", 2, 2, False, image_size=32)
    assert r["decisions"] == 4 and r["ratio_check"] < 1e-5
    assert 0 < r["trainable_params"] < r["total_params"]
    changed = {n for n, p in pol.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("expert" in n or "proj" in n or "time" in n for n in changed), sorted(changed)[:5]
