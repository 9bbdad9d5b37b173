"""Tiny random-weight SD3.5, Z-Image and FLUX.1 Kontext models, built deterministically and saved
in diffusers layout.

Like engine.tiny_model's, they let the flow-matching families be loaded, run and tested without
real weights or a GPU; their pictures are noise. They keep each family's shape:
- SD3.5: CLIP-L and CLIP-G text encoders with projections (the real CLIP vocabulary) whose
  penultimate layers are concatenated and padded to the T5 encoder's width, a T5 encoder (a
  small SentencePiece-style Unigram vocabulary built here), an MMDiT with patch 2, RMS-normed
  query/keys and one dual-attention layer as in SD3.5 Medium, and a 16-channel VAE with SD3's
  shift and scale;
- Z-Image: a Qwen3 text encoder read through its chat template (the byte-level tokenizer with
  Qwen's special tokens that engine.tiny_model builds for klein too), the single-stream DiT with patch 2, and the FLUX VAE's
  16 channels, shift and scale. The scheduler is Z-Image-Turbo's (shift 3) unless ``shift`` says
  otherwise (the base model's is 6);
- FLUX.1 Kontext [dev] (or, on request, [schnell]): SD3's CLIP-L (read for its pooled output)
  and T5 pieces, the FLUX transformer (one double- and one single-stream block) with its
  guidance embedding (none on [schnell]) over 2x2 packed latents, FLUX.1's dynamically shifted
  scheduler ([schnell]'s: a fixed shift of 1) and the FLUX VAE.
All have a native size of 128 px, a VAE that downsamples by 8, and working sizes in steps of 16.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from engine.config import cache_dir
from engine.tiny_model import QWEN_VOCAB_SIZE, _ensure, _text_config, write_qwen_tokenizer

TINY_SD3_VERSION = 1  # bump when an architecture below changes, so cached copies are rebuilt
TINY_ZIMAGE_VERSION = 1
TINY_KONTEXT_VERSION = 1
SD3_TEXT_WIDTHS = (32, 48, 96)  # CLIP-L, CLIP-G, T5 (SD3.5: 768, 1280, 4096)
ZIMAGE_TEXT_WIDTH = 32  # Qwen3's hidden size (Z-Image: 2560)
KONTEXT_TEXT_WIDTHS = (32, 48)  # CLIP-L, T5 (FLUX.1: 768, 4096)
ZIMAGE_TURBO_SHIFT = 3.0  # Z-Image-Turbo's scheduler shift; the base model's is 6.0


def default_sd3_folder() -> Path:
    return cache_dir() / f"tiny-random-sd3-v{TINY_SD3_VERSION}"


def default_zimage_folder() -> Path:
    return cache_dir() / f"tiny-random-zimage-v{TINY_ZIMAGE_VERSION}"


def default_kontext_folder() -> Path:
    return cache_dir() / f"tiny-random-flux1-kontext-v{TINY_KONTEXT_VERSION}"


def ensure_tiny_sd3(folder: Path | None = None) -> Path:
    """The folder of the tiny SD3.5, built first if it is not there yet."""
    return _ensure(Path(folder) if folder is not None else default_sd3_folder(), build_tiny_sd3)


def ensure_tiny_zimage(folder: Path | None = None) -> Path:
    """The folder of the tiny Z-Image(-Turbo), built first if it is not there yet."""
    return _ensure(Path(folder) if folder is not None else default_zimage_folder(),
                   build_tiny_zimage)


def ensure_tiny_kontext(folder: Path | None = None) -> Path:
    """The folder of the tiny FLUX.1 Kontext, built first if it is not there yet."""
    return _ensure(Path(folder) if folder is not None else default_kontext_folder(),
                   build_tiny_flux1)  # its default is Kontext [dev]


def build_tiny_sd3(folder: Path) -> Path:
    """Build a tiny SD3.5 under ``torch.manual_seed(0)`` and save it (safetensors) in ``folder``,
    laid out as stabilityai/stable-diffusion-3.5-medium is."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection

    from engine.clip_tokenizer import write_tokenizer_files
    from engine.libraries import quiet_libraries

    quiet_libraries()
    folder = Path(folder)
    clip_l, clip_g, t5_width = SD3_TEXT_WIDTHS
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
        joint_attention_dim=t5_width, pooled_projection_dim=clip_l + clip_g,
        pos_embed_max_size=64, dual_attention_layers=(0,), qk_norm="rms_norm",
    )
    vae = _flow_vae(scaling_factor=1.5305, shift_factor=0.0609)
    text_encoder = CLIPTextModelWithProjection(_text_config(clip_l))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(clip_g, hidden_act="gelu"))
    text_encoder_3 = _t5_encoder(t5_width)
    # SD3.5's own scheduler config: a fixed shift of 3
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)

    modules = {"transformer": transformer, "vae": vae, "text_encoder": text_encoder,
               "text_encoder_2": text_encoder_2, "text_encoder_3": text_encoder_3}
    _save(folder, "StableDiffusion3Pipeline", modules, scheduler,
          {"tokenizer": "CLIPTokenizer", "tokenizer_2": "CLIPTokenizer",
           "tokenizer_3": "T5TokenizerFast", "feature_extractor": None, "image_encoder": None})
    write_tokenizer_files(folder / "tokenizer")
    write_tokenizer_files(folder / "tokenizer_2", pad_token="!")  # OpenCLIP pads with "!"
    write_t5_tokenizer(folder / "tokenizer_3", t5_vocabulary())
    return folder


