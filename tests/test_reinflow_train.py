"""End-to-end ReinFlow scripts on tiny settings (CI trains nothing long): BC -> train_reinflow.py
with --parallel-envs 2 -> resume exactness -> strict loading -> inference auto-detect -> stats."""

import csv
import json

import pytest
import torch

torch.set_num_threads(1)

from so101_sim import flow_policy as fp  # noqa: E402
from so101_sim import checkpoint_io as ckio
from so101_sim import print_checkpoint_stats  # noqa: E402
from so101_sim import run_reinflow_inference  # noqa: E402
from so101_sim import train_flow_bc  # noqa: E402
from so101_sim import train_reinflow  # noqa: E402

TINY_RL = ["--model-type", "flow", "--rollout-steps", "12", "--max-episode-steps", "10", "--eval-every", "1",
           "--eval-episodes", "1", "--batch-size", "4", "--epochs", "2", "--critic-warmup-iters", "1", "--quiet",
           "--no-render", "--save-every", "1", "--seed", "3", "--policy-lr", "1e-3"]


@pytest.fixture(scope="module")
def bc_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("bc") / "bc.pt"
    assert train_flow_bc.main(["--scripted-episodes", "1", "--steps", "3", "--batch-size", "8", "--hidden-dim", "32",
                               "--depth", "1", "--checkpoint", str(out)]) == 0
    return out


def test_bc_checkpoint_contents(bc_ckpt):
    ckpt = ckio.load(bc_ckpt)
    assert ckpt.kind == "bc" and ckpt.model_type == "flow"
    assert ckpt.policy_config["hidden_dim"] == 32
    pol = fp.FlowPolicy.load(str(bc_ckpt))
    assert pol.chunk_size == 8 and pol.n_action_steps == 4


def test_train_parallel_envs_and_resume_is_exact(bc_ckpt, tmp_path):
    straight = tmp_path / "straight.pt"
    assert train_reinflow.main(TINY_RL + ["--init-checkpoint", str(bc_ckpt), "--parallel-envs", "2", "--iterations", "2",
                                          "--keep-best", "--checkpoint", str(straight)]) == 0
    ck = ckio.load(straight)
    best = ckio.load(tmp_path / "straight_best.pt")  # --keep-best: the best evaluation so far
    evals = [(h["eval_success"], -h["iteration"]) for h in ck.history]
    assert best.iteration == -max(evals)[1] and best.history[-1]["eval_success"] == max(evals)[0]
    assert ck.kind == "reinflow" and ck.iteration == 2 and len(ck.history) == 2
    assert ck.history[1]["policy_updated"] == 1.0 and ck.history[1]["ratio_check"] <= 1e-5
    rows = list(csv.DictReader(open(straight.with_suffix(".csv"))))
    assert [r["iteration"] for r in rows] == ["1", "2"] and rows[1]["eval_success"] != ""
    assert sorted(ck.optimizers) == ["critic", "policy"] and ck.rng_state and ck.noise_head_config and ck.critic_config
    assert ck.source == str(bc_ckpt.resolve())  # outside the repository: absolute

    half = tmp_path / "half.pt"
    assert train_reinflow.main(TINY_RL + ["--init-checkpoint", str(bc_ckpt), "--parallel-envs", "2", "--iterations", "1",
                                          "--checkpoint", str(half)]) == 0
    assert train_reinflow.main(TINY_RL + ["--resume", str(half), "--parallel-envs", "2", "--iterations", "2",
                                          "--checkpoint", str(half)]) == 0
    ch = ckio.load(half)
    assert ch.iteration == 2
    assert train_reinflow.parse_args(["--resume", str(half)]).checkpoint == half  # a resumed run writes back to it
    for part in ("policy_state", "noise_head_state", "critic_state"):
        for k, v in getattr(ck, part).items():
            assert torch.equal(v, getattr(ch, part)[k]), f"{part}.{k} differs after resume"
    same = lambda x, y: x == y or (x != x and y != y)  # noqa: E731  (nan-aware)
    for a, b in zip(ck.history, ch.history):
        assert same(a["pg_loss"], b["pg_loss"]) and same(a["v_loss"], b["v_loss"]) and a["env_steps"] == b["env_steps"]


