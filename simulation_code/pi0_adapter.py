"""Pi0 (lerobot 0.6.1 ``PI0Policy``) behind :class:`flow_matching_policy.FlowMatchingPolicy`.

    from so101_sim.pi0_adapter import PI0Adapter
    policy = PI0Adapter.load("lerobot/pi0", quantize=True)      # or a local directory
    action = policy.select_action(obs)                           # (6,) MuJoCo radians

Loading, cameras and task handling are shared with SmolVLA (lerobot_vla_adapter.py; frames and
camera maps in vla_frames.py, Hub files in hub_download.py).
Pi0-specific: the PaliGemma tokenizer (``google/paligemma-3b-pt-224``, gated on the Hub, or a
``tokenizer/`` folder inside the policy directory), the state token in the *suffix* (so
``denoise_step`` takes the state), ``num_inference_steps``, the expert module
``paligemma_with_expert.gemma_expert``, 4-bit weights (pi0_quantization.py) and the
``gradient_checkpointing`` config switch (``load(..., gradient_checkpointing=True)``) for training.

A directory built by make_tiny_policies.py carries :data:`TINY_PI0_MARKER`
(``tiny_pi0_architecture.json``); only then is lerobot_tiny_pi0_patch imported and the model built
inside its ``tiny_pi0_architecture`` (lerobot hard-codes Pi0's size). Real checkpoints never import
that patch: :meth:`PI0Adapter._build_policy` checks for the marker file itself.
"""

from __future__ import annotations

from pathlib import Path

import torch

from so101_sim import pi0_quantization
from so101_sim.hub_download import ensure_hub_files
from so101_sim.lerobot_vla_adapter import LeRobotVLAAdapter, VLAPrefix

#: Tokenizer id hard-coded in lerobot 0.6.1's processor_pi0.py (gated repo).
PALIGEMMA_TOKENIZER_ID = "google/paligemma-3b-pt-224"
TOKENIZER_PATTERNS = ["*.json", "*.model", "*.txt"]
#: File make_tiny_policies.py writes into a tiny Pi0 directory: its architecture, as JSON
#: (lerobot_tiny_pi0_patch.default_architecture). Defined here so that real checkpoints are told
#: apart without importing the patch.
TINY_PI0_MARKER = "tiny_pi0_architecture.json"


class PI0Adapter(LeRobotVLAAdapter):
    """Pi0 adapter; construct with :meth:`load` (see :meth:`LeRobotVLAAdapter.load`)."""

    model_type = "pi0"
    POLICY_CLASS_PATH = ("lerobot.policies.pi0.modeling_pi0", "PI0Policy")

    @staticmethod
    def _num_steps(cfg) -> int:
        return cfg.num_inference_steps

    @staticmethod
    def _set_num_steps(cfg, k: int) -> None:
        cfg.num_inference_steps = k

    @classmethod
    def _backbone_repos(cls, cfg):
        return [(PALIGEMMA_TOKENIZER_ID, "PaliGemma tokenizer, gated: accept its licence first", TOKENIZER_PATTERNS)]

    @classmethod
    def _prepare_config(cls, cfg, policy_dir: Path, all_repos) -> dict:
        local = policy_dir / "tokenizer"
        if local.is_dir():
            tok = str(local)
        else:
            tok = str(ensure_hub_files(PALIGEMMA_TOKENIZER_ID, cls.model_type, "PaliGemma tokenizer",
                                       TOKENIZER_PATTERNS, all_repos, required=("tokenizer_config.json",)))
        return {"tokenizer_processor": {"tokenizer_name": tok}}

    @classmethod
    def _build_policy(cls, policy_cls, policy_dir: Path, cfg):
        """``policy_cls.from_pretrained``; inside the tiny-Pi0 patch only when ``policy_dir`` has
        :data:`TINY_PI0_MARKER` (lerobot_tiny_pi0_patch is not even imported otherwise)."""
        if not (Path(policy_dir) / TINY_PI0_MARKER).is_file():
            return policy_cls.from_pretrained(str(policy_dir), config=cfg, strict=True)
        from so101_sim.lerobot_tiny_pi0_patch import read_architecture, tiny_pi0_architecture

        with tiny_pi0_architecture(read_architecture(policy_dir)):
            return policy_cls.from_pretrained(str(policy_dir), config=cfg, strict=True)

    @classmethod
    def _weight_transform(cls, device: torch.device, quantize: bool | None):
        want = pi0_quantization.default_quantize(device) if quantize is None else bool(quantize)
        if not want:
            return lambda policy: {"quantized": None, "quantization_note": "float weights (--quantize for 4-bit)"}
        return lambda policy: pi0_quantization.apply_quantization(policy, device, True)

    def _expert_module(self) -> torch.nn.Module:
        # the transformer only: the expert's lm_head is never used (no gradient, nothing to train)
        return self.model.paligemma_with_expert.gemma_expert.model

    def build_prefix(self, batch: dict) -> VLAPrefix:
        """Images + language through PaliGemma with the KV cache kept (what LeRobot's
        ``PI0Pytorch.sample_actions`` does before its Euler loop; the state goes into the suffix).
        Runs under the caller's grad mode."""
        from lerobot.policies.common.vla_utils import make_att_2d_masks, prepare_attention_masks_4d
        from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

        images, img_masks = self.policy._preprocess_images(batch)  # noqa: SLF001  (LeRobot names it private)
        state = self.policy.prepare_state(batch)
        embs, pad_masks, att_masks = self.model.embed_prefix(
            images, img_masks, batch[OBS_LANGUAGE_TOKENS], batch[OBS_LANGUAGE_ATTENTION_MASK])
        # sample_actions switches the language model to eager attention before the prefix pass.
        self.model.paligemma_with_expert.paligemma.model.language_model.config._attn_implementation = "eager"  # noqa: SLF001
        _, cache = self.model.paligemma_with_expert.forward(
            attention_mask=prepare_attention_masks_4d(make_att_2d_masks(pad_masks, att_masks)),
            position_ids=torch.cumsum(pad_masks, dim=1) - 1,
            past_key_values=None, inputs_embeds=[embs, None], use_cache=True)
        return VLAPrefix(pad_masks=pad_masks, past_key_values=cache, state=state)

    def _lerobot_denoise(self, prefix: VLAPrefix, x_t, t):
        # LeRobot's Pi0 denoise_step clones the cache itself: the prefix is reusable.
        return self.model.denoise_step(state=prefix.state, prefix_pad_masks=prefix.pad_masks,
                                       past_key_values=prefix.past_key_values, x_t=x_t, timestep=t)

    def _lerobot_sample(self, batch: dict, noise: torch.Tensor) -> torch.Tensor:
        from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

        images, img_masks = self.policy._preprocess_images(batch)  # noqa: SLF001
        state = self.policy.prepare_state(batch)
        return self.model.sample_actions(images, img_masks, batch[OBS_LANGUAGE_TOKENS],
                                         batch[OBS_LANGUAGE_ATTENTION_MASK], state, noise=noise)