def build_tiny_flux1(folder: Path, *, schnell: bool = False) -> Path:
    """Build a tiny FLUX.1 under ``torch.manual_seed(0)`` and save it (safetensors) in ``folder``,
    laid out as black-forest-labs/FLUX.1-Kontext-dev is (``schnell``: as FLUX.1-schnell, a
    FluxPipeline without the guidance input, its scheduler's fixed shift 1): SD3's CLIP-L and T5
    pieces (CLIP read for its pooled output), the FLUX transformer with its guidance embedding
    over 2x2-packed latents, and the FLUX VAE's 16 channels, shift and scale."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel

    from engine.clip_tokenizer import write_tokenizer_files
    from engine.libraries import quiet_libraries

    quiet_libraries()
    folder = Path(folder)
    clip_width, t5_width = KONTEXT_TEXT_WIDTHS
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=t5_width, pooled_projection_dim=clip_width,
        guidance_embeds=not schnell, axes_dims_rope=(4, 6, 6))
    vae = _flow_vae(scaling_factor=0.3611, shift_factor=0.1159)
    text_encoder = CLIPTextModel(_text_config(clip_width))
    text_encoder_2 = _t5_encoder(t5_width)
    # [dev]'s and Kontext's scheduler config: the shift follows the image's token count
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=1.0 if schnell else 3.0, use_dynamic_shifting=not schnell,
        base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    _save(folder, "FluxPipeline" if schnell else "FluxKontextPipeline", {"transformer": transformer, "vae": vae,
                                          "text_encoder": text_encoder,
                                          "text_encoder_2": text_encoder_2},
          scheduler, {"tokenizer": "CLIPTokenizer", "tokenizer_2": "T5TokenizerFast",
                      "feature_extractor": None, "image_encoder": None})
    write_tokenizer_files(folder / "tokenizer")
    write_t5_tokenizer(folder / "tokenizer_2", t5_vocabulary())
    return folder


def build_tiny_zimage(folder: Path, *, shift: float = ZIMAGE_TURBO_SHIFT) -> Path:
    """Build a tiny Z-Image under ``torch.manual_seed(0)`` and save it (safetensors) in
    ``folder``, laid out as Tongyi-MAI/Z-Image-Turbo is (``shift``: the scheduler's)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    from engine.libraries import quiet_libraries

    quiet_libraries()
    folder = Path(folder)
    torch.manual_seed(0)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=2,
        n_refiner_layers=1, n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True,
        cap_feat_dim=ZIMAGE_TEXT_WIDTH, rope_theta=256.0, t_scale=1000.0,
        # rotary axes (caption/frame, height, width): long enough for a 512-token caption and
        # a 1024 px picture (64 latent patches a side)
        axes_dims=[8, 4, 4], axes_lens=[1024, 64, 64],
    )
    vae = _flow_vae(scaling_factor=0.3611, shift_factor=0.1159)
    text_encoder = Qwen3Model(Qwen3Config(
        vocab_size=QWEN_VOCAB_SIZE, hidden_size=ZIMAGE_TEXT_WIDTH,
        intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=8, max_position_embeddings=1024, rope_theta=1_000_000.0, tie_word_embeddings=True))
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift,
                                                use_dynamic_shifting=False)

    _save(folder, "ZImagePipeline", {"transformer": transformer, "vae": vae,
                                     "text_encoder": text_encoder},
          scheduler, {"tokenizer": "Qwen2Tokenizer"})
    write_qwen_tokenizer(folder / "tokenizer")
    return folder