def test_block_curriculum_training_reweights_bins_and_resumes_exactly(bc_ckpt, tmp_path):
    import numpy as np
    from so101_sim.reinflow_rollout import BlockCurriculum

    cur = ["--block-curriculum", "--curriculum-bins", "2", "2", "--curriculum-uniform", "0.2",
           "--reward-terms", "success,height"]
    straight, half = tmp_path / "straight.pt", tmp_path / "half.pt"
    assert train_reinflow.main(TINY_RL + cur + ["--init-checkpoint", str(bc_ckpt), "--iterations", "2",
                                                "--checkpoint", str(straight)]) == 0
    assert train_reinflow.main(TINY_RL + cur + ["--init-checkpoint", str(bc_ckpt), "--iterations", "1",
                                                "--checkpoint", str(half)]) == 0
    ck, first = ckio.load(straight), ckio.load(half)
    w1, w2 = (np.array(h["block_weights"]) for h in ck.history)
    np.testing.assert_allclose(w1, np.full(4, 0.25))  # nothing known before the first rollout
    # the second rollout used the weights of the statistics after the first
    after1 = BlockCurriculum.from_state_dict(first.block_curriculum)
    assert first.block_curriculum["bins"] == [2, 2] and sum(after1.episodes) == first.history[0]["episodes"] > 0
    np.testing.assert_allclose(w2, after1.weights())
    assert not np.allclose(w2, 0.25) and w2.min() >= 0.2 / 4 - 1e-12
    # resume (no curriculum flags: restored from the checkpoint) = straight
    assert train_reinflow.main(TINY_RL + ["--resume", str(half), "--iterations", "2", "--checkpoint", str(half)]) == 0
    ch = ckio.load(half)
    assert ch.block_curriculum == ck.block_curriculum
    assert [h["block_weights"] for h in ch.history] == [h["block_weights"] for h in ck.history]
    for k, v in ck.policy_state.items():
        assert torch.equal(v, ch.policy_state[k]), f"policy_state.{k} differs after resume"
    with pytest.raises(SystemExit):
        train_reinflow.parse_args(["--model-type", "flow", "--block-curriculum", "--curriculum-uniform", "2"])


def test_bc_source_is_relative_to_the_repository_root_inside_it(tmp_path):
    from so101_sim import so101_mujoco_utils as u

    inside = u.REPO_ROOT / "simulation_code" / "checkpoints" / "flow_bc.pt"
    assert ckio.portable_source(inside) == "simulation_code/checkpoints/flow_bc.pt"
    assert ckio.portable_source(u.REPO_ROOT / "simulation_code" / ".." / "README.md") == "README.md"
    assert ckio.portable_source("lerobot/smolvla_base") == "lerobot/smolvla_base"  # a Hub id
    outside = tmp_path / "bc.pt"
    outside.write_bytes(b"")
    assert ckio.portable_source(outside) == str(outside.resolve())
    assert ckio.portable_source("") == ""


def test_group_advantage_training_runs_groups_and_rejects_a_group_of_one(bc_ckpt, tmp_path):
    out = tmp_path / "group.pt"
    assert train_reinflow.main(TINY_RL + ["--init-checkpoint", str(bc_ckpt), "--parallel-envs", "2", "--iterations", "1",
                                          "--rollout-steps", "24", "--max-episode-steps", "4", "--advantage", "group",
                                          "--group-size", "2", "--reward-terms", "success,height",
                                          "--critic-warmup-iters", "0", "--checkpoint", str(out)]) == 0
    row = ckio.load(out).history[-1]
    # 24 steps / 4-step episodes = 6 episodes per env = 3 complete groups of 2; each 4-step episode = 1 decision
    assert row["episodes"] == 12 and row["decisions"] == 12 and row["policy_updated"] == 1.0
    with pytest.raises(SystemExit):
        train_reinflow.parse_args(["--model-type", "flow", "--advantage", "group", "--group-size", "1"])


def test_strict_load_names_mismatched_keys(bc_ckpt, tmp_path):
    ckpt = ckio.load(bc_ckpt)
    ckpt.policy_state["velocity.99.weight"] = torch.zeros(1)
    del ckpt.policy_state["obs_encoder.0.0.bias"]
    with pytest.raises(RuntimeError, match=r"velocity\.99\.weight") as e:
        fp.FlowPolicy.from_checkpoint(ckpt)
    assert "obs_encoder.0.0.bias" in str(e.value) and "nothing was loaded" in str(e.value)
    ckpt = ckio.load(bc_ckpt)
    ckpt.policy_config["hidden_dim"] = 48  # architecture differs from the stored weights
    with pytest.raises(RuntimeError, match="shape mismatches"):
        fp.FlowPolicy.from_checkpoint(ckpt)
    bad = tmp_path / "not_a_ckpt.pt"
    torch.save({"weights": 1}, bad)
    with pytest.raises(ValueError, match="not a"):
        ckio.load(bad)


