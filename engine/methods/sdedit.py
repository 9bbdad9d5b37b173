"""SDEdit (Meng et al., 2022): noise the photo to a strength and denoise it under the target
text (DDIM, or Euler on a flow-matching model) with classifier-free guidance; globally, or
(``options.masked``) only inside the mask, with the photo's noised latent blended outside at
every step and the original pasted back.

``params.strength`` is the share of the schedule's steps run (0.8 of 50 steps: 40 steps from
timestep ~800); ``params.seed`` seeds the noise, so a seed gives the same bytes.
"""

from __future__ import annotations

import torch

from engine import methods
from engine.methods.blended import blended_denoise


def run(session, ctx, source, target, mask, params, options) -> list:
    """One result: the whole photo re-imagined, or the masked part of it pasted back."""
    # 1. Check inputs
    methods.check_own("sdedit", source, target, mask, params, options)
    mask, warnings = methods.mask_unless_masked("sdedit", mask, options)

    # 2. Prepare the schedule and noise the photo's latent to the strength
    geometry = session.geometry(params)
    schedule = session.schedule(params.steps, geometry)
    timesteps = schedule.tail(params.encode_steps)
    z0 = session.image_latent(geometry)
    generator = torch.Generator("cpu").manual_seed(params.seed)
    noise = torch.randn(z0.shape, generator=generator).to(z0.device)
    latent_mask = None if mask is None else torch.from_numpy(geometry.mask_to_latent(mask))
    start = schedule.noised(z0, noise, timesteps[0])
    # 3. Encode the texts and denoise (the photo blended in outside a mask)
    negative = params.negative_prompt or source
    with ctx.timed("decode"):
        latent = blended_denoise(ctx, schedule, timesteps, start, z0, noise, latent_mask,
                                 session.embed(negative), session.embed(target), params.guidance,
                                 params.eta, [generator],
                                 preview_content=geometry.latent_content)
    # 4. Decode and paste back
    result = session.finish(ctx, geometry, latent, mask, params, source, target, "sdedit", options)
    result.warnings.extend(warnings)
    return [result]
