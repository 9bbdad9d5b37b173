"""The app's view of the engine's methods. What a method needs and shows comes from the engine's
registry (engine.methods.METHODS, plain values, no torch); this adds only the friendlier labels
for option fields and choices, and names the panel's questions about a method."""

from __future__ import annotations

import dataclasses

from engine.methods import METHODS  # the panels import it from here with the app-side tables

DEFAULT_METHOD = "diffedit"  # the first method the panel shows
OPTION_LABELS = {  # plain words; the tooltips keep the papers' terms (the engine's help)
    "clip_model": "Rank with CLIP model", "reweight_words": "Emphasise words",
    "reweight_scale": "Emphasis", "cross_fraction": "Keep word layout",
    "self_fraction": "Keep shapes", "blend_words": "Change only (words)",
    "blend_threshold": "Word area level", "feature_fraction": "Keep structure",
    "attention_fraction": "Keep layout", "masked": "Only inside the mask",
    "extend_left": "Extend left", "extend_right": "Extend right", "extend_top": "Extend top",
    "extend_bottom": "Extend bottom", "auto_mask": "Find the area when there is no mask",
}
CHOICE_LABELS = {
    "inpaint": "Inpaint inside the mask", "background": "Replace the background",
    "extend": "Extend the photo", "scribble": "Scribble (paint colours)",
    "swap": "Word swap", "refine": "Refine (add words)", "reweight": "Emphasise words",
}


def option_fields(method: str) -> list[dataclasses.Field]:
    """The method's option fields, in declaration order (help, range or choices in metadata)."""
    return list(dataclasses.fields(METHODS[method].options))


def option_label(name: str) -> str:
    return OPTION_LABELS.get(name, name.replace("_", " ").capitalize())


def finds_mask(method: str) -> bool:
    """Whether the method has a Find mask of its own: one whose mask is "auto" (DiffEdit), or
    that finds one when asked (Instruction edit, from its instruction)."""
    info = METHODS[method]
    return info.mask == "auto" or info.auto_when is not None


def shows(method: str, widget: str, options: dict) -> bool:
    """Whether ``widget`` (an EditParams field, an option field or "variations") belongs on the
    panel now, for these option values."""
    return METHODS[method].shows(widget, options)


def takes_paint(method: str, options: dict) -> bool:
    """Whether a run of ``method`` with these options paints with the paint layer (scribble)."""
    return METHODS[method].takes_paint(options)


def uses_seed(method: str) -> bool:
    """A deterministic method (Prompt-to-Prompt) shows no seed: its result never varies."""
    info = METHODS.get(method)
    return info is None or info.shows("seed")


def extension(method: str, options: dict) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) px a run with these options adds around the photo."""
    info = METHODS.get(method)
    return (0, 0, 0, 0) if info is None else info.canvas_margins(options)


def action_title(method: str, options: dict) -> str:
    """The method's title, with its chosen action when that is not the method's default one:
    "Blended Latent Diffusion (extend)"."""
    info = METHODS.get(method)
    if info is None:
        return method
    action = options.get("action")
    default = info.default_options().get("action")
    return f"{info.title} ({action})" if action and action != default else info.title


def result_kind(method: str) -> str:
    """What each of several results of one run is: a "variation" (the run repeated with the next
    seed) or, for a method without variations that makes several at once (Blended), a
    "candidate"."""
    info = METHODS.get(method)
    return "variation" if info is None or info.variations else "candidate"
