"""Fail loudly when the installed LeRobot no longer has the internals this repo's adapters use.

    python smolvla_modifications/check_lerobot_internals.py      # prints one line per check, exit 1 on failure

tests/test_vla_lerobot_internals.py runs :func:`check` too. Checked against lerobot==0.6.1 with
transformers==5.5.4 (:data:`CHECKED_VERSION`). What each item is used for: README.md beside this file.
Behaviour (our Euler loop through ``denoise_step`` == LeRobot's ``sample_actions``) is checked by
tests/test_vla_adapters.py on the tiny models.
"""

from __future__ import annotations

import importlib
import inspect
import sys

CHECKED_VERSION = "0.6.1"

#: (module, attribute path, required parameter names in order or None for "exists").
SIGNATURES: list[tuple[str, str, tuple[str, ...] | None]] = [
    # SmolVLA
    ("lerobot.policies.smolvla.modeling_smolvla", "SmolVLAPolicy.prepare_images", ("self", "batch")),
    ("lerobot.policies.smolvla.modeling_smolvla", "SmolVLAPolicy.prepare_state", ("self", "batch")),
    ("lerobot.policies.smolvla.modeling_smolvla", "VLAFlowMatching.embed_prefix",
     ("self", "images", "img_masks", "lang_tokens", "lang_masks", "state")),
    ("lerobot.policies.smolvla.modeling_smolvla", "VLAFlowMatching.denoise_step",
     ("self", "prefix_pad_masks", "past_key_values", "x_t", "timestep")),
    ("lerobot.policies.smolvla.modeling_smolvla", "VLAFlowMatching.sample_actions",
     ("self", "images", "img_masks", "lang_tokens", "lang_masks", "state", "noise")),
    ("lerobot.policies.smolvla.smolvlm_with_expert", "SmolVLMWithExpertModel.forward",
     ("self", "attention_mask", "position_ids", "past_key_values", "inputs_embeds", "use_cache")),
    # Pi0
    ("lerobot.policies.pi0.modeling_pi0", "PI0Policy._preprocess_images", ("self", "batch")),
    ("lerobot.policies.pi0.modeling_pi0", "PI0Policy.prepare_state", ("self", "batch")),
    ("lerobot.policies.pi0.modeling_pi0", "PI0Pytorch.embed_prefix",
     ("self", "images", "img_masks", "lang_tokens", "lang_masks")),
    ("lerobot.policies.pi0.modeling_pi0", "PI0Pytorch.denoise_step",
     ("self", "state", "prefix_pad_masks", "past_key_values", "x_t", "timestep")),
    ("lerobot.policies.pi0.modeling_pi0", "PI0Pytorch.sample_actions",
     ("self", "images", "img_masks", "lang_tokens", "lang_masks", "state", "noise")),
    ("lerobot.policies.pi0.modeling_pi0", "PaliGemmaWithExpertModel.forward",
     ("self", "attention_mask", "position_ids", "past_key_values", "inputs_embeds", "use_cache")),
    ("lerobot.policies.pi0.modeling_pi0", "PaliGemmaWithExpertModel.to_bfloat16_for_selected_params",
     ("self", "precision")),
    # names patched by simulation_code/lerobot_tiny_pi0_patch.py (tiny test models only)
    ("lerobot.policies.pi0.modeling_pi0", "get_gemma_config", ("variant",)),
    ("lerobot.policies.pi0.modeling_pi0", "GemmaConfig",
     ("width", "depth", "mlp_dim", "num_heads", "num_kv_heads", "head_dim")),
    ("lerobot.policies.pi0.modeling_pi0", "PaliGemmaForConditionalGenerationWithPiGemma", None),
    ("lerobot.policies.pi0.modeling_pi0", "PiGemmaForCausalLM", None),
    ("lerobot.policies.pi0.processor_pi0", "TokenizerProcessorStep", None),
    # shared helpers
    ("lerobot.policies.common.vla_utils", "make_att_2d_masks", None),
    ("lerobot.policies.common.vla_utils", "prepare_attention_masks_4d", None),
    ("lerobot.policies.factory", "make_pre_post_processors", ("policy_cfg", "pretrained_path")),
    ("lerobot.configs.policies", "PreTrainedConfig.from_pretrained", None),
    ("lerobot.utils.constants", "OBS_LANGUAGE_TOKENS", None),
    ("lerobot.utils.constants", "OBS_LANGUAGE_ATTENTION_MASK", None),
]

#: Config fields the adapters read or set: (module, class, fields).
CONFIG_FIELDS = [
    ("lerobot.policies.smolvla.configuration_smolvla", "SmolVLAConfig",
     ("vlm_model_name", "load_vlm_weights", "num_steps", "chunk_size", "n_action_steps", "max_action_dim",
      "use_cache", "resize_imgs_with_padding")),
    ("lerobot.policies.pi0.configuration_pi0", "PI0Config",
     ("num_inference_steps", "chunk_size", "n_action_steps", "max_action_dim", "gradient_checkpointing",
      "paligemma_variant", "action_expert_variant", "image_resolution", "dtype")),
]

