"""A tiny random-weight Qwen-Image-Edit(-2509/2511), built deterministically and saved in diffusers layout.

Like engine.tiny_model's, it lets the family be loaded, run and tested without real weights or a
GPU; its pictures are noise. It keeps the family's shape: a Qwen2.5-VL text encoder whose vision
tower sees the photo (Qwen's byte-level tokenizer with the vision tokens, and the image
processor's 14 px patches merged 2x2), the video-style VAE with a time axis whose latents
are normalised by per-channel mean and std (not all 0 and 1 here, so the normalisation shows),
and the MMDiT reading 2x2-packed latent patches. The VAE downsamples by 4 (Qwen's by 8), so
working sizes go in steps of 8 pixels.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.config import cache_dir
from engine.tiny_flow_models import _save
from engine.tiny_model import QWEN_VOCAB_SIZE, _ensure, write_qwen_tokenizer

TINY_QWEN_EDIT_VERSION = 2  # bump when the architecture below changes, so cached copies are rebuilt
QWEN_EDIT_TEXT_WIDTH = 16  # Qwen2.5-VL's hidden size (Qwen-Image-Edit: 3584)
LATENT_CHANNELS = 4  # Qwen-Image's VAE: 16
# Qwen2.5-VL's vision tokens, after the tiny tokenizer's own special tokens
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
# Qwen-Image's scheduler: the shift grows with the picture's token count, exponentially
SCHEDULER = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True,
                 base_image_seq_len=256, max_image_seq_len=8192, base_shift=0.5, max_shift=0.9,
                 shift_terminal=0.02, time_shift_type="exponential")


def default_qwen_edit_folder() -> Path:
    return cache_dir() / f"tiny-random-qwen-image-edit-v{TINY_QWEN_EDIT_VERSION}"


def ensure_tiny_qwen_edit(folder: Path | None = None) -> Path:
    """The folder of the tiny Qwen-Image-Edit-2509, built first if it is not there yet."""
    return _ensure(Path(folder) if folder is not None else default_qwen_edit_folder(),
                   build_tiny_qwen_edit)


def build_tiny_qwen_edit(folder: Path, *, pipeline: str = "QwenImageEditPlusPipeline") -> Path:
    """Build a tiny Qwen-Image-Edit under ``torch.manual_seed(0)`` and save it (safetensors) in
    ``folder``, laid out as Qwen/Qwen-Image-Edit-2509 is (``pipeline``: QwenImageEditPipeline
    for the first release's layout)."""
    import torch
    from diffusers import (AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler,
                           QwenImageTransformer2DModel)
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                              Qwen2VLImageProcessorPil)

    from engine.libraries import quiet_libraries

    quiet_libraries()
    folder = Path(folder)
    width = QWEN_EDIT_TEXT_WIDTH
    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=4 * LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_layers=2,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=width,
        guidance_embeds=False, axes_dims_rope=(8, 4, 4)).eval()
    vae = AutoencoderKLQwenImage(
        base_dim=24, z_dim=LATENT_CHANNELS, dim_mult=[1, 2, 4], num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.1, -0.2, 0.05, 0.3], latents_std=[1.5, 0.8, 1.2, 2.0]).eval()
    ids = {token: QWEN_VOCAB_SIZE + i for i, token in enumerate(VISION_TOKENS)}
    text_encoder = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
        text_config=dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, rope_theta=1_000_000.0,
                         vocab_size=QWEN_VOCAB_SIZE + len(VISION_TOKENS),
                         rope_scaling={"mrope_section": [1, 1, 2], "rope_type": "default"}),
        vision_config=dict(depth=2, hidden_size=width, intermediate_size=width, num_heads=2,
                           out_hidden_size=width),
        vocab_size=QWEN_VOCAB_SIZE + len(VISION_TOKENS),
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"])).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(**SCHEDULER)

    _save(folder, pipeline, {"transformer": transformer, "vae": vae,
                             "text_encoder": text_encoder},
          scheduler, {"tokenizer": "Qwen2Tokenizer", "processor": "Qwen2VLProcessor"})
    write_qwen_tokenizer(folder / "tokenizer", VISION_TOKENS)
    # The processor folder as the real repos have it: Qwen2.5-VL's image processor (its own
    # sizes: 14 px patches, merged 2x2 into one token) under the class name that needs
    # torchvision, its video processor's config, and the tokenizer again.
    processor = folder / "processor"
    Qwen2VLImageProcessorPil().save_pretrained(processor)
    config = {**json.loads((processor / "preprocessor_config.json").read_text()),
              "processor_class": "Qwen2VLProcessor"}
    del config["image_processor_type"]
    for name, kind in (("preprocessor_config.json", {"image_processor_type": "Qwen2VLImageProcessor"}),
                       ("video_preprocessor_config.json",
                        {"video_processor_type": "Qwen2VLVideoProcessor"})):
        (processor / name).write_text(json.dumps({**config, **kind}, indent=2))
    write_qwen_tokenizer(processor, VISION_TOKENS)
    return folder
