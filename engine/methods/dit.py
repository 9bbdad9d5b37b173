"""Prompt-to-Prompt and Plug-and-Play on flow transformers (FLUX.2 klein, Z-Image): local blend
from joint attention and image key/value injection from the inverted photo (KV-Edit / Stable Flow
family).

Both invert the photo with the flow ODE and decode a source branch and the target in one batch
(rows: source, then the target's negative row when guided, then the target). During the first
fraction of the steps every attention layer gives the target rows the source row's image keys
and values (engine.dit_attention): the image tokens attend to the photo's own tokens, the text
tokens stay the target's, so the layout is the photo's and the text still speaks.

- ``p2p``: inverted under the source text, the source branch guided by itself (negative-prompt
  inversion, as the UNet P2P); with ``direct_inversion`` it stays on the inverted latents and
  the target moves with it, so identical texts give the photo back exactly. ``self_fraction``
  is the injection's fraction (the image keys/values are joint attention's self-attention
  part). Local blend: the image queries' attention to ``blend_words`` (either text's; summed
  over layers and steps, averaged over heads; each branch dilated by one cell and rescaled to
  [0, 1], their maximum) thresholded at ``blend_threshold`` keeps the source latent outside it
  from 20 % of the steps, and is the mask the photo is pasted back through; a user mask
  replaces it from the first step.
- ``pnp``: inverted without text (DiffEdit's cached encoding), the source row without text on
  the inverted latents, the target generated under its text with ``attention_fraction`` of the
  steps injected: the whole photo changes.

Not carried over, because joint attention has no separate cross-attention to swap: P2P's word
swap / refine / re-weighting (``mode``, ``reweight_*``, ``cross_fraction``: the image-to-text
probabilities share one softmax with the image-to-image ones, and the text tokens' values are
the target's own, updated layer by layer) and PnP's decoder-feature injection
(``feature_fraction``: a transformer has no decoder). Runs say so when those are set.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from engine import dit_attention, methods
from engine.backbones.base import Conditioning
from engine.backbones.flow import ATTENTION_UNUSED_OPTIONS
from engine.errors import InputError
from engine.methods import flowedit, p2p



def run_p2p(session, ctx, source, target, mask, params, options) -> list:
    """Invert under the source text, decode both branches with injection and local blend."""
    # 1. Check inputs and find the blend words' tokens (a word in neither text is refused)
    methods.check_own("p2p", source, target, mask, params, options)
    backbone = session.backbone
    blend = blend_positions(backbone, source, target, options.blend_words)
    warnings = unused_warnings(backbone, "p2p", options) + p2p.decoding_warnings(params)
    # 2. Invert the photo under the source text (cached)
    geometry = session.geometry(params)
    schedule = session.schedule(params.steps, geometry)
    trajectory = p2p.invert(session, ctx, geometry, schedule, params, source)
    # 3. Decode the source branch and the target together, the target's image keys and values
    #    the source's in the first steps, the source latent kept outside the blend mask
    latent_mask = None if mask is None else torch.from_numpy(geometry.mask_to_latent(mask))
    cond = session.embed(source)
    with ctx.timed("decode"):
        latent, blend_map = sample(
            ctx, backbone, schedule, trajectory, cond, cond, session.embed(target),
            params.guidance, p2p.step_count(options.self_fraction, len(trajectory) - 1),
            # a given mask wins over the local blend: its attention is not recorded at all
            latent_mask=latent_mask, blend=blend if latent_mask is None else None,
            blend_threshold=options.blend_threshold,
            retrace=options.direct_inversion, carry=options.direct_inversion,
            preview_content=geometry.latent_content)
    # 4. The local blend's attention map becomes the mask, unless one was given
    heatmap, mask = p2p.blend_mask(geometry, blend_map, mask, options)
    # 5. Decode the target and paste it back; a target that stayed the photo pastes nothing
    mask = flowedit.unless_unmoved(session, latent, trajectory[0], mask, warnings)
    result = session.finish(ctx, geometry, latent, mask, params, source, target, "p2p",
                            options, heatmap)
    result.warnings.extend(warnings)
    return [result]


def run_pnp(session, ctx, source, target, mask, params, options) -> list:
    """Unconditional inversion, then generation under the target with image keys/values injected."""
    # 1. Check inputs (nothing beyond check_inputs' shared checks; the mask is not used)
    warnings = unused_warnings(session.backbone, "pnp", options)
    # 2. Encode the photo without text (cached, shared with DiffEdit)
    geometry = session.geometry(params)
    schedule = session.schedule(params.steps, geometry)
    trajectory = session.encode(ctx, geometry, schedule, params)
    # 3. Encode the texts and generate under the target, image keys/values from the photo's
    negative = params.negative_prompt or source  # the app's convention (see EditResult.metadata)
    with ctx.timed("decode"):
        latent, _ = sample(ctx, session.backbone, schedule, trajectory, session.embed(""),
                           session.embed(negative), session.embed(target), params.guidance,
                           p2p.step_count(options.attention_fraction, len(trajectory) - 1),
                           retrace=True, carry=False, eta=params.eta, seed=params.seed,
                           preview_content=geometry.latent_content)
    # 4. Decode (the whole photo changes: nothing to paste back)
    result = session.finish(ctx, geometry, latent, None, params, source, target, "pnp", options)
    result.warnings.extend(warnings)
    return [result]


def unused_warnings(backbone, method: str, options) -> list[str]:
    """A warning per option of the UNet method set to other than its default."""
    defaults = type(options)()
    return [f"{name} has no counterpart in {backbone.title}'s joint attention and was not used"
            for name in ATTENTION_UNUSED_OPTIONS[method]
            if getattr(options, name) != getattr(defaults, name)]


def blend_positions(backbone, source: str, target: str, words: str):
    """(source token positions, target token positions) of the local blend words, or None when
    there are none; InputError for a word in neither text."""
    if not words.split():
        return None
    texts = {name: backbone.word_positions(text) for name, text in (("source", source),
                                                                      ("target", target))}
    found = {name: [] for name in texts}
    for word in words.split():
        key = p2p.normal_word(word)
        hits = {name: [p for w, ps in text if p2p.normal_word(w) == key for p in ps]
                for name, text in texts.items()}
        if not any(hits.values()):
            raise InputError(f"the local blend word {word!r} is in neither text; use words of "
                             f"{source!r} or {target!r}", field="blend_words")
        for name in found:
            found[name] += hits[name]
    return tuple(found["source"]), tuple(found["target"])


@torch.no_grad()
def sample(ctx, backbone, schedule, trajectory: list[torch.Tensor], source: Conditioning,
           negative: Conditioning, target: Conditioning, guidance: float, inject_steps: int, *,
           latent_mask: torch.Tensor | None = None, blend=None, blend_threshold: float = 0.3,
           retrace: bool = True, carry: bool = True, eta: float = 0.0, seed: int = 0,
           preview_content=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Decode the source branch and the target from ``trajectory[-1]``; return the target's
    final (1, C, H, W) latent and the blend map (H, W) or None.

    ``inject_steps``: the first steps in which the target rows take the source row's image keys
    and values. ``retrace``: the source row is the inverted latent at every step (else it steps
    on its own); ``carry``: the target moves by the source's correction onto it (Direct
    Inversion). ``latent_mask`` (1 = edit) keeps the source latent outside it at every step;
    ``blend`` (source, target token positions) records the attention that becomes the blend
    mask, used from p2p.BLEND_START of the steps.
    """
    count = len(trajectory) - 1
    timesteps = schedule.tail(count)
    use_cfg = guidance != 1.0
    targets = Conditioning.cat([negative, target]) if use_cfg else target
    texts = Conditioning.cat([source, targets])
    control = dit_attention.Control(backbone.token_layout(trajectory[-1], texts))
    rows = texts.batch
    record = {}
    if blend is not None:
        record = {row: positions for row, positions in ((0, blend[0]), (rows - 1, blend[1]))
                  if positions}
    control.record = record
    keep = None
    if latent_mask is not None:
        keep = latent_mask.to(trajectory[0].device, torch.float32)[None, None]
    # Steps without injection skip the source row unless something else reads it.
    source_always = bool(record) or keep is not None or carry or not retrace
    blend_from = p2p.step_count(p2p.BLEND_START, count)
    generator = torch.Generator("cpu").manual_seed(seed)
    x_src, x_tgt = trajectory[-1], trajectory[-1].clone()
    with backbone.controlled(control):
        for index, t in enumerate(timesteps):
            injecting = index < inject_steps
            with_source = injecting or source_always
            control.inject = [(row, 0) for row in range(1, rows)] if injecting else []
            arrival = schedule.previous(t)
            batch = [x_src] * with_source + [x_tgt] * (rows - 1)
            velocity = schedule.predict(ctx, torch.cat(batch), t, texts if with_source else targets)
            v_tgt = velocity[int(with_source):]
            if use_cfg:
                v_tgt = ctx.guide(v_tgt[:1], v_tgt[1:], guidance)
            noise = torch.randn(x_tgt.shape, generator=generator).to(x_tgt.device) if eta > 0 else None
            x_tgt = schedule.step(x_tgt, v_tgt, t, arrival, eta, noise)
            stepped = schedule.step(x_src, velocity[:1], t, arrival) if with_source else None
            if retrace:
                # trajectory[count - index - 1] is the inverted latent at the level reached.
                x_src = trajectory[count - index - 1]
                if carry:  # written so: a target that stepped as the source lands on it exactly
                    x_tgt = x_src + (x_tgt - stepped)
            else:
                x_src = stepped
            step_keep = keep
            if step_keep is None and record and index >= blend_from:
                step_keep = (blend_map(control, x_src.shape[-2:]) > blend_threshold).float()[None, None]
            if step_keep is not None:
                x_tgt = torch.lerp(x_src, x_tgt, step_keep)  # exactly x_tgt where it is 1
            ctx.step_with_preview(index + 1, count, x_tgt, preview_content)
    return x_tgt, blend_map(control, x_src.shape[-2:]) if record else None


def blend_map(control: dit_attention.Control, size) -> torch.Tensor:
    """(H, W) latent-size map in [0, 1]: each recorded branch's attention on its image-token
    grid (a patch of latent cells per token: Z-Image's 2x2) dilated by one token (P2P's local
    blend), upsampled, rescaled to [0, 1]; the branches' maximum."""
    maps = torch.stack(list(control.maps.values()))
    patch = math.isqrt(size[0] * size[1] // maps.shape[1])
    maps = maps.view(-1, 1, size[0] // patch, size[1] // patch)
    maps = F.max_pool2d(maps, 3, stride=1, padding=1)
    if patch > 1:
        maps = F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)
    maps = maps.flatten(1)
    low, high = maps.amin(dim=1, keepdim=True), maps.amax(dim=1, keepdim=True)
    scaled = (maps - low) / (high - low).clamp(min=1e-12)
    return scaled.amax(dim=0).view(*size).clamp(0.0, 1.0)


# What engine.methods.implementation hands the session for these methods on a flow transformer
RUNNERS = {"p2p": SimpleNamespace(run=run_p2p), "pnp": SimpleNamespace(run=run_pnp)}
