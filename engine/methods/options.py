"""Each method's own options: frozen dataclasses whose field metadata drive CLI flags and app widgets.

No torch here. Fields are made with ``option`` (engine.fields.described): ``help`` (tooltip /
--help text), and either ``range`` (low, high) for numbers or ``choices`` for text;
``validate`` and ``from_dict`` (engine.fields) check them.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.fields import described as option
from engine.fields import from_dict, validate  # noqa: F401 - the options' checks, used by name here


@dataclass(frozen=True)
class DiffEditOptions:
    """DiffEdit's settings all live in EditParams (steps, strength, mask threshold...)."""


@dataclass(frozen=True)
class BlendedOptions:
    action: str = option("inpaint", "inpaint: generate inside the mask; background: replace "
                         "everything outside it; extend: outpaint onto new canvas; scribble: start "
                         "from colours painted inside the mask",
                         choices=("inpaint", "background", "extend", "scribble"))
    candidates: int = option(4, "how many results to generate in one run", range=(1, 16))
    extend_left: int = option(0, "px of new canvas on the left (extend)", range=(0, 4096))
    extend_right: int = option(0, "px of new canvas on the right (extend)", range=(0, 4096))
    extend_top: int = option(0, "px of new canvas on top (extend)", range=(0, 4096))
    extend_bottom: int = option(0, "px of new canvas at the bottom (extend)", range=(0, 4096))
    clip_model: str = option("", "local CLIP model (folder, or hub id already in the cache) to rank "
                             "the candidates by how well the masked area matches the target text; "
                             "empty: shown unranked. Never downloaded")


@dataclass(frozen=True)
class SDEditOptions:
    masked: bool = option(False, "restrict the change to the mask (paste-back outside it)")


@dataclass(frozen=True)
class PromptToPromptOptions:
    mode: str = option("swap", "swap: replace words (same word count); refine: add words; "
                       "reweight: scale chosen words' attention (Stable Diffusion models; flow "
                       "transformers have no separate cross-attention)",
                       choices=("swap", "refine", "reweight"))
    reweight_words: str = option("", "words of the target whose attention is scaled (needed by "
                                 "mode reweight; also applied on top of swap or refine; Stable "
                                 "Diffusion models)")
    reweight_scale: float = option(1.0, "attention scale c for those words", range=(-2.0, 2.0))
    cross_fraction: float = option(0.8, "fraction of steps with cross-attention injected (Stable "
                                   "Diffusion models)", range=(0.0, 1.0))
    self_fraction: float = option(0.4, "fraction of steps with self-attention injected (flow "
                                  "transformers: the photo's image keys and values)", range=(0.0, 1.0))
    blend_words: str = option("", "local blend: words whose attention area may change (empty: off)")
    blend_threshold: float = option(0.3, "local blend: attention level that becomes the mask",
                                    range=(0.0, 1.0))
    direct_inversion: bool = option(True, "keep the source branch on the photo's inverted path at "
                                    "every step and move the edit with it (Direct Inversion): no "
                                    "drift from the photo, no extra work")


@dataclass(frozen=True)
class PlugAndPlayOptions:
    feature_fraction: float = option(0.8, "fraction of steps with decoder block 4's features "
                                     "injected from the photo (Stable Diffusion models)",
                                     range=(0.0, 1.0))
    attention_fraction: float = option(0.5, "fraction of steps with self-attention queries/keys "
                                       "(decoder blocks 4-11) injected; flow transformers: every "
                                       "layer's image keys and values", range=(0.0, 1.0))


@dataclass(frozen=True)
class FlowEditOptions:
    masked: bool = option(False, "restrict the change to the mask (paste-back outside it); "
                          "without a painted mask, one is found from the two texts as DiffEdit does")
    source_guidance: float = option(1.5, "guidance of the source text's velocity (models with "
                                    "true classifier-free guidance; the paper: 1.5 on FLUX, 3.5 on "
                                    "SD3)", range=(0.0, 50.0))
    n_avg: int = option(1, "noise draws averaged per step for the velocity difference (the "
                        "paper's n_avg)", range=(1, 16))
    n_min: int = option(0, "last steps sampled as plain denoising of the noised edit (the "
                        "paper's n_min); 0: edit down to the clean image", range=(0, 1000))


@dataclass(frozen=True)
class InstructOptions:
    auto_mask: bool = option(False, "without a mask: find the area the instruction is about (where "
                             "the model's prediction with it differs from its prediction without "
                             "it) and change only there; off: change the whole photo")