#: Processor step registry names overridden at load time.
REGISTRY_NAMES = ("normalizer_processor", "unnormalizer_processor", "tokenizer_processor", "device_processor")

#: Source fragments whose disappearance changes an assumption (module, fragment, why).
SOURCE_FRAGMENTS = [
    ("lerobot.policies.pi0.modeling_pi0", "1 * 8 * head_dim",
     "tiny Pi0 keeps 8 attention heads because of this reshape"),
    ("lerobot.policies.pi0.modeling_pi0", '"google/paligemma-3b-pt-224"',
     "not found here: fine, the tokenizer id moved (pi0_adapter overrides tokenizer_name anyway)"),
    ("lerobot.policies.pi0.processor_pi0", '"google/paligemma-3b-pt-224"',
     "pi0_adapter / the tiny builder replace this hard-coded tokenizer id"),
    ("lerobot.policies.smolvla.modeling_smolvla", "past_key_values.crop(prefix_len)",
     "SmolVLA's denoise_step restores the prefix cache, so one prefix serves every denoising step"),
    ("lerobot.policies.pi0.modeling_pi0", "clone_past_key_values(past_key_values)",
     "Pi0's denoise_step clones the prefix cache, so one prefix serves every denoising step"),
    ("lerobot.policies.pi0.modeling_pi0", '_attn_implementation = "eager"',
     "pi0_adapter.build_prefix mirrors sample_actions' switch to eager attention"),
    ("lerobot.policies.common.flow_matching", "dt = -1.0 / num_steps",
     "Euler convention t: 1 -> 0, x <- x + dt * v, shared with reinflow_engine.py"),
]
#: Fragments that are informational only (absence is not a failure).
OPTIONAL_FRAGMENTS = {('lerobot.policies.pi0.modeling_pi0', '"google/paligemma-3b-pt-224"')}


def _resolve(module: str, path: str):
    obj = importlib.import_module(module)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def check() -> list[str]:
    """Run every check; returns the list of problems (empty = the adapters' assumptions hold)."""
    problems: list[str] = []
    for module, path, params in SIGNATURES:
        try:
            obj = _resolve(module, path)
        except (ImportError, AttributeError) as e:
            problems.append(f"{module}.{path} is gone ({e.__class__.__name__}: {e})")
            continue
        if params is None:
            continue
        try:
            names = tuple(inspect.signature(obj).parameters)
        except (TypeError, ValueError):
            continue
        if names[: len(params)] != params:
            problems.append(f"{module}.{path} signature changed: expected ({', '.join(params)}, ...), "
                            f"found ({', '.join(names)})")
    for module, cls, fields in CONFIG_FIELDS:
        try:
            klass = _resolve(module, cls)
        except (ImportError, AttributeError) as e:
            problems.append(f"{module}.{cls} is gone ({e})")
            continue
        have = set(getattr(klass, "__dataclass_fields__", {}))
        missing = [f for f in fields if f not in have]
        if missing:
            problems.append(f"{cls} lost the config fields {', '.join(missing)}")
    try:
        from lerobot.processor import ProcessorStepRegistry

        known = set(ProcessorStepRegistry.list())
        missing = [n for n in REGISTRY_NAMES if n not in known]
        if missing:
            problems.append(f"processor steps no longer registered: {', '.join(missing)}")
    except (ImportError, AttributeError) as e:
        problems.append(f"lerobot.processor.ProcessorStepRegistry unavailable ({e})")
    for module, fragment, why in SOURCE_FRAGMENTS:
        try:
            src = inspect.getsource(importlib.import_module(module))
        except (ImportError, OSError) as e:
            problems.append(f"cannot read {module} ({e})")
            continue
        if fragment not in src and (module, fragment) not in OPTIONAL_FRAGMENTS:
            problems.append(f"{module} no longer contains {fragment!r}: {why}")
    return problems


def main() -> int:
    import lerobot

    version = getattr(lerobot, "__version__", "unknown")
    print(f"lerobot {version} (adapters checked against {CHECKED_VERSION})")
    problems = check()
    for p in problems:
        print(f"FAIL: {p}")
    if problems:
        print("The SmolVLA/Pi0 adapters rely on these LeRobot internals: see smolvla_modifications/README.md, "
              f"or pin lerobot=={CHECKED_VERSION}.")
        return 1
    n = len(SIGNATURES) + len(CONFIG_FIELDS) + len(REGISTRY_NAMES) + len(SOURCE_FRAGMENTS)
    print(f"OK: {n} checks of the LeRobot internals used by simulation_code/*_adapter.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