def _save(folder: Path, pipeline: str, modules: dict, scheduler, tokenizers: dict) -> None:
    """Save ``modules`` (folder -> module) and the scheduler (safetensors) in ``folder`` with the
    model_index.json naming them, ``pipeline`` and the ``tokenizers`` (folder -> transformers
    class, None for a component the model does without)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, module in modules.items():
        module.save_pretrained(folder / name, safe_serialization=True)
    scheduler.save_pretrained(folder / "scheduler")
    index = {"_class_name": pipeline, "_diffusers_version": "0.42.1",
             "scheduler": ["diffusers", type(scheduler).__name__]}
    index.update({name: [type(m).__module__.split(".")[0], type(m).__name__]
                  for name, m in modules.items()})
    index.update({name: ["transformers", cls] if cls else [None, None]
                  for name, cls in tokenizers.items()})
    (folder / "model_index.json").write_text(json.dumps(dict(sorted(index.items())), indent=2),
                                             encoding="utf-8")


def _t5_encoder(width: int):
    """A small T5 encoder over ``t5_vocabulary()`` (SD3's third and FLUX.1's second encoder)."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(
        vocab_size=len(t5_vocabulary()), d_model=width, d_kv=8, d_ff=64, num_layers=2,
        num_heads=4, relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))


def _flow_vae(**config):
    """A small 16-channel VAE without quant convolutions, as SD3's and FLUX's are."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16,
        block_out_channels=(16, 16, 32, 32),  # four levels: downsamples by 8
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=8, sample_size=128, use_quant_conv=False,
        use_post_quant_conv=False, force_upcast=True, **config,
    )


def t5_vocabulary() -> list[tuple[str, float]]:
    """A T5-style Unigram vocabulary: <pad>, </s>, <unk> first (ids 0, 1, 2, as T5's), then
    word-initial ("▁"-prefixed) and inner pieces of every printable ASCII character."""
    chars = string.ascii_letters + string.digits + string.punctuation
    return ([("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
            + [("▁" + c, -4.0) for c in chars] + [(c, -5.0) for c in chars])


def write_t5_tokenizer(folder: Path, vocab: list[tuple[str, float]]) -> Path:
    """tokenizer.json and its config for a T5TokenizerFast over ``vocab`` (SentencePiece's
    Metaspace pre-tokenizer, "</s>" appended as T5 does)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=2))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    tokenizer.add_special_tokens([AddedToken(t, special=True) for t in ("<pad>", "</s>", "<unk>")])
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "T5Tokenizer", "model_max_length": 512, "extra_ids": 0,
              "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    return folder
