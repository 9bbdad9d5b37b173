"""Blended Latent Diffusion (Avrahami et al., 2023): generate inside a mask from the target text
while the latent outside it follows the photo, noised to the level of every step.

Actions (``BlendedOptions.action``), all the same loop on a different mask or start:

- ``inpaint``: new content inside the user's mask, from pure noise over all ``params.steps``.
- ``background``: the user's mask marks the subject to KEEP; everything else is generated.
- ``extend`` (outpainting): the canvas grows by ``extend_left/right/top/bottom`` px and the new
  strip is the mask (united with the user's mask when one is given, e.g. to redo a seam). The
  photo is edge-padded onto the larger canvas so the VAE sees a plausible border, a session on
  that canvas does the work, and the result has the larger size with the original pixels in
  place (all of them when ``params.feather`` is 0; otherwise all but a ``feather``-px fade
  inside the photo's border, which hides the seam).
- ``scribble``: the session's photo already carries the user's painted colours inside the mask
  (build it with :func:`scribble_photo`, then ``EditSession(model, painted)``); the run starts
  from that photo noised to ``params.strength`` so the colours and rough shapes steer the
  result, and pixels outside the mask are the photo's own.

``options.candidates`` results come back, candidate i seeded with ``params.seed + i`` (its
``params.seed`` says so); they are generated in batches but each candidate's noise comes from
its own generator, so a seed gives the same candidate in any batch (up to a rare one-level
rounding difference: batch size changes the UNet's float summation order). With
``options.clip_model`` naming a local CLIP model they are ranked best first by how well the
masked area matches the target text (``stats["clip_score"]``, ``stats["rank"]``); otherwise
they stay in seed order.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from engine import masks, methods
from engine.errors import InputError
from engine.backbones.base import Conditioning, as_conditioning
from engine.inversion import Schedule
from engine.inversion import add_noise as add_noise  # the DDPM forward process, importable here too

Scorer = Callable[[np.ndarray, str], float]  # (RGB crop, text) -> higher is a better match


def run(session, ctx, source, target, mask, params, options) -> list:
    """Generate ``options.candidates`` results inside the action's mask; paste each back."""
    # 1. Check inputs
    methods.check_own("blended", source, target, mask, params, options)
    # 2. The area to generate (and for extend, the grown canvas)
    warnings = []
    if options.action == "extend":
        session, mask = extended_session(session, mask, methods.info("blended").margins(options))
    else:
        if any(getattr(options, f"extend_{side}") for side in methods.EXTEND_SIDES):
            warnings.append("extend_left/right/top/bottom only apply with action 'extend'; "
                            "they were ignored")
        mask = action_mask(options.action, mask)

    # 3. The ranking model, loaded first: a wrong path is reported without waiting for the run
    scorer = None
    if options.clip_model:
        with ctx.timed("rank"):
            scorer = load_clip_scorer(options.clip_model)
        if scorer is None:
            warnings.append(f"no CLIP model could be loaded from {options.clip_model!r} (a local "
                            "folder, or a hub id already downloaded); the candidates are unranked")

    # 4. Prepare the schedule: scribble starts part way from the painted photo, the others from
    #    pure noise; candidate i takes seed + i
    geometry = session.geometry(params)
    schedule = session.schedule(params.steps, geometry)
    from_photo = options.action == "scribble"
    timesteps = schedule.tail(params.encode_steps) if from_photo else schedule.timesteps
    seeds = [params.seed + i for i in range(options.candidates)]
    # 5. Encode the texts and denoise every candidate, the photo blended in outside the mask (an
    #    inpainting model also sees the mask and the photo around it)
    negative = params.negative_prompt or source
    with ctx.timed("decode"), session.inpainting(geometry, mask):
        latents = generate(ctx, schedule, timesteps, session.image_latent(geometry),
                           torch.from_numpy(geometry.mask_to_latent(mask)), session.embed(negative),
                           session.embed(target), params.guidance, params.eta, seeds, from_photo,
                           session.backbone.max_batch, geometry.latent_content)
    # 6. Decode and paste back each candidate
    results = [session.finish(ctx, geometry, latent[None], mask, params.replace(seed=seed), source,
                              target, "blended", options)
               for seed, latent in zip(seeds, latents)]

    # 7. Rank the candidates (best first)
    if scorer is not None:
        try:
            with ctx.timed("rank"):
                results = rank(results, target, scorer)
        except Exception as exc:  # a faulty ranking model must not cost the finished candidates
            warnings.append(f"ranking the candidates failed ({type(exc).__name__}: {exc}); "
                            "they are unranked")
    for result in results:
        result.warnings.extend(warnings)
    return results


# ---- masks and canvases ---------------------------------------------------------------------


