"""LoRA files on a loaded model: ``PATH[:WEIGHT]`` specs, a family check, diffusers' loading, and
the step count of a few-step LoRA (Lightning, Turbo, Hyper, LCM) and Qwen-Image-Lightning's shift.

diffusers reads the common LoRA layouts (kohya ``lora_unet_*``, diffusers/peft ``unet.*`` and
``transformer.*``, the flow families' original checkpoint names) through its pipelines'
``load_lora_weights`` with the peft backend: SD and SDXL's UNet, and the transformer of FLUX.2
klein, SD3.5, Z-Image, FLUX.1 (Kontext) and Qwen-Image-Edit (each family's pipeline has a LoRA
loader); the pipeline is built around the already loaded components, so nothing is loaded twice.
The adapters stay unfused: each keeps its weight exactly, and weight 0 gives the base model's
output byte for byte.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InputError, ModelError

WEIGHT_RANGE = (-10.0, 10.0)
# The text-feature width a UNet's cross-attention reads names its family (for messages).
_WIDTHS = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}
_DOWN = ("lora_down.weight", "lora_A.weight", "lora.down.weight")  # kohya, peft, old diffusers
_UNET, _FLUX, _FLUX1, _QWEN = "unet", "flux", "flux1", "qwen"
# The transformer families a LoRA loads on (through their pipelines' LoRA loaders), with the
# marks (below) of the LoRAs each takes: FLUX's original names fit FLUX.1 and FLUX.2 alike, a
# Qwen-Image LoRA fits both Qwen-Image-Edit releases
FITS = {"flux2-klein": {_FLUX, "flux2-klein"}, "sd3": {"sd3"}, "zimage": {"zimage"},
        "flux1": {_FLUX, _FLUX1}, "flux1-kontext": {_FLUX, _FLUX1},
        "qwen-image-edit": {_QWEN}, "qwen-image-edit-plus": {_QWEN}}
# Module names only one family's LoRAs change, in diffusers', kohya's and the original
# checkpoints' spellings (the UNet's first: its blocks hold "attn2" and "ff.net" too; FLUX.1's
# and FLUX.2's original names are alike, their diffusers names not)
_MARKS = {
    _UNET: r"down_blocks|up_blocks|mid_block|input_blocks|output_blocks|middle_block",
    _FLUX: r"double_blocks|single_blocks|single_transformer_blocks",
    "flux2-klein": r"to_qkv_mlp_proj|stream_modulation",
    _FLUX1: r"proj_mlp",
    "sd3": r"joint_blocks|context_block|x_block|attn2|ff_context[._]net|ff[._]net",
    "zimage": r"context_refiner|noise_refiner|layers[._]\d+[._](attention|feed_forward)",
    _QWEN: r"(img|txt)_(mlp[._]net|mod[._]1[._])",  # FLUX.1's originals: img_mlp.0, img_mod.lin
}
_LABELS = {_UNET: "SD 1.x/2.x or SDXL", _FLUX: "FLUX", _FLUX1: "FLUX.1", _QWEN: "Qwen-Image"}
# A few-step LoRA names itself so ("Qwen-Image-Lightning-4steps", "Hyper-SD3-8steps-lora",
# "lcm-lora-sdxl") or says its steps in its metadata; without a count it runs 8 steps, the top of
# the 4-8 they are made for.
_FEW_STEP_WORDS = re.compile(r"lightning|turbo|hyper|lcm|tcd|dmd", re.IGNORECASE)
_STEP_COUNT = re.compile(r"(\d+)[-_ ]?steps?(?![a-z])", re.IGNORECASE)
STEP_METADATA = ("num_inference_steps", "inference_steps", "sampling_steps")
FEW_STEP_DEFAULT = 8
MAX_FEW_STEPS = 16
# lightx2v's Qwen-Image(-Edit)-Lightning LoRAs are distilled at a fixed exponential shift,
# mu = log 3 at every size (their model card's scheduler config), without a terminal stretch
LIGHTNING_SHIFT = {"use_dynamic_shifting": True, "time_shift_type": "exponential", "shift": 1.0,
                   "base_shift": math.log(3), "max_shift": math.log(3), "shift_terminal": None}


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
    """Load each LoRA onto ``model``'s UNet or transformer (and its text encoders where the file
    has them); ``model.lora_steps`` becomes the first few-step LoRA's steps (``few_steps``), and
    on Qwen-Image-Edit such a LoRA's schedule is Lightning's fixed shift (``LIGHTNING_SHIFT``)."""
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
    # a few-step LoRA switched off (weight 0) leaves the model's own steps
    model.lora_steps = next((n for spec in specs if spec.weight and (n := few_steps(spec))), 0)
    if model.lora_steps and _QWEN in FITS.get(model.family, ()):
        # a new dict: a copy of the model that shares the loaded config keeps it as it was
        model.scheduler_config = {**model.scheduler_config, **LIGHTNING_SHIFT}


def few_steps(spec: LoraSpec) -> int:
    """The steps a few-step LoRA (Lightning, Turbo, Hyper, LCM, ...) samples at, from its
    metadata or its file name; 0 for any other LoRA."""
    from engine.single_file import read_header

    metadata = read_header(spec.path).metadata
    for key in STEP_METADATA:
        text = str(metadata.get(key, "")).strip()
        if text.isascii() and text.isdecimal():  # a full schedule's count is no few-step
            return int(text) if len(text) <= 3 and int(text) <= MAX_FEW_STEPS else 0
    count = _STEP_COUNT.search(spec.path.stem)
    if count and 0 < int(count.group(1)) <= MAX_FEW_STEPS:
        return int(count.group(1))
    return FEW_STEP_DEFAULT if _FEW_STEP_WORDS.search(spec.path.stem) else 0


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
    """InputError unless ``spec`` is a safetensors LoRA made for ``model``'s family (and, on a
    transformer, for its layers' sizes)."""
    path = spec.path
    shapes = check_file(spec)
    if model.unet is None:
        loaded = _flow_label(model.family)
        marked = _marked_family(shapes, [name for name, _ in model.transformer.named_modules()])
        if marked not in FITS[model.family] | {None}:
            raise InputError(f"{path.name}: this LoRA is for {_label(marked)} models and the "
                             f"loaded model is {loaded}; choose a LoRA made for it")
        _check_layers(spec, model, loaded)
        return
    width = model.unet.config.cross_attention_dim
    marked = _marked_family(shapes)
    if marked not in (None, _UNET):
        raise InputError(f"{path.name}: this LoRA is for {_label(marked)} models and the loaded "
                         f"model is {_family(width)}; choose a LoRA made for it")
    # A cross-attention key projection reads the text features: its input width names the family.
    widths = {shape[1] for key, shape in shapes.items()
              if "attn2" in key and "to_k" in key and key.endswith(_DOWN) and len(shape) == 2}
    second_encoder = any(k.startswith(("lora_te2_", "text_encoder_2.", "te2.")) for k in shapes)
    if (widths and widths != {width}) or (second_encoder and model.text_encoder_2 is None):
        found = next(iter(widths)) if widths else _SDXL_WIDTH
        raise InputError(f"{path.name}: this LoRA is for {_family(found)} models and the loaded "
                         f"model is {_family(width)}; choose a LoRA made for it")


