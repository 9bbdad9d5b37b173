"""Instruction editing ("make the car red") on a model that edits from a reference image (FLUX.2
klein, FLUX.1 Kontext, Qwen-Image-Edit), kept to the area the instruction is about, everything
else byte-identical.

- The model sees the photo as its reference image (``Backbone.with_reference``: klein's and
  Kontext's ``image=`` tokens, Qwen-Image-Edit's image latents) under the instruction, and
  generates from pure noise through the whole schedule; a text encoder that reads the photo with
  the instruction (Qwen2.5-VL) gets it too (``Backbone.encode_instruction``). Without a mask that
  is the family's own edit pipeline (Flux2KleinPipeline(image=photo, prompt=instruction),
  FluxKontextPipeline and QwenImageEdit(Plus)Pipeline likewise).
- The area (``options.auto_mask``, when no mask is given): DiffEdit's estimate
  (engine.methods.diffedit.estimate_heatmap) of the contrast between the prediction under the
  instruction and under the empty instruction, both with the photo as reference, over
  ``params.mask_samples`` noise draws at ``params.mask_noise``; an empty instruction gives
  exactly zero.
- Inside a mask: Blended Latent Diffusion's loop (engine.methods.blended.blended_denoise): after
  every step the latent outside the mask is the photo's at that level, then the original pixels
  are pasted back (feather, seams), so pixels outside the mask are the photo's own.
"""

from __future__ import annotations

import torch

from engine.methods import blended


def run(session, ctx, source, target, mask, params, options) -> list:
    """One result: the photo edited by the instruction ``target`` (inside the mask, if any)."""
    # 1. Check inputs (the shared checks say it all: an instruction, a non-empty mask)
    geometry = session.geometry(params)
    # 2. The area: the user's mask, the one the instruction is about, or the whole photo
    heatmap = None
    if mask is None and options.auto_mask:
        heatmap, mask = session.auto_mask(ctx, geometry, source, target, params, "instruct")
    # 3. The instruction (and for CFG the negative text), each with the photo as reference
    schedule = session.schedule(params.steps, geometry)
    z0 = session.image_latent(geometry)
    negative, instruction = (referenced(session, geometry, text)
                             for text in (params.negative_prompt, target))
    latent_mask = None if mask is None else torch.from_numpy(geometry.mask_to_latent(mask))
    # 4. Generate from pure noise, the photo's latent blended in outside the mask
    with ctx.timed("decode"):
        latent = blended.generate(ctx, schedule, schedule.timesteps, z0, latent_mask, negative,
                                  instruction, params.guidance, 0.0, [params.seed], False,
                                  session.backbone.max_batch, geometry.latent_content)
    # 5. Decode and paste back through the mask (none: the whole photo)
    return [session.finish(ctx, geometry, latent, mask, params, source, target, "instruct",
                           options, heatmap)]


def referenced(session, geometry, text: str):
    """``text``'s conditioning with the photo (at ``geometry``) as the model's reference image
    (and, for a text encoder that reads the photo too, with the photo in the text's features)."""
    return session.backbone.with_reference(session.embed(text, geometry),
                                           session.image_latent(geometry))


def mask_conditions(session, geometry, source: str, target: str) -> tuple:
    """The two conditionings the mask contrasts: the empty instruction's and the instruction's,
    both with the photo as reference (the source text plays no part)."""
    return referenced(session, geometry, ""), referenced(session, geometry, target)
