"""Prompt-to-Prompt on real photos (Hertz et al., 2022) with negative-prompt inversion (Miyake et al., 2023).

1. The photo is DDIM-inverted under the source text with guidance 1 (a conditional inversion).
2. Decoding runs the source branch and the target branch in one batch. Negative-prompt
   inversion: the source text's embedding is the negative (unconditional) branch of guidance.
   The source branch is then guided by eps(src) + g * (eps(src) - eps(src)) = eps(src) whatever
   g is, so it is one UNet evaluation per step and retraces the inversion backwards: it is the
   photo's reconstruction. (Null-text inversion gets the same effect by optimising an embedding
   per step, which costs hundreds of extra UNet passes; this costs none.) DDIM retraces its
   inversion only approximately; with ``direct_inversion`` (Ju et al., 2024, default) the source
   branch is put back on the inverted latents after every step and the target moved with it,
   so nothing drifts, still at no extra UNet evaluation. The default encoding ratio is 1, as in
   P2P's own code: the photo is inverted through every step.
3. The target branch's attention is controlled from the source branch's: cross-attention
   (which pixels each word shapes) during the first ``cross_fraction`` of the steps, and
   self-attention (the layout) during the first ``self_fraction``. Word swap maps each target
   word to the source word in the same position; refine aligns the token sequences and lets
   new words keep their own attention; reweight aligns like refine and scales the chosen
   target words' attention by c (reweight_words given with swap or refine scale on top of
   those). Only the target's conditional row is edited; its negative row is left alone, as in
   P2P's own code.
4. Local blend: the cross-attention of ``blend_words`` (source and target branches, summed over
   steps) becomes a mask; outside it the target latent is replaced by the source branch's at
   every step from 20 % of the run. A user mask replaces the attention mask (and blends from
   the first step, like DiffEdit). The mask is returned with the result (as heatmap and
   mask) and the photo is pasted back through it.
"""

from __future__ import annotations

import difflib
import string
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from engine import attention, masks, methods
from engine.errors import InputError
from engine.backbones.base import Conditioning, as_conditioning
from engine.inversion import Schedule, ddim_invert, ddim_step

BLEND_START = 0.2  # attention maps are still vague in the first steps; P2P starts blending here
BLEND_FACTOR = 4  # preferred attention level for blend maps: 1/4 of the latent (16x16 at 512 px)
SELF_MIN_FACTOR = 2  # self-attention is injected only at 1/2 of the latent and coarser (as P2P
#                      does: the full-resolution layers keep the target's fine detail)


# ---- tokens and words -----------------------------------------------------------------------

@dataclass(frozen=True)
class Words:
    """A prompt's words (split on spaces) and the token positions of each (BOS is position 0)."""

    text: str
    words: tuple[str, ...]
    positions: tuple[tuple[int, ...], ...]
    tokens: tuple[int, ...]  # the prompt's token ids, without BOS/EOS
    length: int  # the tokenizer's sequence length (77)

    @classmethod
    def of(cls, tokenizer, text: str) -> "Words":
        length = tokenizer.model_max_length
        words, positions, tokens = [], [], []
        for word in text.split():
            ids = tokenizer(word, add_special_tokens=False).input_ids
            # Words beyond the text encoder's window are cut off with the prompt (session.embed).
            ids = ids[: max(0, length - 2 - len(tokens))]
            if not ids:
                if len(tokens) >= length - 2:
                    break
                continue
            words.append(word)
            positions.append(tuple(range(1 + len(tokens), 1 + len(tokens) + len(ids))))
            tokens.extend(ids)
        return cls(text, tuple(words), tuple(positions), tuple(tokens), length)

    @property
    def end(self) -> int:
        """Position of the end-of-text token."""
        return 1 + len(self.tokens)

    def find(self, word: str) -> list[int]:
        """Token positions of every occurrence of ``word`` (case and punctuation ignored)."""
        key = normal_word(word)
        return [p for w, ps in zip(self.words, self.positions) if normal_word(w) == key for p in ps]


def normal_word(word: str) -> str:
    """``word`` as words are compared: case and surrounding punctuation ignored."""
    return word.lower().strip(string.punctuation)


@dataclass(frozen=True)
class TokenPlan:
    """How the target's cross-attention is made from the source's.

    new[..., j] = sum_i source[..., i] * mapping[i, j] where ``keep_own[j]`` is False, else the
    target's own attention for token j; then new[..., j] *= weights[j].
    """

    mapping: torch.Tensor  # (L, L) float32
    keep_own: torch.Tensor  # (L,) bool: tokens the source has no counterpart for (added words)
    weights: torch.Tensor  # (L,) float32: re-weighting scale per target token (1 elsewhere)
    blend_source: tuple[int, ...]  # source token positions whose attention defines the blend mask
    blend_target: tuple[int, ...]  # target token positions whose attention defines the blend mask


