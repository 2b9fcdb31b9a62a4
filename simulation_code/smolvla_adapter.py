"""SmolVLA (lerobot 0.6.1 ``SmolVLAPolicy``) behind :class:`flow_matching_policy.FlowMatchingPolicy`.

    from so101_sim.smolvla_adapter import SmolVLAAdapter
    policy = SmolVLAAdapter.load("lerobot/smolvla_base")           # or a local directory
    policy.reset()
    action = policy.select_action(obs)                               # (6,) MuJoCo radians

Loading, cameras and task handling are shared with Pi0 (lerobot_vla_adapter.py; frames and camera
maps in vla_frames.py, Hub files in hub_download.py). What is SmolVLA-specific here: the VLM backbone files (``config.vlm_model_name``, default
``HuggingFaceTB/SmolVLM2-500M-Video-Instruct``; only its config/tokenizer/processor are needed,
the weights come from the policy checkpoint), the state token in the *prefix*, ``num_steps``, and
the expert module ``vlm_with_expert.lm_expert``. LeRobot internals used are listed in
smolvla_modifications/README.md.
"""

from __future__ import annotations

from pathlib import Path

import torch

from so101_sim.hub_download import ensure_hub_files
from so101_sim.lerobot_vla_adapter import LeRobotVLAAdapter, VLAPrefix

#: Default VLM backbone of SmolVLAConfig (lerobot 0.6.1).
SMOLVLM_ID = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"
#: Files of the backbone repo the policy needs (no weights: load_vlm_weights=False).
BACKBONE_PATTERNS = ["*.json", "*.txt", "*.jinja"]


class SmolVLAAdapter(LeRobotVLAAdapter):
    """SmolVLA adapter; construct with :meth:`load` (see :meth:`LeRobotVLAAdapter.load`)."""

    model_type = "smolvla"
    POLICY_CLASS_PATH = ("lerobot.policies.smolvla.modeling_smolvla", "SmolVLAPolicy")

    @staticmethod
    def _num_steps(cfg) -> int:
        return cfg.num_steps

    @staticmethod
    def _set_num_steps(cfg, k: int) -> None:
        cfg.num_steps = k

    @classmethod
    def _backbone_repos(cls, cfg):
        name = getattr(cfg, "vlm_model_name", None) or SMOLVLM_ID
        if Path(name).is_dir():
            return []
        return [(name, "VLM config, tokenizer and processor", BACKBONE_PATTERNS)]

    @classmethod
    def _prepare_config(cls, cfg, policy_dir: Path, all_repos) -> dict:
        # The policy's model.safetensors holds every weight, so the VLM is built from its config only.
        cfg.load_vlm_weights = False
        local = policy_dir / "vlm"
        if local.is_dir():
            cfg.vlm_model_name = str(local)
        elif not Path(cfg.vlm_model_name).is_dir():
            cfg.vlm_model_name = str(ensure_hub_files(cfg.vlm_model_name, cls.model_type,
                                                      "VLM config, tokenizer and processor",
                                                      BACKBONE_PATTERNS, all_repos, required=("config.json",)))
        return {"tokenizer_processor": {"tokenizer_name": cfg.vlm_model_name}}

    def _expert_module(self) -> torch.nn.Module:
        return self.model.vlm_with_expert.lm_expert

    def build_prefix(self, batch: dict) -> VLAPrefix:
        """Images + language + state token through the VLM, KV cache kept (what LeRobot's
        ``VLAFlowMatching.sample_actions`` does before its Euler loop). Runs under the caller's
        grad mode. Returns :class:`VLAPrefix` (pad mask (B, L), cache, padded state (B, 32))."""
        from lerobot.policies.common.vla_utils import make_att_2d_masks
        from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

        images, img_masks = self.policy.prepare_images(batch)
        state = self.policy.prepare_state(batch)
        embs, pad_masks, att_masks = self.model.embed_prefix(
            images, img_masks, batch[OBS_LANGUAGE_TOKENS], batch[OBS_LANGUAGE_ATTENTION_MASK], state=state)
        _, cache = self.model.vlm_with_expert.forward(
            attention_mask=make_att_2d_masks(pad_masks, att_masks),
            position_ids=torch.cumsum(pad_masks, dim=1) - 1,
            past_key_values=None, inputs_embeds=[embs, None], use_cache=self.policy.config.use_cache)
        return VLAPrefix(pad_masks=pad_masks, past_key_values=cache, state=state)

    def _lerobot_denoise(self, prefix: VLAPrefix, x_t, t):
        # LeRobot's denoise_step crops the cache back to the prefix: the prefix is reusable.
        return self.model.denoise_step(prefix_pad_masks=prefix.pad_masks, past_key_values=prefix.past_key_values,
                                       x_t=x_t, timestep=t)

    def _lerobot_sample(self, batch: dict, noise: torch.Tensor) -> torch.Tensor:
        from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

        images, img_masks = self.policy.prepare_images(batch)
        state = self.policy.prepare_state(batch)
        return self.model.sample_actions(images, img_masks, batch[OBS_LANGUAGE_TOKENS],
                                         batch[OBS_LANGUAGE_ATTENTION_MASK], state, noise=noise)
