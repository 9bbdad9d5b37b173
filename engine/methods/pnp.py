"""Plug-and-Play (Tumanyan et al., 2023): translate the photo to the target text, keeping its structure.

The photo is DDIM-inverted without text (the session's cached encoding, shared with DiffEdit).
Decoding generates under the target text from the inverted noise; during the first
``feature_fraction`` of the steps the residual features of decoder layer 4 are taken from a
source branch, and during the first ``attention_fraction`` the self-attention queries and keys
of decoder layers 4-11. The source branch is the inverted latent at the same step, predicted
without text, run in the same batch as the target (rows: source, negative, target).

Layer numbering (the paper's and its code's): the decoder's resnets counted in execution order
over diffusers' ``unet.up_blocks``; SD 1.x/2.x have 4 blocks x 3 resnets = layers 0-11, so
layer 4 is ``up_blocks[1].resnets[1]`` (the first 16x16 block at 512 px; its residual branch,
the output of ``conv2`` before the skip connection is added, is injected) and the attention of
layers 4-11 is the self-attention (attn1) of ``up_blocks[1].attentions[1:]`` and of all
attentions of ``up_blocks[2]`` and ``up_blocks[3]`` (layers 0-3 have none or are skipped).

Other UNets get the same place by resolution, not by count: the second resnet of the first
decoder block at 1/4 of the latent or finer (where the layout is settled but not the texture),
self-attention from there to the last layer. On SD 1.x/2.x that is layer 4. On SDXL (decoder
blocks at 1/4, 1/2 and 1/1 of the latent; the last one without attention) it is
``up_blocks[0].resnets[1]`` (32x32 at 1024 px: the paper's 1/4 level, its 16x16 at 512 px) and
the self-attention of ``up_blocks[0].attentions[1:]`` and all of ``up_blocks[1].attentions``.
Counting layers instead (round(4 / 12 * 9) = 3) would land on SDXL's 1/2 level, finer than the
paper's, where injected features copy the photo's texture rather than its layout.
"""

from __future__ import annotations

import torch

from engine import attention
from engine.backbones.base import Conditioning, as_conditioning
from engine.inversion import Schedule, ddim_step

FEATURE_FACTOR = 4  # paper: decoder layer 4, the 2nd resnet at 16x16 of a 64x64 latent (1/4)


def injection_layers(layers: list[attention.DecoderLayer]) -> tuple[attention.DecoderLayer, list[str]]:
    """(decoder layer whose residual features are injected, self-attention processor keys), from
    the backbone's decoder layers (``backbone.decoder_layers()``)."""
    block = next(layer.block for layer in layers if layer.factor <= FEATURE_FACTOR)
    in_block = [layer for layer in layers if layer.block == block]
    first = in_block[min(1, len(in_block) - 1)].number
    names = []
    for layer in layers[first:]:
        if layer.attention is not None:
            prefix = f"up_blocks.{layer.block}.attentions.{layer.index}"
            names += attention.self_attention_names(layer.attention, prefix)
    return layers[first], names


def run(session, ctx, source, target, mask, params, options) -> list:
    """Unconditional inversion, then guided generation under the target with injection (on a
    UNet; a flow transformer's is engine.methods.dit's)."""
    # 1. Check inputs (nothing beyond check_inputs' shared checks; the mask is not used)
    # 2. Encode the photo without text (cached, shared with DiffEdit)
    geometry = session.geometry(params)
    schedule = session.schedule(params.steps)
    trajectory = session.encode(ctx, geometry, schedule, params)
    # 3. Encode the texts and generate under the target, features injected from the photo's
    with ctx.timed("decode"):
        negative = params.negative_prompt or source  # the app's convention (see EditResult.metadata)
        latent = sample(ctx, session.backbone, schedule, trajectory, session.embed(""),
                        session.embed(negative), session.embed(target), params.guidance,
                        options.feature_fraction, options.attention_fraction, params.eta,
                        params.seed, geometry.latent_content)
    # 4. Decode (the whole photo changes: nothing to paste back)
    return [session.finish(ctx, geometry, latent, None, params, source, target, "pnp", options)]


def _count(fraction: float, steps: int) -> int:
    """Steps covered by ``fraction`` of a run, halves rounded up (Python's round() goes to even)."""
    return int(fraction * steps + 0.5)


@torch.no_grad()
def sample(ctx, backbone, schedule: Schedule, trajectory: list[torch.Tensor], source: Conditioning,
           negative: Conditioning, target: Conditioning, guidance: float,
           feature_fraction: float, attention_fraction: float, eta: float = 0.0, seed: int = 0,
           preview_content=None) -> torch.Tensor:
    """Generate from ``trajectory[-1]`` under ``target`` with features injected from the source.

    A step without injection runs only the target rows (no source evaluation), so fractions
    of 0 are plain guided DDIM generation from the inverted latent.
    """
    count = len(trajectory) - 1
    timesteps = schedule.tail(count)
    feature_steps = _count(feature_fraction, count)
    attention_steps = _count(attention_fraction, count)
    use_cfg = guidance != 1.0
    source, negative, target = (as_conditioning(c) for c in (source, negative, target))
    target_texts = Conditioning.cat([negative, target]) if use_cfg else target
    state = {"features": False, "attention": False, "rows": 0}

    def target_rows():
        return [(row, 0) for row in range(1, state["rows"])]

    def inject_features(module, inputs, output):
        if not state["features"]:
            return None
        output = output.clone()
        output[1:] = output[:1]
        return output

    feature_layer, attention_names = injection_layers(backbone.decoder_layers())
    saved = backbone.attention_processors()
    processors = {name: attention.QueryKeyInjection(
        saved[name], lambda tokens: target_rows() if state["attention"] else [])
        for name in attention_names}
    generator = torch.Generator("cpu").manual_seed(seed)
    x = trajectory[-1]
    with backbone.hooked(processors, [(feature_layer.resnet.conv2, inject_features)]):
        for index, t in enumerate(timesteps):
            state["features"] = index < feature_steps
            state["attention"] = index < attention_steps
            with_source = state["features"] or state["attention"]
            alpha_t = schedule.alpha(t)
            alpha_next = schedule.alpha(schedule.previous(t))
            rows = [x, x] if use_cfg else [x]
            texts = target_texts
            if with_source:
                # trajectory[count - index] is the inverted latent at timestep t.
                rows = [trajectory[count - index]] + rows
                texts = Conditioning.cat([source, texts])
            state["rows"] = len(rows) if with_source else 0
            eps = ctx.predict_noise(torch.cat(rows), t, texts, alpha_t)
            if with_source:
                eps = eps[1:]
            if use_cfg:
                eps = ctx.guide(*eps.chunk(2), guidance)
            noise = torch.randn(x.shape, generator=generator).to(x.device) if eta > 0 else None
            x = ddim_step(x, eps, alpha_t, alpha_next, eta, noise)
            ctx.step_with_preview(index + 1, count, x, preview_content)
    return x
