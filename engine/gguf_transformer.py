"""Load a flow family's transformer from a GGUF file (city96/unsloth Q8_0, Q4_K_M, ...) in place of
the model folder's, checked against the folder's config before use.

The weights stay quantized in memory and are dequantized layer by layer as they run (diffusers'
GGUF backend), which is how a FLUX.2 klein or Z-Image fits a 12-16 GB GPU. The file is data: its
tensors, after diffusers' conversion from the original (ComfyUI) key layout, must be exactly the
ones the folder's transformer config builds, with the same shapes, or it is refused.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import ModelError

INSTALL = "pip install gguf"


def load_transformer(path: Path, folder: Path, cls, dtype, name: str):
    """The ``cls`` transformer (a diffusers class) of the model in ``folder``, its weights read
    from the GGUF file ``path`` and computed in ``dtype``."""
    import torch
    from diffusers import GGUFQuantizationConfig

    checkpoint = _read(path)
    config = cls.load_config(folder, subfolder="transformer", local_files_only=True)
    converted = _converted(checkpoint, cls, config, path, name)
    _check_fits(converted, cls, config, path, name)
    try:
        module = cls.from_single_file(
            converted, config=str(folder), subfolder="transformer", local_files_only=True,
            quantization_config=GGUFQuantizationConfig(compute_dtype=dtype), torch_dtype=dtype)
    except Exception as exc:
        raise ModelError(f"{name}: cannot load the transformer from {path.name}: {exc}") from None
    return module.eval().requires_grad_(False)


def _read(path: Path) -> dict:
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
    """The checkpoint in diffusers' key layout (diffusers' own conversion for the class)."""
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

    convert = SINGLE_FILE_LOADABLE_CLASSES[cls.__name__]["checkpoint_mapping_fn"]
    try:
        return convert(checkpoint=dict(checkpoint), config=config)
    except Exception as exc:  # keys of another model: the conversion finds what it needs missing
        raise ModelError(f"{path.name} does not fit {name}: it holds no {cls.__name__} in a "
                         f"layout diffusers can convert ({type(exc).__name__}: {exc}). Use a "
                         "GGUF of this model's family and size") from None


def _check_fits(converted: dict, cls, config: dict, path: Path, name: str) -> None:
    """Refuse a file whose tensors are not those of the transformer the folder's config builds."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        expected = {k: tuple(v.shape) for k, v in cls.from_config(config).state_dict().items()}
    shapes = {k: tuple(getattr(v, "quant_shape", v.shape)) for k, v in converted.items()}
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(expected) & set(shapes) if expected[k] != shapes[k])
    if missing or extra or wrong:
        found = [f"{len(missing)} tensors missing (e.g. {missing[0]})" if missing else "",
                 f"{len(extra)} unknown (e.g. {extra[0]})" if extra else "",
                 f"{len(wrong)} of another shape (e.g. {wrong[0]}: {shapes[wrong[0]]} where "
                 f"{expected[wrong[0]]} is needed)" if wrong else ""]
        raise ModelError(f"{path.name} does not fit {name}'s transformer: "
                         f"{'; '.join(f for f in found if f)}. Use a GGUF of this model's "
                         "family and size")
