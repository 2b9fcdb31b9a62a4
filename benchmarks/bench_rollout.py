"""ReinFlow rollout throughput over N image envs, and GPU memory of one VLA ReinFlow update.

    python benchmarks/bench_rollout.py                        # CPU: tiny SmolVLA/Pi0, N = 1, 2, 4, 8 (a few minutes)
    python benchmarks/bench_rollout.py --ns 1 2 --steps 10    # quicker
    python benchmarks/bench_rollout.py --gpu-only             # only the full-size memory part (needs CUDA)
    python benchmarks/bench_rollout.py --memory-check-tiny    # the memory code path on the tiny models, CPU
    python benchmarks/bench_rollout.py --policy-path simulation_code/checkpoints/smolvla_bc --ns 1 2 4   # the real policy

With ``--policy-path`` the CPU part measures that SmolVLA folder (issue 17's smolvla_bc) at its own
image size instead of the tiny VLAs, splits the rollout's time into the policy's batched ``act``
and the envs' ``step`` (physics + rendering), and times one ReinFlow update (ms per decision).

**CPU part** (always): the tiny random-weight policies of make_tiny_policies.py (built in a temp
dir), ``parallel_envs.RobustVectorEnv`` with N worker processes rendering the cameras the
policies read, as train_reinflow.py's envs do (the tiny ones read all three; ``--image-size``,
default 64 = the tiny policies' input size). Per N, measured after start-up:

* env steps/s: the N envs stepped alone (batched step, constant action), summed over envs;
* policy chunks/s: ReinFlow's noisy K-step chain (``ReinFlowAgent.act``: prefix + KV cache once,
  K ``denoise_step`` calls, noise head) for a batch of N observations, one batched forward, in chunks
  per second;
* rollout env steps/s: what train_reinflow.py does, one batched ``act`` whenever the envs need a
  chunk and ``n_action_steps`` env steps per chunk.

**GPU part** (only when ``torch.cuda.is_available()``; says so otherwise): SmolVLA and Pi0 at their
published sizes with random weights (no download: SmolVLA's SmolVLM2-500M config is written
locally; Pi0's sizes are LeRobot's defaults: PaliGemma gemma_2b + gemma_300m expert + SigLIP
So400m; the tokenizers are the tiny local ones, which only changes the token ids), three
256x256 cameras, and one ReinFlow update at the spec's settings (SmolVLA minibatch 8 x
accumulation 15; Pi0 minibatch 2 x accumulation 30 with step checkpointing) for ``--trainable
expert`` and ``heads``: peak ``torch.cuda.max_memory_allocated`` during the update (weights,
gradients, Adam states and activations of one minibatch), to compare with the spec's "SmolVLA
about 4 GB; Pi0 24 GB+".

Prints Markdown tables (docs/experiments/2026-11-21-reinflow-vla-rollout-speed.md) and writes ``--out`` JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIM = REPO / "simulation_code"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("SO101_QUIET_GL", "1")

from so101_sim import mujoco_rendering  # noqa: F401
from so101_sim import policy_registry as pr  # noqa: E402
import numpy as np
import torch

#: SmolVLM2-500M-Video-Instruct (the backbone of lerobot/smolvla_base), published config values.
SMOLVLM2_500M = {
    "text": {"hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32, "num_attention_heads": 15,
             "num_key_value_heads": 5, "vocab_size": 49280, "max_position_embeddings": 8192, "rope_theta": 100000.0,
             "rms_norm_eps": 1e-5},
    "vision": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
               "image_size": 512, "patch_size": 16},
    "scale_factor": 4,
}
SPEC = {"smolvla": {"batch_size": 8, "grad_accum": 15, "gc": False}, "pi0": {"batch_size": 2, "grad_accum": 30, "gc": True}}


# ---------------------------------------------------------------------- CPU part
def bench_cpu(policies: dict, ns: list[int], steps: int, chunks: int, image_size: int, start_method: str) -> list[dict]:
    """Per N and policy (``policies``: name -> (model type, folder)): env steps/s alone, batched
    policy chunks/s, and the training rollout's env steps/s with its time split into the policy's
    ``act`` and the envs' ``step`` (physics + rendering the cameras), seconds per env step."""
    from so101_sim import parallel_envs as pe
    from so101_sim import reinflow_vla as rv
    from so101_sim.reinflow_engine import ReinFlowAgent, ReinFlowConfig

    agents, cameras = {}, {}
    for name, (model, path) in policies.items():
        pol = rv.load_policy(model, str(path), device="cpu", verbose=False)
        agents[name] = ReinFlowAgent(pol, ReinFlowConfig(num_steps=4), critic_input_dim=13, preset="expert")
        cameras.update(pol.camera_map)
    # the cameras the policies read, as train_reinflow.py's envs render them
    env_kw = rv.env_kwargs(argparse.Namespace(image_size=image_size), cameras)
    rows = []
    for n in ns:
        t0 = time.perf_counter()
        vec = pe.RobustVectorEnv([partial(pe.make_env, "SO101PickPlace-v0", max_episode_steps=10_000, **env_kw)] * n,
                                 context=start_method)
        obs, _ = vec.reset(seed=list(range(n)))
        startup = time.perf_counter() - t0
        act = np.tile(obs["observation.state"][:1], (n, 1))
        vec.step(act)
        t = time.perf_counter()
        for _ in range(steps):
            obs, *_ = vec.step(act)
        env_sps = n * steps / (time.perf_counter() - t)
        for model, agent in agents.items():
            gen = torch.Generator().manual_seed(0)
            agent.act(obs, gen)  # warm-up
            t = time.perf_counter()
            for _ in range(chunks):
                agent.act(obs, gen)
            chunk_ps = n * chunks / (time.perf_counter() - t)
            # the training rollout: batched act when the queues are empty, n_action_steps env steps per chunk
            k_exec = agent.policy.n_action_steps
            t = time.perf_counter()
            done_steps, t_policy, t_env = 0, 0.0, 0.0
            while done_steps < steps:
                t1 = time.perf_counter()
                c, _, _ = agent.act(obs, gen)
                t2 = time.perf_counter()
                t_policy += t2 - t1
                for j in range(min(k_exec, steps - done_steps)):
                    obs, *_ = vec.step(c[:, j])
                    done_steps += 1
                t_env += time.perf_counter() - t2
            roll_s = time.perf_counter() - t
            rows.append({"model": model, "n_envs": n, "env_steps_per_s": env_sps, "policy_chunks_per_s": chunk_ps,
                         "rollout_env_steps_per_s": n * steps / roll_s, "rollout_policy_share": t_policy / roll_s,
                         "rollout_env_share": t_env / roll_s, "startup_s": startup, "image_size": image_size,
                         "restarts": vec.restarts})
            print(f"  N={n} {model}: env {env_sps:.1f} steps/s, policy {chunk_ps:.1f} chunks/s, rollout "
                  f"{n * steps / roll_s:.1f} env steps/s ({t_policy / roll_s:.0%} policy, {t_env / roll_s:.0%} envs; "
                  f"start-up {startup:.0f} s)", flush=True)
        vec.close()
    return rows


