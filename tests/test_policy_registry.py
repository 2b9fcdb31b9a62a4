"""The policy registry and the one episode loop: one table of model types, one way into a policy,
policies that act on the observation only, and the policy-only checkpoint export."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from so101_sim import checkpoint_io as ckio
from so101_sim import envs  # noqa: F401  (registers the env ids)
from so101_sim import policy_registry as pr
from so101_sim import rollout_utils as ru
from so101_sim import run_reinflow_inference
from so101_sim import so101_mujoco_utils as u
from so101_sim import train_reinflow

SHIPPED_RL = pr.SHIPPED_CHECKPOINTS["reinflow"]


def test_the_registry_is_the_one_table_of_model_types():
    assert pr.MODEL_TYPES == tuple(pr.POLICIES) and pr.DEFAULT_MODEL_TYPE in pr.MODEL_TYPES
    assert set(pr.VLA_MODEL_TYPES) == {"smolvla", "pi0"} and set(pr.REINFLOW_MODEL_TYPES) == {"smolvla", "pi0", "flow"}
    assert train_reinflow.MODEL_TYPES == pr.REINFLOW_MODEL_TYPES and ckio.CHECKPOINT_MODEL_TYPES == pr.REINFLOW_MODEL_TYPES
    for name, e in pr.POLICIES.items():  # every entry names what it observes (lerobot: its checkpoint does) and how it loads
        assert (e.env_kwargs == {} if name == "lerobot" else e.env_kwargs["obs_mode"] in ("state", "images"))
        assert (e.loader is None) == (name == "scripted")
    assert [k for k, e in pr.POLICIES.items() if e.privileged] == ["flow", "scripted"]
    with pytest.raises(ValueError, match="unknown --model-type 'act'"):
        pr.entry("act")
    with pytest.raises(ValueError, match="built from the env"):
        pr.load_policy("scripted")


def test_the_flow_default_path_is_the_shipped_checkpoint_and_a_refused_file_is_exit_code_2(tmp_path):
    policy = pr.load_policy("flow")  # no path: the registry's default
    assert policy.model_type == "flow" and pr.POLICIES["flow"].default_path == str(SHIPPED_RL)
    (tmp_path / "x.pt").write_text("{}")
    with pytest.raises(pr.PolicySetupError) as e:
        pr.load_policy("flow", str(tmp_path / "x.pt"))
    assert e.value.exit_code == 2 and "is a JSON/text file" in str(e.value)


def test_a_chunk_policy_acts_on_the_observation_only_and_is_seeded_by_the_episode():
    """The flow policy's actions come from the observation it is given, not from the simulator
    (the old FlowSimPolicy read the env): the same observations give the same chunk whatever the
    env's state, and the same seed gives the same episode."""
    env = gym.make(envs.DEFAULT_ENV_ID, **pr.entry("flow").env_kwargs)
    policy = pr.make_sim_policy("flow", type("A", (), {"policy_path": None})(), env)
    assert isinstance(policy, pr.ChunkPolicy) and policy.num_steps == 4
    obs, _ = env.reset(seed=3)
    policy.reset(3)
    first = [policy.act(obs) for _ in range(policy.policy.n_action_steps)]
    env.reset(seed=99)  # another simulator state: the policy never looks at it
    policy.reset(3)
    again = [policy.act(obs) for _ in range(policy.policy.n_action_steps)]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    a, b = ru.run_episode(env, policy, 5), ru.run_episode(env, policy, 5)
    assert a == b and a["seed"] == 5 and a["length"] >= 1
    env.close()


def test_policy_only_export_runs_like_the_full_checkpoint(tmp_path, capsys):
    from so101_sim import print_checkpoint_stats

    out = tmp_path / "policy.pt"
    assert print_checkpoint_stats.main(["--checkpoint", str(SHIPPED_RL), "--export-policy", str(out)]) == 0
    full, pol = ckio.load(SHIPPED_RL), ckio.load(out, kind="policy")
    assert pol.kind == "policy" and not pol.optimizers and pol.critic_state is None and not pol.history
    assert pol.rng_state is None and not pol.args and pol.reference_state is None
    for k, v in full.policy_state.items():
        assert torch.equal(v, pol.policy_state[k])
    assert out.stat().st_size < 0.6 * SHIPPED_RL.stat().st_size  # no optimizer states, critic or history
    results = {}
    for name, path, extra in (("full", SHIPPED_RL, []), ("policy", out, []), ("policy_stochastic", out, ["--stochastic"])):
        summary = tmp_path / f"{name}.json"
        assert run_reinflow_inference.main(["--checkpoint", str(path), "--episodes", "2", "--seed", "7", "--max-steps",
                                            "12", "--headless", "--summary-json", str(summary)] + extra) == 0
        results[name] = json.loads(summary.read_text())["per_episode"]
    assert [e["return"] for e in results["full"]] == [e["return"] for e in results["policy"]]
    assert results["policy_stochastic"][0]["return"] != results["policy"][0]["return"]  # the noise head was kept
    capsys.readouterr()


def test_the_observation_carries_what_the_flow_policy_needs():
    env = gym.make(envs.DEFAULT_ENV_ID, **pr.entry("flow").env_kwargs)
    obs, _ = env.reset(seed=1)
    base = env.unwrapped
    a = base.ids.block_qpos_adr
    np.testing.assert_allclose(obs[u.OBS_ENV_STATE], base.data.qpos[a:a + 7], atol=1e-6)
    np.testing.assert_allclose(obs[u.OBS_STATE], base.joint_positions, atol=1e-6)
    env.close()
