"""ReinFlow on the tiny SmolVLA and Pi0 (offline, CPU, 32 px images, a few env steps).

Engine level: noise only on the real 6 dims of the executed chunk steps, sampling-time vs
recomputed log-probs, ratio 1 before the update, gradients only in the chosen preset's groups,
only those groups change in an update, step checkpointing gives the same gradients, the
deterministic sampler equals LeRobot's own select_action on the same noise, strict delta loading.
Scripts: train_reinflow.py with 2 parallel image envs (one env worker dies mid-rollout), --resume,
run_reinflow_inference.py auto-detection, the per-model settings.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from so101_sim import checkpoint_io as ckio
from so101_sim import parallel_envs
from so101_sim import reinflow_vla as rv
from so101_sim import run_reinflow_inference
from so101_sim import train_reinflow
from so101_sim.reinflow_engine import (
    ReinFlowAgent,
    ReinFlowConfig,
    RolloutData,
    bc_regulariser,
    chain_log_prob,
    check_ratio_is_one,
    clipped_surrogate,
    critic_features,
    noise_mask,
    ppo_update,
    sample_chain,
)
from vla_tiny import fake_obs

MODELS = ("smolvla", "pi0")
IMG = 32


def _obs_batch(n: int = 2, seed: int = 0) -> dict:
    obs = [fake_obs(q_rad=np.full(6, 0.1 * (i + 1), np.float32), size=IMG, seed=seed + i) for i in range(n)]
    out = {k: np.stack([o[k] for o in obs]) for k in obs[0]}
    out["observation.environment_state"] = np.tile(np.array([0.1, 0.2, 0.01, 1, 0, 0, 0], np.float32), (n, 1))
    return out


@pytest.fixture(scope="module")
def policies(tiny_dirs):
    return {m: rv.load_policy(m, str(tiny_dirs[m]), device="cpu", verbose=False) for m in MODELS}


def _agent(policy, preset: str, **cfg_kw) -> ReinFlowAgent:
    torch.manual_seed(0)
    cfg = ReinFlowConfig(num_steps=3, clip=0.2, epochs=1, batch_size=4, critic_warmup_iters=0, target_kl=None,
                         policy_lr=1e-2, noise_lr=1e-2, **cfg_kw)
    return ReinFlowAgent(policy, cfg, critic_input_dim=13, preset=preset)


def _snapshot(policy) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in policy.model.named_parameters()}


# ----------------------------------------------------------------------------- settings
def test_per_model_settings_and_flag_overrides():
    """The per-model settings are the parser's defaults for that --model-type (no post-parse
    rewriting); flags win; the flow policy keeps the engine defaults except its own clip 0.01."""
    for model, want in (("smolvla", (8, 15, 5e-6, False, "reinflow_checkpoint.pt")),
                        ("pi0", (2, 30, 2.5e-6, True, "reinflow_pi0_checkpoint.pt"))):
        args = train_reinflow.parse_args(["--model-type", model])
        assert (args.batch_size, args.grad_accum, args.policy_lr, args.gradient_checkpointing, args.checkpoint.name) == want
        assert args.clip == 0.01 and args.trainable == "expert" and args.device == "auto"
        assert args.checkpoint.parent == rv.REINFLOW_OUTPUT_DIR
        assert "batch_size=%d (default)" % want[0] in rv.describe_settings(args)  # printed at start
    argv = ["--model-type", "pi0", "--batch-size", "3", "--policy-lr=1e-4", "--no-gradient-checkpointing",
            "--checkpoint", "x.pt"]
    args = train_reinflow.parse_args(argv)
    assert (args.batch_size, args.grad_accum, args.policy_lr, args.gradient_checkpointing) == (3, 30, 1e-4, False)
    line = rv.describe_settings(args)
    assert str(args.checkpoint) == "x.pt" and "batch_size=3," in line and "grad_accum=30 (default)" in line
    flow = train_reinflow.parse_args(["--model-type", "flow"])
    d = ReinFlowConfig()
    assert (flow.batch_size, flow.grad_accum, flow.policy_lr, flow.device) == (d.batch_size, d.grad_accum, d.policy_lr, "cpu")
    assert flow.clip == 0.01 != d.clip  # README finding: 0.1-0.2 collapses the small flow policy
    with pytest.raises(ValueError):
        rv.describe_settings(flow)


def test_training_envs_render_only_the_policys_cameras(tiny_dirs):
    """VLABackend.env_kwargs after load_policy: the cameras of the policy's camera map, under the
    same observation keys and with the same pixels as the three-camera env gives."""
    import gymnasium as gym

    from so101_sim import so101_mujoco_utils as u
    from so101_sim.reinflow_backends import VLABackend

    args = train_reinflow.parse_args(["--model-type", "smolvla", "--policy-path", str(tiny_dirs["smolvla"]),
                                      "--image-size", str(IMG)])
    backend = VLABackend(args)
    assert backend.env_kwargs().get("cameras") is None  # before loading: all three
    policy = backend.load_policy(None)
    assert backend.camera_map == dict(policy.camera_map) and backend.env_kwargs()["cameras"]
    # a two-camera policy (the tiny one reads all three): what load_policy records for it
    backend.camera_map = {"camera2": "observation.images.wrist", "camera1": "observation.images.top"}
    kw = backend.env_kwargs()
    assert kw["cameras"] == {"camera1": u.CAMERAS["camera1"], "camera2": u.CAMERAS["camera2"]}
    two, three = gym.make("SO101PickPlace-v0", **kw), gym.make("SO101PickPlace-v0", **rv.env_kwargs(args))
    obs2, _ = two.reset(seed=7)
    obs3, _ = three.reset(seed=7)
    images2 = sorted(k for k in obs2 if k.startswith(u.OBS_IMAGE_PREFIX))
    assert images2 == [u.OBS_IMAGE_PREFIX + "camera1", u.OBS_IMAGE_PREFIX + "camera2"]
    assert len([k for k in obs3 if k.startswith(u.OBS_IMAGE_PREFIX)]) == 3
    for k in images2:
        np.testing.assert_array_equal(obs2[k], obs3[k])
    two.close()
    three.close()


# ----------------------------------------------------------------------------- the chain
@pytest.mark.parametrize("model", MODELS)
def test_noise_only_on_real_dims_of_executed_steps_and_logprob_recompute(policies, model):
    pol = policies[model]
    agent = _agent(pol, "expert")
    batch = pol.prepare_batch(_obs_batch(2), pol.task)
    s = sample_chain(pol, agent.noise_head, batch, 3, generator=torch.Generator().manual_seed(1))
    assert s.chain.shape == (2, 4, pol.chunk_size, pol.max_action_dim)
    # the deterministic mean of every transition, recomputed: noise only where the mask is 1
    mask = noise_mask(pol).bool()
    assert int(mask.sum()) == pol.n_action_steps * 6 < pol.chunk_size * pol.max_action_dim
    with torch.no_grad():
        prefix = pol.build_prefix(batch)
        for k in range(3):
            t = torch.full((2,), 1.0 - k / 3)
            mean = s.chain[:, k] + (-1 / 3) * pol.denoise_step(prefix, s.chain[:, k], t)
            dev = (s.chain[:, k + 1] - mean).abs()
            assert dev[:, ~mask].max() < 1e-5  # padding dims and the unexecuted tail: deterministic
            assert dev[:, mask].min() > 0  # the executed real dims: noisy
    with torch.no_grad():
        lp, ent, sig = chain_log_prob(pol, agent.noise_head, batch, s.chain)
    torch.testing.assert_close(lp, s.log_prob, atol=1e-5, rtol=0)
    assert torch.all(sig >= 0.08 - 1e-6) and torch.all(sig <= 0.16 + 1e-6)
    obs = _obs_batch(2)
    data = RolloutData(batch, critic_features(obs), s.chain, s.log_prob, torch.tensor([1.0, -1.0]), torch.zeros(2))
    assert check_ratio_is_one(agent, data) <= 1e-5
    bad = RolloutData(batch, critic_features(obs), s.chain, s.log_prob + 0.01, torch.zeros(2), torch.zeros(2))
    with pytest.raises(RuntimeError, match="ratio"):
        check_ratio_is_one(agent, bad)


@pytest.mark.parametrize("model,preset", [("smolvla", "expert"), ("smolvla", "heads"), ("pi0", "expert"), ("pi0", "heads")])
def test_only_the_chosen_groups_get_gradients_and_change(policies, model, preset):
    pol = policies[model]
    agent = _agent(pol, preset)
    groups = pol.trainable_parameter_groups(preset)
    chosen = {n for ns in rv.trainable_names(pol, groups).values() for n in ns}
    assert set(groups) == ({"expert", "heads"} if preset == "expert" else {"heads"})
    obs = _obs_batch(4)
    batch = pol.prepare_batch(obs, pol.task)
    s = sample_chain(pol, agent.noise_head, batch, 3, generator=torch.Generator().manual_seed(2))
    lp, _, _ = chain_log_prob(pol, agent.noise_head, batch, s.chain)
    loss, _ = clipped_surrogate(lp, s.log_prob, torch.tensor([1.0, -0.5, 2.0, -1.0]), 0.2)
    loss.backward()
    with_grad = {n for n, p in pol.model.named_parameters() if p.grad is not None}
    assert with_grad and with_grad <= chosen  # nothing outside the preset gets a gradient
    assert any(float(p.grad.abs().sum()) > 0 for n, p in pol.model.named_parameters() if n in with_grad)
    assert all(p.grad is not None for p in agent.noise_head.parameters())
    assert not any(p.requires_grad for n, p in pol.model.named_parameters() if n not in chosen)
    pol.model.zero_grad(set_to_none=True)
    agent.noise_head.zero_grad(set_to_none=True)

    before = _snapshot(pol)
    data = RolloutData(batch, critic_features(obs), s.chain, s.log_prob, torch.tensor([1.0, -0.5, 2.0, -1.0]),
                       torch.zeros(4))
    stats = ppo_update(agent, data, iteration=0, generator=torch.Generator().manual_seed(0))
    assert stats["policy_updated"] == 1.0 and stats["ratio_check"] <= 1e-5
    after = _snapshot(pol)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and changed <= chosen
    for n in set(before) - chosen:
        assert torch.equal(before[n], after[n]), f"{n} is outside the {preset} preset but changed"
    with torch.no_grad():  # restore the shared module-scoped policy
        for n, p in pol.model.named_parameters():
            p.copy_(before[n])


@pytest.mark.parametrize("model", MODELS)
def test_step_checkpointing_same_values_and_gradients(tiny_dirs, model):
    grads = []
    for gc in (False, True):
        pol = rv.load_policy(model, str(tiny_dirs[model]), device="cpu", verbose=False, gradient_checkpointing=gc)
        if gc:
            rv.enable_step_checkpointing(pol)
        agent = _agent(pol, "expert")
        batch = pol.prepare_batch(_obs_batch(2), pol.task)
        s = sample_chain(pol, agent.noise_head, batch, 3, generator=torch.Generator().manual_seed(5))
        lp, _, _ = chain_log_prob(pol, agent.noise_head, batch, s.chain)
        (lp * torch.tensor([1.0, -2.0])).sum().backward()
        grads.append((lp.detach(), {n: p.grad.clone() for n, p in pol.model.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-6, rtol=0)
    assert grads[0][1].keys() == grads[1][1].keys() and grads[0][1]
    for n in grads[0][1]:
        torch.testing.assert_close(grads[0][1][n], grads[1][1][n], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("model", MODELS)
def test_deterministic_sampler_equals_lerobot_select_action(policies, model):
    """Noise head disabled (deterministic=True), K = the policy's own steps: our chain through the
    adapter's denoise_step gives LeRobot's select_action on the same x_0 (normalised action)."""
    pol = policies[model]
    obs = _obs_batch(1, seed=7)
    batch = pol.prepare_batch(obs, pol.task)
    x0 = pol.sample_noise(1, torch.Generator().manual_seed(11))
    s = sample_chain(pol, None, batch, pol.num_denoise_steps, deterministic=True, noise=x0.clone())
    lerobot = pol.policy
    lerobot.reset()
    with torch.no_grad():
        if model == "smolvla":
            first = lerobot.select_action(dict(batch), noise=x0.clone())
        else:  # Pi0's select_action takes no noise argument: hand it ours through its sampler
            orig = lerobot.model.sample_noise
            lerobot.model.sample_noise = lambda shape, device: x0.clone().to(device)
            try:
                first = lerobot.select_action(dict(batch))
            finally:
                lerobot.model.sample_noise = orig
    lerobot.reset()
    torch.testing.assert_close(first.float(), s.x[:, 0, :6], atol=1e-5, rtol=0)
    other = sample_chain(pol, None, batch, pol.num_denoise_steps, deterministic=True,
                         noise=pol.sample_noise(1, torch.Generator().manual_seed(12)))
    assert (other.x[:, 0, :6] - first).abs().max() > 1e-3  # the noise matters: not vacuous


# ----------------------------------------------------------------------------- delta checkpoints
def test_delta_checkpoint_strict(policies, tiny_dirs):
    pol = policies["smolvla"]
    groups = pol.trainable_parameter_groups("heads")
    names = {n for ns in rv.trainable_names(pol, groups).values() for n in ns}
    ck = ckio.Checkpoint(kind="reinflow", **rv.checkpoint_fields(
        pol, "heads", groups, rv.base_policy_info(pol, str(tiny_dirs["smolvla"]), names, IMG)))
    assert set(ck.policy_state) == names and ck.base_policy["path"] == str(tiny_dirs["smolvla"])
    n_delta = sum(v.numel() for v in ck.policy_state.values())
    assert n_delta < 0.1 * sum(p.numel() for p in pol.model.parameters())  # only what trains
    fresh = rv.load_policy("smolvla", str(tiny_dirs["smolvla"]), device="cpu", verbose=False)
    bad = replace(ck, policy_state=dict(ck.policy_state))
    victim = sorted(names)[0]
    del bad.policy_state[victim]
    bad.policy_state["model.not_a_param"] = torch.zeros(1)
    before = _snapshot(fresh)
    with pytest.raises(RuntimeError, match="nothing was loaded") as e:
        rv.apply_checkpoint(fresh, bad)
    assert victim in str(e.value) and "model.not_a_param" in str(e.value)
    assert all(torch.equal(before[n], p) for n, p in fresh.model.named_parameters())
    # a different base (one frozen tensor changed) is refused
    frozen = next(n for n, p in fresh.model.named_parameters() if n not in names and p.numel() > 10)
    with torch.no_grad():
        dict(fresh.model.named_parameters())[frozen].add_(1.0)
    with pytest.raises(RuntimeError, match="not the one this checkpoint was trained on"):
        rv.apply_checkpoint(fresh, ck)
    with pytest.raises(ValueError, match="model_type"):
        rv.apply_checkpoint(policies["pi0"], ck)


def test_bc_reference_is_stored_as_a_delta_too(tiny_dirs):
    """With --bc-coef > 0 the reference (= the base) is saved as its trainable tensors only, and
    restored on resume although the resumed policy was fine-tuned."""
    pol = rv.load_policy("smolvla", str(tiny_dirs["smolvla"]), device="cpu", verbose=False)
    rv.enable_step_checkpointing(pol)  # the deep-copied reference must run its own weights
    agent = _agent(pol, "heads", bc_coef=0.5)
    groups = pol.trainable_parameter_groups("heads")
    fields = rv.checkpoint_fields(pol, "heads", groups, {}, agent.ref_policy)
    names = {n for ns in rv.trainable_names(pol, groups).values() for n in ns}
    assert set(fields["reference_state"]) == names  # not the whole reference policy
    base = {n: v.clone() for n, v in fields["reference_state"].items()}
    with torch.no_grad():  # "fine-tune" the policy, then build the resumed agent from it
        for n, p in pol.model.named_parameters():
            if n in names:
                p.add_(0.5)
    resumed = _agent(pol, "heads", bc_coef=0.5)
    ref = dict(resumed.ref_policy.model.named_parameters())
    assert not torch.equal(ref[min(names)], base[min(names)])
    batch = pol.prepare_batch(_obs_batch(1), pol.task)
    assert float(bc_regulariser(resumed, batch, torch.Generator().manual_seed(0))) == 0  # ref == policy so far
    resumed.load_checkpoint(ckio.Checkpoint(kind="reinflow", **{**resumed.checkpoint_fields(), **fields}))
    for n in names:
        assert torch.equal(ref[n], base[n])
    assert float(bc_regulariser(resumed, batch, torch.Generator().manual_seed(0))) > 1e-4  # ref runs its own weights
    assert type(resumed.ref_policy).__name__.startswith("StepCheckpointed")


# ----------------------------------------------------------------------------- scripts end to end
# One path per pytest session (conftest sets SO101_TEST_RUN_ID before any env worker starts; the
# workers re-import this module and inherit it), so concurrent test runs cannot share the marker.
FAULT_MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / f"so101_reinflow_vla_fault_{os.environ.get('SO101_TEST_RUN_ID', os.getuid())}"


def dying_env(env_id, **kwargs):
    """Env factory for the worker-death test: the first worker to reach its 2nd step after the
    marker was removed kills its own process (os._exit), once."""
    import gymnasium as gym

    env = parallel_envs.make_env(env_id, **kwargs)

    class Dying(gym.Wrapper):
        steps = 0

        def step(self, action):
            Dying.steps += 1
            if Dying.steps == 2:
                try:
                    fd = os.open(FAULT_MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                    os.close(fd)
                    os._exit(3)
                except FileExistsError:
                    pass
            return self.env.step(action)

    return Dying(env)


def _tiny_rl(model, policy_dir, preset):
    return ["--model-type", model, "--policy-path", str(policy_dir), "--trainable", preset, "--parallel-envs", "2",
            "--image-size", str(IMG), "--max-episode-steps", "4", "--rollout-steps", "6", "--eval-every", "1",
            "--eval-episodes", "1", "--critic-warmup-iters", "0", "--epochs", "1", "--grad-accum", "1",
            "--batch-size", "4", "--policy-lr", "1e-3", "--target-kl", "0", "--device", "cpu", "--no-render",
            "--quiet", "--seed", "3", "--env-start-method", "forkserver"]


@pytest.mark.parametrize("model,preset", [("smolvla", "expert"), ("pi0", "heads")])
def test_train_resume_and_inference(tiny_dirs, tmp_path, monkeypatch, model, preset, capsys):
    base = rv.load_policy(model, str(tiny_dirs[model]), device="cpu", verbose=False)
    groups = base.trainable_parameter_groups(preset)
    chosen = {n for ns in rv.trainable_names(base, groups).values() for n in ns}
    base_state = _snapshot(base)
    ck_path = tmp_path / "rl.pt"
    if model == "smolvla":  # one env worker dies mid-rollout: restarted, its episode discarded, training goes on
        FAULT_MARKER.unlink(missing_ok=True)
        monkeypatch.setattr(parallel_envs, "make_env", dying_env)
    with pytest.warns(parallel_envs.EnvRestartWarning) if model == "smolvla" else _nullcontext():
        assert train_reinflow.main(_tiny_rl(model, tiny_dirs[model], preset) + ["--iterations", "1", "--checkpoint",
                                                                              str(ck_path)]) == 0
    monkeypatch.undo()
    ck = ckio.load(ck_path)
    h = ck.history[-1]
    assert ck.kind == "reinflow" and ck.model_type == model and ck.trainable_preset == preset
    assert h["ratio_check"] <= 1e-5 and h["policy_updated"] == 1.0 and h["decisions"] >= 2
    if model == "smolvla":
        assert FAULT_MARKER.exists() and h.get("discarded_episodes", 0) >= 1
        FAULT_MARKER.unlink()
    assert set(ck.policy_state) == chosen  # only what trains is stored
    assert any(not torch.equal(ck.policy_state[n], base_state[n]) for n in chosen)
    assert ck.base_policy["path"] == str(tiny_dirs[model]) and ck.base_policy["image_size"] == IMG
    if model == "pi0":
        assert ck.args["gradient_checkpointing"] is True  # the Pi0 default

    # resume for one more iteration
    assert train_reinflow.main(_tiny_rl(model, tiny_dirs[model], preset) + [
        "--iterations", "2", "--resume", str(ck_path), "--checkpoint", str(ck_path), "--eval-every", "0"]) == 0
    ck2 = ckio.load(ck_path)
    assert ck2.iteration == 2 and len(ck2.history) == 2 and ck2.history[-1]["ratio_check"] <= 1e-5

    # inference: model type auto-detected, base rebuilt from the recorded path, delta applied
    summary = tmp_path / "summary.json"
    capsys.readouterr()
    assert run_reinflow_inference.main(["--checkpoint", str(ck_path), "--episodes", "1", "--max-steps", "3",
                                        "--headless", "--device", "cpu", "--summary-json", str(summary)]) == 0
    s = json.loads(summary.read_text())
    assert s["model_type"] == model and s["checkpoint_kind"] == "reinflow" and s["episodes"] == 1
    assert f"model_type={model}" in capsys.readouterr().out
    loaded = rv.load_for_inference(ck2, type("A", (), {"device": "cpu"})())
    for n, p in loaded.model.named_parameters():
        torch.testing.assert_close(p.detach(), ck2.policy_state[n] if n in chosen else base_state[n], atol=0, rtol=0)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
