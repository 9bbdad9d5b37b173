"""FlowEdit (Kulikov et al., 2024): edit with a flow-matching model without inverting the photo.

From the photo's latent x_src the edit z moves, step by step along the schedule's tail, by the
difference of two velocities at matched path points: with fresh noise eps, z_src = (1 - s) x_src
+ s eps and z_tar = z_src + (z - x_src), the step is z += (s_next - s) (V(z_tar, target) -
V(z_src, source)), averaged over ``n_avg`` noise draws. ``params.strength`` x ``params.steps``
steps run (the paper's n_max); the last ``n_min`` of them denoise z_tar under the target alone.
Identical texts give a zero difference, so z stays x_src exactly and the photo comes back as it
is. With ``options.masked`` the edit is restricted to the mask (the user's, or DiffEdit's mask
found from the two texts): after every step the latent outside it is the photo's at that level,
and the original pixels are pasted back.
"""

from __future__ import annotations

import numpy as np
import torch

from engine import methods
from engine.backbones.base import Conditioning


def run(session, ctx, source, target, mask, params, options) -> list:
    """One result: the photo moved from ``source`` to ``target`` (inside the mask when masked)."""
    # 1. Check inputs
    methods.check_own("flowedit", source, target, mask, params, options)
    mask, warnings = methods.mask_unless_masked("flowedit", mask, options)
    # 2. The area: the user's mask, DiffEdit's from the two texts, or the whole photo
    geometry = session.geometry(params)
    heatmap = None
    if options.masked and mask is None:
        heatmap, mask = session.auto_mask(ctx, geometry, source, target, params)
    # 3. Encode the texts and edit along the schedule's tail
    schedule = session.schedule(params.steps, geometry)
    z0 = session.image_latent(geometry)
    latent_mask = None if mask is None else torch.from_numpy(geometry.mask_to_latent(mask))
    # Guidance as the family defines it: none on a distilled model or one that reads the scale
    # as an input (FLUX.1), true CFG otherwise (unless both scales are 1: it would change nothing).
    backbone = session.backbone
    guided = (not (backbone.distilled or backbone.guidance_embedded)
              and (options.source_guidance, params.guidance) != (1, 1))
    with ctx.timed("decode"):
        latent = edit(ctx, schedule, schedule.tail(params.encode_steps), z0, latent_mask,
                      session.embed(params.negative_prompt) if guided else None,
                      session.embed(source), session.embed(target),
                      (options.source_guidance, params.guidance), options.n_avg, options.n_min,
                      params.seed, geometry.latent_content)
    # 4. Decode and paste back; an edit that moved nothing pastes nothing (no VAE round trip)
    mask = unless_unmoved(session, latent, z0, mask, warnings)
    result = session.finish(ctx, geometry, latent, mask, params, source, target, "flowedit",
                            options, heatmap)
    result.warnings.extend(warnings)
    return [result]


def unless_unmoved(session, latent: torch.Tensor, z0: torch.Tensor, mask, warnings: list):
    """``mask``, or an empty one (with a warning) when the edit's ``latent`` is still the
    photo's ``z0``: the photo comes back as it is, without a VAE round trip."""
    if not torch.equal(latent, z0):
        return mask
    warnings.append("the two texts moved nothing, so the photo is unchanged")
    return np.zeros(session.rgb.shape[:2], np.float32)


@torch.no_grad()
def edit(ctx, schedule, timesteps, z0: torch.Tensor, latent_mask: torch.Tensor | None,
         uncond: Conditioning | None, source: Conditioning, target: Conditioning,
         guidance: tuple[float, float], n_avg: int, n_min: int, seed: int,
         preview_content: tuple[int, int] | None = None) -> torch.Tensor:
    """The final latent of a FlowEdit run through ``timesteps`` (see the module docstring).

    ``uncond`` None: no classifier-free guidance (a distilled model); otherwise each velocity is
    guided against it at ``guidance`` = (source scale, target scale). ``latent_mask`` (1 = edit)
    keeps the photo's latent outside it; None edits everywhere.
    """
    mask = None if latent_mask is None else latent_mask.to(z0.device, torch.float32)[None, None]
    generator = torch.Generator("cpu").manual_seed(seed)
    # One model call per draw: both velocities (each with its unconditional row when guided).
    pair = Conditioning.cat([source, target] if uncond is None else [uncond, source, uncond, target])
    count = len(timesteps)
    z = z0
    noisy = None  # the last n_min steps: the noised edit, denoised under the target alone
    for index, t in enumerate(timesteps):
        arrival = schedule.previous(t)
        if index < count - n_min:
            delta = torch.zeros_like(z0)
            for _ in range(n_avg):
                noise = torch.randn(z0.shape, generator=generator).to(z0.device)
                z_src = schedule.noised(z0, noise, t)
                z_tar = z_src + (z - z0)  # written so: z = z0 gives z_tar = z_src exactly
                delta += _difference(ctx, schedule, z_src, z_tar, t, pair, uncond is not None,
                                     guidance) / n_avg
            z = schedule.step(z, delta, t, arrival)
            if mask is not None:
                z = mask * z + (1 - mask) * z0
            current = z
        else:
            if noisy is None:
                noise = torch.randn(z0.shape, generator=generator).to(z0.device)
                noisy = schedule.noised(z0, noise, t) + (z - z0)
            if uncond is None:
                velocity = schedule.predict(ctx, noisy, t, target)
            else:
                both = Conditioning.cat([uncond, target])
                velocity = ctx.guide(*schedule.predict(ctx, torch.cat([noisy, noisy]), t,
                                                       both).chunk(2), guidance[1])
            noisy = schedule.step(noisy, velocity, t, arrival)
            if mask is not None:
                noisy = mask * noisy + (1 - mask) * schedule.noised(z0, noise, arrival)
            current = noisy
        ctx.step_with_preview(index + 1, count, current, preview_content)
    return z if noisy is None else noisy


def _difference(ctx, schedule, z_src, z_tar, t, pair: Conditioning, guided: bool,
                guidance: tuple[float, float]) -> torch.Tensor:
    """V(z_tar | target) - V(z_src | source), each guided as the model is."""
    if not guided:
        v_src, v_tar = schedule.predict(ctx, torch.cat([z_src, z_tar]), t, pair).chunk(2)
        return v_tar - v_src
    u_src, c_src, u_tar, c_tar = schedule.predict(
        ctx, torch.cat([z_src, z_src, z_tar, z_tar]), t, pair).chunk(4)
    return ctx.guide(u_tar, c_tar, guidance[1]) - ctx.guide(u_src, c_src, guidance[0])
