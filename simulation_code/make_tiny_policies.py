"""Build a tiny SmolVLA and a tiny Pi0 with random weights, offline, as normal policy directories.

    python make_tiny_policies.py --out ../outputs/tiny_policies
    python run_mujoco_simulation.py --model-type smolvla --policy-path ../outputs/tiny_policies/smolvla --headless
    python run_mujoco_simulation.py --model-type pi0 --policy-path ../outputs/tiny_policies/pi0 --headless

They exercise the real code paths (LeRobot's SmolVLAPolicy / PI0Policy, processors, tokenizers,
KV caches, Euler sampling) in seconds on a CPU, with no network: for tests, benchmarks and smoke
runs. Their actions are meaningless (random weights).

Each directory is what ``policy.save_pretrained`` + ``pre/postprocessor.save_pretrained`` write
(``config.json``, ``model.safetensors``, ``policy_preprocessor.json``, ``policy_postprocessor.json``
and the stats ``*.safetensors``), plus:

* ``smolvla/vlm/``: a tiny SmolVLM config (Llama text model, hidden 64, 4 layers; SigLIP-style
  vision tower, hidden 32, 64x64 images) with a byte-level BPE tokenizer trained here and the
  SmolVLM processor files; ``smolvla/`` records frame ``smolvla_absolute`` (it stands in for
  ``lerobot/smolvla_base``: cameras camera1..3, the reference stats).
* ``pi0/tokenizer/``: a local tokenizer (instead of the gated ``google/paligemma-3b-pt-224``);
  ``pi0/tiny_pi0_architecture.json``: the tiny Gemma/SigLIP sizes, built through
  lerobot_tiny_pi0_patch.py; ``pi0/`` records frame ``lerobot_degrees`` with its own stats and
  two cameras ``top``/``wrist`` mapped from camera1/camera2 (like a fine-tuned checkpoint).
* ``so101_policy_meta.json`` in both: frame, training task, camera map (vla_frames.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from so101_sim import cli_args  # noqa: E402
from so101_sim import so101_mujoco_utils as u  # noqa: E402
from so101_sim.lerobot_vla_adapter import reference_stats  # noqa: E402
from so101_sim.policy_registry import VLA_MODEL_TYPES  # noqa: E402
from so101_sim.vla_frames import write_policy_meta  # noqa: E402

#: Square image size (pixels) of both tiny policies (SmolVLA resize-with-padding, Pi0 resolution).
TINY_IMAGE = 64
TINY_CHUNK = 10
TINY_N_ACTION_STEPS = 5
TINY_DENOISE_STEPS = 5
TINY_TOKENIZER_VOCAB = 400
PI0_CAMERAS = {"camera1": "observation.images.top", "camera2": "observation.images.wrist"}
#: Tiny Pi0 normalisation stats, LeRobot calibrated units (degrees; gripper 0..100): mean at the
#: middle of each joint's range, std a quarter of it. Made up for the random model.
PI0_STATS_MEAN = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 50.0])
PI0_STATS_STD = np.array([40.0, 40.0, 40.0, 40.0, 60.0, 25.0])

_CORPUS = [
    "pick up the red block", "pick up the red cube and place it in the bin", "push the blue block to the left",
    "open the drawer", "close the gripper", "stack the green cube on the yellow cube", "grab the brain",
    "move the arm to the home position", "grasp the object", "put the lego brick into the box",
    "the a an of to in on with and", "0 1 2 3 4 5 6 7 8 9", "\n",
]


def _train_bpe(specials: list[str], vocab: int = TINY_TOKENIZER_VOCAB):
    """A deterministic byte-level BPE ``tokenizers.Tokenizer`` trained on a toy corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return tok


