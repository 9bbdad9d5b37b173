"""Load single-file SD 1.x / 2.x and SDXL `.safetensors` checkpoints fully offline, with clear refusals.

A single-file checkpoint holds only weights in the original (LDM) key layout. diffusers needs
configs for every component; instead of fetching them from the hub we ship them under
resources/model_configs/<family>/ and build the CLIP tokenizers from open-clip-torch's BPE file.
Before any weight is read, the safetensors header (names, shapes, offsets) is checked: damaged
or truncated files, SDXL refiners and other architectures are refused with a message naming the
file, and the weights are matched against the family's architecture on the meta device so that a
missing tensor is an error rather than a silently random layer. Inpainting checkpoints (a UNet
that takes 9 input channels) load with the family's configs, their UNet widened to 9 channels.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from engine import families
from engine.errors import ModelError
from engine.model_checks import check_dtypes

FAMILIES = ("sd1", "sd2", "sd2-v", "sdxl")
FAMILY_LABELS = {
    "sd1": "SD 1.x",
    "sd2": "SD 2.x (512, epsilon)",
    "sd2-v": "SD 2.x (768, v-prediction)",
    "sdxl": "SDXL",
}

_UNET = "model.diffusion_model."
_VAE = "first_stage_model."
_CLIP_TOKENS = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
_OPEN_CLIP_TOKENS = "cond_stage_model.model.token_embedding.weight"
_CONV_IN = _UNET + "input_blocks.0.0.weight"
# An inpainting UNet reads the latent, the mask and the masked photo's latent (4 + 1 + 4).
INPAINTING_CHANNELS = 9
_LOADED = (_UNET, _VAE, "cond_stage_model.")  # the rest (EMA copies, counters) is never read
_MAX_HEADER = 100 * 1024 * 1024  # real headers are a few hundred KB; more means a damaged file

# safetensors dtype names -> torch attribute names (resolved lazily: no torch import here)
_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}


@dataclass
class Header:
    """What a safetensors file says about itself, read without loading any tensor."""

    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    metadata: dict[str, str] = field(default_factory=dict)


def read_header(path: Path) -> Header:
    """Parse and sanity-check a safetensors header; ModelError for damaged or truncated files."""
    path = Path(path)
    name = path.name
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise ModelError(f"{name}: the file is empty or too short to be a safetensors file")
            length = int.from_bytes(prefix, "little")
            if length < 2 or length > _MAX_HEADER or 8 + length > size:
                raise ModelError(
                    f"{name}: not a valid safetensors file (damaged header or truncated download); "
                    "download it again"
                )
            raw = handle.read(length)
    except OSError as exc:
        raise ModelError(f"{name}: cannot read the file ({exc.strerror or exc})") from exc
    try:
        entries = json.loads(raw.decode("utf-8"))
        if not isinstance(entries, dict):
            raise ValueError("header is not a JSON object")
        metadata = entries.pop("__metadata__", None) or {}
        shapes, dtypes, end = {}, {}, 0
        for key, entry in entries.items():
            shapes[key] = tuple(int(d) for d in entry["shape"])
            dtypes[key] = str(entry["dtype"])
            begin, stop = (int(v) for v in entry["data_offsets"])
            if not 0 <= begin <= stop:
                raise ValueError(f"bad offsets for {key}")
            end = max(end, stop)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, OverflowError, RecursionError) as exc:
        raise ModelError(
            f"{name}: not a valid safetensors file (its header cannot be read: {exc}); download it again"
        ) from exc
    data_size = size - 8 - length
    if end > data_size:
        raise ModelError(
            f"{name}: the file is truncated ({size:,} bytes, needs {8 + length + end:,}); "
            "the download was probably interrupted: download it again"
        )
    if not shapes:
        raise ModelError(f"{name}: the file holds no tensors")
    return Header(shapes, dtypes, {str(k): str(v) for k, v in dict(metadata).items()})


def detect_family(path: Path) -> str:
    """"sd1", "sd2", "sd2-v" or "sdxl" for a single-file checkpoint; ModelError for anything else."""
    path = Path(path)
    return family_from_header(read_header(path), path.name)


def family_from_header(header: Header, name: str) -> str:
    """The family that a checkpoint's tensor names and shapes describe (see detect_family)."""
    shapes = header.shapes
    keys = shapes.keys()
    sdxl = families.checkpoint_family(keys, name)
    if not any(k.startswith(_UNET) for k in keys):
        raise ModelError(f"{name}: {_what_it_is(keys)}; expected a full SD 1.x/2.x checkpoint")
    conv_in = shapes.get(_CONV_IN)
    if conv_in is None or len(conv_in) != 4:
        raise ModelError(f"{name}: unknown architecture (no UNet input layer); expected SD 1.x/2.x")
    if conv_in[1] in (4, INPAINTING_CHANNELS) and sdxl:
        if not any(k.startswith(_VAE) for k in keys):
            raise ModelError(f"{name}: the checkpoint has no VAE weights (first_stage_model.*)")
        return sdxl
    if conv_in[1] not in (4, INPAINTING_CHANNELS):
        raise ModelError(
            f"{name}: unsupported architecture (the UNet takes {conv_in[1]} input channels, as depth, "
            "pix2pix or upscaler models do); use a regular SD 1.x/2.x text-to-image model"
        )
    widths = {s[1] for k, s in shapes.items() if k.startswith(_UNET) and k.endswith("attn2.to_k.weight")}
    if widths == {768}:
        base = "sd1"
    elif widths == {1024}:
        base = "sd2"
    else:
        found = ", ".join(str(w) for w in sorted(widths)) or "none"
        raise ModelError(
            f"{name}: unknown architecture (text cross-attention width {found}; SD 1.x uses 768, "
            "SD 2.x 1024)"
        )
    if not any(k.startswith(_VAE) for k in keys):
        raise ModelError(f"{name}: the checkpoint has no VAE weights (first_stage_model.*)")
    text_key = _CLIP_TOKENS if base == "sd1" else _OPEN_CLIP_TOKENS
    if text_key not in shapes:
        raise ModelError(
            f"{name}: the checkpoint has no {'CLIP' if base == 'sd1' else 'OpenCLIP'} text encoder "
            f"weights ({text_key.rsplit('.', 3)[0]}.*), which a {FAMILY_LABELS[base]} model needs"
        )
    if base == "sd1":
        return "sd1"
    return "sd2-v" if _looks_v_prediction(header, name) else "sd2"


