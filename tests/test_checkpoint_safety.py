"""Checkpoint files a user passes: no code runs from them, and corrupt or wrong-kind files are
refused with one message (flow_policy.load_checkpoint / CheckpointError) through every entry
point; a SIGKILL during a checkpoint save leaves the previous checkpoint loadable and --resume
exact."""

import os
import pickle
from dataclasses import replace
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from so101_sim import analyze_predictions  # noqa: E402
from so101_sim import flow_policy as fp  # noqa: E402
from so101_sim import checkpoint_io as ckio
from so101_sim import print_checkpoint_stats  # noqa: E402
from so101_sim import run_mujoco_simulation  # noqa: E402
from so101_sim import run_reinflow_inference  # noqa: E402
from so101_sim import train_reinflow  # noqa: E402
from conftest import SIM_DIR  # noqa: E402

SHIPPED_BC = SIM_DIR / "checkpoints" / "flow_bc.pt"
SHIPPED_RL = SIM_DIR / "checkpoints" / "flow_reinflow.pt"
#: sha256 (checkpoint_io.content_hash) of the weight fields of the shipped checkpoints as trained:
#: BC by benchmarks/reinflow_flow.py on 2026-11-22 (re-saved as v2 and v3 with every bit kept),
#: ReinFlow by its re-run after the training-loop redesign on 2026-12-01 (docs/experiments/).
SHIPPED_WEIGHTS = {SHIPPED_BC: "c5ac16e7169b763047036d30b3a3ad4f9668fc21f9e1a7815992e1db57b35c70",
                   SHIPPED_RL: "3e7932501f991e0a76bc6cc6fb78541caab43f9c141813d1d1dea64c82dde882"}
WEIGHT_KEYS = ("policy_state", "noise_head_state", "critic_state", "reference_state")
UNSAFE = "is not a checkpoint written by this repo, or an unsafe pickle: refused without running it"
TINY_RL = ["--model-type", "flow", "--rollout-steps", "12", "--max-episode-steps", "10", "--eval-every", "0",
           "--batch-size", "4", "--epochs", "1", "--critic-warmup-iters", "1", "--quiet", "--no-render",
           "--save-every", "1", "--seed", "5", "--parallel-envs", "1", "--policy-lr", "1e-3"]


class Payload:
    """Unpickling this runs ``exec``: it creates the file ``marker`` (what a crafted checkpoint does)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def crafted(path, marker, form="zip"):
    """A crafted checkpoint: this repo's fields around a payload, as torch.save writes it
    (``zip``), in torch's legacy format or as a raw pickle."""
    obj = {"format": ckio.CHECKPOINT_FORMAT, "kind": "bc", "model_type": "flow", "policy_state": Payload(marker)}
    if form == "raw":
        path.write_bytes(pickle.dumps(obj))
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=form == "zip")
    return path


@pytest.fixture(scope="module")
def tiny_bc(tmp_path_factory):
    """A tiny random BC checkpoint (hidden 32, depth 1) with the shipped BC policy's statistics."""
    shipped = ckio.load(SHIPPED_BC)
    torch.manual_seed(0)
    cfg = fp.FlowPolicyConfig(**dict(shipped.policy_config, hidden_dim=32, depth=1))
    ck = ckio.Checkpoint(kind="bc", **fp.FlowPolicy(cfg, fp.NormStats.from_dict(shipped.norm_stats)).checkpoint_fields())
    path = tmp_path_factory.mktemp("bc") / "bc.pt"
    ckio.save(path, ck)
    return path


def raw_load(path) -> dict:
    """torch.load as load_checkpoint does it, without any of its checks."""
    with torch.serialization.safe_globals(ckio._safe_globals()):
        return torch.load(path, map_location="cpu", weights_only=True)


def status(main, argv) -> int:
    """A script's exit status from its main(argv) (argparse's own errors: SystemExit)."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def one_error_line(err: str, *parts: str) -> str:
    """The single ``error: ...`` line of a script's stderr (no traceback), containing ``parts``."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ") or ": error: " in ln]
    assert len(lines) == 1, err
    for p in parts:
        assert p in lines[0], (p, lines[0])
    return lines[0]