def action_mask(action: str, mask: np.ndarray) -> np.ndarray:
    """The area to generate for inpaint, background and scribble, from the user's mask."""
    if action != "background":
        return mask
    background = masks.invert(mask)
    if not (background > 0).any():
        raise InputError("the mask covers the whole photo, so no background is left to replace: "
                         "paint only the subject to keep")
    return background


def extended_session(session, mask: np.ndarray | None, extension: tuple[int, int, int, int]):
    """(session on the grown canvas, mask of the new area [united with the user's mask]).

    ``extension`` is (left, right, top, bottom) in px. The new area is filled by repeating the
    photo's edge pixels: the generation replaces it, but the VAE encodes the border cells from it.
    """
    from engine.imaging import resolve_max_pixels

    left, right, top, bottom = extension
    height, width = session.rgb.shape[:2]
    new_width, new_height = width + left + right, height + top + bottom
    limit = resolve_max_pixels()
    if new_width * new_height > limit:
        raise InputError(f"the extended canvas would be {new_width}x{new_height}, more than the "
                         f"{limit} pixel limit; extend by less (or raise DIFFEDIT_MAX_PIXELS)")
    grown = np.pad(session.rgb, ((top, bottom), (left, right), (0, 0)), mode="edge")
    area = np.ones((new_height, new_width), np.float32)
    area[top:top + height, left:left + width] = 0.0 if mask is None else mask
    grown_session = type(session)(session.model, grown)  # engine.session imports this module
    grown_session.warnings = session.warnings  # one list: warnings from either reach the results
    return grown_session, area


def scribble_photo(rgb: np.ndarray, paint: np.ndarray, coverage: np.ndarray,
                   mask: np.ndarray) -> np.ndarray:
    """The photo with the user's paint layer laid over it inside ``mask`` (a scribble run's input).

    ``paint`` is the layer's (H, W, 3) uint8 colours and ``coverage`` its alpha, (H, W) in [0, 1]
    or uint8. Paint outside the mask is dropped, so pixels outside the mask stay the photo's.
    """
    rgb, paint = np.asarray(rgb), np.asarray(paint)
    coverage = np.asarray(coverage)
    if coverage.dtype == np.uint8:
        coverage = coverage / 255.0
    size = rgb.shape[:2]
    if paint.shape != rgb.shape or coverage.shape != size or np.shape(mask) != size:
        raise InputError(f"the paint layer ({paint.shape}), its coverage ({coverage.shape}) and "
                         f"the mask ({np.shape(mask)}) must match the photo ({rgb.shape})")
    alpha = np.clip(coverage, 0.0, 1.0).astype(np.float32) * (np.asarray(mask) > 0)
    return masks.composite(rgb, paint.astype(np.uint8), alpha)


# ---- sampling --------------------------------------------------------------------------------


def seeded_noise(generators: list[torch.Generator], shape, device) -> torch.Tensor:
    """One standard-normal sample per generator, stacked on the batch axis."""
    return torch.cat([torch.randn((1, *shape[1:]), generator=g) for g in generators]).to(device)


@torch.no_grad()
def generate(ctx, schedule: Schedule, timesteps, z0: torch.Tensor, latent_mask: torch.Tensor,
             uncond: Conditioning, cond: Conditioning, guidance: float, eta: float,
             seeds: list[int], from_photo: bool, batch: int,
             preview_content: tuple[int, int] | None = None) -> torch.Tensor:
    """One final latent per seed, (len(seeds), C, h, w), in UNet calls of at most ``batch``
    sample-evaluations (CFG takes two per candidate)."""
    per_call = max(1, batch // (2 if guidance != 1.0 else 1))
    groups = [seeds[i:i + per_call] for i in range(0, len(seeds), per_call)]
    finals = []
    for first, group in zip(range(0, len(seeds), per_call), groups):
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in group]
        noise = seeded_noise(generators, z0.shape, z0.device)  # this candidate's fixed noise
        start = schedule.noised(z0, noise, timesteps[0]) if from_photo else noise
        finals.append(blended_denoise(
            ctx, schedule, timesteps, start, z0, noise, latent_mask, uncond, cond, guidance, eta,
            generators, progress=(first * len(timesteps), len(seeds) * len(timesteps)),
            preview_content=preview_content))
    return torch.cat(finals)


