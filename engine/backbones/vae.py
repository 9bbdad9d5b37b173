"""The VAE side of every backbone: pixels to latents and back, with the config's shift and scale.

``z = (mean(vae.encode(x)) - shift_factor) * scaling_factor`` (SD's VAEs have no shift; SD3's
and FLUX's do), decoding inverts it; the encoder's mean is taken, not a draw from its
distribution, so that an edit does not depend on a draw.
"""

from __future__ import annotations

import numpy as np
import torch


def unit_range(pixels: np.ndarray, device) -> torch.Tensor:
    """(h, w, 3) uint8 -> (1, 3, h, w) float32 in [-1, 1] on ``device``."""
    return torch.from_numpy(pixels).to(device).permute(2, 0, 1)[None].float() / 127.5 - 1.0


@torch.no_grad()
def encode(vae, pixels: torch.Tensor) -> torch.Tensor:
    """(1, 3, h, w) pixels in [-1, 1] -> the float32 latent (no noise)."""
    latent = vae.encode(pixels.to(vae.dtype)).latent_dist.mean.float()
    return (latent - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor


@torch.no_grad()
def decode(vae, latent: torch.Tensor) -> np.ndarray:
    """(1, C, h, w) latent -> (h*f, w*f, 3) uint8 pixels."""
    latent = latent.float() / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
    return to_uint8(vae.decode(latent.to(vae.dtype)).sample)


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """The first of a (B, 3, h, w) batch of decoded pixels in [-1, 1] -> (h, w, 3) uint8."""
    pixels = ((pixels[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(1, 2, 0).cpu().numpy()
