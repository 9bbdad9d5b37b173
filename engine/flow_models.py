"""Load a flow-matching transformer model (SD3.5, Z-Image) from a diffusers folder.

Each family's components and their classes are fixed here (a folder's model_index.json names
classes, but files from outside are data: they choose nothing that runs). The checks are the
SD loader's (engine.models): regular files, sane configs, float safetensors weights, complete
and finite after loading, and the components' widths fitting together, all before or right
after the weights load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine import model_checks as checks
from engine.errors import ModelError


@dataclass(frozen=True)
class TextPart:
    """One text encoder of a family: folder and class, tokenizer folder and class."""

    folder: str
    encoder: str  # transformers class
    tokenizer_folder: str
    tokenizer: str  # transformers class


@dataclass(frozen=True)
class FlowFamily:
    label: str  # the family's name in messages
    transformer: str  # diffusers class
    text: tuple[TextPart, ...]  # in the order LoadedModel's text_encoder, _2, _3 hold them


_CLIP = "CLIPTextModelWithProjection", "CLIPTokenizer"
FAMILIES = {
    "sd3": FlowFamily("SD3.5", "SD3Transformer2DModel", (
        TextPart("text_encoder", _CLIP[0], "tokenizer", _CLIP[1]),
        TextPart("text_encoder_2", _CLIP[0], "tokenizer_2", _CLIP[1]),
        TextPart("text_encoder_3", "T5EncoderModel", "tokenizer_3", "T5TokenizerFast"))),
    "zimage": FlowFamily("Z-Image", "ZImageTransformer2DModel", (
        TextPart("text_encoder", "Qwen3Model", "tokenizer", "Qwen2TokenizerFast"),)),
}


def load_folder(folder: Path, name: str, family: str, device, dtype, allow_pickle: bool):
    """The engine.models.LoadedModel of the ``family`` model in ``folder``, or ModelError."""
    import diffusers
    import transformers

    from engine.models import LoadedModel, _check_weights, _read_json, place

    spec = FAMILIES[family]
    components = ("transformer", "vae") + tuple(part.folder for part in spec.text)
    required = components + ("scheduler",) + tuple(part.tokenizer_folder for part in spec.text)
    missing = [c for c in required if not (folder / c).is_dir()]
    if missing:
        raise ModelError(f"{folder} is not a complete {spec.label} folder: missing "
                         f"{', '.join(missing)} (expected diffusers layout with model_index.json)")
    checks.check_folder_files(folder)
    for component in components:
        _check_weights(folder / component, allow_pickle)
    scheduler_config = _read_json(folder / "scheduler" / "scheduler_config.json")
    configs = {c: _read_json(folder / c / "config.json") for c in components}
    check_widths(name, family, configs)
    safetensors_only = None if allow_pickle else True
    loaded = {}
    try:
        for component, cls in (("transformer", getattr(diffusers, spec.transformer)),
                               ("vae", diffusers.AutoencoderKL)):
            loaded[component] = cls.from_pretrained(
                folder, subfolder=component, local_files_only=True,
                use_safetensors=safetensors_only, output_loading_info=True)
        for part in spec.text:
            loaded[part.folder] = getattr(transformers, part.encoder).from_pretrained(
                folder / part.folder, local_files_only=True, use_safetensors=safetensors_only,
                output_loading_info=True)
        tokenizers = [getattr(transformers, part.tokenizer).from_pretrained(
            folder / part.tokenizer_folder, local_files_only=True) for part in spec.text]
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot load the model in {folder}: {exc}") from None
    modules = {}
    for component, (module, info) in loaded.items():
        checks.check_complete(module, info, f"{name}: {component}")
        checks.check_finite_weights(module, f"{name}: {component}")
        modules[component] = module
    encoders = [modules[part.folder] for part in spec.text]
    for encoder, tokenizer, part in zip(encoders, tokenizers, spec.text):
        if part.tokenizer == "CLIPTokenizer":  # CLIP reads 77 positions; T5 and Qwen are long
            checks.check_tokenizer_length(tokenizer.model_max_length,
                                          encoder.config.max_position_embeddings,
                                          f"{name}: {part.tokenizer_folder}")
    notes = place([modules["transformer"], *encoders], modules["vae"], device, dtype)
    encoders += [None] * (3 - len(encoders))
    tokenizers += [None] * (3 - len(tokenizers))
    return LoadedModel(
        name=name, source=str(folder), unet=None, transformer=modules["transformer"],
        vae=modules["vae"], text_encoder=encoders[0], tokenizer=tokenizers[0],
        text_encoder_2=encoders[1], tokenizer_2=tokenizers[1], text_encoder_3=encoders[2],
        tokenizer_3=tokenizers[2], scheduler_config=dict(scheduler_config), device=device,
        dtype=dtype, family=family, prediction_type="flow", notes=notes)


def check_widths(name: str, family: str, configs: dict) -> None:
    """Refuse components that do not fit together (from their configs, before any weight):
    latent channels, and the text features the transformer reads."""
    transformer, vae = configs["transformer"], configs["vae"]
    if transformer.get("in_channels") != vae.get("latent_channels"):
        raise ModelError(f"{name}: the transformer takes {transformer.get('in_channels')} latent "
                         f"channels but the VAE gives {vae.get('latent_channels')}; the "
                         "components do not belong together")
    if family == "sd3":  # CLIP-L and CLIP-G side by side, padded to T5's width
        clip = sum(configs[f].get("hidden_size") or 0 for f in ("text_encoder", "text_encoder_2"))
        t5 = configs["text_encoder_3"].get("d_model") or 0
        if clip > t5:
            raise ModelError(f"{name}: the CLIP features ({clip} wide) are wider than T5's ({t5}); "
                             "the components do not belong together")
        pooled = sum(configs[f].get("projection_dim") or 0 for f in ("text_encoder", "text_encoder_2"))
        expected = {"joint_attention_dim": t5, "pooled_projection_dim": pooled}
    else:
        expected = {"cap_feat_dim": configs["text_encoder"].get("hidden_size")}
    for key, value in expected.items():
        if transformer.get(key) != value:
            raise ModelError(f"{name}: the transformer's {key} is {transformer.get(key)} but the "
                             f"text encoders give {value}; the components do not belong together")
