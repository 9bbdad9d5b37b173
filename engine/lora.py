"""LoRA files on a loaded model: ``PATH[:WEIGHT]`` specs, a family check, diffusers' loading.

diffusers reads the common LoRA layouts (kohya ``lora_unet_*``, diffusers/peft ``unet.*``) through
its pipelines' ``load_lora_weights`` with the peft backend; the pipeline is built around the
already loaded components, so nothing is loaded twice. The adapters stay unfused: each keeps its
weight exactly, and weight 0 gives the base model's output byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.errors import InputError, ModelError

WEIGHT_RANGE = (-10.0, 10.0)
# The text-feature width a UNet's cross-attention reads names its family (for messages).
_WIDTHS = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}
_DOWN = ("lora_down.weight", "lora_A.weight", "lora.down.weight")  # kohya, peft, old diffusers


@dataclass(frozen=True)
class LoraSpec:
    path: Path
    weight: float = 1.0

    @property
    def label(self) -> str:
        """``name:weight`` as the metadata and the history show it."""
        return f"{self.path.stem}:{self.weight:g}"

    @property
    def spec(self) -> str:
        """``PATH:WEIGHT``, which ``parse`` reads back (the app's saved list)."""
        return f"{self.path}:{self.weight:g}"


def parse(spec: str) -> LoraSpec:
    """``PATH`` or ``PATH:WEIGHT`` (a Windows drive letter's colon belongs to the path)."""
    text = (spec or "").strip()
    path, _, weight = text.rpartition(":")
    try:
        value = float(weight) if path else None
    except ValueError:
        value = None
    if value is None:
        path, value = text, 1.0
    if not path:
        raise InputError("--lora needs a file: --lora PATH[:WEIGHT], e.g. --lora style.safetensors:0.8")
    low, high = WEIGHT_RANGE
    if not low <= value <= high:
        raise InputError(f"--lora {text}: the weight {value:g} is outside {low:g}..{high:g}")
    return LoraSpec(Path(path).expanduser(), value)


def apply(model, specs) -> None:
    """Load each LoRA onto ``model``'s UNet (and its text encoders where the file has them)."""
    specs = list(specs)
    if not specs:
        return
    for spec in specs:  # every file checked before any is loaded
        check_family(spec, model)
    pipe = _pipeline(model)
    names = []
    for index, spec in enumerate(specs):
        name = f"lora{index}"
        try:
            pipe.load_lora_weights(str(spec.path), adapter_name=name)
        except ImportError as exc:
            raise ModelError(f"LoRA loading needs the peft package ({exc}); install it with "
                             "`pip install peft`") from None
        except Exception as exc:  # diffusers raises many types for files it cannot map
            raise ModelError(f"{spec.path.name}: not a LoRA this model can take ({exc})") from None
        names.append(name)
    pipe.set_adapters(names, adapter_weights=[spec.weight for spec in specs])
    model.loras = [spec.label for spec in specs]


def check_file(spec: LoraSpec) -> dict[str, tuple[int, ...]]:
    """The LoRA file's tensor shapes; InputError unless it is a safetensors LoRA (checked before
    the model loads, so a wrong path is reported at once)."""
    from engine.single_file import read_header

    path = spec.path
    if not path.is_file():
        raise InputError(f"--lora {path}: no such file")
    if path.suffix.lower() != ".safetensors":
        raise InputError(f"{path.name}: only .safetensors LoRA files are loaded (pickle files can "
                         "run code when loaded)")
    shapes = read_header(path).shapes
    if not any("lora" in key.lower() for key in shapes):
        raise InputError(f"{path.name}: not a LoRA file (no LoRA weights in it)")
    return shapes


def check_family(spec: LoraSpec, model) -> None:
    """InputError unless ``spec`` is a safetensors LoRA made for ``model``'s family."""
    path = spec.path
    shapes = check_file(spec)
    if model.unet is None:
        raise InputError(f"{path.name}: LoRAs load on SD 1.x/2.x and SDXL models only; the "
                         f"loaded model ({model.family}) is a diffusion transformer")
    width = model.unet.config.cross_attention_dim
    # A cross-attention key projection reads the text features: its input width names the family.
    widths = {shape[1] for key, shape in shapes.items()
              if "attn2" in key and "to_k" in key and key.endswith(_DOWN) and len(shape) == 2}
    second_encoder = any(k.startswith(("lora_te2_", "text_encoder_2.", "te2.")) for k in shapes)
    if (widths and widths != {width}) or (second_encoder and model.text_encoder_2 is None):
        found = next(iter(widths)) if widths else _SDXL_WIDTH
        raise InputError(f"{path.name}: this LoRA is for {_family(found)} models and the loaded "
                         f"model is {_family(width)}; choose a LoRA made for it")


_SDXL_WIDTH = 2048  # a LoRA for a second text encoder is an SDXL one


def _family(width: int) -> str:
    return _WIDTHS.get(width, f"{width}-wide text features")


def _pipeline(model):
    """A diffusers pipeline around the loaded components (for its LoRA loader only)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    scheduler = DDIMScheduler.from_config(model.scheduler_config)
    if model.text_encoder_2 is not None:
        return StableDiffusionXLPipeline(
            vae=model.vae, text_encoder=model.text_encoder, text_encoder_2=model.text_encoder_2,
            tokenizer=model.tokenizer, tokenizer_2=model.tokenizer_2, unet=model.unet,
            scheduler=scheduler)
    return StableDiffusionPipeline(
        vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer, unet=model.unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