def _looks_v_prediction(header: Header, name: str) -> bool:
    """SD 2.x weights do not say how they were trained; use what evidence there is.

    In order: an explicit marker tensor ("v_pred", written by some trainers), the ModelSpec
    metadata field, the official file names ("768-v" / "_768" = v; "512" = epsilon). Without
    any clue we assume v-prediction, because the 768 model is the common SD 2.x base; callers
    can override with ``family=``.
    """
    if "v_pred" in header.shapes:
        return True
    spec = header.metadata.get("modelspec.prediction_type", "").lower()
    if spec:
        return spec.startswith("v")
    lowered = name.lower()
    if re.search(r"v[-_]?pred", lowered) or "768" in lowered:
        return True
    if "512" in lowered or "base" in lowered or re.search(r"eps(ilon)?\b", lowered):
        return False
    return True


def _what_it_is(keys) -> str:
    """A best guess at what a non-checkpoint safetensors file is, for the error message."""
    keys = list(keys)
    if any("lora" in k.lower() for k in keys[:200]):
        return "this is a LoRA, not a full model"
    if any(k.startswith(("down_blocks.", "mid_block.", "up_blocks.")) for k in keys):
        return "this holds diffusers-format UNet weights only; open the model's whole folder instead"
    if any(k.startswith(("encoder.", "decoder.")) for k in keys):
        return "this is a VAE on its own, not a full model"
    if any(k.startswith(("text_model.", "transformer.")) for k in keys):
        return "this is a text encoder on its own, not a full model"
    return "this does not contain Stable Diffusion UNet weights"


def config_folder_for(family: str) -> Path:
    """The shipped diffusers config folder for a family."""
    from engine.resources import resource_path

    folder = resource_path("model_configs", family)
    if not (folder / "model_index.json").is_file():
        raise ModelError(
            f"the model configuration files for {FAMILY_LABELS.get(family, family)} are missing "
            f"({folder}); reinstall DiffEdit Studio"
        )
    return folder


