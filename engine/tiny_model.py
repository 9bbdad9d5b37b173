"""Tiny random-weight SD, SDXL and FLUX.2 klein models, built deterministically and saved in
diffusers layout.

They exist so that the whole workflow (loading, mask, encoding, decoding, paste-back) can be run
and tested without real weights or a GPU. Their pictures are noise. They have the real CLIP
tokenizers and SD's noise schedule, a VAE that downsamples by 8 like SD's, and a native size of
128 px. The SDXL one keeps SDXL's shape: two text encoders (the second with a projection that
gives the pooled embedding), the text-time addition embedding, three UNet levels of which the
first has no attention, a deeper transformer at the lowest level, and the SDXL VAE's scale.
The klein one keeps FLUX.2 klein's shape: a Qwen3 text encoder read at layers 9, 18 and 27 with
a byte-level BPE tokenizer and Qwen's chat template (built offline), the FLUX.2 VAE (downsamples
by 8, latent batch-norm statistics set away from 0 and 1 so the normalisation is exercised), 2x2
latent patches, a double- and a single-stream transformer block, klein's flow scheduler config.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from engine.config import cache_dir

TINY_VERSION = 1  # bump when the architecture below changes, so cached copies are rebuilt
TINY_SDXL_VERSION = 1  # likewise for the SDXL one
TINY_FLUX2_VERSION = 2  # likewise for the FLUX.2 klein one
# FLUX.2 klein's scheduler config (FlowMatchEulerDiscreteScheduler; the pipeline computes mu).
FLUX2_SCHEDULER = dict(
    num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
    base_image_seq_len=256, max_image_seq_len=4096, time_shift_type="exponential",
)
# A system-free version of Qwen3's chat template: the same text for user turns, and the empty
# thinking block only when thinking is switched off (ZImagePipeline switches it on, klein off).
QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
)
QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
QWEN_VOCAB_SIZE = 256 + len(QWEN_SPECIAL_TOKENS)  # one token per byte, then the special ones
SD_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
)


def default_folder() -> Path:
    return cache_dir() / f"tiny-random-sd-v{TINY_VERSION}"


def default_sdxl_folder() -> Path:
    return cache_dir() / f"tiny-random-sdxl-v{TINY_SDXL_VERSION}"


def default_flux2_folder() -> Path:
    return cache_dir() / f"tiny-random-flux2-klein-v{TINY_FLUX2_VERSION}"


def ensure_tiny_model(folder: Path | None = None) -> Path:
    """Return the folder of the tiny model, building it first if it is not there yet."""
    return _ensure(Path(folder) if folder is not None else default_folder(), build_tiny_model)


def ensure_tiny_sdxl(folder: Path | None = None) -> Path:
    """Return the folder of the tiny SDXL model, building it first if it is not there yet."""
    return _ensure(Path(folder) if folder is not None else default_sdxl_folder(), build_tiny_sdxl)


def ensure_tiny_flux2(folder: Path | None = None) -> Path:
    """Return the folder of the tiny FLUX.2 klein model, building it first if it is not there."""
    return _ensure(Path(folder) if folder is not None else default_flux2_folder(), build_tiny_flux2)


def _ensure(folder: Path, build) -> Path:
    if (folder / "model_index.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so a half-written model is never picked up.
    staging = Path(tempfile.mkdtemp(prefix=".tiny-building-", dir=folder.parent))
    try:
        build(staging)
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
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    from engine.clip_tokenizer import write_tokenizer_files
    from engine.libraries import quiet_libraries

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
    vae = _tiny_vae(sample_size)
    text_encoder = CLIPTextModel(_text_config(text_width))
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


def build_tiny_sdxl(folder: Path, *, sample_size: int = 16, text_widths=(32, 48)) -> Path:
    """Build a tiny SDXL under ``torch.manual_seed(0)`` and save it (safetensors) in ``folder``,
    laid out as stabilityai/stable-diffusion-xl-base-1.0 is (Euler scheduler config included).

    The two text encoders have different widths, as SDXL's (768, 1280) do: diffusers' single-file
    loader tells them apart by width.
    """
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from engine.clip_tokenizer import write_tokenizer_files
    from engine.libraries import quiet_libraries

    quiet_libraries()
    folder = Path(folder)
    torch.manual_seed(0)
    time_embed_dim = 8  # per number: six numbers (original size, crop, target size) -> 48
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(2, 4, 4),  # as in SDXL's config this is the number of heads
        use_linear_projection=True,
        cross_attention_dim=sum(text_widths),  # both encoders' features, concatenated
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=6 * time_embed_dim + text_widths[1],  # + pooled
        norm_num_groups=16,
    )
    vae = _tiny_vae(sample_size, scaling_factor=0.13025, force_upcast=True)
    text_encoder = CLIPTextModel(_text_config(text_widths[0]))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(text_widths[1], hidden_act="gelu"))

    folder.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    text_encoder_2.save_pretrained(folder / "text_encoder_2", safe_serialization=True)
    # Written as SDXL base's is: an Euler config that still carries the DDIM keys
    # (clip_sample, set_alpha_to_one) a DDIM scheduler built from it must read.
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "EulerDiscreteScheduler", **SD_SCHEDULER, "interpolation_type": "linear",
         "timestep_spacing": "leading", "use_karras_sigmas": False}, indent=2), encoding="utf-8")
    write_tokenizer_files(folder / "tokenizer")
    write_tokenizer_files(folder / "tokenizer_2", pad_token="!")  # OpenCLIP pads with "!"
    index = {
        "_class_name": "StableDiffusionXLPipeline",
        "_diffusers_version": "0.42.1",
        "force_zeros_for_empty_prompt": True,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return folder


def build_tiny_flux2(folder: Path, *, sample_size: int = 128, text_width: int = 16,
                     latent_channels: int = 4) -> Path:
    """Build a tiny FLUX.2 klein (step-distilled, as klein 4B) under ``torch.manual_seed(0)``
    and save it (safetensors) in ``folder``, laid out as black-forest-labs/FLUX.2-klein-4B is."""
    import torch
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from engine.libraries import quiet_libraries

    quiet_libraries()
    folder = Path(folder)
    torch.manual_seed(0)
    # The pipeline stacks the encoder's hidden states 9, 18 and 27: 27 layers are the fewest.
    text_encoder = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=QWEN_VOCAB_SIZE, hidden_size=text_width, intermediate_size=2 * text_width,
        num_hidden_layers=27, num_attention_heads=2, num_key_value_heads=2, head_dim=8,
        max_position_embeddings=512, tie_word_embeddings=True)).eval()
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=4 * latent_channels, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=3 * text_width,
        timestep_guidance_channels=256, axes_dims_rope=(4, 4, 4, 4), guidance_embeds=False).eval()
    vae = AutoencoderKLFlux2(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(16, 16, 32, 32),
        layers_per_block=1, latent_channels=latent_channels, norm_num_groups=8,
        sample_size=sample_size).eval()
    with torch.no_grad():  # latent statistics as a trained VAE's: not the identity
        vae.bn.running_mean.copy_(0.3 * torch.randn(vae.bn.running_mean.shape))
        vae.bn.running_var.copy_(0.5 + torch.rand(vae.bn.running_var.shape))

    folder.mkdir(parents=True, exist_ok=True)
    transformer.save_pretrained(folder / "transformer", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    write_qwen_tokenizer(folder / "tokenizer")
    FlowMatchEulerDiscreteScheduler(**FLUX2_SCHEDULER).save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "Flux2KleinPipeline",
        "_diffusers_version": "0.42.1",
        "is_distilled": True,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen3ForCausalLM"],
        "tokenizer": ["transformers", "Qwen2TokenizerFast"],
        "transformer": ["diffusers", "Flux2Transformer2DModel"],
        "vae": ["diffusers", "AutoencoderKLFlux2"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return folder


def write_qwen_tokenizer(folder: Path, extra_tokens: tuple[str, ...] = ()) -> Path:
    """tokenizer.json and its config for a Qwen2TokenizerFast, as the tiny klein and Z-Image
    have it: byte-level BPE over the 256 byte symbols (no merges: one token per byte), Qwen's
    special tokens and chat template; ``extra_tokens``: more special tokens after those (ids
    from QWEN_VOCAB_SIZE on)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {symbol: index for index, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                  for t in QWEN_SPECIAL_TOKENS + tuple(extra_tokens)])
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "Qwen2Tokenizer", "model_max_length": 131072,
              "pad_token": "<|endoftext|>", "eos_token": "<|im_end|>", "bos_token": None,
              "unk_token": None, "chat_template": QWEN_CHAT_TEMPLATE}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    return folder


def _tiny_vae(sample_size: int, **config):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 16, 32, 32),  # four levels: downsamples by 8 like SD's VAE
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=sample_size * 8,
        **config,
    )


def _text_config(width: int, **config):
    """A small CLIP text encoder over the real 49408-token vocabulary."""
    from transformers import CLIPTextConfig

    from engine.clip_tokenizer import VOCAB_SIZE

    return CLIPTextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=width, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407, projection_dim=width, **config,
    )