def build_tiny_smolvlm(out_dir: Path, image_size: int = TINY_IMAGE, hidden: int = 64, layers: int = 4,
                       vision_hidden: int = 32, vision_layers: int = 1) -> Path:
    """Write a small SmolVLM folder (config, tokenizer, processor; no weights) usable as
    ``SmolVLAConfig.vlm_model_name`` with ``load_vlm_weights=False``.

    ``image_size`` (pixels, square; a multiple of 32: 16 px patches, pixel shuffle by 2); ``hidden``
    and ``layers``: the language model's width and depth (SmolVLA's action expert is
    ``expert_width_multiplier`` x ``hidden`` wide); ``vision_hidden``/``vision_layers``: the
    SigLIP encoder's. The defaults are the test-sized model; benchmarks/vision_bc.py builds a
    larger one to learn. SmolVLA reads ``fake_image_token_id``/``global_image_token_id`` from the
    tokenizer, so they are declared as extra special tokens. Returns ``out_dir``.
    """
    from transformers import (LlamaConfig, PreTrainedTokenizerFast, SmolVLMConfig, SmolVLMImageProcessor,
                              SmolVLMProcessor, SmolVLMVideoProcessor)
    from transformers.models.smolvlm.configuration_smolvlm import SmolVLMVisionConfig

    named = {"fake_image_token": "<fake_token_around_image>", "global_image_token": "<global-img>",
             "image_token": "<image>", "end_of_utterance_token": "<end_of_utterance>", "video_token": "<video>"}
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *dict.fromkeys(named.values())]
    specials += [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    tok = PreTrainedTokenizerFast(tokenizer_object=_train_bpe(specials), model_max_length=2048,
                                  extra_special_tokens=named, bos_token="<|im_start|>",
                                  eos_token="<end_of_utterance>", pad_token="<|endoftext|>",
                                  unk_token="<|endoftext|>")
    patch, scale = 16, 2
    img_proc = SmolVLMImageProcessor(do_resize=True, size={"longest_edge": image_size}, do_image_splitting=False,
                                     max_image_size={"longest_edge": image_size},
                                     image_mean=[0.5] * 3, image_std=[0.5] * 3)
    vid_proc = SmolVLMVideoProcessor(size={"longest_edge": image_size}, max_image_size={"longest_edge": image_size})
    SmolVLMProcessor(image_processor=img_proc, tokenizer=tok, video_processor=vid_proc,
                     image_seq_len=((image_size // patch) ** 2) // scale**2, chat_template=None).save_pretrained(out_dir)
    heads = 4
    text = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=2, head_dim=hidden // heads,
                       max_position_embeddings=1024, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    vision = SmolVLMVisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                                 num_hidden_layers=vision_layers, num_attention_heads=2,
                                 image_size=image_size, patch_size=patch)
    SmolVLMConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), scale_factor=scale,
                  image_token_id=tok.convert_tokens_to_ids("<image>"),
                  pad_token_id=tok.pad_token_id).save_pretrained(out_dir)
    return out_dir


def build_tiny_paligemma_tokenizer(out_dir: Path) -> int:
    """Write a local tokenizer folder for the tiny Pi0; returns its vocabulary size."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=_train_bpe(["<pad>", "<eos>", "<bos>", "<unk>", "<image>"]),
                                  pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
                                  model_max_length=512)
    tok.save_pretrained(out_dir)
    return len(tok)


def _features(image_keys):
    from lerobot.configs.types import FeatureType, PolicyFeature

    inp = {k: PolicyFeature(type=FeatureType.VISUAL, shape=(3, TINY_IMAGE, TINY_IMAGE)) for k in image_keys}
    inp[u.OBS_STATE] = PolicyFeature(type=FeatureType.STATE, shape=(u.NUM_JOINTS,))
    return inp, {"action": PolicyFeature(type=FeatureType.ACTION, shape=(u.NUM_JOINTS,))}


def _save(policy, pre, post, out: Path) -> None:
    policy.save_pretrained(out)
    pre.save_pretrained(out)
    post.save_pretrained(out)


def build_tiny_smolvla(out: Path, seed: int = 0) -> Path:
    """Tiny SmolVLA in ``out`` (see the module docstring); returns ``out``."""
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    out.mkdir(parents=True, exist_ok=True)
    vlm = build_tiny_smolvlm(out / "vlm")
    inp, outp = _features(u.IMAGE_KEYS)
    cfg = SmolVLAConfig(vlm_model_name=str(vlm), load_vlm_weights=False, input_features=inp, output_features=outp,
                        device="cpu", resize_imgs_with_padding=(TINY_IMAGE, TINY_IMAGE), num_vlm_layers=4,
                        chunk_size=TINY_CHUNK, n_action_steps=TINY_N_ACTION_STEPS, num_steps=TINY_DENOISE_STEPS,
                        tokenizer_max_length=48, push_to_hub=False)
    torch.manual_seed(seed)
    policy = SmolVLAPolicy(cfg).eval()
    pre, post = make_pre_post_processors(cfg, dataset_stats=reference_stats())
    _save(policy, pre, post, out)
    write_policy_meta(out, "smolvla_absolute", task=u.DEFAULT_TASK,
                      camera_map={k: u.OBS_IMAGE_PREFIX + k for k in u.CAMERAS},
                      note="tiny random-weight SmolVLA from make_tiny_policies.py (stands in for smolvla_base)")
    return out


def build_tiny_pi0(out: Path, seed: int = 0) -> Path:
    """Tiny Pi0 in ``out`` (see the module docstring); returns ``out``."""
    import json

    from so101_sim.lerobot_tiny_pi0_patch import default_architecture, tiny_pi0_architecture
    from so101_sim.pi0_adapter import TINY_PI0_MARKER

    out.mkdir(parents=True, exist_ok=True)
    tok_dir = out / "tokenizer"
    arch = default_architecture(build_tiny_paligemma_tokenizer(tok_dir))
    inp, outp = _features(PI0_CAMERAS.values())
    stats = {u.OBS_STATE: {"mean": torch.tensor(PI0_STATS_MEAN, dtype=torch.float32),
                           "std": torch.tensor(PI0_STATS_STD, dtype=torch.float32)},
             "action": {"mean": torch.tensor(PI0_STATS_MEAN, dtype=torch.float32),
                        "std": torch.tensor(PI0_STATS_STD, dtype=torch.float32)}}
    with tiny_pi0_architecture(arch, tokenizer_dir=tok_dir):
        from lerobot.policies.factory import make_pre_post_processors
        from lerobot.policies.pi0.configuration_pi0 import PI0Config
        from lerobot.policies.pi0.modeling_pi0 import PI0Policy

        cfg = PI0Config(input_features=inp, output_features=outp, device="cpu", dtype="float32",
                        image_resolution=(TINY_IMAGE, TINY_IMAGE), chunk_size=TINY_CHUNK,
                        n_action_steps=TINY_N_ACTION_STEPS, num_inference_steps=TINY_DENOISE_STEPS,
                        push_to_hub=False)
        torch.manual_seed(seed)
        policy = PI0Policy(cfg).eval()
        pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
    _save(policy, pre, post, out)
    (out / TINY_PI0_MARKER).write_text(json.dumps(arch, indent=2) + "\n")
    write_policy_meta(out, "lerobot_degrees", task=u.DEFAULT_TASK, camera_map=dict(PI0_CAMERAS),
                      note="tiny random-weight Pi0 from make_tiny_policies.py")
    return out


def build_all(out: Path, seed: int = 0, which: tuple[str, ...] = VLA_MODEL_TYPES) -> dict[str, Path]:
    """Build the requested tiny policies under ``out`` (``out/smolvla``, ``out/pi0``), replacing
    existing ones. Seeded: the same seed gives the same weights."""
    out = Path(out)
    built = {}
    for name, fn in (("smolvla", build_tiny_smolvla), ("pi0", build_tiny_pi0)):
        if name in which:
            shutil.rmtree(out / name, ignore_errors=True)
            built[name] = fn(out / name, seed=seed)
    return built


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=cli_args.DefaultsHelpFormatter)
    parser.add_argument("--out", type=cli_args.output_path, required=True, help="output folder (gets smolvla/ and pi0/)")
    parser.add_argument("--seed", type=int, default=0, help="torch seed of the random weights")
    parser.add_argument("--only", choices=VLA_MODEL_TYPES, default=None, help="build just one of them")
    args = parser.parse_args(argv)
    built = build_all(args.out, args.seed, (args.only,) if args.only else VLA_MODEL_TYPES)
    for name, path in built.items():
        n = sum(1 for _ in path.iterdir())
        print(f"tiny {name}: {path} ({n} entries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