def entry_points(path, tmp_path):
    """(script, main, argv) of every entry point that reads a flow checkpoint file ``path``."""
    ds = tmp_path / "dataset"
    (ds / "meta").mkdir(parents=True, exist_ok=True)
    (ds / "meta" / "info.json").write_text("{}")  # analyze_predictions checks the dataset folder first
    out = tmp_path / "rl_out.pt"
    p = str(path)
    return [("run_reinflow_inference --checkpoint", run_reinflow_inference.main, ["--checkpoint", p, "--headless"]),
            ("print_checkpoint_stats --checkpoint", print_checkpoint_stats.main, ["--checkpoint", p]),
            ("train_reinflow --resume", train_reinflow.main, TINY_RL + ["--resume", p, "--checkpoint", str(out)]),
            ("train_reinflow --init-checkpoint", train_reinflow.main,
             TINY_RL + ["--init-checkpoint", p, "--checkpoint", str(out)]),
            ("train_reinflow --policy-path", train_reinflow.main, TINY_RL + ["--policy-path", p, "--checkpoint", str(out)]),
            ("run_mujoco_simulation --policy-path", run_mujoco_simulation.main,
             ["--model-type", "flow", "--policy-path", p, "--headless", "--episodes", "1"]),
            ("analyze_predictions --policy-path", analyze_predictions.main,
             ["--model-type", "flow", "--policy-path", p, "--dataset", str(ds), "--out", str(tmp_path / "analysis")])]


# ---------------------------------------------------------------------- no code execution
def test_the_crafted_pickle_runs_code_when_unpickled_unsafely(tmp_path):
    """The payload of the tests below is live: plain unpickling creates its marker."""
    marker = tmp_path / "ran"
    pickle.loads(crafted(tmp_path / "evil.pkl", marker, "raw").read_bytes())  # noqa: S301  (the point of the test)
    assert marker.exists()


@pytest.mark.parametrize("form", ["zip", "legacy", "raw"])
def test_load_checkpoint_refuses_a_crafted_pickle_without_running_it(tmp_path, form):
    marker = tmp_path / "ran"
    evil = crafted(tmp_path / f"evil_{form}.pt", marker, form)
    with pytest.raises(ckio.CheckpointError) as e:
        ckio.load(evil)
    assert str(e.value).startswith(str(evil)) and "refused without running it" in str(e.value)
    assert "unsafe pickle" in str(e.value) and not marker.exists()


def test_every_entry_point_refuses_a_crafted_pickle_with_one_line_and_status_2(tmp_path, capsys):
    marker = tmp_path / "ran"
    evil = crafted(tmp_path / "evil.pt", marker)
    for name, main, argv in entry_points(evil, tmp_path):
        capsys.readouterr()
        assert status(main, argv) == 2, name
        one_error_line(capsys.readouterr().err, str(evil), UNSAFE)
        assert not marker.exists(), f"{name} ran the payload"
    assert not (tmp_path / "rl_out.pt").exists()


