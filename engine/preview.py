"""Cheap latent -> RGB previews: a fixed linear map of SD's four latent channels, no model."""

from __future__ import annotations

import numpy as np
import torch

# Least-squares fit of RGB on SD 1.x/2.x VAE latents (a widely used approximation).
_LATENT_TO_RGB = torch.tensor([
    [0.298, 0.207, 0.208],
    [0.187, 0.286, 0.173],
    [-0.158, 0.189, 0.264],
    [-0.184, -0.271, -0.473],
])


def latent_preview(latents: torch.Tensor, content: tuple[int, int] | None = None) -> np.ndarray:
    """(h, w, 3) uint8 approximation of the first latent in the batch, cropped to ``content``."""
    latent = latents[0].detach().float()
    if content is not None:
        latent = latent[:, : content[1], : content[0]]
    rgb = torch.einsum("chw,cr->hwr", latent.cpu(), _LATENT_TO_RGB)
    return ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
