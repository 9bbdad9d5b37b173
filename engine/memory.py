"""Memory tiers: how much of the GPU a run may use, chosen from free VRAM, and the OOM fallback.

full     everything resident, big UNet batches (mask samples in one call)
sliced   attention computed in slices, VAE tiled above twice the native size, UNet batches
         of 2 (4-8 GB GPUs)
offload  like sliced, and UNet/VAE/text encoder weights stream to the GPU layer by layer (a
         GGUF transformer's through diffusers' group offload, its blocks staying quantized)

The free memory each tier needs grows with the model's native area (activations scale with the
latent's pixels): SDXL's 1024x1024 needs four times what SD 1.5's 512x512 does.

A run that hits out-of-memory frees the cache, moves to the next tier and tries once more.
"""

from __future__ import annotations

import gc

import torch

from engine.errors import EngineError

TIERS = ("full", "sliced", "offload")
GIB = 1024**3


class OutOfMemory(EngineError):
    """Out of device memory even at the most frugal tier."""


# How allocators word it: CUDA and MPS ("out of memory"), torch's CPU allocator on Linux/macOS
# ("can't allocate memory") and on Windows ("not enough memory").
_OOM_WORDS = ("out of memory", "can't allocate memory", "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Out of GPU or CPU memory: torch's and numpy's errors (MemoryError), whatever the device."""
    if isinstance(exc, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError),
                        getattr(torch.cuda, "OutOfMemoryError", MemoryError))):
        return True
    return isinstance(exc, RuntimeError) and any(w in str(exc).lower() for w in _OOM_WORDS)


def choose_tier(model, requested: str = "auto") -> str:
    """The requested tier, or for "auto" the most generous one the free VRAM allows."""
    if requested != "auto":
        if requested not in TIERS:
            raise EngineError(f"unknown memory tier {requested!r}: use auto, {', '.join(TIERS)}")
        return requested
    if model.device.type != "cuda":
        return "full"  # CPU and MPS share system memory; batches are already small there
    free, _total = torch.cuda.mem_get_info(model.device)
    # What the weights need beyond what they already occupy: activations of a batch of 20 at
    # 512x512 take a few GB in fp16 with SDPA; 2 GB is enough for sliced batches of 2.
    area = (model.native_size / 512) ** 2
    if free > 4 * GIB * area:
        return "full"
    if free > 1.5 * GIB * area:
        return "sliced"
    return "offload"


def apply_tier(model, tier: str) -> None:
    """Configure the loaded model for ``tier`` (idempotent)."""
    model.memory_tier = tier
    if tier == "full":
        model.max_batch = 20 if model.device.type == "cuda" else 8
        return
    model.max_batch = 2
    if hasattr(model.denoiser, "set_attention_slice"):  # the UNets; transformers have none
        model.denoiser.set_attention_slice("auto")
    _tile_vae_above(model, 2 * model.native_size)
    if tier == "offload" and model.device.type == "cuda" and not getattr(model, "offloaded", False):
        stream_weights(model, model.device)


def stream_weights(model, device) -> None:
    """Keep the model's weights in CPU memory and bring each layer to ``device`` as it runs."""
    from accelerate import cpu_offload

    for module in (model.denoiser, model.vae, *model.text_encoders):
        if getattr(module, "is_quantized", False):
            # a GGUF transformer: accelerate's hooks rebuild each parameter and lose its quant
            # type (diffusers issue 14691); diffusers' group offload moves the tensors in place
            module.enable_group_offload(onload_device=device, offload_type="leaf_level")
        else:
            module.to("cpu")
            cpu_offload(module, execution_device=device)
    model.offloaded = True


def _tile_vae_above(model, side: int) -> None:
    """Tile the VAE only for pictures larger than ``side``: tiles cost seams and time, and a
    working size near the native one fits anyway."""
    vae = model.vae
    if not hasattr(vae, "enable_tiling"):
        return
    vae.enable_tiling()
    vae.tile_sample_min_size = side
    if hasattr(vae, "tile_sample_min_height"):  # Qwen-Image's VAE reads the two sides apart
        vae.tile_sample_min_height = vae.tile_sample_min_width = side
    vae.tile_latent_min_size = side // model.vae_scale_factor


def with_fallback(model, work, warn):
    """``work()``, tried once more at the next memory tier if it runs out of memory (the one
    retry of every run). ``warn(text)`` records that it happened. A second out-of-memory in the
    same run, or none left to try, is OutOfMemory saying what to do; the lower tier stays, so the
    next run starts there."""
    retried = False
    while True:
        try:
            return work()
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            free_cached_memory()
            tier = getattr(model, "memory_tier", "full")
            lower = next_tier(tier)
            if lower is not None:
                apply_tier(model, lower)
            if retried or lower is None:
                device = model.device.type.upper()
                where = f"at the '{tier}' memory tier" + (
                    f"; the next run uses '{lower}'" if lower else ", the most frugal one")
                raise OutOfMemory(
                    f"out of {device} memory {where}. Try again, or use a smaller working "
                    "resolution or fewer mask samples, close other programs using the GPU, choose "
                    "the 'offload' memory setting (--memory offload), or run on the CPU (--device "
                    "cpu)") from None
            warn(f"ran out of memory at the '{tier}' memory tier; retried at '{lower}'")
            retried = True


def next_tier(tier: str) -> str | None:
    index = TIERS.index(tier)
    return TIERS[index + 1] if index + 1 < len(TIERS) else None


def free_cached_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
