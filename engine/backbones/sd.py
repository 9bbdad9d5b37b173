"""Stable Diffusion 1.x and 2.x (epsilon and v-prediction): CLIP text encoder, the SD VAE, a
UNet with cross-attention, DDIM over the training schedule.

Reads the model's components at every call (not at construction), so a memory-tier change or a
test's counting UNet takes effect at once.

Inpainting models (SD 1.5-inpainting, SDXL-inpainting) have a 9-channel UNet: the latent, the
mask (1 = generate) and the latent of the photo with that area greyed out, as diffusers' inpaint
pipelines prepare them. Blended and DiffEdit's masked decoding give them the run's mask
(``inpainting_with``); every other call (mask estimate, encoding, the other methods) gives the
whole picture as the area to generate over a grey photo: the text-to-image case these models
were also trained on, so they act as their plain model there.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from engine import attention
from engine.backbones import vae
from engine.backbones.base import Backbone, Conditioning
from engine.inversion import Schedule

FAMILIES = ("sd1", "sd2")


class StableDiffusion(Backbone):
    title = "Stable Diffusion"
    methods = frozenset({"diffedit", "blended", "sdedit", "p2p", "pnp"})

    def __init__(self, model):
        super().__init__(model)
        self._inpaint: tuple[torch.Tensor, torch.Tensor] | None = None  # (mask, masked latent)
        self._grey: dict[tuple, torch.Tensor] = {}  # latent size -> latent of a grey picture

    @property
    def prediction_type(self) -> str:
        return self.model.prediction_type

    @property
    def latent_factor(self) -> int:
        return self.model.vae_scale_factor

    @property
    def size_multiple(self) -> int:
        return self.model.size_multiple

    # ---- text

    @torch.no_grad()
    def encode_text(self, text: str) -> tuple[Conditioning, str | None]:
        tokenizer = self.model.tokenizer
        limit = tokenizer.model_max_length
        ids = tokenizer(text, truncation=False).input_ids
        note = None
        if len(ids) > limit:
            dropped = tokenizer.decode(ids[limit - 1:-1])
            note = (f"the prompt is longer than the text encoder's {limit} tokens; "
                    f"ignored: \"{dropped}\"")
        tokens = tokenizer(text, padding="max_length", max_length=limit, truncation=True,
                           return_tensors="pt").input_ids.to(self.model.device)
        return Conditioning(self.model.text_encoder(tokens)[0].float()), note

    # ---- latents

    def encode_image(self, pixels: np.ndarray) -> torch.Tensor:
        return self._encode(vae.unit_range(pixels, self.model.device))

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(1, 3, h, w) pixels in [-1, 1] -> the latent (the distribution's mean: no noise)."""
        return vae.encode(self.model.vae, pixels)

    def decode(self, latent: torch.Tensor) -> np.ndarray:
        return vae.decode(self.model.vae, latent)

    # ---- sampling

    def schedule(self, steps: int, latent_size=None) -> Schedule:
        return Schedule.from_config(self.model.scheduler_config, steps)

    @torch.no_grad()
    def predict(self, latents: torch.Tensor, timestep, cond: Conditioning, **unet_kwargs) -> torch.Tensor:
        model = self.model
        latents = self.unet_input(latents)
        return model.unet(latents.to(model.dtype), timestep,
                          encoder_hidden_states=cond.embeds.to(model.dtype), return_dict=False,
                          **unet_kwargs)[0].float()

    # ---- inpainting models

    @property
    def inpainting(self) -> bool:
        """Whether the UNet is an inpainting one (9 input channels; a stand-in UNet without a
        config is a plain one)."""
        return getattr(getattr(self.model.unet, "config", None), "in_channels", 4) == 9

    def inpaint_condition(self, pixels: np.ndarray, latent_mask: torch.Tensor):
        """(mask, masked latent) for ``inpainting_with``: (h, w, 3) uint8 working-size pixels and
        the (h/f, w/f) latent mask in [0, 1]; the area to generate (mask >= 0.5, as diffusers
        binarises it) is greyed out before encoding."""
        factor = self.latent_factor
        keep = (latent_mask < 0.5).float().repeat_interleave(factor, 0).repeat_interleave(factor, 1)
        photo = torch.from_numpy(pixels).to(self.model.device).permute(2, 0, 1)[None].float()
        masked = (photo / 127.5 - 1.0) * keep.to(photo.device)
        return latent_mask.to(self.model.device, torch.float32)[None, None], self._encode(masked)

    @contextmanager
    def inpainting_with(self, condition) -> Iterator[None]:
        """Inside the block the inpainting UNet is given ``condition`` (from inpaint_condition)."""
        self._inpaint = condition
        try:
            yield
        finally:
            self._inpaint = None

    def unet_input(self, latents: torch.Tensor) -> torch.Tensor:
        """The UNet's input for ``latents``: as they are, or with the inpainting channels."""
        if not self.inpainting:
            return latents
        if self._inpaint is None:  # the whole picture to generate, over a grey photo
            size = tuple(latents.shape[-2:])
            if size not in self._grey:
                pixels = torch.zeros(1, 3, size[0] * self.latent_factor, size[1] * self.latent_factor,
                                     device=self.model.device)
                self._grey[size] = self._encode(pixels)
            mask, masked = torch.ones(1, 1, *size, device=latents.device), self._grey[size]
        else:
            mask, masked = self._inpaint
        batch = latents.shape[0]
        return torch.cat([latents, mask.expand(batch, -1, -1, -1).to(latents.dtype),
                          masked.expand(batch, -1, -1, -1).to(latents.dtype)], dim=1)

    # ---- attention and feature hooks

    def attention_layers(self) -> list[attention.AttentionLayer]:
        return attention.attention_layers(self.model.unet)

    def decoder_layers(self) -> list[attention.DecoderLayer]:
        return attention.decoder_layers(self.model.unet)

    def attention_processors(self) -> dict:
        return self.model.unet.attn_processors

    @contextmanager
    def hooked(self, processors: dict, hooks=()) -> Iterator[None]:
        with attention.installed(self.model.unet, processors, hooks):
            yield
