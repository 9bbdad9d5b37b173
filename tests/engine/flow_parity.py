"""What a diffusers pipeline hands its transformer and gets back, recorded for parity tests."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np


@contextmanager
def recorded(module):
    """Inside the block, every call of ``module`` appends (args, kwargs, output) to the list."""
    calls = []
    handle = module.register_forward_hook(
        lambda _module, args, kwargs, output: calls.append((args, kwargs, output)), with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


# Seeds at which the tiny models' automatic masks for "a photo of a cat" -> "a photo of a dog"
# clear the sampling noise floor at their families' default mask samples (5 for klein, 2 for
# Z-Image-Turbo): their random text encoders move the velocity only weakly, so at other seeds
# the contrast can stay within the noise and no mask (and no edit) comes out.
AUTO_MASK_SEEDS = {"flux2-klein": 0, "sd3": 0, "zimage": 1}


def batch_of(args, kwargs) -> int:
    """The sample-evaluations of one transformer call: its batch (klein and SD3 take a (B, ...)
    ``hidden_states`` tensor, Z-Image a list of B latents first)."""
    return len(args[0] if args else kwargs["hidden_states"])


def evaluations(calls) -> int:
    """The sample-evaluations of ``recorded`` transformer calls."""
    return sum(batch_of(args, kwargs) for args, kwargs, _ in calls)


def in_precision(precision: str, model, folder):
    """``model`` (loaded in float32) itself, or the same folder loaded in ``precision``."""
    from engine.models import load_model

    return model if precision == "float32" else load_model(str(folder), device="cpu", dtype=precision)


def random_picture(height: int = 128, width: int = 96) -> np.ndarray:
    """A fixed random (height, width, 3) uint8 picture."""
    return np.random.default_rng(3).integers(0, 256, (height, width, 3), dtype=np.uint8)
