"""Load a flow family's transformer from one file in place of the model folder's, checked
against the folder's config before use: a GGUF (city96/unsloth Q8_0, Q4_K_M, ...) or a
.safetensors (the bf16 and fp8 single files ComfyUI and the model pages ship).

GGUF weights stay quantized in memory and are dequantized layer by layer as they run (diffusers'
GGUF backend), which is how a FLUX.2 klein or Z-Image fits a 12-16 GB GPU. A .safetensors file
loads through diffusers' ``from_single_file`` as it is; its fp8 (float8_e4m3fn, e5m2) weights are
up-cast to the run's dtype: fp8 halves the download and the disk, but diffusers' plain layers
compute in the run's dtype, not in fp8. The file is data: its tensors, after diffusers' conversion from the original
(ComfyUI) key layout, must be exactly the ones the folder's transformer config builds, with the
same shapes, or it is refused (so are ComfyUI's "fp8_scaled" files: their per-layer scales are
tensors no diffusers model has); a pickle file (.ckpt, .pt) is refused before it is opened.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import ModelError
from engine.model_checks import PICKLE_SUFFIXES

INSTALL = "pip install gguf"
SUFFIXES = (".gguf", ".safetensors")
FP8_DTYPES = ("F8_E4M3", "F8_E5M2")
# ComfyUI's all-in-one checkpoints keep the transformer under this prefix beside the VAE and the
# text encoders
FULL_CHECKPOINT_PREFIX = "model.diffusion_model."


def check_path(transformer: str) -> Path | None:
    """The transformer file named, checked before anything loads; None for the folder's."""
    if not (transformer or "").strip():
        return None
    path = Path(transformer.strip()).expanduser()
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise ModelError(f"{path.name}: a pickle file ({suffix}) can run code when it is loaded, so "
                         "transformer files are read as .gguf or .safetensors only; use the "
                         "model's .safetensors or a GGUF of it")
    if suffix not in SUFFIXES:
        raise ModelError(f"{path}: a transformer file must be a .gguf (Q8_0, Q4_K_M, ...) or a "
                         ".safetensors (bf16, fp8) of the model's transformer")
    if not path.is_file():
        raise ModelError(f"transformer file not found: {path}")
    return path


def load_transformer(path: Path, folder: Path, cls, dtype, name: str):
    """The ``cls`` transformer (a diffusers class) of the model in ``folder``, its weights read
    from the file ``path`` (.gguf or .safetensors) and computed in ``dtype``."""
    from diffusers import GGUFQuantizationConfig

    gguf = path.suffix.lower() == ".gguf"
    checkpoint = _transformer_part(_read_gguf(path) if gguf else _read_safetensors(path, dtype))
    config = cls.load_config(folder, subfolder="transformer", local_files_only=True)
    left = dict(checkpoint)  # what the conversion does not take (SD3's drops unknown tensors)
    converted = _converted(left, cls, config, path, name)
    _check_fits(converted, left, cls, config, path, name)
    quantization = {"quantization_config": GGUFQuantizationConfig(compute_dtype=dtype)} if gguf else {}
    try:
        module = cls.from_single_file(
            converted, config=str(folder), subfolder="transformer", local_files_only=True,
            torch_dtype=dtype, **quantization)
    except Exception as exc:
        raise ModelError(f"{name}: cannot load the transformer from {path.name}: {exc}") from None
    return module.eval().requires_grad_(False)


def _transformer_part(checkpoint: dict) -> dict:
    """An all-in-one checkpoint's transformer tensors, named as a transformer-only file's; a
    transformer-only file's as they are."""
    part = {key[len(FULL_CHECKPOINT_PREFIX):]: value for key, value in checkpoint.items()
            if key.startswith(FULL_CHECKPOINT_PREFIX)}
    return part or checkpoint


