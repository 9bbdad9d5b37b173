"""SDXL: what differs from SD 1.x/2.x. Two text encoders and a pooled embedding, and the
micro-conditioning "time ids" (original size, crop offset, target size) added to the time step;
everything else (VAE latents, DDIM over the training schedule, epsilon prediction, attention
hooks) is the SD backbone's.

Text conditioning follows ``StableDiffusionXLPipeline.encode_prompt``: each encoder's
penultimate hidden states, concatenated along the feature axis (768 + 1280 = 2048 for SDXL
base), and the second encoder's projected end-of-text embedding as the pooled vector. The empty
text is SDXL's unconditional branch: all zeros where the model says so
(``force_zeros_for_empty_prompt``, as SDXL base was trained to drop its text).

Where the methods hook in, and why it carries over unchanged (engine.attention finds the layers
by their resolution, not their count). SDXL's UNet has three levels: 1/1 of the latent
(128x128 at 1024 px) without attention, 1/2 (64x64, two transformer blocks per attention) and
1/4 (32x32, ten per attention, also in the mid block); SD 1.x has four, attention at 1/1-1/4.
- Prompt-to-Prompt edits every cross-attention layer (attn2 of all 70 transformer blocks: each
  reads the same 77 tokens, so word swaps and reweights apply everywhere), injects
  self-attention at 1/2 and coarser (p2p.SELF_MIN_FACTOR: here every self-attention layer, since
  the 1/1 level has none), and builds local-blend maps from the 1/4 level (p2p.BLEND_FACTOR: 32x32
  at 1024 px, the same share of the picture as P2P's 16x16 at 512 px).
- Plug-and-Play injects the residual features of ``up_blocks[0].resnets[1]`` (the first decoder
  block at 1/4 of the latent, as the paper's layer 4 is on SD) and the self-attention of
  ``up_blocks[0].attentions[1:]`` and ``up_blocks[1].attentions`` (pnp.injection_layers).
- The VAE runs in float32 under a float16 UNet unless its config says it is fp16-safe
  (engine.models): SDXL's VAE overflows to NaN in float16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.backbones.base import Conditioning
from engine.backbones.sd import StableDiffusion

FAMILIES = ("sdxl",)


@dataclass(frozen=True)
class SizeConditioning:
    """SDXL's six micro-conditioning numbers, each pair (height, width) or (top, left).

    In SDXL's training a photo of ``original`` size was resized and cropped at ``crop`` to
    the ``target`` size the UNet saw. An edit does the same to the user's photo, so the
    numbers come from the photo and the working geometry instead of being hard-coded.
    """

    original: tuple[int, int]
    crop: tuple[int, int]
    target: tuple[int, int]

    @classmethod
    def of(cls, photo_size: tuple[int, int], box: tuple[int, int, int, int] | None, geometry):
        """For a photo of ``photo_size`` (W, H) whose ``box`` (left, top, right, bottom; None =
        the whole photo) is worked on at ``geometry`` (engine.geometry.WorkingGeometry).

        original: the photo's own pixel size (a 24 MP photo says "sharp source", as a large
        training image did); crop: where the box starts, in the working scale, as SDXL's crop
        offsets are measured in the resized image; target: the size the UNet generates.
        """
        width, height = photo_size
        left, top = (box[0], box[1]) if box is not None else (0, 0)
        box_width = (box[2] - box[0]) if box is not None else width
        scale = geometry.content_size[0] / box_width
        padded_w, padded_h = geometry.padded_size
        return cls((height, width), (round(top * scale), round(left * scale)), (padded_h, padded_w))

    def ids(self) -> list[int]:
        return [*self.original, *self.crop, *self.target]


def encode_prompt(model, text: str) -> tuple[torch.Tensor, torch.Tensor, str | None]:
    """(embeddings (1, 77, D1 + D2), pooled (1, P), note) for ``text``, in float32.

    ``note`` says which words were cut when the text is longer than the encoders' 77 tokens.
    """
    features, pooled, note = [], None, None
    for tokenizer, encoder in ((model.tokenizer, model.text_encoder),
                               (model.tokenizer_2, model.text_encoder_2)):
        limit = tokenizer.model_max_length
        ids = tokenizer(text, truncation=False).input_ids
        if len(ids) > limit and note is None:
            dropped = tokenizer.decode(ids[limit - 1:-1])
            note = (f"the prompt is longer than the text encoders' {limit} tokens; "
                    f"ignored: \"{dropped}\"")
        tokens = tokenizer(text, padding="max_length", max_length=limit, truncation=True,
                           return_tensors="pt").input_ids.to(model.device)
        out = encoder(tokens, output_hidden_states=True)
        # SDXL reads the penultimate layer of both encoders; the pooled vector is the second
        # encoder's projected end-of-text embedding (CLIPTextModelWithProjection.text_embeds).
        features.append(out.hidden_states[-2].float())
        if out[0].ndim == 2:
            pooled = out[0].float()
    return torch.cat(features, dim=-1), pooled, note


def empty_prompt(model) -> tuple[torch.Tensor, torch.Tensor]:
    """The unconditional branch: zeros where the model says so (SDXL base's
    ``force_zeros_for_empty_prompt``), else the empty text's features."""
    if model.force_zeros_for_empty_prompt:
        length = model.tokenizer.model_max_length
        return (torch.zeros(1, length, model.unet.config.cross_attention_dim, device=model.device),
                torch.zeros(1, model.text_encoder_2.config.projection_dim, device=model.device))
    embeddings, pooled, _note = encode_prompt(model, "")
    return embeddings, pooled


