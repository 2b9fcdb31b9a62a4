"""LeRobot policy plugin ``--policy.type=so101_act``: LeRobot's ACT with a truncated ResNet backbone.

Stock ACT (``lerobot/policies/act``) always reads ResNet's ``layer4``: ResNet18 alone is 11.2 M
parameters, 22 MB in bfloat16, over the 20 MB a shipped checkpoint may take (issue 16). This
policy is ACT unchanged except that the image backbone stops after ``backbone_stages`` residual
stages (``layer1`` .. ``layer4``; 4 is stock ACT): ResNet18 through ``layer2`` (the default, the
shipped checkpoints/vision_bc) is 0.68 M parameters and gives an 8x-downsampled feature map (8x8
tokens per 64x64 camera, where ``layer4`` gives 2x2), projected to ``dim_model`` by ACT's 1x1
convolution as before. Training, the
variational objective, chunking and temporal ensembling are ACT's own code.

LeRobot 0.6.1 finds third-party policies by naming convention
(``lerobot/policies/factory.py::_get_policy_cls_from_policy_name`` and
``_make_processors_from_policy_config``): the config class ``<Name>Config`` registered with
``PreTrainedConfig.register_subclass``, the policy class ``<Name>Policy`` and the function
``make_<type>_pre_post_processors`` in the config's module with ``configuration_`` replaced by
``modeling_`` / ``processor_``. This module's name has no ``configuration_`` in it, so all three
live here. It is imported (and the type registered) by the env plugin module
``lerobot_env_so101_sim``, which ``lerobot-train`` and ``lerobot-eval`` import at start, and by
:mod:`so101_sim.lerobot_policy` before it reads a checkpoint's config.

    lerobot-train --policy.type=so101_act --policy.backbone_stages=2 --policy.pretrained_backbone_weights=null ...
"""

from __future__ import annotations

from dataclasses import dataclass

from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.act.configuration_act import ACTConfig
from lerobot.policies.act.modeling_act import ACTPolicy
from lerobot.policies.act.processor_act import make_act_pre_post_processors

POLICY_TYPE = "so101_act"
RESNET_STAGES = 4  # torchvision ResNets: layer1 .. layer4


@PreTrainedConfig.register_subclass(POLICY_TYPE)
@dataclass
class SO101ACTConfig(ACTConfig):
    """:class:`ACTConfig` plus ``backbone_stages``: the residual stages of ``vision_backbone`` kept
    (1-4; ResNet18 keeps 0.16 / 0.68 / 2.78 / 11.17 M parameters, 64 / 128 / 256 / 512 feature
    channels, downsampling 4 / 8 / 16 / 32). ``replace_final_stride_with_dilation`` acts on
    ``layer4`` only, so it needs ``backbone_stages`` 4.

    Raises:
        ValueError: ``backbone_stages`` outside 1-4, or dilation asked for without ``layer4``.
    """

    backbone_stages: int = 2  # benchmarks/vision_bc.py: 89% held-out at 2, 64% at 3 (docs/experiments)

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.backbone_stages <= RESNET_STAGES:
            raise ValueError(f"backbone_stages must be 1-{RESNET_STAGES} (ResNet layer1..layer4), "
                             f"got {self.backbone_stages}")
        if self.replace_final_stride_with_dilation and self.backbone_stages < RESNET_STAGES:
            raise ValueError("replace_final_stride_with_dilation dilates layer4, which backbone_stages "
                             f"{self.backbone_stages} drops: set backbone_stages=4 or leave dilation off")


class SO101ACTPolicy(ACTPolicy):
    """:class:`ACTPolicy` whose ``model.backbone`` returns ``layer{backbone_stages}``'s feature map
    ((B, C, H/2^(k+1), W/2^(k+1)) float32 for (B, 3, H, W) normalized images) and whose
    ``model.encoder_img_feat_input_proj`` maps its C channels to ``dim_model``. The dropped stages
    are not parameters, so they are neither trained nor saved."""

    config_class = SO101ACTConfig
    name = POLICY_TYPE

    def __init__(self, config: SO101ACTConfig, **kwargs):
        super().__init__(config, **kwargs)
        if config.image_features and config.backbone_stages < RESNET_STAGES:
            import torch
            from torch import nn
            from torchvision.models._utils import IntermediateLayerGetter

            # IntermediateLayerGetter keeps the children up to the returned one (conv1 .. layerK).
            backbone = IntermediateLayerGetter(self.model.backbone,
                                               return_layers={f"layer{config.backbone_stages}": "feature_map"})
            with torch.no_grad():
                channels = backbone(torch.zeros(1, 3, 32, 32))["feature_map"].shape[1]
            self.model.backbone = backbone
            self.model.encoder_img_feat_input_proj = nn.Conv2d(channels, config.dim_model, kernel_size=1)


def make_so101_act_pre_post_processors(config: SO101ACTConfig, dataset_stats=None):
    """ACT's processors (normalize, batch, device; unnormalize the action): the same inputs and outputs."""
    return make_act_pre_post_processors(config, dataset_stats=dataset_stats)
