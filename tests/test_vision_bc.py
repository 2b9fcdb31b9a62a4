"""benchmarks/vision_bc.py's pieces that decide what is trained and shipped: the lerobot-train
flags, the SmolVLM sizing and the policy folder both evaluators run (issue 16 items 3-4). The
full record -> lerobot-train -> evaluate pipeline is exercised by tests/test_record_train.py and
tests/test_lerobot_plugin.py; the shipped checkpoints by tests/test_shipped_vision.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parent.parent


def _vision_bc():
    spec = importlib.util.spec_from_file_location("vision_bc", REPO / "benchmarks" / "vision_bc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_smolvla_image_size_must_be_patchable(capsys):
    vbc = _vision_bc()
    with pytest.raises(SystemExit) as e:
        vbc.parse_args(["--policy", "smolvla", "--image-size", "48"])
    assert e.value.code == 2
    assert "multiple of 32" in capsys.readouterr().err


def test_act_flags_set_both_learning_rates(tmp_path):
    vbc = _vision_bc()
    args = vbc.parse_args(["--policy", "act", "--lr", "3e-4", "--chunk-size", "16", "--n-action-steps", "4"])
    flags = vbc.policy_flags(args, tmp_path)
    assert "--policy.optimizer_lr=0.0003" in flags and "--policy.optimizer_lr_backbone=0.0003" in flags
    assert "--policy.chunk_size=16" in flags and "--policy.n_action_steps=4" in flags
    assert "--policy.pretrained_backbone_weights=null" in flags  # no download offline
    assert "--policy.type=act" in flags and not [f for f in flags if "backbone_stages" in f]  # stock ACT


def test_so101_act_flags_name_the_plugin_and_its_stages(tmp_path):
    vbc = _vision_bc()
    args = vbc.parse_args(["--policy", "so101_act", "--backbone-stages", "2", "--temporal-ensemble", "0.01"])
    flags = vbc.policy_flags(args, tmp_path)
    assert "--policy.type=so101_act" in flags and "--policy.backbone_stages=2" in flags
    assert "--policy.pretrained_backbone_weights=null" in flags and args.temporal_ensemble == 0.01


def test_smolvla_flags_build_the_sized_backbone_and_schedule(tmp_path):
    vbc = _vision_bc()
    args = vbc.parse_args(["--policy", "smolvla", "--steps", "400", "--lr", "2e-4", "--vlm-hidden", "96",
                           "--vlm-layers", "2", "--vision-hidden", "48", "--image-size", "64"])
    flags = vbc.policy_flags(args, tmp_path)
    assert "--policy.scheduler_warmup_steps=20" in flags and "--policy.scheduler_decay_steps=400" in flags
    assert "--policy.scheduler_decay_lr=2e-05" in flags and "--policy.num_vlm_layers=2" in flags
    cfg = json.loads((tmp_path / "vlm" / "config.json").read_text())
    assert cfg["text_config"]["hidden_size"] == 96 and cfg["text_config"]["num_hidden_layers"] == 2
    assert cfg["vision_config"]["hidden_size"] == 48 and cfg["vision_config"]["image_size"] == 64


def _fake_checkpoint(root: Path) -> Path:
    ckpt = root / "ckpt"
    ckpt.mkdir(parents=True)
    save_file({"w": torch.linspace(-1, 1, 1000).reshape(10, 100) / 3.0, "steps": torch.arange(5)},
              ckpt / "model.safetensors")
    (ckpt / "config.json").write_text(json.dumps({"type": "smolvla", "vlm_model_name": "/abs/elsewhere/vlm"}))
    (ckpt / "train_config.json").write_text("{}")
    return ckpt


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_package_writes_what_the_runner_reads(tmp_path, dtype):
    vbc = _vision_bc()
    ckpt = _fake_checkpoint(tmp_path)
    args = vbc.parse_args(["--policy", "smolvla", "--out", str(tmp_path), "--weights-dtype", dtype,
                           "--cameras", "camera1=camera_up,camera2=wrist_camera"])
    args.out = tmp_path
    (tmp_path / "vlm").mkdir()
    (tmp_path / "vlm" / "config.json").write_text("{}")
    dest = tmp_path / "policy"
    vbc.package(ckpt, dest, args)
    original, packed = load_file(ckpt / "model.safetensors"), load_file(dest / "model.safetensors")
    assert packed["w"].dtype == getattr(torch, dtype)
    assert torch.equal(packed["w"].float(), original["w"].to(getattr(torch, dtype)).float())
    assert packed["steps"].dtype == torch.int64 and torch.equal(packed["steps"], original["steps"])
    assert not (dest / "train_config.json").exists()  # holds absolute paths of this machine
    assert json.loads((dest / "config.json").read_text())["vlm_model_name"] == "vlm"
    assert (dest / "vlm" / "config.json").is_file()
    meta = json.loads((dest / "so101_policy_meta.json").read_text())
    assert meta["frame"] == "lerobot_degrees" and meta["weights_dtype"] == dtype
    assert sorted(meta["camera_map"].values()) == ["observation.images.camera1", "observation.images.camera2"]
    assert meta["cameras"] == {"camera1": "camera_up", "camera2": "wrist_camera"}
    assert meta["source_checkpoint"] == str(ckpt)


def test_policy_folder_is_repackaged_only_when_stale(tmp_path):
    """A reused --out re-packages when the checkpoint (e.g. after a DAgger round) or the dtype
    changed, and not otherwise."""
    vbc = _vision_bc()
    first = _fake_checkpoint(tmp_path / "a")
    second = _fake_checkpoint(tmp_path / "b")
    save_file({"w": torch.ones(10, 100), "steps": torch.arange(5)}, second / "model.safetensors")
    args = vbc.parse_args(["--policy", "act", "--out", str(tmp_path)])
    dest = tmp_path / "policy"
    assert vbc.package_if_stale(first, dest, args) and not vbc.package_if_stale(first, dest, args)
    assert vbc.package_if_stale(second, dest, args)
    assert torch.equal(load_file(dest / "model.safetensors")["w"], torch.ones(10, 100))
    args.weights_dtype = "bfloat16"
    assert vbc.package_if_stale(second, dest, args) and load_file(dest / "model.safetensors")["w"].dtype == torch.bfloat16


def test_dagger_round_records_student_rollouts_then_fine_tunes_it(tmp_path, monkeypatch):
    """A DAgger round: the student's rollouts are appended to the data (record_dataset --resume
    --student), then lerobot-train fine-tunes that student (--policy.path) with the schedule scaled
    to --dagger-steps; a finished half is not run again; the round returns the new checkpoint."""
    vbc = _vision_bc()
    args = vbc.parse_args(["--policy", "smolvla", "--out", str(tmp_path), "--dagger-rounds", "1",
                           "--dagger-episodes", "7", "--dagger-steps", "300", "--lr", "1e-4", "--dagger-lr", "5e-5",
                           "--image-size", "64"])
    args.out = tmp_path
    calls = []

    def fake_run(cmd, log):
        calls.append(cmd)
        if any(c.endswith("lerobot-train") for c in cmd):
            out = Path(next(c.split("=", 1)[1] for c in cmd if c.startswith("--output_dir=")))
            (out / "checkpoints" / "000300" / "pretrained_model").mkdir(parents=True)
        return 1.0

    monkeypatch.setattr(vbc, "run", fake_run)
    student, data, times = _fake_checkpoint(tmp_path / "bc"), tmp_path / "data", {}
    (tmp_path / "vlm").mkdir()
    (tmp_path / "vlm" / "config.json").write_text("{}")
    new = vbc.dagger_round(args, 1, student, data, times)
    assert new == tmp_path / "dagger1" / "train" / "checkpoints" / "000300" / "pretrained_model" and new.is_dir()
    record, train = calls
    assert record[1].endswith("record_dataset.py") and "--resume" in record
    deployed = Path(record[record.index("--student") + 1])  # rolls out as evaluated: the packaged folder
    assert deployed == tmp_path / "dagger1" / "student" and (deployed / "so101_policy_meta.json").is_file()
    assert record[record.index("--output-dir") + 1] == str(data)
    assert record[record.index("--num-episodes") + 1] == "7"
    assert f"--policy.path={student}" in train and "--steps=300" in train and f"--dataset.root={data}" in train
    assert "--policy.scheduler_decay_steps=300" in train and "--policy.scheduler_warmup_steps=15" in train
    assert "--policy.optimizer_lr=5e-05" in train and "--policy.scheduler_decay_lr=5e-06" in train
    assert not any(c.startswith("--policy.type") for c in train)  # the student's own config, fine-tuned
    assert set(times) == {"dagger1_record_s", "dagger1_train_s"}
    assert vbc.dagger_round(args, 1, student, data, {}) == new and len(calls) == 2  # both halves done: nothing re-run


def test_temporal_ensemble_is_for_act_only(capsys):
    vbc = _vision_bc()
    with pytest.raises(SystemExit) as e:
        vbc.parse_args(["--policy", "smolvla", "--temporal-ensemble", "0.01"])
    assert e.value.code == 2 and "--policy act" in capsys.readouterr().err


def test_temporal_ensemble_is_packaged_into_a_config_lerobot_deploys(tmp_path):
    """--temporal-ensemble edits only the packaged config (n_action_steps 1 + the coefficient, as
    ACTConfig requires); LeRobot's loader then builds ACT with its temporal ensembler, and changing
    the coefficient re-packages a reused --out."""
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy

    feats = {"observation.state": PolicyFeature(FeatureType.STATE, (6,)),
             "observation.images.camera1": PolicyFeature(FeatureType.VISUAL, (3, 32, 32))}
    cfg = ACTConfig(input_features=feats, output_features={"action": PolicyFeature(FeatureType.ACTION, (6,))},
                    chunk_size=8, n_action_steps=4, dim_model=32, dim_feedforward=64, n_encoder_layers=1,
                    n_decoder_layers=1, n_vae_encoder_layers=1, pretrained_backbone_weights=None, device="cpu")
    ckpt = tmp_path / "ckpt"
    ACTPolicy(cfg).save_pretrained(ckpt)
    vbc = _vision_bc()
    args = vbc.parse_args(["--policy", "act", "--out", str(tmp_path), "--cameras", "camera1=camera_up",
                           "--temporal-ensemble", "0.01"])
    dest = tmp_path / "policy"
    assert vbc.package_if_stale(ckpt, dest, args) and not vbc.package_if_stale(ckpt, dest, args)
    loaded = PreTrainedConfig.from_pretrained(dest)
    assert (loaded.temporal_ensemble_coeff, loaded.n_action_steps, loaded.chunk_size) == (0.01, 1, 8)
    policy = ACTPolicy.from_pretrained(dest, config=loaded)
    assert policy.temporal_ensembler.chunk_size == 8
    assert json.loads((dest / "so101_policy_meta.json").read_text())["temporal_ensemble_coeff"] == 0.01
    assert PreTrainedConfig.from_pretrained(ckpt).temporal_ensemble_coeff is None  # the checkpoint is untouched
    args.temporal_ensemble = None
    assert vbc.package_if_stale(ckpt, dest, args)
    assert PreTrainedConfig.from_pretrained(dest).n_action_steps == 4


def test_checkpoint_must_be_a_policy_folder_and_excludes_dagger(tmp_path, capsys):
    vbc = _vision_bc()
    for extra in ([], ["--dagger-rounds", "1"]):
        ckpt = tmp_path / ("empty" if not extra else "ok")
        ckpt.mkdir()
        if extra:
            (ckpt / "config.json").write_text("{}")
        with pytest.raises(SystemExit) as e:
            vbc.parse_args(["--checkpoint", str(ckpt), *extra])
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "no config.json" in err and "drop --dagger-rounds" in err