def is_inpainting(header: Header) -> bool:
    """Whether the checkpoint's UNet is an inpainting one (family_from_header accepted it)."""
    return header.shapes[_CONV_IN][1] == INPAINTING_CHANNELS


@contextmanager
def inpainting_configs(config_folder: Path) -> Iterator[Path]:
    """A temporary copy of ``config_folder`` for the inpainting variant of its model: the UNet
    takes 9 input channels and the pipeline is the family's inpainting one."""
    with tempfile.TemporaryDirectory(prefix="diffedit-inpaint-configs-") as temporary:
        folder = Path(temporary) / config_folder.name
        shutil.copytree(config_folder, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
        unet_config = folder / "unet" / "config.json"
        unet_config.write_text(json.dumps({**json.loads(unet_config.read_text()),
                                           "in_channels": INPAINTING_CHANNELS}))
        index_file = folder / "model_index.json"
        index = json.loads(index_file.read_text())
        sdxl = "text_encoder_2" in index
        index["_class_name"] = ("StableDiffusionXLInpaintPipeline" if sdxl
                                else "StableDiffusionInpaintPipeline")
        index_file.write_text(json.dumps(index))
        yield folder


def check_weights(header: Header, config_folder: Path, name: str) -> None:
    """Match the checkpoint's tensors against the architecture in ``config_folder``.

    Runs diffusers' own key conversion on meta tensors built from the header (no data read,
    no memory), then compares with each component built on the meta device. diffusers itself
    loads with ``strict=False``, so without this a missing tensor would stay randomly
    initialised and the user would get noise with no error.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders import single_file_utils as sfu
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    meta = {
        key: torch.empty(shape, dtype=getattr(torch, _DTYPES.get(header.dtypes[key], "float32")), device="meta")
        for key, shape in header.shapes.items()
    }
    unet_config = UNet2DConditionModel.load_config(config_folder, subfolder="unet")
    vae_config = AutoencoderKL.load_config(config_folder, subfolder="vae")
    text_config = CLIPTextConfig.from_pretrained(config_folder, subfolder="text_encoder")
    sdxl = (config_folder / "text_encoder_2").is_dir()
    with torch.device("meta"):
        components = {
            "UNet": UNet2DConditionModel.from_config(unet_config),
            "VAE": AutoencoderKL.from_config(vae_config),
            "text encoder": CLIPTextModel(text_config),
        }
        if sdxl:
            components["second text encoder"] = CLIPTextModelWithProjection(
                CLIPTextConfig.from_pretrained(config_folder, subfolder="text_encoder_2"))
    try:
        converted = {
            "UNet": sfu.convert_ldm_unet_checkpoint(meta, unet_config),
            "VAE": sfu.convert_ldm_vae_checkpoint(meta, vae_config),
        }
        for label, model in components.items():
            if label != "UNet" and label != "VAE":
                converted[label] = _convert_text_encoder(sfu, model, meta, second=label != "text encoder")
    except (KeyError, IndexError, RuntimeError, ValueError) as exc:
        raise ModelError(f"{name}: the checkpoint's layout is not {'SDXL' if sdxl else 'SD 1.x/2.x'} "
                         f"({exc})") from exc
    for label, model in components.items():
        got = converted[label]
        missing, wrong = [], []
        for key, parameter in model.named_parameters():
            tensor = got.get(key)
            if tensor is None:
                missing.append(key)
            elif tuple(tensor.shape) != tuple(parameter.shape):
                wrong.append(f"{key} is {tuple(tensor.shape)}, expected {tuple(parameter.shape)}")
        if missing or wrong:
            problems = []
            if missing:
                problems.append(f"{len(missing)} weights missing (e.g. {missing[0]})")
            if wrong:
                problems.append(f"{len(wrong)} with another shape (e.g. {wrong[0]})")
            raise ModelError(
                f"{name}: the {label} weights do not match the expected architecture: "
                + "; ".join(problems)
                + ". The file may be damaged, pruned, or a different kind of model"
            )


def _convert_text_encoder(sfu, model, checkpoint, second: bool = False):
    """diffusers' CLIP / OpenCLIP key conversion, keyed like the installed CLIPTextModel.

    SD 1.x has CLIP, SD 2.x OpenCLIP; SDXL has both (``second``: its OpenCLIP bigG encoder).
    """
    if second:
        converted = sfu.convert_open_clip_checkpoint(model, checkpoint, prefix=families.SDXL_CLIP_G)
    elif _CLIP_TOKENS in checkpoint or any(k.startswith(families.SDXL_CLIP_L) for k in checkpoint):
        converted = sfu.convert_ldm_clip_checkpoint(checkpoint)
    else:
        converted = sfu.convert_open_clip_checkpoint(model, checkpoint, prefix="cond_stage_model.model.")
    if not hasattr(model, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel
        converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    return converted


def load_single_file(path: Path, *, dtype, family: str | None = None, config_folder: Path | None = None):
    """Load a single-file SD 1.x/2.x or SDXL ``.safetensors`` checkpoint as a diffusers
    StableDiffusion(XL)Pipeline, or StableDiffusion(XL)InpaintPipeline for an inpainting one.

    ``family`` ("sd1" | "sd2" | "sd2-v") overrides detection of the prediction type for SD 2.x
    (the weights cannot tell); it may not contradict the architecture. ``config_folder``
    replaces the shipped configs (tests use a tiny architecture; power users a custom one).
    Nothing is downloaded. Components stay on the CPU; the caller moves them to the device.
    """
    import torch

    path = Path(path)
    name = path.name
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    if path.suffix.lower() != ".safetensors":
        raise ModelError(
            f"{name}: only .safetensors single-file checkpoints are supported here "
            "(pickle formats such as .ckpt can run code when loaded)"
        )
    if family is not None and family not in FAMILIES:
        raise ModelError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise ModelError("dtype must be a torch dtype such as torch.float16 or 'float32'")

    header = read_header(path)
    detected = family_from_header(header, name)
    check_dtypes({k: v for k, v in header.dtypes.items() if k.startswith(_LOADED)}, name)
    if family is not None and family[:3] != detected[:3]:
        raise ModelError(
            f"{name}: the weights are a {FAMILY_LABELS[detected].split(' (')[0]} model, "
            f"not {FAMILY_LABELS[family].split(' (')[0]} as requested"
        )
    family = family or detected
    folder = Path(config_folder) if config_folder is not None else config_folder_for(family)
    configs = inpainting_configs(folder) if is_inpainting(header) else nullcontext(folder)
    with configs as folder:
        check_weights(header, folder, name)
        return _from_single_file(path, folder, family, dtype, is_inpainting(header))


def _from_single_file(path: Path, folder: Path, family: str, dtype, inpainting: bool):
    """diffusers' pipeline for ``family`` from the checkpoint with the configs in ``folder``."""
    import diffusers

    sdxl = family == "sdxl"
    pipeline = getattr(diffusers, "StableDiffusion" + ("XL" if sdxl else "")
                       + ("InpaintPipeline" if inpainting else "Pipeline"))
    if sdxl:
        extra = {"tokenizer": _tokenizer_for("sd1"), "tokenizer_2": _tokenizer_for("sd2")}
    else:
        extra = {"tokenizer": _tokenizer_for(family), "safety_checker": None,
                 "feature_extractor": None, "requires_safety_checker": False}
    label = FAMILY_LABELS[family] + (" inpainting" if inpainting else "")
    try:
        return pipeline.from_single_file(str(path), config=str(folder), local_files_only=True,
                                         torch_dtype=dtype, **extra)
    except ModelError:
        raise
    except Exception as exc:  # diffusers raises many types; the user needs the file and the cause
        raise ModelError(f"{path.name}: could not be loaded as {label}: {exc}") from exc


def _tokenizer_for(family: str):
    """The offline CLIP tokenizer; SD 2.x (OpenCLIP) pads with "!" rather than <|endoftext|>.
    SDXL's two are SD 1.x's (CLIP ViT-L) and SD 2.x's (OpenCLIP ViT-bigG)."""
    from engine.clip_tokenizer import build_clip_tokenizer
    from engine.config import cache_dir

    pad = "<|endoftext|>" if family == "sd1" else "!"
    folder = cache_dir() / "tokenizers" / ("clip-sd1" if family == "sd1" else "clip-sd2")
    return build_clip_tokenizer(folder, pad_token=pad)
