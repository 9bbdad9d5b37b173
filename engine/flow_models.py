"""The flow-matching transformer families (SD3.5, Z-Image, FLUX.2 klein, FLUX.1 and its Kontext,
Qwen-Image-Edit): their components and how they fit.

Each family's components and their classes are fixed here (a folder's model_index.json names
classes, but files from outside are data: they choose nothing that runs); engine.models loads
them with the SD loader's checks, and ``check_widths`` refuses parts that do not belong together
from their configs, before any weight loads.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    vae: str = "AutoencoderKL"  # diffusers class
    # transformers class of the image processor in the processor folder, for a text encoder that
    # sees the photo (Qwen-Image-Edit's Qwen2.5-VL)
    image_processor: str | None = None

    @property
    def components(self) -> tuple[str, ...]:
        """The folders holding weights."""
        return ("transformer", "vae", *(part.folder for part in self.text))


_CLIP = "CLIPTextModelWithProjection", "CLIPTokenizer"
FAMILIES = {
    "sd3": FlowFamily("SD3.5", "SD3Transformer2DModel", (
        TextPart("text_encoder", _CLIP[0], "tokenizer", _CLIP[1]),
        TextPart("text_encoder_2", _CLIP[0], "tokenizer_2", _CLIP[1]),
        TextPart("text_encoder_3", "T5EncoderModel", "tokenizer_3", "T5TokenizerFast"))),
    "zimage": FlowFamily("Z-Image", "ZImageTransformer2DModel", (
        TextPart("text_encoder", "Qwen3Model", "tokenizer", "Qwen2TokenizerFast"),)),
    "flux2-klein": FlowFamily("FLUX.2 klein", "Flux2Transformer2DModel", (
        TextPart("text_encoder", "Qwen3ForCausalLM", "tokenizer", "Qwen2TokenizerFast"),),
        vae="AutoencoderKLFlux2"),
}
# FLUX.1 [dev]/[schnell] and Kontext [dev] share their parts: CLIP-L (pooled) and T5-XXL.
_FLUX1_TEXT = (TextPart("text_encoder", "CLIPTextModel", "tokenizer", "CLIPTokenizer"),
               TextPart("text_encoder_2", "T5EncoderModel", "tokenizer_2", "T5TokenizerFast"))
FAMILIES.update({"flux1": FlowFamily("FLUX.1", "FluxTransformer2DModel", _FLUX1_TEXT),
                 "flux1-kontext": FlowFamily("FLUX.1 Kontext", "FluxTransformer2DModel", _FLUX1_TEXT)})
# Qwen-Image-Edit and its 2509/2511 releases ("plus": up to three photos, another prompt
# template) share their parts. Their image processor is loaded as its Pillow version: the
# default one needs torchvision, which the project does not install; both resize to 28 px
# multiples and cut the same 14 px patches.
_QWEN_EDIT = FlowFamily("Qwen-Image-Edit", "QwenImageTransformer2DModel", (
    TextPart("text_encoder", "Qwen2_5_VLForConditionalGeneration", "tokenizer", "Qwen2TokenizerFast"),),
    vae="AutoencoderKLQwenImage", image_processor="Qwen2VLImageProcessorPil")
FAMILIES.update({"qwen-image-edit": _QWEN_EDIT, "qwen-image-edit-plus": _QWEN_EDIT})
QWEN_EDIT = ("qwen-image-edit", "qwen-image-edit-plus")


def check_widths(name: str, family: str, configs: dict) -> None:
    """Refuse components that do not fit together (from their configs, before any weight):
    latent channels, and the text features the transformer reads."""
    transformer, vae = configs["transformer"], configs["vae"]
    # FLUX and Qwen-Image pack 2x2 latent patches as channels; Qwen's VAE says z_dim
    patch = 4 if family.startswith("flux") or family in QWEN_EDIT else 1
    latent = vae.get("z_dim" if family in QWEN_EDIT else "latent_channels") or 0
    packed = f" ({patch * latent} as 2x2 patches)" if patch > 1 else ""
    if transformer.get("in_channels") != patch * latent:
        raise ModelError(f"{name}: the transformer takes {transformer.get('in_channels')} latent "
                         f"channels but the VAE gives {latent}{packed}; the components do not "
                         "belong together")
    if family in QWEN_EDIT and transformer.get("out_channels") != latent:  # unpatched on output
        raise ModelError(f"{name}: the transformer gives {transformer.get('out_channels')} latent "
                         f"channels but the VAE takes {latent}; the components do not belong "
                         "together")
    if family == "sd3":  # CLIP-L and CLIP-G side by side, padded to T5's width
        clip = sum(configs[f].get("hidden_size") or 0 for f in ("text_encoder", "text_encoder_2"))
        t5 = configs["text_encoder_3"].get("d_model") or 0
        if clip > t5:
            raise ModelError(f"{name}: the CLIP features ({clip} wide) are wider than T5's ({t5}); "
                             "the components do not belong together")
        pooled = sum(configs[f].get("projection_dim") or 0 for f in ("text_encoder", "text_encoder_2"))
        expected = {"joint_attention_dim": t5, "pooled_projection_dim": pooled}
    elif family == "flux2-klein":  # three of the Qwen3 encoder's layers side by side
        expected = {"joint_attention_dim": 3 * (configs["text_encoder"].get("hidden_size") or 0)}
    elif family in QWEN_EDIT:  # Qwen2.5-VL's last layer; its language model's width (older
        # transformers wrote it at the top level of the config, newer ones under text_config)
        text = configs["text_encoder"]
        expected = {"joint_attention_dim": (text.get("text_config") or text).get("hidden_size")}
    elif family.startswith("flux1"):  # T5's sequence, CLIP's pooled vector
        expected = {"joint_attention_dim": configs["text_encoder_2"].get("d_model"),
                    "pooled_projection_dim": configs["text_encoder"].get("hidden_size")}
    else:
        expected = {"cap_feat_dim": configs["text_encoder"].get("hidden_size")}
    for key, value in expected.items():
        if transformer.get(key) != value:
            raise ModelError(f"{name}: the transformer's {key} is {transformer.get(key)} but the "
                             f"text encoders give {value}; the components do not belong together")