def _marked_family(shapes: dict, own: list[str] | tuple = ()) -> str | None:
    """The family whose module names the LoRA's keys hold (engine family or _UNET); None when
    they name none, or more than one. A mark the loaded transformer's ``own`` module names hold
    too is no sign of another family (FLUX.1's double blocks have SD3's ``ff.net``)."""
    own = " ".join(own)
    own += " " + own.replace(".", "_")  # kohya's spelling
    found = {family for family, marks in _MARKS.items()
             if any((m := re.search(marks, key)) and m.group(0) not in own for key in shapes)}
    if _UNET in found:
        return _UNET
    if len(found) > 1:
        found.discard(_FLUX)  # FLUX.1's or FLUX.2's, told apart by its diffusers names
    return found.pop() if len(found) == 1 else None


def _check_layers(spec: LoraSpec, model, loaded: str) -> None:
    """Every transformer layer the LoRA changes (read by the family pipeline's own converter,
    which knows the kohya and original layouts) exists in the loaded transformer with the LoRA's
    sizes: klein 9B's LoRA on klein 4B, or one for another family whose names look alike."""
    try:
        state = _pipeline_class(model.family).lora_state_dict(str(spec.path))
    except Exception as exc:  # diffusers raises many types for layouts it cannot convert
        raise InputError(f"{spec.path.name}: not a LoRA for {loaded} ({exc})") from None
    layers = dict(model.transformer.named_modules())
    if not any(key.startswith(("transformer.", "text_encoder")) for key in state):
        raise InputError(f"{spec.path.name}: this LoRA changes no layer of the loaded {loaded} "
                         "model; choose a LoRA made for it")
    for key, tensor in state.items():
        name, _, part = key.removeprefix("transformer.").rpartition(".lora_")
        if not key.startswith("transformer.") or part not in ("A.weight", "B.weight"):
            continue  # a text encoder's part, or an alpha
        layer = layers.get(name)
        if layer is None or not hasattr(layer, "in_features"):
            raise InputError(f"{spec.path.name}: this LoRA changes the layer {name}, which the "
                             f"loaded {loaded} model does not have; choose a LoRA made for it")
        size, needed = ((tensor.shape[1], layer.in_features) if part[0] == "A"
                        else (tensor.shape[0], layer.out_features))
        if size != needed:
            raise InputError(f"{spec.path.name}: this LoRA is for a model of another size (its "
                             f"{name} has {size} features where the loaded {loaded} has "
                             f"{needed}); choose a LoRA made for this model")


