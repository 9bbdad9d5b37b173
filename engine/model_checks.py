"""Checks a model folder or file must pass before any module is built: file types, config bounds,
tensor types, missing and non-finite weights; each failure is a ModelError naming the culprit.

Model folders come from anywhere, and the libraries trust them: a FIFO named config.json blocks
the first read forever, ``layers_per_block: 100000`` builds gigabytes of layers before failing,
a tokenizer length of 1e9 aborts inside Rust, and int8 or NaN weights load "fine" and give empty
masks. Everything here reads only small JSON files, safetensors headers and a sample of values.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

from engine.errors import ModelError

MAX_JSON_BYTES = 32 * 1024**2  # the largest real one (tokenizer vocab.json) is about 2 MB

# Sane ranges for the config values that size the modules or drive the schedule. Real SD 1.x/2.x
# values sit well inside them (layers_per_block 2, 1280 channels, 23 text layers, 1000 steps);
# far outside means a damaged or hostile file, refused before gigabytes of layers are built.
_BOUNDS = {
    "layers_per_block": (1, 16),
    "block_out_channels": (1, 8192),
    "attention_head_dim": (1, 4096),
    "num_attention_heads": (1, 1024),
    "cross_attention_dim": (1, 16384),
    "transformer_layers_per_block": (1, 64),
    "in_channels": (1, 64),
    "out_channels": (1, 64),
    "latent_channels": (1, 64),
    "norm_num_groups": (1, 1024),
    "sample_size": (1, 8192),
    "hidden_size": (1, 16384),
    "intermediate_size": (1, 65536),
    "num_hidden_layers": (1, 128),
    "max_position_embeddings": (1, 4096),
    "vocab_size": (1, 1_000_000),
    "projection_dim": (1, 16384),
    "num_train_timesteps": (1, 100_000),
    "steps_offset": (0, 1000),
    "beta_start": (0.0, 1.0),
    "beta_end": (0.0, 1.0),
    "scaling_factor": (1e-6, 1000.0),
    "norm_eps": (0.0, 1.0),
    "layer_norm_eps": (0.0, 1.0),
}
_MAX_LIST = 64  # block lists: real ones hold 4 entries
PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}  # formats that can run code when loaded
FLOAT_DTYPES = {"F32", "F16", "BF16", "F64"}
_DTYPE_WORDS = {"I8": "8-bit integers", "U8": "8-bit integers", "I16": "16-bit integers",
                "I32": "32-bit integers", "I64": "64-bit integers", "BOOL": "true/false values",
                "F8_E4M3": "8-bit floats", "F8_E5M2": "8-bit floats"}
_SAMPLE = 4096  # values checked per tensor: spread over the whole tensor, microseconds each


def check_regular_file(path: Path, label: str) -> None:
    """Refuse anything but a regular file (after links): reading a FIFO or a device never ends."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ModelError(f"{label} is missing") from None
    except OSError as exc:
        raise ModelError(f"{label} cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else \
            "a device or socket"
        raise ModelError(f"{label} is {kind}, not a file; the model folder is damaged")


def check_folder_files(folder: Path) -> None:
    """Every entry of a diffusers folder (two levels: components and their files) is a regular
    file or a folder, so that no library read can block on a FIFO or a device."""
    for entry in _entries(folder):
        try:
            mode = os.stat(entry).st_mode
        except OSError:
            continue  # a dangling link: the loader reports the missing file by name
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            check_regular_file(entry, entry.relative_to(folder).as_posix())


def _entries(folder: Path):
    try:
        top = list(os.scandir(folder))
    except OSError:
        return
    for entry in top:
        yield Path(entry.path)
        if entry.is_dir():
            try:
                yield from (Path(e.path) for e in os.scandir(entry.path))
            except OSError:
                continue


def read_json(path: Path, label: str):
    """A JSON file from a model folder: a regular file of bounded size and nesting."""
    check_regular_file(path, label)
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise ModelError(f"{label} is {path.stat().st_size / 1024**2:.0f} MB, far larger than "
                             "a configuration file; the model folder is damaged")
        return json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise ModelError(f"{label} is nested too deeply to be a configuration file; "
                         "the model folder is damaged") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{label} cannot be read ({exc})") from None


def read_config(path: Path, label: str) -> dict:
    """read_json for a config that must be a JSON object within the sane bounds."""
    data = read_json(path, label)
    if not isinstance(data, dict):
        raise ModelError(f"{label} is not a JSON object")
    check_config(data, label)
    return data


def check_config(config: dict, label: str) -> None:
    """Every number finite; the values that size modules or the schedule within _BOUNDS."""
    _check_finite_numbers(config, label, "")
    for key, (low, high) in _BOUNDS.items():
        value = config.get(key)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        if len(values) > _MAX_LIST:
            raise ModelError(f"{label}: {key} lists {len(values)} values; real models have a few")
        for item in values:
            if isinstance(item, bool) or not isinstance(item, (int, float)) or not low <= item <= high:
                raise ModelError(f"{label}: {key} is {_short(value)}, outside the sane range "
                                 f"{low}..{high}; the file is damaged or not an SD model config")
    for key in ("down_block_types", "up_block_types"):
        if isinstance(config.get(key), list) and len(config[key]) > _MAX_LIST:
            raise ModelError(f"{label}: {key} lists {len(config[key])} blocks; real models have a few")


def _check_finite_numbers(value, label: str, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ModelError(f"{label}: {where or 'a value'} is {value}, not a finite number; "
                         "the file is damaged")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite_numbers(item, label, str(key))
    elif isinstance(value, list):
        for item in value:
            _check_finite_numbers(item, label, where)


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_tokenizer_length(length, text_positions: int, label: str) -> None:
    """The tokenizer pads every prompt to model_max_length: above what the text encoder reads
    (77 for CLIP) the encoder fails, and a huge value makes the tokenizer abort the process."""
    if isinstance(length, bool) or not isinstance(length, (int, float)) or not (
            1 <= length <= text_positions):
        raise ModelError(f"{label}: model_max_length is {_short(length)}, but the text encoder "
                         f"reads at most {text_positions} tokens; set it to {text_positions}")


_INTEGER_BUFFERS = ("position_ids", "num_batches_tracked")


def check_dtypes(dtypes: dict[str, str], label: str) -> None:
    """Weights must be floats: integer, boolean or 8-bit float tensors (quantized or damaged
    files) would be cast silently into noise. Integer position ids are index buffers, and a
    batch norm's step counter (FLUX.2's VAE) a count, not weights."""
    for key, dtype in dtypes.items():
        if dtype in FLOAT_DTYPES or (key.endswith(_INTEGER_BUFFERS) and dtype.startswith(("I", "U"))):
            continue
        words = _DTYPE_WORDS.get(dtype, dtype)
        raise ModelError(f"{label}: the tensor {key} is stored as {dtype} ({words}); DiffEdit "
                         "Studio loads float weights only (F32, F16 or BF16): use a full-precision "
                         "copy of the model")


def check_finite_weights(module, label: str) -> None:
    """Sample every parameter evenly (at most _SAMPLE values each) for NaN or infinity."""
    import torch

    with torch.no_grad():
        for key, parameter in module.named_parameters():
            if not parameter.is_floating_point():
                continue  # a GGUF transformer's quantized blocks: bytes, read as they dequantize
            flat = parameter.detach().reshape(-1)
            step = max(1, flat.numel() // _SAMPLE)
            if not bool(torch.isfinite(flat[::step].float()).all()):
                raise ModelError(f"{label}: the weights {key} hold NaN or infinite values; the "
                                 "file is damaged: download the model again")


def check_complete(module, info: dict, label: str) -> None:
    """Refuse weights the file lacked: diffusers leaves them on the meta device (the run then
    dies far from the cause) and transformers fills them with random values."""
    missing = list(info.get("missing_keys") or [])
    missing += [key for key, p in module.named_parameters() if p.is_meta and key not in missing]
    if missing:
        raise ModelError(f"{label}: {len(missing)} weights are missing from the file "
                         f"(e.g. {sorted(missing)[0]}); the download is incomplete or the file "
                         "belongs to another model: download it again")
