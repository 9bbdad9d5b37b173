"""What a run of the chosen method takes from the document: the mask (or none), the options, the
scribble paint layer, and the step plan for "time left"; the engine's registry says which, and
its check_inputs turns user mistakes into the same InputError the CLI and the worker give."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine import methods
from engine.params import EditParams


@dataclass
class RunInputs:
    method: str
    options: dict
    mask: np.ndarray | None
    paint: tuple | None
    plan: dict  # stage -> steps per run (variation), for the progress estimate


def run_inputs(method: str, options: dict, params: EditParams, doc, source: str,
               target: str) -> RunInputs:
    """Check the inputs the method needs and collect them (GUI thread, before submitting)."""
    info = methods.info(method)
    mask = None if info.mask == "none" else doc.mask_for_engine()
    paint = None
    if info.takes_paint(options):
        # No layer painted yet is an empty layer, which check_inputs refuses with its sentence.
        paint = doc.paint_for_engine() or (np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1), np.float32))
    methods.check_inputs(method, source, target, mask, params, options, paint)
    return RunInputs(method, dict(options), mask, paint, info.step_plan(params, options, mask is not None))
