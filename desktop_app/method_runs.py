"""What a run of the chosen method takes from the document: the mask (or none), the options, the
scribble paint layer, and the step plan for "time left"; user mistakes become InputError."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from desktop_app.methods import METHODS
from engine.errors import InputError
from engine.methods import options as method_options
from engine.params import EditParams


@dataclass
class RunInputs:
    method: str
    options: dict
    mask: np.ndarray | None
    paint: tuple | None
    plan: dict  # stage -> steps per run (variation), for the progress estimate


def run_inputs(method: str, options: dict, params: EditParams, doc) -> RunInputs:
    """Check the inputs the method needs and collect them (GUI thread, before submitting)."""
    info = METHODS[method]
    method_options.from_dict(info.options, options)  # InputError naming a bad option
    mask = None if info.mask == "none" else doc.mask_for_engine()
    if mask is not None and not mask.any():
        raise InputError("The mask is empty, so nothing would change: lower the mask threshold, "
                         "paint with the brush (B), or clear the mask"
                         + (" to have one found." if info.mask == "auto" else "."))
    action = options.get("action") if method == "blended" else None
    if method == "blended" and action != "extend" and mask is None:
        what = "the subject to keep" if action == "background" else "the area to change"
        raise InputError(f"{info.title} needs a mask: paint {what} with the brush (B), or load "
                         "one (Mask \u25b8 Load Mask).")
    paint = doc.paint_for_engine() if action == "scribble" else None
    if action == "scribble" and paint is None:
        raise InputError("Scribble starts from colours you paint: choose Paint (P), pick a colour, "
                         "and paint rough shapes inside the mask.")
    steps = params.encode_steps
    if method == "blended":
        plan = {"decode": (steps if action == "scribble" else params.steps)
                * int(options.get("candidates", 1))}
    elif method == "diffedit":
        plan = {"encode": steps, "decode": steps}
        if mask is None:
            plan["mask"] = params.mask_samples
    elif method == "sdedit":
        plan = {"decode": steps}
    else:  # p2p and pnp invert the photo, then decode
        plan = {"encode": steps, "decode": steps}
    return RunInputs(method, dict(options), mask, paint, plan)
