"""What the flow-matching diffusion-transformer families (SD3.5, Z-Image) share: a VAE whose
latents are shifted and scaled, sizes in whole transformer patches, and the transformer's
sequence length (one token per patch) that the schedule's dynamic shift reads.

Latents are shifted and scaled as diffusers' SD3 and Z-Image pipelines do (engine.backbones.vae;
the pipelines draw from the encoder's distribution where we take its mean). A working size is a
multiple of one patch: the VAE's factor times the patch side (16 px). The schedule, the methods
and the guidance rule are engine.backbones.flow.FlowBackbone's.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.backbones import vae
from engine.backbones.flow import FlowBackbone


class DiffusionTransformer(FlowBackbone):
    """A flow-matching transformer family. Subclasses set ``family``, ``title``, ``patch_size``
    and ``family_defaults`` (steps and true CFG's scale: 1 is the conditional alone) and implement
    encode_text and predict."""

    @property
    def latent_factor(self) -> int:
        return self.model.vae_scale_factor

    @property
    def patch_size(self) -> int:
        raise NotImplementedError

    @property
    def size_multiple(self) -> int:
        return self.latent_factor * self.patch_size

    @property
    def train_steps(self) -> int:
        """The training schedule's length: timesteps are flow times times this (1000)."""
        return int(self.scheduler_config.get("num_train_timesteps", 1000))

    def image_tokens(self, latent_size: tuple[int, int]) -> int:
        """One token per patch, as the pipelines count the sequence for the dynamic shift."""
        return latent_size[0] * latent_size[1] // self.patch_size**2

    # ---- latents

    def encode_image(self, pixels: np.ndarray) -> torch.Tensor:
        return vae.encode(self.model.vae, vae.unit_range(pixels, self.model.device))

    def decode(self, latent: torch.Tensor) -> np.ndarray:
        return vae.decode(self.model.vae, latent)

    # ---- sampling

    def timesteps(self, timestep, batch: int) -> torch.Tensor:
        """``timestep`` (a number or a 0-d tensor) as a (batch,) float tensor on the device."""
        return torch.as_tensor(timestep, dtype=torch.float32,
                               device=self.model.device).reshape(-1).expand(batch)
