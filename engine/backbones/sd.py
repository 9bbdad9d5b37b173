"""Stable Diffusion 1.x and 2.x (epsilon and v-prediction): CLIP text encoder, the SD VAE, a
UNet with cross-attention, DDIM over the training schedule.

Reads the model's components at every call (not at construction), so a memory-tier change or a
test's counting UNet takes effect at once.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from engine import attention
from engine.backbones.base import Backbone, Conditioning
from engine.inversion import Schedule

FAMILIES = ("sd1", "sd2")


class StableDiffusion(Backbone):
    methods = frozenset({"diffedit", "blended", "sdedit", "p2p", "pnp"})

    def __init__(self, model):
        self.model = model

    @property
    def family(self) -> str:
        return getattr(self.model, "family", "sd1")

    @property
    def prediction_type(self) -> str:
        return self.model.prediction_type

    @property
    def latent_factor(self) -> int:
        return self.model.vae_scale_factor

    @property
    def native_area(self) -> int:
        return self.model.native_size**2

    @property
    def size_multiple(self) -> int:
        return self.model.size_multiple

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def max_batch(self) -> int:
        """Most UNet sample-evaluations per call the memory tier allows (set when it loads)."""
        return int(getattr(self.model, "max_batch", 0) or 8)

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

    @torch.no_grad()
    def encode_image(self, pixels: np.ndarray) -> torch.Tensor:
        vae = self.model.vae
        pixels = torch.from_numpy(pixels).to(self.model.device)
        pixels = pixels.permute(2, 0, 1)[None].to(vae.dtype) / 127.5 - 1.0
        latent = vae.encode(pixels).latent_dist.mean  # the distribution's mean: no noise
        return latent.float() * vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> np.ndarray:
        vae = self.model.vae
        pixels = vae.decode((latent / vae.config.scaling_factor).to(vae.dtype)).sample
        pixels = ((pixels[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return pixels.permute(1, 2, 0).cpu().numpy()

    # ---- sampling

    def schedule(self, steps: int) -> Schedule:
        return Schedule.from_config(self.model.scheduler_config, steps)

    @torch.no_grad()
    def predict(self, latents: torch.Tensor, timestep, cond: Conditioning, **unet_kwargs) -> torch.Tensor:
        model = self.model
        return model.unet(latents.to(model.dtype), timestep,
                          encoder_hidden_states=cond.embeds.to(model.dtype), return_dict=False,
                          **unet_kwargs)[0].float()

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
