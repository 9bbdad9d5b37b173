"""Each method's own options: frozen dataclasses whose field metadata drive CLI flags and app widgets.

No torch here. A field's metadata: ``help`` (tooltip / --help text), and either ``range``
(low, high) for numbers or ``choices`` for text. ``validate(options)`` checks them all.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from engine.errors import InputError


def option(default, help: str, *, range=None, choices=None):
    """A dataclass field carrying the user-facing description and the allowed values."""
    return field(default=default, metadata={"help": help, "range": range, "choices": choices})


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
                       "reweight: scale chosen words' attention", choices=("swap", "refine", "reweight"))
    reweight_words: str = option("", "words of the target whose attention is scaled (needed by "
                                 "mode reweight; also applied on top of swap or refine)")
    reweight_scale: float = option(1.0, "attention scale c for those words", range=(-2.0, 2.0))
    cross_fraction: float = option(0.8, "fraction of steps with cross-attention injected", range=(0.0, 1.0))
    self_fraction: float = option(0.4, "fraction of steps with self-attention injected", range=(0.0, 1.0))
    blend_words: str = option("", "local blend: words whose attention area may change (empty: off)")
    blend_threshold: float = option(0.3, "local blend: attention level that becomes the mask",
                                    range=(0.0, 1.0))


@dataclass(frozen=True)
class PlugAndPlayOptions:
    feature_fraction: float = option(0.8, "fraction of steps with decoder block 4's features "
                                     "injected from the photo", range=(0.0, 1.0))
    attention_fraction: float = option(0.5, "fraction of steps with self-attention queries/keys "
                                       "(decoder blocks 4-11) injected", range=(0.0, 1.0))


def validate(options) -> None:
    """Raise InputError naming the first option outside its range or choices."""
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        low_high, choices = f.metadata.get("range"), f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise InputError(f"{f.name} must be one of {', '.join(choices)}, got {value!r}")
        if low_high is not None:
            low, high = low_high
            number_ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if f.type in (int, "int") and (isinstance(value, bool) or not isinstance(value, int)):
                number_ok = False
            if not number_ok or not low <= value <= high:
                raise InputError(f"{f.name} must be from {low} to {high}, got {value!r}")


def from_dict(cls, data: dict | None):
    """Build ``cls`` from a (possibly partial) dict, refusing unknown keys by name."""
    data = dict(data or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(unknown)}; this method takes "
                         f"{', '.join(sorted(known)) or 'none'}")
    built = cls(**data)
    validate(built)
    return built
