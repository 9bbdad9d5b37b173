"""Qwen-Image-Edit (the first release, 2509 and 2511): a Qwen2.5-VL text encoder that reads the
photo with the instruction, Qwen-Image's video VAE, and an MMDiT over 2x2-packed latent tokens
followed by the photo's, as diffusers' QwenImageEditPipeline and QwenImageEditPlusPipeline drive
them.

- Text (``_get_qwen_prompt_embeds``): the instruction in the pipelines' system-prompted chat
  template with the photo's vision tokens (the first release's ``<|vision_start|>...`` before
  the text; 2509/2511's "Picture 1: " and then those), the last hidden states without the
  template's first 64 tokens. The image processor's patches (14 px, merged 2x2 into one token)
  set how many ``<|image_pad|>`` tokens stand for the photo, as transformers' Qwen2VLProcessor
  counts them (that processor needs torchvision for its video part: its two steps are done
  here). The first release's encoder sees the photo at the working size (the pipeline: its VAE
  size), 2509/2511's at about 384x384 (``CONDITION_IMAGE_SIZE``). The texts are not padded: each
  keeps its length, with an all-True ``extra["mask"]`` that batching pads (Conditioning.cat).
- Latents: the VAE's mean (the pipelines' argmax) of the photo as a one-frame video, normalised
  by the VAE config's ``latents_mean``/``latents_std`` and patchified 2x2 (16 -> 64 channels,
  16 px per cell); ``predict`` packs it into tokens in row-major order.
- Reference (``with_reference``): the photo's latent tokens after the latent's, with both
  shapes in ``img_shapes`` for the rotary positions; only the latent's tokens come back.
- Schedule: sigmas linspace(1, 1/steps, steps) and diffusers' ``calculate_shift`` over the
  latent's token count with the scheduler config's exponential time shift.
- Guidance: true CFG (the pipelines' ``true_cfg_scale``, 4 by default) whose result is rescaled
  per token to the conditional prediction's norm, as the pipelines do.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from engine.backbones import vae as vae_io
from engine.backbones.base import Conditioning, classifier_free
from engine.backbones.flow import PatchedFlowBackbone
from engine.backbones.flux2 import pack, patchify, unpack, unpatchify

FAMILIES = ("qwen-image-edit", "qwen-image-edit-plus")
PLUS = "qwen-image-edit-plus"  # 2509 and 2511: another template, a smaller photo for the text
# The pipelines' system prompt; the user turn follows it and 64 tokens of it are dropped
SYSTEM = ("<|im_start|>system\nDescribe the key features of the input image (color, shape, size, "
          "texture, objects, background), then explain how the user's text instruction should "
          "alter or modify the image. Generate a new image that meets the user's requirements "
          "while maintaining consistency with the original input where appropriate.<|im_end|>\n")
TEMPLATE = SYSTEM + "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
TEMPLATE_DROP = 64  # the pipelines' prompt_template_encode_start_idx
IMAGE_PAD = "<|image_pad|>"
VISION = f"<|vision_start|>{IMAGE_PAD}<|vision_end|>"


class QwenImageEdit(PatchedFlowBackbone):
    title = "Qwen-Image-Edit"
    methods = frozenset({"instruct"})  # an edit model: it always reads a photo with its text
    text_sees_photo = True

    @property
    def family_defaults(self) -> dict:
        """The model cards' steps with true CFG 4: 50 for the first release, 40 for 2509/2511."""
        return {"steps": 40 if self.family == PLUS else 50, "guidance": 4.0}

    # ---- text

    def _prompt_image(self, pixels: np.ndarray) -> tuple[str, Image.Image]:
        """The user turn's vision part and the photo as the text encoder sees it."""
        image = Image.fromarray(pixels)
        if self.family != PLUS:
            return VISION, image
        from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus import (
            CONDITION_IMAGE_SIZE, calculate_dimensions)

        size = calculate_dimensions(CONDITION_IMAGE_SIZE, image.width / image.height)
        return f"Picture 1: {VISION}", image.resize(size, Image.Resampling.LANCZOS)

    @torch.no_grad()
    def encode_instruction(self, text: str, pixels: np.ndarray) -> tuple[Conditioning, None]:
        model = self.model
        vision, image = self._prompt_image(pixels)
        seen = model.image_processor(images=[image], return_tensors="pt")
        grid = seen["image_grid_thw"]
        image_tokens = int(grid.prod()) // model.image_processor.merge_size**2
        prompt = TEMPLATE.format(vision + text).replace(IMAGE_PAD, IMAGE_PAD * image_tokens)
        tokens = model.tokenizer(prompt, return_tensors="pt").to(model.device)
        out = model.text_encoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                                 pixel_values=seen["pixel_values"].to(model.device),
                                 image_grid_thw=grid.to(model.device), output_hidden_states=True)
        embeds = out.hidden_states[-1][:, TEMPLATE_DROP:].float()
        mask = torch.ones(embeds.shape[:2], dtype=torch.bool, device=embeds.device)
        return Conditioning(embeds, extra={"mask": mask}), None

    def with_reference(self, cond: Conditioning, reference: torch.Tensor) -> Conditioning:
        """``cond`` with the (1, C, h, w) latent ``reference`` as the model's reference image."""
        return Conditioning(cond.embeds, cond.pooled, {**cond.extra, "reference": pack(reference)[0]})

    # ---- latents

    def _statistics(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of the VAE's latents per channel, from its config."""
        config = self.model.vae.config
        return tuple(torch.tensor(v, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
                     for v in (config.latents_mean, config.latents_std))

    @torch.no_grad()
    def encode_image(self, pixels: np.ndarray) -> torch.Tensor:
        vae = self.model.vae
        image = vae_io.unit_range(pixels, self.model.device)[:, :, None]  # one frame
        latents = vae.encode(image.to(vae.dtype)).latent_dist.mode()[:, :, 0].float()
        mean, std = self._statistics(latents)
        return patchify((latents - mean) / std)

    def to_vae_latents(self, latent: torch.Tensor) -> torch.Tensor:
        """A normalised patch grid -> the VAE's (B, C, 1, H, W) latents."""
        latents = unpatchify(latent)
        mean, std = self._statistics(latents)
        return (latents * std + mean)[:, :, None]

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> np.ndarray:
        vae = self.model.vae
        pixels = vae.decode(self.to_vae_latents(latent.float()).to(vae.dtype)).sample[:, :, 0]
        return vae_io.to_uint8(pixels)

    # ---- sampling

    def guide(self, unconditional: torch.Tensor, conditional: torch.Tensor,
              scale: float) -> torch.Tensor:
        """True CFG, rescaled per token (over the channels) to the conditional's norm."""
        guided = classifier_free(unconditional, conditional, scale)
        return guided * (conditional.norm(dim=1, keepdim=True) / guided.norm(dim=1, keepdim=True))

    @torch.no_grad()
    def predict(self, latents: torch.Tensor, timestep, cond: Conditioning, **kwargs) -> torch.Tensor:
        model = self.model
        dtype = model.transformer.dtype
        batch, rows, columns = latents.shape[0], *latents.shape[-2:]
        tokens, _ = pack(latents.to(dtype))
        # the reference is the photo at the latent's own geometry: the same grid
        tokens = torch.cat([tokens, cond.extra["reference"].to(dtype)], dim=1)
        mask = cond.extra["mask"]
        # As the pipelines: the timestep in the latents' dtype, then scaled to [0, 1].
        times = torch.full((batch,), float(timestep), device=model.device).to(dtype) / 1000
        out = model.transformer(hidden_states=tokens, timestep=times,
                                encoder_hidden_states=cond.embeds.to(dtype),
                                encoder_hidden_states_mask=None if mask.all() else mask,
                                img_shapes=[[(1, rows, columns)] * 2] * batch,
                                return_dict=False, **kwargs)[0]
        return unpack(out[:, : rows * columns].float(), rows, columns)
