"""A tiny random-weight Stable Diffusion model, built deterministically and saved in diffusers layout.

It exists so that the whole workflow (loading, mask, encoding, decoding, paste-back) can be run
and tested without real weights or a GPU. Its pictures are noise. It has the real CLIP tokenizer
and SD's noise schedule, a VAE that downsamples by 8 like SD's, and a native size of 128 px.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from engine.config import cache_dir

TINY_VERSION = 1  # bump when the architecture below changes, so cached copies are rebuilt
SD_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
)


def default_folder() -> Path:
    return cache_dir() / f"tiny-random-sd-v{TINY_VERSION}"


def ensure_tiny_model(folder: Path | None = None) -> Path:
    """Return the folder of the tiny model, building it first if it is not there yet."""
    folder = Path(folder) if folder is not None else default_folder()
    if (folder / "model_index.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so a half-written model is never picked up.
    staging = Path(tempfile.mkdtemp(prefix=".tiny-building-", dir=folder.parent))
    try:
        build_tiny_model(staging)
        try:
            os.replace(staging, folder)
        except OSError:
            if not (folder / "model_index.json").is_file():  # another process may have won
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def build_tiny_model(folder: Path, *, unet_channels=(32, 64), sample_size: int = 16,
                     text_width: int = 32) -> Path:
    """Build the components under ``torch.manual_seed(0)`` and save them (safetensors) in ``folder``."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from engine.clip_tokenizer import VOCAB_SIZE, write_tokenizer_files
    from engine.models import quiet_libraries

    quiet_libraries()
    folder = Path(folder)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=unet_channels,
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=text_width,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 16, 32, 32),  # four levels: downsamples by 8 like SD's VAE
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=sample_size * 8,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=text_width, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407,
    ))
    scheduler = DDIMScheduler(**SD_SCHEDULER)

    folder.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    scheduler.save_pretrained(folder / "scheduler")
    write_tokenizer_files(folder / "tokenizer")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.30.0",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return folder