def added_conditions(model, pooled: torch.Tensor, size: SizeConditioning) -> dict:
    """The UNet's ``added_cond_kwargs`` for a batch of ``pooled`` vectors."""
    expected = model.unet.config.projection_class_embeddings_input_dim
    got = model.unet.config.addition_time_embed_dim * 6 + pooled.shape[-1]
    if got != expected:  # a refiner (5 ids) or mismatched components; the loader refuses both
        raise ValueError(f"the UNet expects {expected} added features, these conditions give {got}")
    ids = torch.tensor([size.ids()], dtype=pooled.dtype, device=pooled.device)
    return {"text_embeds": pooled, "time_ids": ids.expand(pooled.shape[0], -1)}


class StableDiffusionXL(StableDiffusion):
    """SDXL base and its fine-tunes."""

    title = "SDXL"

    def __init__(self, model):
        super().__init__(model)
        self.size: SizeConditioning | None = None  # set by condition_on before predictions

    def condition_on(self, photo_size, box, geometry) -> None:
        self.size = SizeConditioning.of(photo_size, box, geometry)

    @torch.no_grad()
    def encode_text(self, text: str) -> tuple[Conditioning, str | None]:
        if not text.strip() and self.model.force_zeros_for_empty_prompt:
            embeddings, pooled = empty_prompt(self.model)
            return Conditioning(embeddings, pooled), None
        embeddings, pooled, note = encode_prompt(self.model, text)
        return Conditioning(embeddings, pooled), note

    @torch.no_grad()
    def predict(self, latents: torch.Tensor, timestep, cond: Conditioning, **unet_kwargs) -> torch.Tensor:
        model = self.model
        size = self.size
        if size is None:  # no photo geometry given: diffusers' defaults for this latent size
            side = tuple(n * self.latent_factor for n in latents.shape[-2:])
            size = SizeConditioning(side, (0, 0), side)
        added = added_conditions(model, cond.pooled.to(model.dtype), size)
        latents = self.unet_input(latents)
        return model.unet(latents.to(model.dtype), timestep,
                          encoder_hidden_states=cond.embeds.to(model.dtype),
                          added_cond_kwargs=added, return_dict=False, **unet_kwargs)[0].float()
