"""Which model family a diffusers folder or a single-file checkpoint is, from its small files alone.

Read before any weight is loaded, so that refusing a model costs milliseconds. A diffusers folder
says it in ``model_index.json`` (pipeline class, components) and ``unet/config.json`` (SDXL's
``addition_embed_type == "text_time"`` micro-conditioning); flow-matching transformer families
(SD3.5, Z-Image, FLUX.2 klein, Qwen-Image-Edit) by their pipeline class alone, since their
folders have no UNet; a single-file checkpoint in its tensor names (SDXL's
``conditioner.embedders.N`` prefixes, where SD 1.x/2.x have one ``cond_stage_model``). Anything
we cannot edit with is refused naming what it is.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import ModelError

SUPPORTED = "SD 1.x/2.x, SDXL, SD3.5, Z-Image, FLUX.2 klein, FLUX.1, FLUX.1 Kontext and Qwen-Image-Edit"
# single-file key prefixes of the two SDXL text encoders: CLIP ViT-L, then OpenCLIP ViT-bigG
SDXL_CLIP_L = "conditioner.embedders.0.transformer."
SDXL_CLIP_G = "conditioner.embedders.1.model."
_REFINER_CLIP_G = "conditioner.embedders.0.model."  # the refiner has only the bigG encoder
_SDXL_UNET_INPUT = "model.diffusion_model.input_blocks.0.0.weight"
# Pipeline classes whose folders hold an SDXL base model (fine-tunes are saved from any of them).
SDXL_PIPELINES = ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline",
                  "StableDiffusionXLInpaintPipeline")
SD_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline",
                "StableDiffusionInpaintPipeline")
# Flow-matching transformer families: pipeline class -> family (engine.flow_models loads them).
FLOW_PIPELINES = {
    **dict.fromkeys(("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline",
                     "StableDiffusion3InpaintPipeline"), "sd3"),
    **dict.fromkeys(("ZImagePipeline", "ZImageImg2ImgPipeline", "ZImageInpaintPipeline"), "zimage"),
    **dict.fromkeys(("Flux2KleinPipeline", "Flux2KleinInpaintPipeline", "Flux2KleinKVPipeline"),
                    "flux2-klein"),
    **dict.fromkeys(("QwenImageEditPipeline", "QwenImageEditInpaintPipeline"), "qwen-image-edit"),
    "QwenImageEditPlusPipeline": "qwen-image-edit-plus",  # 2509 and 2511
    **dict.fromkeys(("FluxKontextPipeline", "FluxKontextInpaintPipeline"), "flux1-kontext"),
    **dict.fromkeys(("FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline"), "flux1"),
}


def read_json(path: Path) -> dict:
    """A JSON object from a model's config file, or ModelError naming the file (model_checks:
    a regular file of sane size and nesting, values finite and within sane bounds)."""
    from engine.model_checks import read_config

    path = Path(path)
    return read_config(path, path.name if path.name == "model_index.json"
                       else f"{path.parent.name}/{path.name}")


def is_sdxl_unet(unet_config: dict) -> bool:
    """SDXL's UNet adds an embedding of the pooled text and six size/crop numbers to the time."""
    return unet_config.get("addition_embed_type") == "text_time"


def folder_family(folder: Path) -> str:
    """"sd" (SD 1.x/2.x: the caller tells them apart by text width), "sdxl", or a flow family of
    FLOW_PIPELINES for a diffusers folder; ModelError naming what the folder is for anything else
    (refiner, other pipelines)."""
    folder = Path(folder)
    index = read_json(folder / "model_index.json")
    pipeline = str(index.get("_class_name", ""))
    if pipeline in FLOW_PIPELINES:  # before SDXL's test: SD3 has a text_encoder_2 too
        return FLOW_PIPELINES[pipeline]
    unet_file = folder / "unet" / "config.json"
    unet = read_json(unet_file) if unet_file.is_file() else {}
    if is_sdxl_unet(unet) or "text_encoder_2" in index or pipeline in SDXL_PIPELINES:
        if index.get("requires_aesthetics_score") or _component(index, "text_encoder") is None:
            raise ModelError(
                "this is an SDXL refiner: it only polishes an SDXL base model's output (it has no "
                "CLIP ViT-L text encoder and is conditioned on an aesthetic score); load an SDXL "
                "base model or a fine-tune of one")
        return "sdxl"
    if pipeline and pipeline not in SD_PIPELINES:
        raise ModelError(f"this is a {pipeline} model, which DiffEdit Studio cannot edit with "
                         f"(it supports {SUPPORTED} models)")
    return "sd"


def checkpoint_family(keys, name: str) -> str | None:
    """"sdxl" when a single-file checkpoint's tensor names are SDXL's, None when they are not
    (SD 1.x/2.x and everything else are told apart by the caller); a refiner is refused."""
    keys = set(keys)
    has = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    if has(_REFINER_CLIP_G) and not has(SDXL_CLIP_G):
        raise ModelError(f"{name}: this is an SDXL refiner checkpoint: it only polishes an SDXL "
                         "base model's output; load an SDXL base model or a fine-tune of one")
    if has("conditioner.embedders.") or "model.diffusion_model.label_emb.0.0.weight" in keys:
        missing = [label for prefix, label in ((SDXL_CLIP_L, "CLIP ViT-L"), (SDXL_CLIP_G, "OpenCLIP ViT-bigG"))
                   if not has(prefix)]
        if missing or _SDXL_UNET_INPUT not in keys:
            parts = [f"the {m} text encoder" for m in missing] + (
                ["the UNet"] if _SDXL_UNET_INPUT not in keys else [])
            raise ModelError(f"{name}: an SDXL checkpoint without {' and '.join(parts)}; "
                             "a full SDXL checkpoint is needed")
        return "sdxl"
    return None


def _component(index: dict, name: str):
    """The [library, class] entry of a pipeline component; None when absent or null."""
    entry = index.get(name)
    if not isinstance(entry, (list, tuple)) or not entry or entry[0] is None:
        return None
    return entry