def test_inference_autodetects_bc_and_reinflow(bc_ckpt, tmp_path, capsys):
    rl = tmp_path / "rl.pt"
    assert train_reinflow.main(TINY_RL + ["--init-checkpoint", str(bc_ckpt), "--parallel-envs", "1", "--iterations", "1",
                                          "--eval-every", "0", "--checkpoint", str(rl)]) == 0
    for path, kind, extra in ((bc_ckpt, "bc", []), (rl, "reinflow", ["--stochastic"])):
        summary = tmp_path / f"{kind}.json"
        assert run_reinflow_inference.main(["--checkpoint", str(path), "--episodes", "2", "--max-steps", "6",
                                            "--headless", "-v", "--summary-json", str(summary)] + extra) == 0
        s = json.loads(summary.read_text())
        assert s["model_type"] == "flow" and s["checkpoint_kind"] == kind and s["episodes"] == 2
    out = capsys.readouterr().out
    assert "[debug inference 0]" in out and "[debug inference 2]" in out and "[debug inference 3]" not in out
    # same seed -> same episode
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for p in (a, b):
        run_reinflow_inference.main(["--checkpoint", str(rl), "--episodes", "1", "--max-steps", "8", "--headless",
                                     "--stochastic", "--seed", "7", "--summary-json", str(p)])
    assert json.loads(a.read_text())["per_episode"][0]["return"] == json.loads(b.read_text())["per_episode"][0]["return"]
    capsys.readouterr()
    assert run_reinflow_inference.main(["--checkpoint", str(bc_ckpt), "--stochastic", "--headless"]) == 1
    assert "error: --stochastic needs a ReinFlow checkpoint (a BC checkpoint has no noise head)" in capsys.readouterr().err
    png = tmp_path / "curves.png"
    assert print_checkpoint_stats.main(["--checkpoint", str(rl), "--plot", str(png)]) == 0
    assert png.stat().st_size > 1000


def test_resume_warns_about_run_shape_flags_that_differ_from_the_checkpoint():
    args = train_reinflow.parse_args(["--model-type", "flow", "--max-episode-steps", "60", "--rollout-steps", "300"])
    saved = {**vars(args), "max_episode_steps": None, "rollout_steps": 6000}
    msgs = train_reinflow.resume_run_differences(args, saved)
    assert len(msgs) == 2
    assert "--max-episode-steps is 60" in msgs[0] and "--rollout-steps is 300" in msgs[1] and "6000" in msgs[1]
    assert train_reinflow.resume_run_differences(args, vars(args)) == []
    assert train_reinflow.resume_run_differences(args, {}) == []


def test_flow_training_survives_a_killed_env_worker(bc_ckpt, tmp_path, monkeypatch, capsys):
    """One env worker is SIGKILLed mid-rollout (--parallel-envs 2): the worker is restarted, its
    episode discarded, the run finishes, says so in one line and writes its checkpoint (the flow
    path used to die with a bare EOFError from gymnasium's AsyncVectorEnv)."""
    from functools import partial

    from so101_sim import parallel_envs
    from fault_envs import killed_env

    marker = tmp_path / "killed"
    monkeypatch.setattr(parallel_envs, "make_env", partial(killed_env, marker=str(marker), at_step=3))
    out = tmp_path / "rl.pt"
    with pytest.warns(parallel_envs.EnvRestartWarning, match="worker process died"):
        assert train_reinflow.main(TINY_RL + ["--init-checkpoint", str(bc_ckpt), "--parallel-envs", "2",
                                              "--iterations", "1", "--checkpoint", str(out)]) == 0
    assert marker.exists()  # a worker really was killed
    ck = ckio.load(out)
    assert ck.iteration == 1 and ck.history[-1]["discarded_episodes"] == 1
    err = capsys.readouterr().err
    assert err.count("episodes discarded after env worker restarts (1 restarts)") == 1, err
    assert "Traceback" not in err and "EOFError" not in err


def test_observations_are_prepared_once_per_decision_not_per_minibatch(bc_ckpt, tmp_path, monkeypatch):
    """The PPO update works on the inputs prepared when each decision was taken: over one
    iteration (3 decisions per env, 2 epochs of minibatches, the ratio check) ``prepare_batch``
    runs once per rollout step and never in the update."""
    calls = []
    real = fp.FlowPolicy.prepare_batch

    def counting(self, observations, task=None):
        calls.append(len(observations["observation.state"]))
        return real(self, observations, task)

    monkeypatch.setattr(fp.FlowPolicy, "prepare_batch", counting)
    out = tmp_path / "rl.pt"
    assert train_reinflow.main(TINY_RL + ["--init-checkpoint", str(bc_ckpt), "--parallel-envs", "2", "--iterations", "1",
                                          "--eval-every", "0", "--rollout-steps", "12", "--critic-warmup-iters", "0",
                                          "--checkpoint", str(out)]) == 0
    row = ckio.load(out).history[-1]
    assert row["policy_updated"] == 1.0 and row["epochs"] >= 1 and row["decisions"] == 2 * 3
    assert calls == [2, 2, 2]  # 12 steps / 4 per chunk = 3 batched decisions of both envs, nothing more
