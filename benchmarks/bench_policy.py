"""Per-chunk inference latency and peak memory of each VLA policy type.

    python benchmarks/bench_policy.py                          # tiny offline policies, CPU (built in a temp dir)
    python benchmarks/bench_policy.py --tiny-dir ../outputs/tiny_policies
    python benchmarks/bench_policy.py --smolvla lerobot/smolvla_base --pi0 lerobot/pi0 --device cuda   # real ones

Each configuration runs in its own subprocess, so "peak RSS" is that policy's process alone
(imports included: ~0.9 GB of it is torch + transformers + lerobot). A chunk is one full
``predict_action_chunk``: preprocessor, VLM prefix + KV cache, ``num_denoise_steps`` Euler steps,
postprocessor and frame conversion, for one observation with three 256x256 camera images (the
env's size). Prints a Markdown table (recorded in docs/experiments/2026-11-21-vla-inference-speed.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIM = REPO / "simulation_code"


def worker(model_type: str, path: str, device: str, quantize: bool, repeats: int, threads: int) -> dict:
    """Load one policy, time ``repeats`` fresh chunks after one warm-up; returns the measurements."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch

    from so101_sim import so101_mujoco_utils as u

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from so101_sim import policy_registry as pr

    pr.policy_class(model_type)  # imports are not load time
    t0 = time.perf_counter()
    kwargs = {"quantize": quantize} if model_type == "pi0" else {}
    policy = pr.load_policy(model_type, path, device=device, verbose=False, debug_inferences=0, **kwargs)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    obs = {u.OBS_STATE: np.zeros(6, np.float32)}
    for key in u.IMAGE_KEYS:
        obs[key] = rng.integers(0, 256, (u.IMAGE_SIZE, u.IMAGE_SIZE, 3), dtype=np.uint8)
    cuda = policy.device.type == "cuda"
    policy.predict_action_chunk(obs)  # warm-up (first qint4 call may JIT-compile quanto's kernels)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        policy.predict_action_chunk(obs)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    times.sort()
    params = sum(p.numel() for p in policy.model.parameters())
    return {
        "policy": model_type, "path": path, "device": policy.device.type,
        "weights": policy.describe().get("quantized") or "float32", "params": params,
        "chunk": policy.chunk_size, "n_action_steps": policy.n_action_steps, "steps": policy.num_denoise_steps,
        "load_s": load_s, "median_ms": 1000 * times[len(times) // 2], "min_ms": 1000 * times[0],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_load_mb": rss0,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }


def table(rows: list[dict]) -> str:
    """Markdown table of :func:`worker` results."""
    head = ("| policy | weights | device | params | chunk x steps | load s | chunk median ms | chunk min ms "
            "| ms per executed action | peak RSS MB | peak GPU MB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        per_action = r["median_ms"] / r["n_action_steps"]
        gpu = f"{r['peak_gpu_mb']:.0f}" if r["peak_gpu_mb"] is not None else "-"
        lines.append(f"| {r['policy']} | {r['weights']} | {r['device']} | {r['params'] / 1e6:.2f}M | "
                     f"{r['chunk']} x {r['steps']} | {r['load_s']:.1f} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | "
                     f"{per_action:.1f} | {r['peak_rss_mb']:.0f} | {gpu} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smolvla", default=None, help="SmolVLA hub id or directory (default: tiny)")
    parser.add_argument("--pi0", default=None, help="Pi0 hub id or directory (default: tiny)")
    parser.add_argument("--tiny-dir", type=Path, default=None,
                        help="existing make_tiny_policies.py output (default: build one in a temp dir)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    parser.add_argument("--repeats", type=int, default=10, help="timed chunks per policy (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--no-quantized", action="store_true", help="skip the Pi0 qint4 row")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--worker", nargs=3, metavar=("TYPE", "PATH", "QUANTIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        model_type, path, q = args.worker
        print("RESULT " + json.dumps(worker(model_type, path, args.device, q == "1", args.repeats, args.threads)))
        return 0

    tmp = None
    if not (args.smolvla and args.pi0):
        tiny = args.tiny_dir
        if tiny is None or not (tiny / "pi0").is_dir():
            tmp = tempfile.TemporaryDirectory(prefix="bench_policy_")
            tiny = Path(tmp.name)
            subprocess.run([sys.executable, str(SIM / "make_tiny_policies.py"), "--out", str(tiny)], check=True,
                           cwd=SIM, stdout=subprocess.DEVNULL)
        args.smolvla = args.smolvla or str(tiny / "smolvla")
        args.pi0 = args.pi0 or str(tiny / "pi0")
    configs = [("smolvla", args.smolvla, "0"), ("pi0", args.pi0, "0")]
    if not args.no_quantized:
        configs.append(("pi0", args.pi0, "1"))
    rows = []
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    for model_type, path, q in configs:
        cmd = [sys.executable, __file__, "--worker", model_type, path, q, "--device", args.device,
               "--repeats", str(args.repeats), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=SIM, env=env)
        result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not result:
            print(f"{model_type} ({path}, quantize={q}) failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            return 1
        rows.append(json.loads(result[0][len("RESULT "):]))
        print(f"done: {model_type} {rows[-1]['weights']}", file=sys.stderr)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