def plan_tokens(tokenizer, source: str, target: str, options) -> TokenPlan:
    """Work out the token alignment, weights and blend tokens; raise InputError on bad words."""
    src, tgt = Words.of(tokenizer, source), Words.of(tokenizer, target)
    length = tgt.length
    mapping = torch.zeros(length, length)
    keep_own = torch.zeros(length, dtype=torch.bool)
    mapping[0, 0] = 1.0  # start-of-text
    if options.mode == "swap":
        if len(src.words) != len(tgt.words):
            raise InputError(
                f"word swap needs the same number of words in both texts, but the source has "
                f"{len(src.words)} ({source!r}) and the target has {len(tgt.words)} ({target!r}); "
                f"change one word for one word, or use mode refine to add words")
        for s_pos, t_pos in zip(src.positions, tgt.positions):
            if len(s_pos) == len(t_pos):
                for i, j in zip(s_pos, t_pos):
                    mapping[i, j] = 1.0
            else:  # a word of another token count: each of its tokens gets the source word's mean
                for j in t_pos:
                    mapping[list(s_pos), j] = 1.0 / len(s_pos)
    else:  # refine and reweight: align the token sequences; unmatched target tokens keep their own
        keep_own[1:tgt.end] = True
        matcher = difflib.SequenceMatcher(None, src.tokens, tgt.tokens, autojunk=False)
        for a, b, size in matcher.get_matching_blocks():
            for k in range(size):
                mapping[1 + a + k, 1 + b + k] = 1.0
                keep_own[1 + b + k] = False
    # End-of-text and padding: aligned at the end-of-text token.
    for j in range(tgt.end, length):
        mapping[min(length - 1, j - tgt.end + src.end), j] = 1.0

    weights = torch.ones(length)
    reweight_words = options.reweight_words.split()
    if options.mode == "reweight" and not reweight_words:
        raise InputError("mode reweight needs the words whose attention to scale (reweight_words)")
    for word in reweight_words:
        found = tgt.find(word)
        if not found:
            raise InputError(f"the re-weighting word {word!r} is not in the target text {target!r}")
        weights[found] = float(options.reweight_scale)

    blend_source, blend_target = [], []
    for word in options.blend_words.split():
        in_source, in_target = src.find(word), tgt.find(word)
        if not in_source and not in_target:
            raise InputError(f"the local blend word {word!r} is in neither text; use words of "
                             f"{source!r} or {target!r}")
        blend_source += in_source
        blend_target += in_target
    return TokenPlan(mapping, keep_own, weights, tuple(blend_source), tuple(blend_target))


