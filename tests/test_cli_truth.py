"""The command lines tell the truth: ``--help`` shows the defaults that run (per model type, and a
resumed run's), every default output lies under ``outputs/`` and is no tracked file, every flag
has a dash spelling, and what a new user meets is quiet and accurate (recording output, the
default inference checkpoint, a missing checkpoint, videos that go on after a success, the
report's animated previews, summary paths relative to the repository root)."""

from __future__ import annotations

import argparse
import base64
import importlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from so101_sim import cli_args
from so101_sim import checkpoint_io as ckio
from so101_sim import policy_registry as pr
from so101_sim import rollout_utils as ru
from so101_sim import so101_mujoco_utils as u
from so101_sim import train_reinflow
from conftest import REPO_ROOT, SIM_DIR

SHIPPED_RL = SIM_DIR / "checkpoints" / "flow_reinflow.pt"
SHIPPED_BC = SIM_DIR / "checkpoints" / "flow_bc.pt"


# ----------------------------------------------------------------------------- --help = what runs
def _help(argv: list[str], monkeypatch, capsys) -> str:
    monkeypatch.setenv("COLUMNS", "10000")  # one line per option: "(default: X)" is never wrapped
    with pytest.raises(SystemExit) as e:
        train_reinflow.parse_args(argv + ["--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def _help_defaults(text: str) -> dict[str, str]:
    """{dest: the VALUE of "(default: VALUE)"} for every option of a --help text (an option's
    block: its line and the more indented help lines under it)."""
    blocks, out = [], {}
    for line in text.splitlines():
        if re.match(r"^  -", line):
            blocks.append(line)
        elif blocks and line.startswith("    ") and line.strip():
            blocks[-1] += " " + line.strip()
        elif not line.strip() or not line.startswith("  "):
            blocks.append("")
    for block in blocks:
        flag = re.search(r"--([\w-]+)", block)
        value = re.search(r"\(default: (.*)\)\s*$", block)
        if flag and value and flag.group(1) != "help":
            out[flag.group(1).replace("-", "_")] = value.group(1)
    return out


#: The per-model settings --help must show (the rest shows too where it has a value).
PRESET_DESTS = ("batch_size", "grad_accum", "policy_lr", "clip", "checkpoint", "device")


@pytest.mark.parametrize("model", ["flow", "smolvla", "pi0"])
def test_help_shows_the_defaults_that_parse_args_returns(model, monkeypatch, capsys):
    shown = _help(["--model-type", model], monkeypatch, capsys)
    defaults = _help_defaults(shown)
    args = train_reinflow.parse_args(["--model-type", model])
    assert set(PRESET_DESTS) <= set(defaults), sorted(defaults)
    assert len(defaults) >= 30
    for dest, text in defaults.items():
        if getattr(args, dest) is None:  # "not set": the help says in words what happens then
            continue
        assert text == str(getattr(args, dest)), f"--{dest}: help says {text}, parse_args gives {getattr(args, dest)}"
    assert f"those of --model-type {model}" in shown


def test_help_without_a_model_type_shows_the_default_models_values_and_says_how_to_see_others(monkeypatch, capsys):
    shown = _help([], monkeypatch, capsys)
    assert _help_defaults(shown)["batch_size"] == "8" == str(train_reinflow.parse_args([]).batch_size)
    assert "Defaults depend on ``--model-type``" in shown and "--model-type flow --help" in shown
    # the presets really differ, so the per-model help is not vacuous
    assert _help_defaults(_help(["--model-type", "flow"], monkeypatch, capsys))["batch_size"] == "256"


def test_a_resumed_run_defaults_to_its_checkpoints_settings_and_keeps_its_algorithm(monkeypatch, capsys):
    ck = ckio.load(SHIPPED_RL)
    saved, cfg = ck.args, ck.reinflow_config
    args = train_reinflow.parse_args(["--resume", str(SHIPPED_RL)])  # no --model-type: the checkpoint's
    assert args.model_type == ck.model_type == "flow"
    assert (args.batch_size, args.epochs, args.clip, args.policy_lr) == (cfg["batch_size"], cfg["epochs"], cfg["clip"],
                                                                         cfg["policy_lr"])
    assert (args.rollout_steps, args.max_episode_steps, args.eval_seed) == (saved["rollout_steps"],
                                                                             saved["max_episode_steps"], saved["eval_seed"])
    assert args.block_curriculum and args.curriculum_bins == tuple(ck.block_curriculum["bins"])
    assert args.rollout_steps != train_reinflow.parse_args(["--model-type", "flow"]).rollout_steps  # not vacuous
    shown = _help_defaults(_help(["--resume", str(SHIPPED_RL)], monkeypatch, capsys))
    assert shown["batch_size"] == str(cfg["batch_size"]) and shown["rollout_steps"] == str(saved["rollout_steps"])
    # a run-shape flag wins; an algorithm flag that differs is reported and the checkpoint's kept
    capsys.readouterr()
    args = train_reinflow.parse_args(["--resume", str(SHIPPED_RL), "--rollout-steps", "12", "--epochs", "3"])
    err = capsys.readouterr().err
    assert args.rollout_steps == 12 and args.epochs == cfg["epochs"]
    assert "--epochs 3 ignored" in err and "--rollout-steps" not in err


def test_headless_is_deprecated_and_clip_help_matches_the_finding(capsys):
    train_reinflow.parse_args(["--model-type", "flow", "--headless"])
    assert "--headless is deprecated" in capsys.readouterr().err
    clip = next(a for a in train_reinflow.build_parser("flow")._actions if a.dest == "clip")
    assert clip.default == 0.01 and "collapses the small flow policy" in clip.help


# ----------------------------------------------------------------------------- defaults of every script
#: script -> argv prefixes whose parser defaults are checked (--help is appended).
SCRIPTS = {
    "run_mujoco_simulation": [[]],
    "run_reinflow_inference": [[]],
    "record_dataset": [["--input", "scripted"]],
    "train_flow_bc": [[]],
    "train_reinflow": [["--model-type", m] for m in train_reinflow.MODEL_TYPES],
    "analyze_predictions": [[]],
    "dataset_stats": [[]],
    "print_checkpoint_stats": [[]],
    "make_tiny_policies": [[]],
}


def _parsers(monkeypatch, capsys) -> list[tuple[str, argparse.ArgumentParser]]:
    """Every entry script's parser, as built for its --help (train_reinflow: one per model type)."""
    seen: list[argparse.ArgumentParser] = []
    real = argparse.ArgumentParser.parse_args

    def spy(self, args=None, namespace=None):
        seen.append(self)
        return real(self, args, namespace)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", spy)
    out = []
    for script, prefixes in SCRIPTS.items():
        mod = importlib.import_module(f"so101_sim.{script}")
        entry = getattr(mod, "parse_args", None) or mod.main
        for prefix in prefixes:
            seen.clear()
            with pytest.raises(SystemExit):
                entry(prefix + ["--help"])
            out.append((f"{script} {' '.join(prefix)}".strip(), seen[-1]))
    capsys.readouterr()
    return out


def _tracked() -> set[Path]:
    files = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    return {(REPO_ROOT / f).resolve() for f in files.splitlines()}


def test_every_default_output_is_under_outputs_and_no_tracked_file(monkeypatch, capsys):
    tracked, checked = _tracked(), []
    for name, parser in _parsers(monkeypatch, capsys):
        for action in parser._actions:
            if action.type is cli_args.output_path and action.default is not None:
                path = Path(action.default).resolve()
                checked.append((name, action.dest))
                assert path not in tracked, f"{name} --{action.dest} defaults to the tracked file {path}"
                assert path.is_relative_to(REPO_ROOT / "outputs"), f"{name} --{action.dest} defaults to {path}"
    assert {("train_flow_bc", "checkpoint"), ("analyze_predictions", "out")} <= set(checked)
    assert sum(1 for n, d in checked if n.startswith("train_reinflow") and d == "checkpoint") == 3
    # record_dataset computes its default after parsing: a git-ignored datasets/ folder
    from so101_sim import record_dataset

    ds = record_dataset.parse_args(["--input", "scripted"]).output_dir
    assert ds.is_relative_to(REPO_ROOT / "datasets") and ds.resolve() not in tracked
    for path in (ds, REPO_ROOT / "outputs" / "x.pt", SIM_DIR / "MUJOCO_LOG.TXT", REPO_ROOT / "MUJOCO_LOG.TXT"):
        assert subprocess.run(["git", "check-ignore", "--no-index", "-q", str(path)], cwd=REPO_ROOT).returncode == 0, path


def test_every_underscore_flag_has_a_dash_spelling(monkeypatch, capsys):
    aliases = 0
    for name, parser in _parsers(monkeypatch, capsys):
        for action in parser._actions:
            longs = [s for s in action.option_strings if s.startswith("--")]
            for s in longs:
                if "_" in s:
                    assert s.replace("_", "-") in longs, f"{name}: {s} has no dash spelling"
                    assert longs[0] == s.replace("_", "-"), f"{name}: the dash spelling of {s} must come first in --help"
                    aliases += 1
    assert aliases >= 2  # record_dataset's --output_dir and --num_episodes stay as aliases


# ----------------------------------------------------------------------------- inference defaults and errors
def test_inference_defaults_to_the_shipped_checkpoint_and_a_missing_one_is_one_message(monkeypatch, tmp_path, capsys):
    from so101_sim import run_reinflow_inference as ri

    assert Path(ri.parse_args(["--headless"]).checkpoint) == SHIPPED_RL
    monkeypatch.setitem(pr.SHIPPED_CHECKPOINTS, "reinflow", tmp_path / "gone.pt")  # as if it were not there
    for argv in ([], ["--checkpoint", str(tmp_path / "missing.pt")]):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            ri.main(argv + ["--headless"])
        err = capsys.readouterr().err
        errors = [ln for ln in err.splitlines() if "error:" in ln]
        assert e.value.code == 2 and "Traceback" not in err
        assert len(errors) == 1 and "argument --checkpoint: no such file" in errors[0], err


def test_inference_summary_records_paths_relative_to_the_repository(tmp_path):
    from so101_sim import run_reinflow_inference as ri

    summary = tmp_path / "s.json"
    assert ri.main(["--episodes", "1", "--max-steps", "4", "--headless", "--summary-json", str(summary)]) == 0
    assert json.loads(summary.read_text())["checkpoint"] == "simulation_code/checkpoints/flow_reinflow.pt"
    assert ru.repo_path(REPO_ROOT / "outputs" / "v" / "episode_000.mp4") == "outputs/v/episode_000.mp4"
    assert ru.repo_path(tmp_path / "a.mp4") == str((tmp_path / "a.mp4").resolve())  # outside: absolute
    assert ru.repo_path("lerobot/smolvla_base") == "lerobot/smolvla_base"  # a Hub id: unchanged
    assert ru.resolve_repo_path("outputs/v/episode_000.mp4") == REPO_ROOT / "outputs" / "v" / "episode_000.mp4"


# ----------------------------------------------------------------------------- videos and the report
def test_a_video_goes_on_about_a_second_after_success_but_the_episode_does_not(tmp_path):
    import imageio.v3 as iio
    from so101_sim import run_mujoco_simulation

    runs = {}
    for video in (True, False):
        summary = tmp_path / f"s{video}.json"
        argv = ["--model-type", "scripted", "--episodes", "1", "--seed", "0", "--headless", "--summary-json", str(summary)]
        assert run_mujoco_simulation.main(argv + (["--video-dir", str(tmp_path / "v")] if video else [])) == 0
        runs[video] = json.loads(summary.read_text())["per_episode"][0]
    ep = runs[True]
    assert ep["success"], "seed 0 of the scripted expert succeeds"
    frames = iio.imread(ru.resolve_repo_path(ep["video"]), plugin="pyav")
    assert ep["video_tail_frames"] == ru.VIDEO_TAIL_STEPS == round(u.CONTROL_HZ)
    assert len(frames) == ep["length"] + 1 + ru.VIDEO_TAIL_STEPS  # reset frame + one per step + the tail
    assert abs(frames[-1].astype(int) - frames[ep["length"]].astype(int)).mean() > 0  # the tail moves on
    for k in ("return", "length", "success"):  # the reported episode is the same with or without a video
        assert ep[k] == runs[False][k]
    assert runs[False]["video_tail_frames"] == 0


def test_report_embeds_a_small_animated_preview_of_each_episode(tmp_path):
    from PIL import Image

    from so101_sim import run_mujoco_simulation

    out = tmp_path / "report"
    assert run_mujoco_simulation.main(["--model-type", "scripted", "--episodes", "2", "--seed", "0", "--headless",
                                       "--max-steps", "28", "--report", str(out)]) == 0
    page = (out / "report.html").read_text()
    previews = re.findall(r'src="data:image/webp;base64,([^"]+)"', page)
    assert len(previews) == 2
    for b64 in previews:
        data = base64.b64decode(b64)
        assert len(data) < 60_000
        im = Image.open(io.BytesIO(data))
        assert im.format == "WEBP" and getattr(im, "is_animated", False) and im.n_frames > 5


# ----------------------------------------------------------------------------- quiet by default
def test_recording_prints_only_its_own_lines(tmp_path):
    """One scripted episode at 32 px: no SVT-AV1 encoder log, no datasets progress bar, no GL
    backend line (SVT-AV1 printed 57 'Svt[info]' + 13 'Svt[warn]' lines of 74 before)."""
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("SVT_LOG", "SO101_QUIET_GL")}
    r = subprocess.run([sys.executable, "record_dataset.py", "--input", "scripted", "--output-dir", str(tmp_path / "ds"),
                        "--num-episodes", "1", "--image-size", "32"], cwd=SIM_DIR, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = (r.stdout + r.stderr).splitlines()
    assert not [ln for ln in lines if "Svt[" in ln or "Map:" in ln or "MUJOCO_GL" in ln], lines
    assert len(lines) <= 4, lines
    assert sum(ln.startswith("[record] saved episode") for ln in lines) == 1


def test_display_check_comes_before_the_scene_is_built(monkeypatch, capsys):
    from so101_sim import mujoco_rendering
    from so101_sim import run_mujoco_simulation

    def no_scene(*a, **k):
        raise AssertionError("the scene was built before the display check")

    monkeypatch.setattr(mujoco_rendering, "has_display", lambda: False)
    monkeypatch.setattr(run_mujoco_simulation.gym, "make", no_scene)
    assert run_mujoco_simulation.main(["--model-type", "scripted", "--episodes", "1"]) == 2
    assert "--headless" in capsys.readouterr().err


# ----------------------------------------------------------------------------- attributions
def test_a_frame_or_camera_map_from_a_checkpoint_is_not_attributed_to_a_flag(monkeypatch):
    from so101_sim import lerobot_vla_adapter as lva
    from so101_sim import reinflow_vla as rv

    assert lva.resolve_frame("lerobot_degrees", {}, "x")[1] == "--frame"
    assert lva.resolve_frame("lerobot_degrees", {}, "x", source="recorded in Y")[1] == "recorded in Y"
    assert lva.resolve_camera_map(["observation.images.camera1"], "camera1=observation.images.camera1",
                                  source="recorded in Y")[1] == "recorded in Y"
    seen = {}

    class Stop(Exception):
        pass

    def fake_load(model_type, path, **kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(rv, "load_policy", fake_load)
    ckpt = ckio.Checkpoint(kind="reinflow", model_type="smolvla", policy_state={},
                           base_policy={"path": "p", "frame": "lerobot_degrees", "camera_map": {"camera1": "k"}})
    with pytest.raises(Stop):
        rv.load_for_inference(ckpt, argparse.Namespace(frame="auto", camera_map=None))
    assert seen["frame"] == "lerobot_degrees" and "recorded in the ReinFlow checkpoint" in seen["frame_source"]
    assert "recorded" in seen["camera_map_source"]
    with pytest.raises(Stop):
        rv.load_for_inference(ckpt, argparse.Namespace(frame="mujoco_radians", camera_map="camera1=k"))
    assert seen["frame_source"] is None and seen["camera_map_source"] is None  # the flags: "--frame", "--camera-map"


# ----------------------------------------------------------------------------- the evaluation video of training
def test_training_writes_an_evaluation_video_next_to_the_checkpoint_unless_no_render(tmp_path):
    import imageio.v3 as iio

    tiny = ["--model-type", "flow", "--init-checkpoint", str(SHIPPED_BC), "--rollout-steps", "8",
            "--max-episode-steps", "6", "--eval-every", "1", "--eval-episodes", "1", "--batch-size", "4", "--epochs", "1",
            "--critic-warmup-iters", "0", "--quiet", "--parallel-envs", "1", "--iterations", "1"]
    ck = tmp_path / "rl.pt"
    assert train_reinflow.main(tiny + ["--checkpoint", str(ck)]) == 0
    video = tmp_path / "rl_eval.mp4"
    frames = iio.imread(video, plugin="pyav")
    assert 2 <= len(frames) <= 1 + 6 + ru.VIDEO_TAIL_STEPS
    quiet = tmp_path / "q.pt"
    assert train_reinflow.main(tiny + ["--checkpoint", str(quiet), "--no-render"]) == 0
    assert quiet.exists() and not (tmp_path / "q_eval.mp4").exists()
