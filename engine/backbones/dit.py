"""What the flow-matching diffusion-transformer families (SD3.5, Z-Image) share: a VAE whose
latents are shifted and scaled, sizes in whole transformer patches, the velocity
parameterisation, and step and guidance defaults that the model itself implies.

Latents are shifted and scaled as diffusers' SD3 and Z-Image pipelines do (engine.backbones.vae;
the pipelines draw from the encoder's distribution where we take its mean). A working size is a
multiple of one patch: the VAE's factor times the patch side (16 px).
"""

from __future__ import annotations

import numpy as np
import torch

from engine.backbones import vae
from engine.backbones.base import Backbone
from engine.errors import ModelError


class DiffusionTransformer(Backbone):
    """A flow-matching transformer family. Subclasses set ``family``, ``patch_size``,
    ``default_steps`` and ``default_guidance`` (true CFG's scale: 1 is the conditional alone) and
    implement encode_text and predict."""

    prediction_type = "flow"
    # Which methods run once the flow-matching sampler is in (issue 13); until then none.
    methods: frozenset[str] = frozenset()

    def __init__(self, model):
        self.model = model

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
    def native_area(self) -> int:
        return self.model.native_size**2

    @property
    def max_batch(self) -> int:
        """Most transformer sample-evaluations per call the memory tier allows."""
        return int(getattr(self.model, "max_batch", 0) or 8)

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def train_steps(self) -> int:
        """The training schedule's length: timesteps are flow times times this (1000)."""
        return int(self.model.scheduler_config.get("num_train_timesteps", 1000))

    # ---- latents

    def encode_image(self, pixels: np.ndarray) -> torch.Tensor:
        return vae.encode(self.model.vae, vae.unit_range(pixels, self.model.device))

    def decode(self, latent: torch.Tensor) -> np.ndarray:
        return vae.decode(self.model.vae, latent)

    # ---- sampling

    def schedule(self, steps: int):
        raise ModelError(f"no editing method runs on {self.family} models yet: their "
                         "flow-matching sampler is not in this version")

    def timesteps(self, timestep, batch: int) -> torch.Tensor:
        """``timestep`` (a number or a 0-d tensor) as a (batch,) float tensor on the device."""
        return torch.as_tensor(timestep, dtype=torch.float32,
                               device=self.model.device).reshape(-1).expand(batch)
