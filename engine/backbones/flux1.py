"""FLUX.1: Kontext [dev] (instruction editing) and the [dev]/[schnell] text-to-image models: CLIP's
pooled text and T5's sequence, the FLUX.1 VAE with its shift and scale, a flow transformer over
2x2-packed latent tokens, as diffusers' FluxKontextPipeline and FluxPipeline drive them.

- Text (the pipeline's ``encode_prompt``): CLIP-L's pooled output over 77 tokens and T5's last
  hidden states over 512; the text ids are all zero. The empty text is encoded like any other.
- Latents: the VAE's mean with its config's shift and scale (engine.backbones.vae), patchified
  2x2 (16 -> 64 channels, 16 px per cell) as FLUX.2 does; ``predict`` packs that grid into
  tokens in row-major order with (0, row, column) ids.
- Schedule: sigmas linspace(1, 1/steps, steps) with the scheduler config's dynamic shift of the
  token count (FlowBackbone's ``mu``), as the pipeline computes them.
- Reference image (``with_reference``, the ``instruct`` method): the photo's latent packed as
  extra tokens after the latent's with ids (1, row, column), as the pipeline's
  ``prepare_latents`` gives its ``image=``; only the latent's tokens come back.
- Guidance: Kontext and [dev] are guidance-distilled, the scale is the transformer's input
  (``guidance_embedded``: EditSession sets ``guidance_scale`` per run; the model cards' 2.5 for
  Kontext and 3.5 for [dev], over 28 steps), so every step is one prediction, no CFG (the
  pipelines' ``true_cfg_scale`` stays at its 1). [schnell]'s transformer has no guidance input:
  it is step-distilled (4 steps, guidance 1).
"""

from __future__ import annotations

import numpy as np
import torch

from engine.backbones import flux2, vae
from engine.backbones.base import Conditioning, distilled_defaults
from engine.backbones.flow import FLOW_METHODS, PatchedFlowBackbone
from engine.backbones.sd3 import too_long_note

KONTEXT = "flux1-kontext"
FAMILIES = ("flux1", KONTEXT)
T5_TOKENS = 512  # the pipeline's max_sequence_length
REFERENCE_ID = 1  # the first id of the reference image's tokens (the pipeline's image_ids)


def pack(latents: torch.Tensor, first: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, h, w) -> ((B, h*w, C) tokens in row-major order, (h*w, 3) their ids (``first``,
    row, column)): FLUX.2's packing without its fourth id axis."""
    tokens, ids = flux2.pack(latents, first)
    return tokens, ids[0, :, :3]


class Flux1(PatchedFlowBackbone):
    """FLUX.1 [dev]/[schnell] (family "flux1") and FLUX.1 Kontext [dev] ("flux1-kontext")."""

    def __init__(self, model):
        super().__init__(model)
        self.guidance_scale = self.family_defaults["guidance"]  # until a run sets its own

    @property
    def kontext(self) -> bool:
        return self.family == KONTEXT

    @property
    def title(self) -> str:
        return "FLUX.1 Kontext" if self.kontext else "FLUX.1"

    @property
    def methods(self) -> frozenset[str]:
        """Only Kontext edits from a reference image."""
        return FLOW_METHODS | {"instruct"} if self.kontext else FLOW_METHODS

    @property
    def guidance_embedded(self) -> bool:
        return bool(self.model.transformer.config.guidance_embeds)

    @property
    def family_distilled(self) -> bool:
        """[schnell]: no guidance input, 4 steps."""
        return not self.guidance_embedded

    @property
    def family_defaults(self) -> dict:
        if self.family_distilled:
            return distilled_defaults(4)
        return {"steps": 28, "guidance": 2.5 if self.kontext else 3.5}

    @property
    def unused_params(self) -> frozenset[str]:
        """No CFG, so no negative text."""
        return super().unused_params | {"negative_prompt"}

    # ---- text

    @torch.no_grad()
    def encode_text(self, text: str) -> tuple[Conditioning, str | None]:
        model = self.model
        clip = model.tokenizer(text, padding="max_length", max_length=model.tokenizer.model_max_length,
                               truncation=True, return_tensors="pt").input_ids.to(model.device)
        pooled = model.text_encoder(clip, output_hidden_states=False).pooler_output.float()
        t5 = model.tokenizer_2(text, padding="max_length", max_length=T5_TOKENS, truncation=True,
                               return_tensors="pt").input_ids.to(model.device)
        embeds = model.text_encoder_2(t5, output_hidden_states=False)[0].float()
        # T5 reads what CLIP's 77 tokens cut, so only T5's limit loses words
        note = too_long_note(model.tokenizer_2, text, T5_TOKENS, "the T5 text encoder's")
        return Conditioning(embeds, pooled), note

    def with_reference(self, cond: Conditioning, reference: torch.Tensor) -> Conditioning:
        """``cond`` with the (1, C, h, w) latent ``reference`` as the model's reference image."""
        tokens, ids = pack(reference, REFERENCE_ID)
        return Conditioning(cond.embeds, cond.pooled,
                            {**cond.extra, "reference": tokens, "reference_ids": ids[None]})

    # ---- latents

    def encode_image(self, pixels: np.ndarray) -> torch.Tensor:
        model = self.model
        return flux2.patchify(vae.encode(model.vae, vae.unit_range(pixels, model.device)))

    def decode(self, latent: torch.Tensor) -> np.ndarray:
        return vae.decode(self.model.vae, flux2.unpatchify(latent.float()))

    # ---- sampling

    @torch.no_grad()
    def predict(self, latents: torch.Tensor, timestep, cond: Conditioning, **kwargs) -> torch.Tensor:
        model = self.model
        dtype = model.dtype
        batch, rows, columns = latents.shape[0], *latents.shape[-2:]
        tokens, image_ids = pack(latents.to(dtype))
        if "reference" in cond.extra:  # after the latent's tokens, as the pipeline orders them
            tokens = torch.cat([tokens, cond.extra["reference"].to(dtype)], dim=1)
            image_ids = torch.cat([image_ids, cond.extra["reference_ids"][0]])
        # As the pipeline: the timestep in the latents' dtype, then scaled to [0, 1].
        times = torch.full((batch,), float(timestep), device=model.device).to(dtype) / 1000
        guidance = (torch.full((batch,), float(self.guidance_scale), device=model.device)
                    if self.guidance_embedded else None)
        text_ids = torch.zeros(cond.embeds.shape[1], 3, device=model.device)
        out = model.transformer(hidden_states=tokens, timestep=times, guidance=guidance,
                                pooled_projections=cond.pooled.to(dtype),
                                encoder_hidden_states=cond.embeds.to(dtype), txt_ids=text_ids,
                                img_ids=image_ids, return_dict=False, **kwargs)[0]
        return flux2.unpack(out[:, : rows * columns].float(), rows, columns)
