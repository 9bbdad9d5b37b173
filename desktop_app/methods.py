"""The app's view of the engine's methods: the registry is engine.methods.METHODS (light, no torch);
this adds only what the engine cannot know: which EditParams widgets each method shows, and
friendlier labels for option fields and choices.
"""

from __future__ import annotations

import dataclasses

from engine.methods import METHODS  # the panels import it from here with the app-side tables

DEFAULT_METHOD = "diffedit"

# EditParams widgets per method ("variations" repeats single-result methods with the next seeds,
# "negative" is the Avoid text). Read from each engine module: e.g. Prompt-to-Prompt decodes
# deterministically (no seed, eta or variations) and uses the source text as its negative.
PARAM_FIELDS: dict[str, tuple[str, ...]] = {
    "diffedit": ("negative", "steps", "strength", "guidance", "mask_threshold", "mask_samples",
                 "feather", "eta", "seed", "variations"),
    "blended": ("negative", "steps", "strength", "guidance", "mask_threshold", "feather", "eta",
                "seed"),
    "sdedit": ("negative", "steps", "strength", "guidance", "mask_threshold", "feather", "eta",
               "seed", "variations"),
    "p2p": ("steps", "strength", "guidance", "mask_threshold", "feather"),
    "pnp": ("negative", "steps", "strength", "guidance", "eta", "seed", "variations"),
}
# Widgets that matter only for some option values: (method, widget) -> (option, values).
SHOWN_WHEN: dict[tuple[str, str], tuple[str, tuple]] = {
    ("blended", "strength"): ("action", ("scribble",)),  # the other actions start from noise
    **{("blended", f"extend_{side}"): ("action", ("extend",))
       for side in ("left", "right", "top", "bottom")},
    # SDEdit without "Only inside the mask" ignores the mask, so its threshold and feather too.
    ("sdedit", "mask_threshold"): ("masked", (True,)),
    ("sdedit", "feather"): ("masked", (True,)),
}
# Methods whose engine code cannot work without the "In the photo" text: DiffEdit finds its mask
# where the two texts disagree (an edit without a mask finds one first), Prompt-to-Prompt inverts
# under the source caption and maps its words onto the target's. Blended, SDEdit and
# Plug-and-Play use it only as the fallback negative prompt when Avoid is empty.
SOURCE_METHODS = frozenset({"diffedit", "p2p"})
OPTION_LABELS = {
    "clip_model": "CLIP ranking model", "reweight_words": "Re-weight words",
    "reweight_scale": "Re-weight scale", "cross_fraction": "Cross-attention steps",
    "self_fraction": "Self-attention steps", "blend_words": "Local blend words",
    "blend_threshold": "Local blend level", "feature_fraction": "Feature injection",
    "attention_fraction": "Attention injection", "masked": "Only inside the mask",
    "extend_left": "Extend left", "extend_right": "Extend right", "extend_top": "Extend top",
    "extend_bottom": "Extend bottom",
}
CHOICE_LABELS = {
    "inpaint": "Inpaint inside the mask", "background": "Replace the background",
    "extend": "Extend the photo", "scribble": "Scribble (paint colours)",
    "swap": "Word swap", "refine": "Refine (add words)", "reweight": "Re-weight words",
}


def option_fields(method: str) -> list[dataclasses.Field]:
    """The method's option fields, in declaration order (help, range or choices in metadata)."""
    return list(dataclasses.fields(METHODS[method].options))


def default_options(method: str) -> dict:
    return dataclasses.asdict(METHODS[method].options())


def option_label(name: str) -> str:
    return OPTION_LABELS.get(name, name.replace("_", " ").capitalize())


def finds_mask(method: str) -> bool:
    """Only a method whose mask is "auto" (DiffEdit) has a Find mask of its own."""
    return METHODS[method].mask == "auto"


def needs_source(method: str) -> bool:
    """Whether ``method`` needs the "In the photo" text (not just as a fallback negative)."""
    return method in SOURCE_METHODS


def shows(method: str, widget: str, options: dict) -> bool:
    """Whether ``widget`` (an EditParams widget or an option field) belongs on the panel now."""
    condition = SHOWN_WHEN.get((method, widget))
    if condition is not None and options.get(condition[0]) not in condition[1]:
        return False
    if widget in {f.name for f in option_fields(method)}:
        return True
    return widget in PARAM_FIELDS.get(method, PARAM_FIELDS[DEFAULT_METHOD])


def extension(method: str, options: dict) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) px a run adds around the photo (0s unless Blended extend)."""
    if method != "blended" or options.get("action") != "extend":
        return 0, 0, 0, 0
    return tuple(int(options.get(f"extend_{side}", 0)) for side in ("left", "right", "top", "bottom"))
