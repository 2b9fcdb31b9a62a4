"""The so101_act policy plugin (simulation_code/so101_act_policy.py): LeRobot's ACT with its ResNet
backbone cut after ``backbone_stages`` stages, found by LeRobot's factory by name, saved and loaded
by LeRobot's own code. lerobot-train and our runner on it: tests/test_lerobot_plugin.py."""

from __future__ import annotations

import json

import pytest
import torch
from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.act.configuration_act import ACTConfig
from lerobot.policies.act.modeling_act import ACTPolicy
from lerobot.policies.factory import get_policy_class, make_pre_post_processors

from so101_sim.so101_act_policy import POLICY_TYPE, SO101ACTConfig, SO101ACTPolicy

IMAGE = 64
INPUTS = {"observation.state": PolicyFeature(FeatureType.STATE, (6,)),
          "observation.images.camera1": PolicyFeature(FeatureType.VISUAL, (3, IMAGE, IMAGE)),
          "observation.images.camera2": PolicyFeature(FeatureType.VISUAL, (3, IMAGE, IMAGE))}
OUTPUTS = {"action": PolicyFeature(FeatureType.ACTION, (6,))}
SMALL = dict(dim_model=32, n_heads=2, dim_feedforward=64, n_encoder_layers=1, n_decoder_layers=1,
             n_vae_encoder_layers=1, latent_dim=8, chunk_size=5, n_action_steps=5,
             pretrained_backbone_weights=None, device="cpu")


def _batch(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"observation.state": torch.randn(n, 6, generator=g),
            **{k: torch.rand(n, 3, IMAGE, IMAGE, generator=g) for k in INPUTS if "images" in k}}


@pytest.mark.parametrize("bad", [dict(backbone_stages=0), dict(backbone_stages=5),
                                 dict(backbone_stages=3, replace_final_stride_with_dilation=True)])
def test_config_refuses_what_it_cannot_build(bad):
    with pytest.raises(ValueError, match="backbone_stages"):
        SO101ACTConfig(input_features=INPUTS, output_features=OUTPUTS, **{**SMALL, **bad})


def test_lerobot_factory_finds_the_plugin_by_name():
    assert get_policy_class(POLICY_TYPE) is SO101ACTPolicy
    assert PreTrainedConfig.get_choice_class(POLICY_TYPE) is SO101ACTConfig
    pre, post = make_pre_post_processors(SO101ACTConfig(input_features=INPUTS, output_features=OUTPUTS, **SMALL))
    assert len(pre.steps) and len(post.steps)


@pytest.mark.parametrize("stages, channels, side", [(1, 64, IMAGE // 4), (2, 128, IMAGE // 8), (3, 256, IMAGE // 16)])
def test_backbone_stops_at_the_stage_and_drops_the_rest(stages, channels, side):
    torch.manual_seed(0)
    stock = ACTPolicy(ACTConfig(input_features=INPUTS, output_features=OUTPUTS, **SMALL))
    ours = SO101ACTPolicy(SO101ACTConfig(input_features=INPUTS, output_features=OUTPUTS, backbone_stages=stages, **SMALL))
    fmap = ours.model.backbone(torch.zeros(1, 3, IMAGE, IMAGE))["feature_map"]
    assert fmap.shape == (1, channels, side, side)
    names = set(ours.state_dict())
    dropped = [f"layer{k}" for k in range(stages + 1, 5)]
    assert not [n for n in names if any(f".{d}." in n for d in dropped)]
    # parameters: stock ACT's minus the dropped stages, with a 1x1 projection from `channels`, not 512
    n_stock = sum(p.numel() for p in stock.parameters())
    n_dropped = sum(p.numel() for n, p in stock.named_parameters() if any(f".{d}." in n for d in dropped))
    proj_change = (512 - channels) * SMALL["dim_model"]
    assert sum(p.numel() for p in ours.parameters()) == n_stock - n_dropped - proj_change
    # and it trains: ACT's loss over a batch back-propagates into the kept backbone
    batch = {**_batch(), "action": torch.randn(2, 5, 6), "action_is_pad": torch.zeros(2, 5, dtype=torch.bool)}
    loss, _ = ours.forward(batch)
    loss.backward()
    assert ours.model.backbone[f"layer{stages}"][0].conv1.weight.grad.abs().sum() > 0


def test_save_and_load_with_lerobot_gives_the_same_actions(tmp_path):
    torch.manual_seed(1)
    policy = SO101ACTPolicy(SO101ACTConfig(input_features=INPUTS, output_features=OUTPUTS, backbone_stages=2, **SMALL))
    policy.eval()
    policy.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["type"] == POLICY_TYPE and cfg["backbone_stages"] == 2
    loaded_cfg = PreTrainedConfig.from_pretrained(tmp_path)
    loaded = get_policy_class(loaded_cfg.type).from_pretrained(tmp_path, config=loaded_cfg)
    loaded.eval()
    batch = _batch(seed=3)
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict_action_chunk(batch), policy.predict_action_chunk(batch))
