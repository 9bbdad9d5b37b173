"""Engine test fixtures: a UNet wrapper that counts work independently of the engine's counters,
and the cat photo (451x300: not a multiple of 8)."""

import dataclasses

import pytest
import torch


class CountingUNet(torch.nn.Module):
    """Wraps a UNet and counts sample-evaluations, independently of the engine's own counters."""

    def __init__(self, unet):
        super().__init__()
        self.inner = unet
        self.config = unet.config
        self.evaluations = 0

    def forward(self, latents, *args, **kwargs):
        self.evaluations += latents.shape[0]
        return self.inner(latents, *args, **kwargs)


@pytest.fixture
def counted(tiny_model):
    """(model whose UNet counts its evaluations, the counting wrapper)."""
    wrapper = CountingUNet(tiny_model.unet)
    return dataclasses.replace(tiny_model, unet=wrapper), wrapper


@pytest.fixture(scope="module")
def cat(samples_dir):
    from engine.imaging import load_photo

    return load_photo(samples_dir / "chelsea.png")


@pytest.fixture(scope="module")
def cat128(samples_dir):
    """The cat at the tiny flow models' native 128x128."""
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(samples_dir / "chelsea.png").convert("RGB").resize((128, 128)))


@pytest.fixture(scope="session")
def tiny_kontext_path():
    """The tiny random-weight FLUX.1 Kontext [dev] in diffusers layout, built once."""
    from engine.tiny_flow_models import ensure_tiny_kontext

    return ensure_tiny_kontext()


@pytest.fixture(scope="session")
def tiny_kontext(tiny_kontext_path):
    from engine.models import load_model

    return load_model(str(tiny_kontext_path), device="cpu")


@pytest.fixture(scope="session")
def tiny_qwen_edit(tiny_qwen_edit_path):
    from engine.models import load_model

    return load_model(str(tiny_qwen_edit_path), device="cpu")