def edit_cross_attention(plan: TokenPlan, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The target's new cross-attention probabilities (..., pixels, tokens) from the source's."""
    mapped = source @ plan.mapping.to(source.device)
    keep = plan.keep_own.to(source.device)
    if bool(keep.any()):
        mapped = torch.where(keep, target, mapped)
    return mapped * plan.weights.to(source.device)


# ---- the control --------------------------------------------------------------------------

class Control:
    """The state the processors read during one decoding run (row 0 is the source branch; the
    last row is the target's conditional branch, the only one edited, as in P2P)."""

    def __init__(self, plan: TokenPlan, latent_size: tuple[int, int], observer=None):
        self.plan = plan
        self.latent_size = latent_size
        self.observer = observer  # test hook: observer(source, target_own, target_new) per call
        self.cross = False
        self.self_attention = False
        self.blend = bool(plan.blend_source or plan.blend_target)
        self.rows = 0
        self.maps: dict[tuple[int, int], torch.Tensor] = {}  # (h, w) -> (2, h*w) summed maps

    def self_pairs(self, tokens: int) -> list[tuple[int, int]]:
        return [(self.rows - 1, 0)] if self.self_attention else []

    def cross_active(self) -> bool:
        return self.cross or self.blend

    def edit(self, probs: torch.Tensor) -> torch.Tensor:
        source, target = probs[0], probs[self.rows - 1]
        if self.blend:
            self._collect(source, target)
        if not self.cross:
            return probs
        new = edit_cross_attention(self.plan, source, target)
        if self.observer is not None:
            self.observer(source, target, new)
        probs = probs.clone()
        probs[self.rows - 1] = new
        return probs

    def _collect(self, source: torch.Tensor, target: torch.Tensor) -> None:
        """Add this layer's attention on the blend words (mean over heads) to the running sums."""
        size = attention.spatial_size(source.shape[1], self.latent_size)
        maps = []
        for probs, positions in ((source, self.plan.blend_source), (target, self.plan.blend_target)):
            if positions:
                maps.append(probs[:, :, list(positions)].sum(-1).mean(0))
            else:
                maps.append(torch.zeros(probs.shape[1], device=probs.device))
        stacked = torch.stack(maps)
        self.maps[size] = self.maps[size] + stacked if size in self.maps else stacked

    def blend_map(self) -> torch.Tensor | None:
        """(H, W) latent-size map in [0, 1]: each branch's summed attention on the blend words,
        dilated by one cell, upsampled, rescaled to [0, 1]; the two branches' maximum.

        P2P divides by the maximum only; real attention maps go down to about 0 so that is the
        same there, and rescaling keeps the threshold meaningful on flat maps too (it is the
        app's auto-mask slider, like DiffEdit's heatmap)."""
        if not self.maps:
            return None
        height, width = self.latent_size
        # The level closest to 1/BLEND_FACTOR of the latent, the coarser one on a tie.
        size = min(self.maps, key=lambda s: (abs(np.log2(height / s[0]) - np.log2(BLEND_FACTOR)),
                                             s[0]))
        maps = self.maps[size].view(2, 1, *size)
        maps = F.max_pool2d(maps, 3, stride=1, padding=1)
        maps = F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False)
        flat = maps.flatten(1)
        low, high = flat.amin(dim=1), flat.amax(dim=1)
        scaled = (maps[:, 0] - low[:, None, None]) / (high - low).clamp(min=1e-12)[:, None, None]
        return scaled.amax(dim=0).clamp(0.0, 1.0)


def processors(backbone, control: Control, cross: bool, self_attention: bool) -> dict[str, object]:
    """Controlled processors for the layers P2P controls: every cross-attention layer (when
    cross-attention is injected or blended) and the self-attention layers at 1/SELF_MIN_FACTOR
    of the latent and coarser (when self-attention is injected). Each delegates to its
    original processor in the steps it is idle."""
    saved = backbone.attention_processors()
    out = {}
    for layer in backbone.attention_layers():
        original = saved[layer.name]
        if layer.cross and cross:
            out[layer.name] = attention.CrossAttentionEdit(original, control.cross_active, control.edit)
        elif not layer.cross and self_attention and layer.factor >= SELF_MIN_FACTOR:
            out[layer.name] = attention.QueryKeyInjection(original, control.self_pairs)
    return out


# ---- the run ----------------------------------------------------------------------------

def run(session, ctx, source, target, mask, params, options) -> list:
    """Invert under the source text, decode both branches with attention control, paste back
    (on a UNet; a flow transformer's is engine.methods.dit's)."""
    # 1. Check inputs, and align the two texts' tokens (bad words are refused here)
    methods.check_own("p2p", source, target, mask, params, options)
    plan = plan_tokens(session.backbone.tokenizer, source, target, options)
    # 2. Invert the photo under the source text (cached)
    geometry = session.geometry(params)
    schedule = session.schedule(params.steps)
    trajectory = invert(session, ctx, geometry, schedule, params, source)
    warnings = decoding_warnings(params)
    # 3. Encode the texts and decode both branches with the target's attention controlled
    latent_mask = None
    if mask is not None:
        latent_mask = torch.from_numpy(geometry.mask_to_latent(mask))
    with ctx.timed("decode"):
        latents, blend = sample(ctx, session.backbone, schedule, trajectory, session.embed(source),
                                session.embed(target), plan, params.guidance, options, latent_mask,
                                geometry.latent_content)
    # 4. The local blend's attention map becomes the mask, unless one was given
    heatmap, mask = blend_mask(geometry, blend, mask, options)
    # 5. Decode the target branch and paste it back
    result = session.finish(ctx, geometry, latents[-1:], mask, params, source, target, "p2p",
                            options, heatmap)
    result.warnings.extend(warnings)
    return [result]


def decoding_warnings(params) -> list[str]:
    """What a run says about the params Prompt-to-Prompt does not use."""
    warnings = []
    if params.negative_prompt:
        warnings.append("Prompt-to-Prompt uses the source text as the negative prompt "
                        "(negative-prompt inversion); the negative prompt was not used")
    if params.eta > 0:
        warnings.append("Prompt-to-Prompt decodes deterministically (the inversion must be "
                        "retraced); eta was not used")
    return warnings


def blend_mask(geometry, blend: torch.Tensor | None, mask, options) -> tuple:
    """(heatmap, mask) of a run: the local blend's (H, W) latent map at the photo's size and
    its threshold, unless a mask was given (then it, and no heatmap)."""
    if mask is not None or blend is None:
        return None, mask
    heatmap = geometry.latent_map_to_photo(blend.cpu().numpy())
    mask = masks.threshold(heatmap, options.blend_threshold)
    if not mask.any():
        raise InputError("the local blend mask is empty at this blend_threshold; lower it")
    return heatmap, mask


_TRAJECTORIES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def invert(session, ctx, geometry, schedule: Schedule, params, source: str) -> list[torch.Tensor]:
    """The photo's DDIM trajectory under the source text, guidance 1 (cached per session).

    The session's own encoding is unconditional (DiffEdit's); negative-prompt inversion needs
    the conditional one, so it is cached here, beside the session, keyed by what it depends on.
    """
    cache = _TRAJECTORIES.setdefault(session, OrderedDict())
    key = (geometry, params.steps, params.encode_steps, source)
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    with ctx.timed("encode"):
        trajectory = ddim_invert(ctx, session.image_latent(geometry), schedule,
                                 params.encode_steps, session.embed(source))
    cache[key] = trajectory
    while len(cache) > 2:
        cache.popitem(last=False)
    return trajectory


def step_count(fraction: float, steps: int) -> int:
    """Steps covered by ``fraction`` of a run, halves rounded up (Python's round() goes to even)."""
    return int(fraction * steps + 0.5)


@torch.no_grad()
def sample(ctx, backbone, schedule: Schedule, trajectory: list[torch.Tensor], source: Conditioning,
           target: Conditioning, plan: TokenPlan, guidance: float, options,
           latent_mask: torch.Tensor | None = None, preview_content=None, observer=None):
    """Decode the source and target branches together from the inverted latent.

    Batch rows: [source, target under the source text (guidance's negative), target under the
    target text]; with guidance 1 the middle row is dropped. Returns ((2, C, H, W) final
    latents [source, target], the blend map (H, W) or None).
    """
    count = len(trajectory) - 1
    timesteps = schedule.tail(count)
    x_T = trajectory[-1]
    latent_size = tuple(x_T.shape[-2:])
    use_cfg = guidance != 1.0
    source, target = as_conditioning(source), as_conditioning(target)
    texts = Conditioning.cat([source, source, target] if use_cfg else [source, target])
    control = Control(plan, latent_size, observer)
    control.rows = texts.batch
    control.blend = control.blend and latent_mask is None  # a user mask replaces the attention mask
    user_mask = None
    if latent_mask is not None:
        user_mask = latent_mask.to(x_T.device, torch.float32)[None, None]
    cross_steps, self_steps = step_count(options.cross_fraction, count), step_count(options.self_fraction, count)
    blend_from = step_count(BLEND_START, count)
    x_src, x_tgt = x_T, x_T.clone()
    controlled = processors(backbone, control, cross_steps > 0 or control.blend, self_steps > 0)
    with backbone.hooked(controlled):
        for index, t in enumerate(timesteps):
            control.cross = index < cross_steps
            control.self_attention = index < self_steps
            alpha_t = schedule.alpha(t)
            alpha_next = schedule.alpha(schedule.previous(t))
            rows = [x_src, x_tgt, x_tgt] if use_cfg else [x_src, x_tgt]
            eps = ctx.predict_noise(torch.cat(rows), t, texts, alpha_t)
            eps_src = eps[:1]
            if use_cfg:
                eps_tgt = ctx.guide(eps[1:2], eps[2:3], guidance)
            else:
                eps_tgt = eps[1:2]
            x_src = ddim_step(x_src, eps_src, alpha_t, alpha_next)
            x_tgt = ddim_step(x_tgt, eps_tgt, alpha_t, alpha_next)
            if options.direct_inversion:
                # Direct Inversion (Ju et al., 2024): the source's step from the inverted latent
                # misses the inverted latent one level down (trajectory[count - index - 1]) by
                # the inversion's own error. The source is put back on it and the target moved
                # by the same amount, so identical texts retrace the inversion exactly.
                correction = trajectory[count - index - 1] - x_src
                x_src, x_tgt = x_src + correction, x_tgt + correction
            keep = user_mask
            if keep is None and control.blend and index >= blend_from:
                keep = (control.blend_map() > options.blend_threshold).float()[None, None]
            if keep is not None:
                x_tgt = torch.lerp(x_src, x_tgt, keep)  # exactly x_tgt where keep is 1
            ctx.step_with_preview(index + 1, count, x_tgt, preview_content)
    return torch.cat([x_src, x_tgt]), control.blend_map()