@torch.no_grad()
def blended_denoise(ctx, schedule: Schedule, timesteps, x: torch.Tensor, z0: torch.Tensor,
                    noise: torch.Tensor, latent_mask: torch.Tensor | None, uncond: Conditioning,
                    cond: Conditioning, guidance: float, eta: float = 0.0,
                    generators: list[torch.Generator] | None = None, *,
                    progress: tuple[int, int | None] = (0, None),
                    preview_content: tuple[int, int] | None = None) -> torch.Tensor:
    """Sample from ``x`` (at ``timesteps[0]``) through ``timesteps`` under ``cond`` with CFG
    (DDIM on a DDPM schedule, Euler on a flow-matching one).

    Before the first step and after every step, the latent outside ``latent_mask`` (1 = generate,
    soft values blend; None = no blending) is replaced by ``schedule.noised(z0, noise, t)`` at the
    exact level the latent has reached, so the model always sees the photo where it must stay.
    ``eta`` > 0 draws DDIM's per-step noise from ``generators`` (one per batch entry).
    ``progress`` = (candidate-steps done before this call, total candidate-steps of the run)
    for ``ctx.step``: a step of a batch of ``n`` candidates counts ``n``, as the step plan does.
    """
    mask = None if latent_mask is None else latent_mask.to(x.device, torch.float32)[None, None]

    def blend(latent: torch.Tensor, t) -> torch.Tensor:
        if mask is None:
            return latent
        return mask * latent + (1 - mask) * schedule.noised(z0, noise, t)

    count = x.shape[0]
    use_cfg = guidance != 1.0
    uncond, cond = as_conditioning(uncond), as_conditioning(cond)
    texts = (Conditioning.cat([uncond.expand(count), cond.expand(count)]) if use_cfg
             else cond.expand(count))
    done, total = progress
    total = total or len(timesteps) * count
    x = blend(x, timesteps[0])
    for index, t in enumerate(timesteps):
        arrival = schedule.previous(t)  # where this step arrives
        if use_cfg:
            prediction = ctx.guide(*schedule.predict(ctx, torch.cat([x, x]), t, texts).chunk(2),
                                   guidance)
        else:
            prediction = schedule.predict(ctx, x, t, texts)
        step_noise = seeded_noise(generators, x.shape, x.device) if eta > 0 and generators else None
        x = blend(schedule.step(x, prediction, t, arrival, eta, step_noise), arrival)
        ctx.step_with_preview(done + (index + 1) * count, total, x, preview_content)
    return x


# ---- ranking ---------------------------------------------------------------------------------


def rank(results: list, target: str, scorer: Scorer | None) -> list | None:
    """``results`` best first by ``scorer`` on each one's masked area (ties keep seed order),
    with ``stats["clip_score"]`` and ``stats["rank"]`` (1 = best); None without a scorer."""
    if scorer is None:
        return None
    scores = [float(scorer(masked_crop(r.image, r.mask), target)) for r in results]
    order = sorted(range(len(results)), key=lambda i: -scores[i])
    for place, i in enumerate(order, start=1):
        results[i].stats["clip_score"] = round(scores[i], 6)
        results[i].stats["rank"] = place
    return [results[i] for i in order]


def masked_crop(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The square around the mask's bounding box (a little context included), inside the image:
    what the ranking looks at. A square, because CLIP's preprocessing centre-crops."""
    rows, cols = np.nonzero(mask > 0.5)
    if rows.size == 0:
        return image
    height, width = mask.shape
    side = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
    side = min(max(height, width), int(side * 1.1) + 1)
    centre_y, centre_x = (rows.min() + rows.max()) // 2, (cols.min() + cols.max()) // 2
    top = int(np.clip(centre_y - side // 2, 0, max(0, height - side)))
    left = int(np.clip(centre_x - side // 2, 0, max(0, width - side)))
    return image[top:top + side, left:left + side]


_clip_cache: dict[str, Scorer] = {}


def load_clip_scorer(location: str) -> Scorer | None:
    """A scorer from a local CLIP model (a folder, or a hub id already in the local cache): the
    cosine similarity of its image and text embeddings. None when no loadable model is there;
    never downloads. It runs on the CPU so that it takes no GPU memory from the UNet; the last
    one loaded is kept, so ranking again costs no load."""
    if location in _clip_cache:
        return _clip_cache[location]
    from transformers import CLIPModel, CLIPProcessor

    try:
        model = CLIPModel.from_pretrained(location, local_files_only=True).eval()
        processor = CLIPProcessor.from_pretrained(location, local_files_only=True)
    except Exception:  # missing, not a CLIP model, or damaged: the caller leaves them unranked
        return None

    @torch.no_grad()
    def score(image: np.ndarray, text: str) -> float:
        inputs = processor(text=[text], images=[image], return_tensors="pt", padding=True,
                           truncation=True)
        out = model(**inputs)
        image_embed = torch.nn.functional.normalize(out.image_embeds, dim=-1)
        text_embed = torch.nn.functional.normalize(out.text_embeds, dim=-1)
        return float((image_embed * text_embed).sum())

    _clip_cache.clear()
    _clip_cache[location] = score
    return score