# ---------------------------------------------------------------------- GPU part
def build_full_size(model: str, tiny_dir: Path, work: Path, device: str):
    """A full-size random-weight adapter (see the module docstring) on ``device``."""
    from so101_sim import so101_mujoco_utils as u
    from lerobot.policies.factory import make_pre_post_processors
    from so101_sim.make_tiny_policies import PI0_CAMERAS, _features, build_tiny_smolvlm

    torch.manual_seed(0)
    if model == "smolvla":
        from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
        from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
        from so101_sim.smolvla_adapter import SmolVLAAdapter as cls
        from transformers import LlamaConfig, PreTrainedTokenizerFast, SmolVLMConfig
        from transformers.models.smolvlm.configuration_smolvlm import (
            SmolVLMVisionConfig,
        )

        vlm = build_tiny_smolvlm(work / "smolvlm2_500m", image_size=SMOLVLM2_500M["vision"]["image_size"])
        tok = PreTrainedTokenizerFast.from_pretrained(str(vlm))
        text = LlamaConfig(**SMOLVLM2_500M["text"], head_dim=SMOLVLM2_500M["text"]["hidden_size"] //
                           SMOLVLM2_500M["text"]["num_attention_heads"], pad_token_id=tok.pad_token_id,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
        SmolVLMConfig(vision_config=SmolVLMVisionConfig(**SMOLVLM2_500M["vision"]).to_dict(), text_config=text.to_dict(),
                      scale_factor=SMOLVLM2_500M["scale_factor"], image_token_id=tok.convert_tokens_to_ids("<image>"),
                      pad_token_id=tok.pad_token_id).save_pretrained(vlm)
        inp, outp = _features(u.IMAGE_KEYS)
        cfg = SmolVLAConfig(vlm_model_name=str(vlm), load_vlm_weights=False, input_features=inp, output_features=outp,
                            device=device, push_to_hub=False)  # LeRobot defaults: 16 VLM layers, chunk 50, 512 px
        policy = SmolVLAPolicy(cfg)
        cmap, frame, overrides = {k: u.OBS_IMAGE_PREFIX + k for k in u.CAMERAS}, "smolvla_absolute", {
            "tokenizer_processor": {"tokenizer_name": str(vlm)}}
    else:
        from lerobot.policies.pi0.configuration_pi0 import PI0Config
        from lerobot.policies.pi0.modeling_pi0 import PI0Policy
        from so101_sim.pi0_adapter import PI0Adapter as cls

        inp, outp = _features(PI0_CAMERAS.values())
        cfg = PI0Config(input_features=inp, output_features=outp, device=device, push_to_hub=False,
                        gradient_checkpointing=True)  # LeRobot defaults: gemma_2b + gemma_300m, 224 px, chunk 50
        policy = PI0Policy(cfg)
        cmap, frame, overrides = dict(PI0_CAMERAS), "lerobot_degrees", {
            "tokenizer_processor": {"tokenizer_name": str(tiny_dir / "tokenizer")}}
    if "device_processor" in json.dumps(json.loads((tiny_dir / "policy_preprocessor.json").read_text())):
        overrides["device_processor"] = {"device": device}
    pre, post = make_pre_post_processors(cfg, pretrained_path=str(tiny_dir), preprocessor_overrides=overrides,
                                         postprocessor_overrides={})
    policy.to(device).eval()
    return cls(policy, pre, post, frame=frame, camera_map=cmap, task=u.DEFAULT_TASK, device=torch.device(device),
               policy_dir=work, info={"quantized": None, "policy_path": f"random full-size {model}"}, warnings=[],
               debug_inferences=0, verbose=False)


def update_memory(policy, model: str, preset: str, batch_size: int, grad_accum: int, step_gc: bool,
                  image_size: int = 256) -> dict:
    """Peak memory (GB) of one ReinFlow update: batch_size x grad_accum decisions, 1 epoch."""
    from so101_sim import reinflow_vla as rv
    from so101_sim.reinflow_engine import (
        ReinFlowAgent,
        ReinFlowConfig,
        RolloutData,
        critic_features,
        ppo_update,
        sample_chain,
    )

    cuda = policy.device.type == "cuda"
    if step_gc:
        rv.enable_step_checkpointing(policy)
    cfg = ReinFlowConfig(num_steps=4, batch_size=batch_size, grad_accum=grad_accum, epochs=1, critic_warmup_iters=0,
                         target_kl=None, clip=0.01, policy_lr=5e-6)
    agent = ReinFlowAgent(policy, cfg, critic_input_dim=13, preset=preset)
    agent.ratio_chunk = batch_size
    n = batch_size * grad_accum
    rng = np.random.default_rng(0)
    obs = {f"observation.images.camera{i}": rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8)
           for i in (1, 2, 3)}
    obs["observation.state"] = np.zeros((n, 6), np.float32)
    obs["observation.environment_state"] = np.tile(np.array([0.1, 0.2, 0.01, 1, 0, 0, 0], np.float32), (n, 1))
    gen = torch.Generator().manual_seed(0)
    chains, lps = [], []
    t = time.perf_counter()
    for s in range(0, n, batch_size):
        sub = {k: v[s:s + batch_size] for k, v in obs.items()}
        smp = sample_chain(policy, agent.noise_head, policy.prepare_batch(sub, policy.task), cfg.num_steps, generator=gen)
        chains.append(smp.chain)
        lps.append(smp.log_prob)
    t_roll = time.perf_counter() - t
    data = RolloutData(policy.prepare_batch(obs, policy.task), critic_features(obs), torch.cat(chains), torch.cat(lps),
                       torch.randn(n, generator=gen), torch.zeros(n))
    if cuda:
        torch.cuda.synchronize()
        static = torch.cuda.memory_allocated() / 1e9
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    stats = ppo_update(agent, data, 0, gen)
    if cuda:
        torch.cuda.synchronize()
    out = {"model": model, "preset": preset, "batch_size": batch_size, "grad_accum": grad_accum, "step_checkpointing": step_gc,
           "decisions": n, "update_s": time.perf_counter() - t, "sample_s": t_roll, "ratio_check": stats["ratio_check"],
           "trainable_params": sum(p.numel() for p in agent.policy_params),
           "total_params": sum(p.numel() for p in policy.model.parameters())}
    if cuda:
        out.update(static_gb_before_update=static, peak_gb=torch.cuda.max_memory_allocated() / 1e9,
                   gpu=torch.cuda.get_device_name())
    del agent
    return out


