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


def evaluations(calls) -> int:
    """The sample-evaluations of ``recorded`` transformer calls: each call's batch (klein and
    SD3 take a (B, ...) ``hidden_states`` tensor, Z-Image a list of B latents first)."""
    return sum(len(args[0] if args else kwargs["hidden_states"]) for args, kwargs, _ in calls)


def in_precision(precision: str, model, folder):
    """``model`` (loaded in float32) itself, or the same folder loaded in ``precision``."""
    from engine.models import load_model

    return model if precision == "float32" else load_model(str(folder), device="cpu", dtype=precision)


def random_picture(height: int = 128, width: int = 96) -> np.ndarray:
    """A fixed random (height, width, 3) uint8 picture."""
    return np.random.default_rng(3).integers(0, 256, (height, width, 3), dtype=np.uint8)
