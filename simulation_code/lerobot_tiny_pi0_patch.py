"""THE one place where this repo patches LeRobot: shrink lerobot 0.6.1's Pi0 to a tiny test model.

Why: ``lerobot.policies.pi0`` hard-codes Pi0's size, so a tiny random-weight Pi0 (for offline tests
and CPU benchmarks) cannot be expressed through ``PI0Config`` alone:

* ``modeling_pi0.get_gemma_config(variant)`` only knows ``gemma_300m`` / ``gemma_2b`` (and
  ``PI0Config.__post_init__`` rejects other variant names);
* ``PaliGemmaWithExpertModel.__init__`` builds ``CONFIG_MAPPING["paligemma"]()`` (SigLIP-So400m vision
  tower) and sets the vocabulary to 257152;
* ``compute_layer_complete`` reshapes attention outputs with ``1 * 8 * head_dim``: 8 heads are
  required (so :data:`TINY_GEMMA` keeps ``num_heads=8``);
* ``processor_pi0.make_pi0_pre_post_processors`` hard-codes the tokenizer id
  ``google/paligemma-3b-pt-224``.

:func:`tiny_pi0_architecture` patches those module-level names *inside a ``with`` block only* and
restores them on exit, so a real Pi0 built later in the same process is untouched. Users:

* ``make_tiny_policies.py`` (builds and saves the tiny Pi0);
* ``pi0_adapter.py``, only when a checkpoint directory carries ``pi0_adapter.TINY_PI0_MARKER``
  (written by the builder); for real checkpoints this module is not even imported;
* the tests (``tests/test_vla_*.py``).

Checked against lerobot==0.6.1 / transformers==5.5.4; ``smolvla_modifications/check_lerobot_internals.py``
fails loudly when the patched names disappear.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from so101_sim.pi0_adapter import TINY_PI0_MARKER

#: Gemma sizes used for both the PaliGemma language model and the action expert (``GemmaConfig``
#: fields of lerobot's modeling_pi0). ``num_heads`` must stay 8 (hard-coded reshape, see above).
TINY_GEMMA = {"width": 64, "depth": 2, "mlp_dim": 128, "num_heads": 8, "num_kv_heads": 1, "head_dim": 8}
#: SigLIP vision tower sizes (``SiglipVisionConfig`` fields); the projector maps to ``width``.
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
               "patch_size": 16}


def default_architecture(vocab_size: int) -> dict:
    """The architecture dict stored in ``pi0_adapter.TINY_PI0_MARKER``: ``gemma``, ``vision``, ``vocab_size``."""
    return {"gemma": dict(TINY_GEMMA), "vision": dict(TINY_VISION), "vocab_size": int(vocab_size)}


def read_architecture(policy_dir: str | Path) -> dict | None:
    """The tiny architecture recorded in ``policy_dir/tiny_pi0_architecture.json`` (None for a real
    checkpoint, which has no such file)."""
    path = Path(policy_dir) / TINY_PI0_MARKER
    if not path.is_file():
        return None
    return json.loads(path.read_text())


@contextlib.contextmanager
def tiny_pi0_architecture(arch: dict, tokenizer_dir: str | Path | None = None):
    """Within the block, ``PI0Policy(config)`` builds the tiny Pi0 described by ``arch``.

    Args:
        arch: :func:`default_architecture`-style dict (``gemma``, ``vision``, ``vocab_size``).
        tokenizer_dir: a local tokenizer folder; when given, ``make_pi0_pre_post_processors`` uses it
            instead of the hard-coded ``google/paligemma-3b-pt-224`` (needed offline).

    Restores every patched name on exit, also on errors.
    """
    import lerobot.policies.pi0.modeling_pi0 as m_pi0
    import lerobot.policies.pi0.processor_pi0 as p_pi0

    gemma, vision, vocab = dict(arch["gemma"]), dict(arch["vision"]), int(arch["vocab_size"])
    if gemma.get("num_heads") != 8:
        raise ValueError("lerobot 0.6.1's Pi0 reshapes attention with 8 heads: tiny num_heads must be 8")
    saved = {
        "get_gemma_config": m_pi0.get_gemma_config,
        "PaliGemmaForConditionalGenerationWithPiGemma": m_pi0.PaliGemmaForConditionalGenerationWithPiGemma,
        "PiGemmaForCausalLM": m_pi0.PiGemmaForCausalLM,
    }
    saved_tok = p_pi0.TokenizerProcessorStep
    orig_pali, orig_expert = saved["PaliGemmaForConditionalGenerationWithPiGemma"], saved["PiGemmaForCausalLM"]

    def tiny_gemma_config(variant):  # noqa: ARG001  (both variants become the tiny one)
        return m_pi0.GemmaConfig(**gemma)

    def tiny_paligemma(config):
        for key, value in vision.items():
            setattr(config.vision_config, key, value)
        config.vision_config.projection_dim = gemma["width"]  # projector output = LM width
        config.text_config.vocab_size = vocab
        config._vocab_size = vocab  # noqa: SLF001  (what lerobot sets for the real size)
        config.image_token_index = vocab - 1
        return orig_pali(config=config)

    def tiny_expert(config):
        config.vocab_size = vocab  # the expert's lm_head is never used; keep it small
        return orig_expert(config=config)

    def local_tokenizer_step(**kwargs):
        return saved_tok(**{**kwargs, "tokenizer_name": str(tokenizer_dir)})

    m_pi0.get_gemma_config = tiny_gemma_config
    m_pi0.PaliGemmaForConditionalGenerationWithPiGemma = tiny_paligemma
    m_pi0.PiGemmaForCausalLM = tiny_expert
    if tokenizer_dir is not None:
        p_pi0.TokenizerProcessorStep = local_tokenizer_step
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(m_pi0, name, value)
        p_pi0.TokenizerProcessorStep = saved_tok
