"""Cheap latent -> RGB previews: a fixed linear map of SD's four latent channels, no model; for
other latent spaces a linear map fitted once to the model's own VAE (``fit_rgb_map``)."""

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


def fit_rgb_map(encode, cell: int, cells: int = 16) -> torch.Tensor:
    """A (C + 1, 3) least-squares map from a latent cell (and a bias) to its pixels' mean colour.

    ``encode`` maps (h, w, 3) uint8 pixels to a (1, C, h/cell, w/cell) latent; it is given a
    chart of ``cells`` x ``cells`` flat random colours, one per latent cell (seeded: the same
    model gets the same map). Ridge-regularised, so a latent with more channels than the chart
    has cells still gets a map.
    """
    generator = np.random.default_rng(0)
    colours = generator.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
    chart = colours.repeat(cell, axis=0).repeat(cell, axis=1)
    latent = encode(chart)[0].detach().float().cpu()
    features = latent.flatten(1).T  # (cells^2, C)
    features = torch.cat([features, torch.ones(features.shape[0], 1)], dim=1)
    target = torch.from_numpy(colours.reshape(-1, 3).astype(np.float32) / 127.5 - 1.0)
    gram = features.T @ features + 1e-3 * torch.eye(features.shape[1])
    return torch.linalg.solve(gram, features.T @ target)


def mapped_preview(latents: torch.Tensor, rgb_map: torch.Tensor,
                   content: tuple[int, int] | None = None) -> np.ndarray:
    """(h, w, 3) uint8 of the first latent in the batch through a ``fit_rgb_map`` map."""
    latent = latents[0].detach().float().cpu()
    if content is not None:
        latent = latent[:, : content[1], : content[0]]
    rgb = torch.einsum("chw,cr->hwr", latent, rgb_map[:-1]) + rgb_map[-1]
    return ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