_SDXL_WIDTH = 2048  # a LoRA for a second text encoder is an SDXL one


def _family(width: int) -> str:
    return _WIDTHS.get(width, f"{width}-wide text features")


def _flow_label(family: str) -> str:
    from engine.flow_models import FAMILIES

    return FAMILIES[family].label if family in FAMILIES else family


def _label(marked: str) -> str:
    return _LABELS.get(marked) or _flow_label(marked)


def _pipeline_class(family: str):
    """The diffusers text-to-image pipeline of a flow family (each has a LoRA loader mixin)."""
    import diffusers

    from engine.families import FLOW_PIPELINES

    return getattr(diffusers, next(p for p, f in FLOW_PIPELINES.items() if f == family))


def _pipeline(model):
    """A diffusers pipeline around the loaded components (for its LoRA loader only)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    if model.unet is None:
        return _flow_pipeline(model)
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


def _flow_pipeline(model):
    """The flow family's pipeline around the loaded transformer, VAE and text encoders (the parts
    its LoRA loader never reads, Qwen's processor, left out)."""
    import inspect

    from diffusers import FlowMatchEulerDiscreteScheduler

    from engine.flow_models import FAMILIES

    parts = {"transformer": model.transformer, "vae": model.vae,
             "scheduler": FlowMatchEulerDiscreteScheduler.from_config(model.scheduler_config)}
    for part in FAMILIES[model.family].text:  # LoadedModel names them as the folders are named
        parts[part.folder] = getattr(model, part.folder)
        parts[part.tokenizer_folder] = getattr(model, part.tokenizer_folder)
    pipeline = _pipeline_class(model.family)
    unused = inspect.signature(pipeline.__init__).parameters.keys() - parts.keys() - {"self"}
    return pipeline(**parts, **dict.fromkeys(unused))