def test_the_command_line_refuses_a_crafted_pickle(tmp_path):
    """Through the script itself (sys.exit(main())): status 2, one line, no traceback, nothing ran."""
    marker = tmp_path / "ran"
    evil = crafted(tmp_path / "evil.pt", marker)
    r = subprocess.run([sys.executable, "print_checkpoint_stats.py", "--checkpoint", str(evil)], cwd=SIM_DIR,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    one_error_line(r.stderr, str(evil), UNSAFE)
    assert not marker.exists() and "kind=" not in r.stdout


# ---------------------------------------------------------------------- corrupt files
def test_truncated_checkpoints_are_refused(tmp_path, capsys):
    data = SHIPPED_BC.read_bytes()
    for n in (0, 10, 4096, len(data) // 2, len(data) - 1):
        bad = tmp_path / f"cut_{n}.pt"
        bad.write_bytes(data[:n])
        with pytest.raises(ckio.CheckpointError, match="truncated or corrupt") as e:
            ckio.load(bad)
        assert str(e.value).startswith(str(bad))
        assert print_checkpoint_stats.main(["--checkpoint", str(bad)]) == 2
        one_error_line(capsys.readouterr().err, str(bad), "truncated or corrupt")


def _tensor_data_span(path):
    """(start, size) in the file of the largest tensor storage (``data/N`` entry, stored uncompressed)."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    assert info.compress_type == zipfile.ZIP_STORED
    raw = path.read_bytes()
    name_len, extra_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    return info.header_offset + 30 + name_len + extra_len, info.file_size


@pytest.mark.parametrize("shipped", [SHIPPED_BC, SHIPPED_RL], ids=["bc", "reinflow"])
def test_flipped_bytes_inside_a_tensor_fail_the_content_hash(tmp_path, shipped, capsys):
    raw = bytearray(shipped.read_bytes())
    start, size = _tensor_data_span(shipped)
    for off in (start + size // 2, start + size // 2 + 1):
        raw[off] ^= 0xFF
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(raw))
    # torch itself reads the damaged file without complaint: a tensor has silently changed
    good, damaged = raw_load(shipped), raw_load(bad)
    changed = [(part, k) for part in WEIGHT_KEYS if good.get(part) for k in good[part]
               if not torch.equal(good[part][k], damaged[part][k])]
    assert changed, "the flip did not land in a tensor"
    with pytest.raises(ckio.CheckpointError, match="corrupt: content hash mismatch") as e:
        ckio.load(bad)
    what = {"bc": "a damaged copy of a flow BC checkpoint", "reinflow": "a damaged copy of a flow ReinFlow checkpoint"}
    assert str(e.value).startswith(str(bad)) and what[good["kind"]] in str(e.value)
    assert run_reinflow_inference.main(["--checkpoint", str(bad), "--headless"]) == 2
    one_error_line(capsys.readouterr().err, str(bad), "content hash mismatch")


def test_an_edited_weight_resaved_without_the_hash_is_refused(tmp_path):
    ck = raw_load(SHIPPED_BC)
    ck["policy_state"]["obs_encoder.0.0.weight"][0, 0] += 1e-3  # stored hash kept: no longer matches
    torch.save(ck, tmp_path / "edited.pt")
    with pytest.raises(ckio.CheckpointError, match="content hash mismatch"):
        ckio.load(tmp_path / "edited.pt")
    del ck["content_sha256"]  # a current-format file without its hash is just as corrupt
    torch.save(ck, tmp_path / "nohash.pt")
    with pytest.raises(ckio.CheckpointError, match="content hash mismatch"):
        ckio.load(tmp_path / "nohash.pt")


# ---------------------------------------------------------------------- wrong kind / not a checkpoint
def test_resume_from_a_bc_checkpoint_is_refused(tiny_bc, tmp_path, capsys):
    out = tmp_path / "rl.pt"
    assert train_reinflow.main(TINY_RL + ["--resume", str(tiny_bc), "--checkpoint", str(out)]) == 2
    one_error_line(capsys.readouterr().err, str(tiny_bc), "is a flow BC checkpoint (train_flow_bc.py)",
                   "expected a flow ReinFlow checkpoint (train_reinflow.py)", f"--init-checkpoint {tiny_bc}")
    assert not out.exists()  # it used to start a fresh run with an empty bc_source


@pytest.mark.parametrize("flag", ["--init-checkpoint", "--policy-path"])
def test_a_reinflow_checkpoint_where_a_bc_one_is_required_is_refused(tmp_path, capsys, flag):
    out = tmp_path / "rl.pt"
    assert train_reinflow.main(TINY_RL + [flag, str(SHIPPED_RL), "--checkpoint", str(out)]) == 2
    one_error_line(capsys.readouterr().err, str(SHIPPED_RL), "is a flow ReinFlow checkpoint (train_reinflow.py)",
                   "expected a flow checkpoint of this repo (BC/policy-only)", f"--resume {SHIPPED_RL}")
    assert not out.exists()


def test_another_model_types_checkpoint_is_refused(tmp_path, capsys):
    vla = tmp_path / "smolvla_rl.pt"
    ckio.save(vla, ckio.Checkpoint(kind="reinflow", model_type="smolvla", policy_state={"w": torch.zeros(2)},
                                   base_policy={"path": "lerobot/smolvla_base"}, trainable_preset="expert"))
    assert ckio.load(vla).model_type == "smolvla"  # a valid checkpoint of this repo
    for main, argv in ((run_mujoco_simulation.main, ["--model-type", "flow", "--policy-path", str(vla), "--headless"]),
                       (train_reinflow.main, TINY_RL + ["--resume", str(vla), "--checkpoint", str(tmp_path / "o.pt")])):
        assert status(main, argv) == 2
        one_error_line(capsys.readouterr().err, str(vla), "is a smolvla ReinFlow checkpoint", "expected a flow")
    with pytest.raises(ckio.CheckpointError, match="expected a pi0 ReinFlow checkpoint"):
        ckio.load(vla, kind="reinflow", model_type="pi0")


def test_files_that_are_not_checkpoints_are_refused_with_what_they_are(tmp_path, capsys):
    from safetensors.torch import save_file

    policy_dir = tmp_path / "lerobot_policy"  # what --policy-path takes for the VLAs
    policy_dir.mkdir()
    (policy_dir / "config.json").write_text('{"type": "smolvla"}')
    save_file({"w": torch.zeros(3)}, policy_dir / "model.safetensors")
    (tmp_path / "stats.json").write_text('{"success_rate": 0.8}')
    torch.save({"weights": torch.ones(2)}, tmp_path / "other.pt")
    cases = {policy_dir: "folder",
             policy_dir / "model.safetensors": "is a safetensors file",
             tmp_path / "stats.json": "is a JSON/text file",
             tmp_path / "other.pt": "is a torch file but not a checkpoint written by this repo",
             tmp_path / "missing.pt": "no checkpoint at"}
    for path, what in cases.items():
        with pytest.raises(ckio.CheckpointError, match="expected a flow checkpoint of this repo") as e:
            fp.FlowPolicy.load(str(path))
        assert what in str(e.value) and str(path) in str(e.value)
        # the script: status 2 and one line naming the file (argparse's own path checks may answer first)
        assert status(run_mujoco_simulation.main, ["--model-type", "flow", "--policy-path", str(path), "--headless"]) == 2
        one_error_line(capsys.readouterr().err, str(path))
    with pytest.raises(FileNotFoundError):  # a missing file is also a FileNotFoundError
        ckio.load(tmp_path / "missing.pt")


# ---------------------------------------------------------------------- shipped checkpoints, saving
@pytest.mark.parametrize("shipped", [SHIPPED_BC, SHIPPED_RL], ids=["bc", "reinflow"])
def test_shipped_checkpoints_load_safely_with_their_trained_weights(shipped, recwarn):
    ck, raw = ckio.load(shipped, model_type="flow"), raw_load(shipped)
    assert raw["format"] == ckio.CHECKPOINT_FORMAT and raw["content_sha256"] == ckio.content_hash(raw)
    assert ck.kind == ("bc" if shipped == SHIPPED_BC else "reinflow")
    assert not [w for w in recwarn if "legacy" in str(w.message)]  # converted: hash present, no legacy warning
    weights = {k: getattr(ck, k) for k in WEIGHT_KEYS if getattr(ck, k) is not None}
    assert ckio.content_hash(weights) == SHIPPED_WEIGHTS[shipped]
    policy = fp.FlowPolicy.load(str(shipped))
    for k, v in policy.model.state_dict().items():
        assert torch.equal(v, ck.policy_state[k]) and v.dtype == ck.policy_state[k].dtype


def test_save_round_trip_and_what_save_refuses(tiny_bc, tmp_path):
    ck = ckio.load(tiny_bc)
    ck.rng_state = {"numpy": np.random.RandomState(3).get_state(), "torch": torch.get_rng_state()}
    ck.history = [{"eval_success": np.float64(0.25), "x": float("nan"), "bins": (2, 3)}]
    ckio.save(tmp_path / "a.pt", ck)
    back = ckio.load(tmp_path / "a.pt")  # numpy state and scalars: allowlisted, hash verified
    assert np.array_equal(back.rng_state["numpy"][1], ck.rng_state["numpy"][1])
    assert back.history[0]["eval_success"] == 0.25 and ckio.content_hash(back) == ckio.content_hash(ck)
    raw = raw_load(tmp_path / "a.pt")
    assert raw["content_sha256"] == ckio.content_hash(raw) and raw["format"] == ckio.CHECKPOINT_FORMAT
    with pytest.raises(TypeError, match=r"PosixPath"):  # would not load with weights_only: refused at save
        ckio.save(tmp_path / "b.pt", replace(ck, source=tmp_path))
    with pytest.raises(ValueError, match="kind"):
        ckio.save(tmp_path / "c.pt", replace(ck, kind=None))
    assert not (tmp_path / "b.pt").exists() and not (tmp_path / "c.pt").exists()


def test_a_legacy_v1_checkpoint_loads_with_a_warning(tmp_path):
    ck = raw_load(SHIPPED_BC)
    v1 = {_V2_NAMES.get(k, k): v for k, v in ck.items() if k not in ("content_sha256", "optimizers")}
    v1.update(format="so101-reinflow-checkpoint-v1", optimizer_state=ck["optimizers"]["policy"], history=[])
    torch.save(v1, tmp_path / "v1.pt")
    with pytest.warns(UserWarning, match="legacy so101-reinflow-checkpoint-v1 checkpoint without a content hash"):
        old = ckio.load(tmp_path / "v1.pt", kind="bc")
    assert torch.equal(old.policy_state["obs_encoder.0.0.weight"], ck["policy_state"]["obs_encoder.0.0.weight"])
    assert old.history == ck["history"] and old.args == ck["args"] and list(old.optimizers) == ["policy"]


#: How a BC checkpoint of the earlier formats named the fields of checkpoint_io.Checkpoint.
_V2_NAMES = {"history": "bc_history", "args": "bc_args", "data": "bc_data", "evaluation": "bc_eval"}


# ---------------------------------------------------------------------- SIGKILL while saving
#: The training runs are subprocesses (a real SIGKILL) with the default forkserver-started env
#: workers: fork() in the multi-threaded training process is what Python 3.12 warns about ("use of
#: fork() may lead to deadlocks in the child").
TRAIN = [sys.executable, "train_reinflow.py", *TINY_RL]
#: Runs train_reinflow.py (argv after MARKER); in its 2nd checkpoint save it first writes the
#: complete archive to MARKER.reference.pt (what the uninterrupted run saves), then, at POINT,
#: creates MARKER and waits for the test's SIGKILL: "write" = half of the archive written to
#: PATH.tmp, "fsync" = PATH.tmp complete but not synced, "replace" = synced, not yet renamed.
KILL_HOOK = r"""
import io, os, runpy, sys, time
point, marker = sys.argv[1], sys.argv[2]
sys.argv = ["train_reinflow.py", *sys.argv[3:]]
sys.path.insert(0, os.getcwd())
import torch
from so101_sim import checkpoint_io as ckio
saves = [0]
def hold():
    open(marker, "w").close()
    time.sleep(120)
    os._exit(3)
real_save, real_fsync, real_replace, real_ckpt = torch.save, os.fsync, os.replace, ckio.save
def torch_save(obj, f, *a, **k):
    if saves[0] != 2:
        return real_save(obj, f, *a, **k)
    buf = io.BytesIO()
    real_save(obj, buf, *a, **k)
    with open(marker + ".reference.pt", "wb") as ref:
        ref.write(buf.getvalue())
    if point == "write":
        f.write(buf.getvalue()[: buf.tell() // 2])
        f.flush()
        hold()
    return real_save(obj, f, *a, **k)
def fsync(fd):
    if saves[0] == 2 and point == "fsync":
        hold()
    return real_fsync(fd)
def replace(src, dst):
    if saves[0] == 2 and point == "replace":
        hold()
    return real_replace(src, dst)
def save_checkpoint(path, ckpt):
    saves[0] += 1
    return real_ckpt(path, ckpt)
torch.save, os.fsync, os.replace, ckio.save = torch_save, fsync, replace, save_checkpoint
runpy.run_path("train_reinflow.py", run_name="__main__")
"""


def _start(cmd):
    return subprocess.Popen(cmd, cwd=SIM_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: the env workers die with it


def _sigkill(proc) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its env worker processes
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _kill_when(proc, cond, delay: float = 0.0, timeout: float = 120.0) -> None:
    """SIGKILL ``proc`` ``delay`` s after ``cond()`` first holds (fails if it ends or times out first)."""
    t0 = time.monotonic()
    try:
        while not cond():
            if proc.poll() is not None:
                pytest.fail(f"the run ended (status {proc.returncode}) before the kill point:\n{proc.stdout.read()[-3000:]}")
            if time.monotonic() - t0 > timeout:
                pytest.fail("the kill point was not reached in time")
            time.sleep(0.01)
        time.sleep(delay)
        _sigkill(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _resume(ck, iterations: int) -> None:
    r = subprocess.run([*TRAIN, "--resume", str(ck), "--iterations", str(iterations), "--checkpoint", str(ck)],
                       cwd=SIM_DIR, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert f"resumed {ck} at iteration" in r.stdout


@pytest.mark.parametrize("point", ["write", "fsync", "replace"])
def test_sigkill_during_a_checkpoint_save_keeps_the_previous_checkpoint_and_resume_exact(tiny_bc, tmp_path, point):
    ck, marker = tmp_path / "rl.pt", tmp_path / "in_save"
    proc = _start([sys.executable, "-c", KILL_HOOK, point, str(marker), *TRAIN[2:], "--init-checkpoint", str(tiny_bc),
                   "--iterations", "2", "--checkpoint", str(ck)])
    _kill_when(proc, marker.exists)
    reference = ckio.load(f"{marker}.reference.pt")  # what the killed save was writing
    assert reference.iteration == 2
    tmp = ck.with_name(ck.name + ".tmp")
    assert tmp.exists()  # the interrupted save's file ...
    prev = ckio.load(ck)  # ... left the previous checkpoint intact: loads, hash verified
    assert prev.iteration == 1 and len(prev.history) == 1
    if point == "write":
        with pytest.raises(ckio.CheckpointError, match="truncated or corrupt"):
            ckio.load(tmp)
    _resume(ck, 2)
    done = ckio.load(ck)
    assert done.iteration == 2 and not tmp.exists()
    for part in ("policy_state", "noise_head_state", "critic_state"):
        for k, v in getattr(reference, part).items():
            assert torch.equal(v, getattr(done, part)[k]), f"{part}.{k}: the killed + resumed run differs from the uninterrupted one"


def test_sigkill_at_an_arbitrary_moment_of_a_run_that_saves_every_iteration(tiny_bc, tmp_path):
    """No hook: SIGKILL at a random moment once a checkpoint exists (often inside a save, which
    takes much of a tiny iteration); whatever was hit, the checkpoint loads and --resume works."""
    ck = tmp_path / "rl.pt"
    proc = _start([*TRAIN, "--init-checkpoint", str(tiny_bc), "--iterations", "500", "--checkpoint", str(ck)])
    delay = float(np.random.default_rng().uniform(0.0, 0.5))
    _kill_when(proc, ck.exists, delay)
    prev = ckio.load(ck)
    it = prev.iteration
    assert 1 <= it < 500 and len(prev.history) == it, f"killed {delay:.3f} s after the first checkpoint"
    _resume(ck, it + 1)
    done = ckio.load(ck)
    assert done.iteration == it + 1 and _nan_equal(done.history[:it], prev.history), f"killed after {delay:.3f} s"


def _nan_equal(a, b) -> bool:
    same = lambda x, y: x == y or (x != x and y != y)  # noqa: E731
    return len(a) == len(b) and all(r.keys() == s.keys() and all(same(r[k], s[k]) for k in r) for r, s in zip(a, b))
