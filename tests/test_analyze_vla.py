"""analyze_predictions.py end to end with the tiny SmolVLA and Pi0 on a recorded dataset."""

import json

import numpy as np
import pytest

from so101_sim import analyze_predictions
from so101_sim import record_dataset



@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyze") / "so101_small"
    rc = record_dataset.main(["--input", "scripted", "--output_dir", str(root), "--num_episodes", "2",
                              "--seed", "0", "--image-size", "48", "--max-steps", "8", "--keep-failed"])
    assert rc == 0
    return root


@pytest.mark.parametrize("model_type", ["smolvla", "pi0"])
def test_tiny_vla_predictions_on_recorded_frames(tiny_dirs, small_dataset, tmp_path, model_type, capsys):
    out = tmp_path / model_type
    rc = analyze_predictions.main(["--model-type", model_type, "--policy-path", str(tiny_dirs[model_type]),
                                   "--dataset", str(small_dataset), "--split-episodes", "1", "--out", str(out),
                                   "--device", "cpu"])
    assert rc == 0
    stats = json.loads((out / "statistics.json").read_text())
    data = np.load(out / "predictions.npz")
    n_train, n_val = len(data["train_gt"]), len(data["val_gt"])
    assert n_train > 0 and n_val > 0
    assert data["train_pred"].shape == (n_train, 6) and data["val_pred"].shape == (n_val, 6)
    assert stats["train_episodes"] == [0] and stats["val_episodes"] == [1]
    # predictions are joint targets in dataset units: within the joint ranges (degrees, gripper 0..100)
    assert np.all(np.abs(data["val_pred"][:, :5]) <= 170) and np.all((data["val_pred"][:, 5] >= -1) & (data["val_pred"][:, 5] <= 101))
    assert (out / "scatter_val.png").is_file()
    assert "mean |err|" in capsys.readouterr().out


def test_not_a_dataset_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # refused by the argument parser (cli_args.lerobot_dataset_dir)
        analyze_predictions.main(["--model-type", "flow", "--policy-path", "x.pt", "--dataset", str(tmp_path)])
    assert e.value.code == 2 and "is not a LeRobot dataset" in capsys.readouterr().err