def _read_safetensors(path: Path, dtype) -> dict:
    """Tensor name -> tensor of the file, fp8 ones up-cast to ``dtype``; float weights only."""
    from safetensors import safe_open

    from engine.model_checks import check_dtypes
    from engine.single_file import read_header

    dtypes = read_header(path).dtypes  # a damaged or truncated file is refused here, by name
    if "scaled_fp8" in dtypes or any(key.endswith(".scale_weight") for key in dtypes):
        raise ModelError(f"{path.name} is a ComfyUI \"fp8_scaled\" file (fp8 weights with "
                         "per-layer scales), which diffusers does not read; use the plain fp8 or "
                         "bf16 file of the transformer")
    check_dtypes({k: d for k, d in dtypes.items() if d not in FP8_DTYPES}, path.name)
    # Only the transformer's tensors are read: an all-in-one file's VAE and text encoders stay on
    # disk (they are most of its size), and fp8 ones are up-cast one at a time.
    keys = [k for k in dtypes if k.startswith(FULL_CHECKPOINT_PREFIX)] or list(dtypes)
    try:
        with safe_open(str(path), framework="pt") as file:
            checkpoint = {key: _up_cast(file.get_tensor(key), dtypes[key], dtype) for key in keys}
    except Exception as exc:
        raise ModelError(f"{path.name}: not a readable safetensors file ({exc})") from None
    if not checkpoint:
        raise ModelError(f"{path} holds no tensors")
    return checkpoint


def _up_cast(tensor, stored: str, dtype):
    """``tensor`` in ``dtype`` when the file stores it as fp8 (``stored``), else as it is."""
    return tensor.to(dtype) if stored in FP8_DTYPES else tensor


def _read_gguf(path: Path) -> dict:
    """Tensor name -> tensor (GGUFParameter for quantized ones) of the file."""
    try:
        import gguf  # noqa: F401  (diffusers reads the file with it)
    except ImportError:
        raise ModelError(f"loading a .gguf transformer needs the gguf package: {INSTALL}") from None
    from diffusers.models.model_loading_utils import load_gguf_checkpoint

    try:
        checkpoint = load_gguf_checkpoint(str(path))
    except Exception as exc:  # a truncated file, another format, an unsupported quant type
        raise ModelError(f"{path} is not a readable GGUF file: {exc}") from None
    if not checkpoint:
        raise ModelError(f"{path} holds no tensors")
    return checkpoint


def _converted(checkpoint: dict, cls, config: dict, path: Path, name: str) -> dict:
    """The checkpoint in diffusers' key layout (diffusers' own conversion for the class, which
    takes the tensors it converts out of ``checkpoint``)."""
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

    convert = SINGLE_FILE_LOADABLE_CLASSES[cls.__name__]["checkpoint_mapping_fn"]
    try:
        return convert(checkpoint=checkpoint, config=config)
    except Exception as exc:  # keys of another model: the conversion finds what it needs missing
        raise ModelError(f"{path.name} does not fit {name}: it holds no {cls.__name__} in a "
                         f"layout diffusers can convert ({type(exc).__name__}: {exc}). Use a "
                         "transformer file of this model's family and size") from None


def _check_fits(converted: dict, left: dict, cls, config: dict, path: Path, name: str) -> None:
    """Refuse a file whose tensors (``converted``, and ``left`` unconverted) are not those of the
    transformer the folder's config builds."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        expected = {k: tuple(v.shape) for k, v in cls.from_config(config).state_dict().items()}
    shapes = {k: tuple(getattr(v, "quant_shape", v.shape)) for k, v in converted.items()}
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected) | set(left))
    wrong = sorted(k for k in set(expected) & set(shapes) if expected[k] != shapes[k])
    if missing or extra or wrong:
        found = [f"{len(missing)} tensors missing (e.g. {missing[0]})" if missing else "",
                 f"{len(extra)} unknown (e.g. {extra[0]})" if extra else "",
                 f"{len(wrong)} of another shape (e.g. {wrong[0]}: {shapes[wrong[0]]} where "
                 f"{expected[wrong[0]]} is needed)" if wrong else ""]
        raise ModelError(f"{path.name} does not fit {name}'s transformer: "
                         f"{'; '.join(f for f in found if f)}. Use a transformer file of this "
                         "model's family and size")