def bench_gpu(tiny: dict, work: Path) -> list[dict]:
    rows = []
    for model in pr.VLA_MODEL_TYPES:
        for preset in ("heads", "expert"):
            torch.cuda.empty_cache()
            policy = build_full_size(model, tiny[model], work, "cuda")
            s = SPEC[model]
            try:
                r = update_memory(policy, model, preset, s["batch_size"], s["grad_accum"], s["gc"])
            except torch.OutOfMemoryError as e:  # report, do not crash the table
                r = {"model": model, "preset": preset, "error": f"OOM: {e}"[:200]}
            rows.append(r)
            print(f"  {model} {preset}: {r}", flush=True)
            del policy
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ns", type=int, nargs="+", default=[1, 2, 4, 8], help="numbers of parallel envs")
    p.add_argument("--steps", type=int, default=20, help="env steps per measurement")
    p.add_argument("--chunks", type=int, default=3, help="batched policy calls per measurement")
    p.add_argument("--image-size", type=int, default=64, help="camera images of the tiny VLAs (--policy-path: its own size)")
    p.add_argument("--policy-path", type=Path, default=None,
                   help="a SmolVLA pretrained_model folder (e.g. simulation_code/checkpoints/smolvla_bc): the CPU part "
                        "measures it instead of the tiny VLAs, at its input image size, plus one ReinFlow update")
    p.add_argument("--start-method", default="forkserver")
    p.add_argument("--tiny-dir", type=Path, default=None, help="existing make_tiny_policies.py output (else built)")
    p.add_argument("--gpu-only", action="store_true")
    p.add_argument("--memory-check-tiny", action="store_true", help="run the update-memory code on the tiny models (CPU)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="JSON results")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tiny_root = args.tiny_dir
        if tiny_root is None:
            from so101_sim.make_tiny_policies import build_all

            tiny_root = Path(tmp) / "tiny"
            build_all(tiny_root, seed=0)
        tiny = {"smolvla": tiny_root / "smolvla", "pi0": tiny_root / "pi0"}
        results: dict = {"cpu": [], "gpu": [], "gpu_available": torch.cuda.is_available(),
                         "cpu_count": os.cpu_count(), "torch": torch.__version__}
        if args.memory_check_tiny:
            from so101_sim import reinflow_vla as rv

            for model in pr.VLA_MODEL_TYPES:
                pol = rv.load_policy(model, str(tiny[model]), device="cpu", verbose=False)
                r = update_memory(pol, model, "expert", SPEC[model]["batch_size"], 2, SPEC[model]["gc"], image_size=32)
                print(f"  tiny {model}: {r}")
                results["cpu"].append(r)
        elif not args.gpu_only:
            if args.policy_path is not None:
                from so101_sim.lerobot_policy import sim_setup

                policies, size, label = {"smolvla": ("smolvla", args.policy_path)}, sim_setup(str(args.policy_path)).image_hw[0], ""
                what = f"{args.policy_path.name}"
            else:
                policies = {m: (m, tiny[m]) for m in pr.VLA_MODEL_TYPES}
                size, label, what = args.image_size, "tiny ", "tiny VLAs"
            print(f"CPU rollout throughput ({what}, {size}px, {os.cpu_count()} CPUs):", flush=True)
            results["cpu"] = bench_cpu(policies, args.ns, args.steps, args.chunks, size, args.start_method)
            print("\n| model | N envs | env steps/s (envs only) | policy chunks/s (batched) | rollout env steps/s | "
                  "rollout time: policy / envs | start-up s |")
            print("|---|---|---|---|---|---|---|")
            for r in results["cpu"]:
                print(f"| {label}{r['model']} | {r['n_envs']} | {r['env_steps_per_s']:.1f} | {r['policy_chunks_per_s']:.1f} | "
                      f"{r['rollout_env_steps_per_s']:.1f} | {r['rollout_policy_share']:.0%} / {r['rollout_env_share']:.0%} | "
                      f"{r['startup_s']:.0f} |")
            if args.policy_path is not None:  # the update's cost: one PPO epoch over 8 decisions, the expert preset
                from so101_sim import reinflow_vla as rv

                pol = rv.load_policy("smolvla", str(args.policy_path), device="cpu", verbose=False)
                r = update_memory(pol, "smolvla", "expert", SPEC["smolvla"]["batch_size"], 1, False, image_size=size)
                results["update"] = r
                print(f"\nReinFlow update ({r['trainable_params'] / 1e6:.2f} M of {r['total_params'] / 1e6:.2f} M parameters "
                      f"trained, expert preset): {r['update_s'] / r['decisions'] * 1e3:.0f} ms per decision (one epoch over "
                      f"{r['decisions']} decisions: log-probabilities recomputed through the K-step chain, backward, Adam step)")
        if not args.memory_check_tiny:
            if torch.cuda.is_available():
                print(f"\nGPU memory of one ReinFlow update ({torch.cuda.get_device_name()}):", flush=True)
                results["gpu"] = bench_gpu(tiny, Path(tmp))
                print("\n| model | preset | minibatch x accum | step ckpt | params (trainable) | peak GB | update s |")
                print("|---|---|---|---|---|---|---|")
                for r in results["gpu"]:
                    if "error" in r:
                        print(f"| {r['model']} | {r['preset']} | | | | {r['error']} | |")
                        continue
                    print(f"| {r['model']} | {r['preset']} | {r['batch_size']} x {r['grad_accum']} | "
                          f"{r['step_checkpointing']} | {r['total_params'] / 1e9:.2f}B ({r['trainable_params'] / 1e6:.0f}M) | "
                          f"{r['peak_gb']:.1f} | {r['update_s']:.1f} |")
            else:
                print("\nGPU part skipped: torch.cuda.is_available() is False on this machine (no GPU memory numbers).")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
