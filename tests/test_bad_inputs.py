"""Bad command-line input to the entry scripts: every row must end with exit status 2, one
``error:`` line naming the problem, no traceback, and nothing written or changed (the whole
test folder is compared before and after, byte for byte). Most rows call ``main(argv)`` in
this process (the imports are paid once); the rows marked ``sub`` run the script as a real
subprocess from simulation_code/, as a user would. The validators are simulation_code/cli_args.py.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from so101_sim import cli_args

SIM_DIR = Path(__file__).resolve().parent.parent / "simulation_code"

# (script, argv, expected substring of the error line, run as a subprocess?)
# Placeholders: {tmp} the test folder, {file} a regular file in it, {notds} a folder with a file
# that is not a dataset, {fakeds} a folder that looks like a LeRobot dataset (meta/info.json).
SIM = ["--model-type", "scripted", "--headless", "--summary-json", "{tmp}/summary.json"]
INF = ["--checkpoint", "{file}", "--headless", "--summary-json", "{tmp}/summary.json"]
RL = ["--model-type", "flow", "--init-checkpoint", "{file}", "--checkpoint", "{tmp}/rl.pt", "--quiet"]
BC = ["--scripted-episodes", "1", "--checkpoint", "{tmp}/bc.pt"]
REC = ["--input", "scripted", "--output_dir", "{tmp}/new_dataset", "--num_episodes", "1"]
ROWS = [
    # run_mujoco_simulation.py
    ("run_mujoco_simulation", SIM + ["--episodes", "0"], "argument --episodes: must be an integer >= 1 (got 0)", True),
    ("run_mujoco_simulation", SIM + ["--episodes", "-1"], "argument --episodes: must be an integer >= 1 (got -1)", False),
    ("run_mujoco_simulation", SIM + ["--max-steps", "0"], "argument --max-steps: must be an integer >= 1", False),
    ("run_mujoco_simulation", ["--model-type", "nope", "--headless"], "argument --model-type: invalid choice: 'nope'", True),
    ("run_mujoco_simulation", SIM + ["--video-camera", "nope"], "argument --video-camera: invalid choice: 'nope'", False),
    ("run_mujoco_simulation", SIM + ["--camera-map", "camera9=front"], "argument --camera-map: the simulation has no "
     "camera 'camera9'", False),
    ("run_mujoco_simulation", SIM + ["--env-id", "Nope-v0"], "argument --env-id: unknown env id 'Nope-v0'", False),
    ("run_mujoco_simulation", ["--model-type", "flow", "--policy-path", "{tmp}/missing.pt", "--headless"],
     "argument --policy-path: no such checkpoint file", False),
    ("run_mujoco_simulation", ["--model-type", "smolvla", "--policy-path", "{tmp}/missing_dir", "--headless"],
     "neither an existing local folder nor a Hugging Face Hub id", False),
    ("run_mujoco_simulation", ["--model-type", "scripted", "--headless", "--summary-json", "{file}/summary.json"],
     "argument --summary-json: cannot create", False),
    ("run_mujoco_simulation", SIM + ["--task", "pick up\nthe block"], "argument --task: must be a single line", False),
    # run_reinflow_inference.py
    ("run_reinflow_inference", INF + ["--episodes", "0"], "argument --episodes: must be an integer >= 1 (got 0)", True),
    ("run_reinflow_inference", INF + ["--episodes", "-1"], "argument --episodes: must be an integer >= 1", False),
    ("run_reinflow_inference", ["--checkpoint", "{tmp}/missing.pt", "--headless"],
     "argument --checkpoint: no such file", False),
    ("run_reinflow_inference", INF + ["--num-denoise-steps", "0"], "argument --num-denoise-steps: must be an integer >= 1",
     False),
    ("run_reinflow_inference", INF + ["--video-dir", "{file}/videos"], "argument --video-dir: cannot create", False),
    # train_reinflow.py
    ("train_reinflow", RL + ["--parallel-envs", "0"], "argument --parallel-envs: must be an integer >= 1 (got 0)", False),
    ("train_reinflow", RL + ["--parallel-envs", "-2"], "argument --parallel-envs: must be an integer >= 1 (got -2)", False),
    ("train_reinflow", RL + ["--parallel-envs", "100000"], "argument --parallel-envs: 100000 workers need about", True),
    ("train_reinflow", RL + ["--iterations", "0"], "argument --iterations: must be an integer >= 1 (got 0)", False),
    ("train_reinflow", RL + ["--rollout-steps", "0"], "argument --rollout-steps: must be an integer >= 1", False),
    ("train_reinflow", RL + ["--batch-size", "0"], "argument --batch-size: must be an integer >= 1", False),
    ("train_reinflow", RL + ["--episodes", "0"], "argument --episodes: must be an integer >= 1", False),
    ("train_reinflow", RL + ["--denoise-steps", "11"], "argument --denoise-steps/-K: must be an integer in [1, 10]", False),
    ("train_reinflow", RL + ["--gamma", "1.5"], "argument --gamma: must be a finite number in [0.0, 1.0]", False),
    ("train_reinflow", RL + ["--image-size", "0"], "argument --image-size: must be an integer in [16, 480]", False),
    ("train_reinflow", ["--model-type", "nope", "--checkpoint", "{tmp}/rl.pt"], "argument --model-type: invalid choice",
     False),
    ("train_reinflow", RL + ["--env-id", "Nope-v0"], "argument --env-id: unknown env id", False),
    ("train_reinflow", ["--model-type", "flow", "--init-checkpoint", "{tmp}/missing.pt", "--checkpoint", "{tmp}/rl.pt"],
     "argument --init-checkpoint: no such checkpoint file", False),
    ("train_reinflow", ["--model-type", "flow", "--resume", "{tmp}/missing.pt", "--checkpoint", "{tmp}/rl.pt"],
     "argument --resume: no such checkpoint file", False),
    ("train_reinflow", ["--model-type", "flow", "--init-checkpoint", "{file}", "--checkpoint", "{file}/rl.pt"],
     "argument --checkpoint: cannot create", False),
    ("train_reinflow", RL + ["--task", "line one\nline two"], "argument --task: must be a single line", False),
    # train_flow_bc.py
    ("train_flow_bc", BC + ["--steps", "0"], "argument --steps: must be an integer >= 1 (got 0)", False),
    ("train_flow_bc", BC + ["--batch-size", "0"], "argument --batch-size: must be an integer >= 1 (got 0)", False),
    ("train_flow_bc", ["--scripted-episodes", "0", "--checkpoint", "{tmp}/bc.pt"], "argument --scripted-episodes", False),
    ("train_flow_bc", ["--dataset", "{tmp}/missing", "--checkpoint", "{tmp}/bc.pt"],
     "argument --dataset: no such dataset folder", False),
    ("train_flow_bc", ["--dataset", "{notds}", "--checkpoint", "{tmp}/bc.pt"], "is not a LeRobot dataset", True),
    ("train_flow_bc", BC + ["--n-action-steps", "20", "--chunk-size", "8"], "argument --n-action-steps: must be <=", False),
    # record_dataset.py
    ("record_dataset", REC + ["--fps", "0"], "argument --fps: must be an integer >= 1 (got 0)", True),
    ("record_dataset", REC + ["--fps", "501"], "argument --fps: must be at most 500", False),
    ("record_dataset", REC + ["--image-size", "0"], "argument --image-size: must be an integer in [16, 480]", False),
    ("record_dataset", REC + ["--max-steps", "0"], "argument --max-steps: must be an integer >= 1", False),
    ("record_dataset", ["--input", "scripted", "--output_dir", "{tmp}/new_dataset", "--num_episodes", "0"],
     "argument --num-episodes/--num_episodes: must be an integer >= 1", False),
    ("record_dataset", ["--input", "nope", "--output_dir", "{tmp}/new_dataset"], "argument --input: invalid choice", False),
    ("record_dataset", ["--input", "scripted", "--output_dir", "{notds}"], "already exists and is not empty", True),
    ("record_dataset", ["--input", "scripted", "--output_dir", "{fakeds}"], "pass --resume to append episodes", False),
    ("record_dataset", ["--input", "scripted", "--output_dir", "{notds}", "--overwrite"],
     "is not a LeRobot dataset (no meta/info.json): refusing to delete it", False),
    ("record_dataset", ["--input", "scripted", "--output_dir", "{notds}", "--resume"], "nothing to resume", False),
    ("record_dataset", ["--input", "scripted", "--output_dir", "{file}/dataset"], "/afile is a file, not a folder", False),
    ("record_dataset", REC + ["--task", "pick up\nthe red block"], "argument --task: must be a single line", False),
    # dataset_stats.py, analyze_predictions.py, print_checkpoint_stats.py, make_tiny_policies.py
    ("dataset_stats", ["{tmp}/missing"], "argument dataset: no such dataset folder", True),
    ("dataset_stats", ["{notds}"], "is not a LeRobot dataset (no meta/info.json)", False),
    ("dataset_stats", ["{fakeds}", "--steps", "0"], "argument --steps: must be an integer >= 1", False),
    ("analyze_predictions", ["--model-type", "flow", "--dataset", "{tmp}/missing", "--out", "{tmp}/analysis"],
     "argument --dataset: no such dataset folder", False),
    ("analyze_predictions", ["--model-type", "flow", "--dataset", "{fakeds}", "--policy-path", "{tmp}/missing.pt",
                             "--out", "{tmp}/analysis"], "argument --policy-path: no such checkpoint file", False),
    ("analyze_predictions", ["--model-type", "nope", "--dataset", "{fakeds}", "--out", "{tmp}/analysis"],
     "argument --model-type: invalid choice", False),
    ("print_checkpoint_stats", ["--checkpoint", "{tmp}/missing.pt"], "argument --checkpoint: no such file", False),
    ("print_checkpoint_stats", ["--checkpoint", "{file}", "--every", "0", "--plot", "{tmp}/curves.png"],
     "argument --every: must be an integer >= 1", False),
    ("make_tiny_policies", ["--out", "{file}/tiny"], "argument --out: cannot create", False),
    # teleop
    ("teleop_keyboard", ["--hz", "0"], "argument --hz: must be a finite number > 0.0 (got 0)", True),
    ("teleop_gamepad", ["--dead-zone", "1.5"], "argument --dead-zone: must be a finite number in [0.0, 1.0]", False),
    ("teleop_gamepad", ["--index", "-1"], "argument --index: must be an integer >= 0", False),
]


def _row_id(row) -> str:
    script, argv, _, sub = row
    i = max((j for j, a in enumerate(argv) if a.startswith("--") and a not in ("--headless", "--quiet")), default=0)
    what = "=".join(a.replace("{", "").replace("}", "").replace("\n", "NL") for a in argv[i:i + 2])
    return f"{script}[{what}]{'-sub' if sub else ''}"


@pytest.fixture
def workdir(tmp_path):
    """The test folder with its fixtures: a regular file, a folder that is not a dataset, and a
    folder that looks like a LeRobot dataset."""
    (tmp_path / "afile").write_text("a regular file\n")
    (tmp_path / "notds").mkdir()
    (tmp_path / "notds" / "keep.txt").write_text("mine, keep it\n")
    meta = tmp_path / "fakeds" / "meta"
    meta.mkdir(parents=True)
    (meta / "info.json").write_text('{"codebase_version": "v3.0", "fps": 10}\n')
    (tmp_path / "fakeds" / "data.bin").write_bytes(bytes(range(256)))
    return tmp_path


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``root``, by relative path."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _run(script: str, argv: list[str], sub: bool, capsys) -> tuple[int, str]:
    """Exit status and stderr of ``script`` run with ``argv`` (a subprocess or ``main(argv)``)."""
    if sub:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "SO101_QUIET_GL": "1"}
        r = subprocess.run([sys.executable, f"{script}.py", *argv], cwd=SIM_DIR, env=env, capture_output=True,
                           text=True, timeout=300)
        return r.returncode, r.stderr
    mod = importlib.import_module(f"so101_sim.{script}")
    capsys.readouterr()
    try:
        code = mod.main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    if isinstance(code, str):  # SystemExit("message"): Python prints it and exits with status 1
        code, err = 1, err + code
    return code, err


@pytest.mark.parametrize("script,argv,expected,sub", ROWS, ids=[_row_id(r) for r in ROWS])
def test_bad_input_is_one_clean_error_and_writes_nothing(workdir, capsys, script, argv, expected, sub):
    argv = [a.format(tmp=workdir, file=workdir / "afile", notds=workdir / "notds", fakeds=workdir / "fakeds")
            for a in argv]
    before = _snapshot(workdir)
    code, err = _run(script, argv, sub, capsys)
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert expected in errors[0], err
    assert code == 2, err
    assert _snapshot(workdir) == before  # nothing created, nothing changed or deleted


def test_table_covers_the_entry_scripts():
    """At least 25 rows, over every entry script with numeric or path flags."""
    assert len(ROWS) >= 25
    assert {r[0] for r in ROWS} >= {"run_mujoco_simulation", "run_reinflow_inference", "record_dataset", "train_flow_bc",
                                    "train_reinflow", "print_checkpoint_stats", "analyze_predictions", "dataset_stats",
                                    "make_tiny_policies", "teleop_keyboard", "teleop_gamepad"}


UNICODE_TASK = "pick up the 赤い block — ünïcødé ✓"


@pytest.mark.parametrize("script,argv", [
    ("record_dataset", ["--input", "scripted", "--output_dir", "{tmp}/ds"]),
    ("run_mujoco_simulation", ["--model-type", "scripted"]),
    ("train_reinflow", ["--model-type", "flow"]),
])
def test_a_unicode_task_is_accepted_verbatim(tmp_path, script, argv):
    args = importlib.import_module(f"so101_sim.{script}").parse_args([a.format(tmp=tmp_path) for a in argv] + ["--task", UNICODE_TASK])
    assert args.task == UNICODE_TASK
    assert not (tmp_path / "ds").exists()


def test_parallel_envs_memory_estimate_names_the_figures():
    per = cli_args.WORKER_MEMORY_MB["state"]
    assert cli_args.parallel_envs_problem(20, "state", available=20 * per * 10**6) is None
    msg = cli_args.parallel_envs_problem(1000, "state", available=int(20.1e9))
    assert msg == (f"argument --parallel-envs: 1000 workers need about {1000 * per / 1e3:.1f} GB ({per} MB per state "
                   f"env worker) but 20.1 GB is available; use at most {int(20.1e9 // (per * 1e6))}")
    assert "MB per images env worker" in cli_args.parallel_envs_problem(1000, "images", available=int(1e9))
    assert "in each of 2 processes" in cli_args.parallel_envs_problem(10, "state", available=int(15e9), processes=2)
    assert cli_args.available_memory_bytes() > 0


def test_validators_accept_the_edges_and_refuse_just_past_them():
    import argparse

    assert cli_args.positive_int("1") == 1 and cli_args.nonneg_int("0") == 0 and cli_args.image_size("480") == 480
    assert cli_args.float_range(0.0, 1.0)("1") == 1.0 and cli_args.positive_float("1e-9") == 1e-9
    for validator, text in [(cli_args.positive_int, "0"), (cli_args.nonneg_int, "-1"), (cli_args.image_size, "481"),
                            (cli_args.image_size, "15"), (cli_args.positive_int, "1.5"), (cli_args.positive_float, "0"),
                            (cli_args.nonneg_float, "nan"), (cli_args.float_range(), "inf"), (cli_args.task_string, " "),
                            (cli_args.task_string, "a\rb"), (cli_args.camera_map, "camera1"),
                            (cli_args.camera_map, '["camera1"]')]:
        with pytest.raises(argparse.ArgumentTypeError):
            validator(text)
    assert cli_args.camera_map("camera1=front, observation.images.camera2=wrist") == \
        "camera1=front, observation.images.camera2=wrist"
    assert cli_args.policy_path_problem("lerobot/smolvla_base", "smolvla") is None  # a Hub id


def test_an_existing_output_is_fine_and_a_path_under_a_file_is_not(tmp_path):
    existing = tmp_path / "ck.pt"
    existing.write_bytes(b"old")
    assert cli_args.output_problem(existing) is None  # replaced by the run
    assert cli_args.output_problem(tmp_path) is None and cli_args.output_problem(tmp_path / "a" / "b" / "c") is None
    assert "is a file, not a folder" in cli_args.output_problem(existing / "a" / "b")
