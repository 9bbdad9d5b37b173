"""What a run of the chosen method takes from the document, as the engine's RunRequest: the mask
(or none), the options, the scribble paint layer, the variations, plus the step plan for "time
left". The engine's registry says which, and RunRequest.check gives user mistakes the same
InputError sentence the CLI and the worker give."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine import methods
from engine.params import EditParams
from engine.runs import RunRequest


@dataclass(frozen=True)
class RunInputs:
    request: RunRequest
    plan: dict  # stage -> steps per run (variation), for the progress estimate


def run_inputs(method: str, options: dict, params: EditParams, doc, source: str, target: str,
               variations: int = 1, use_mask: bool = True) -> RunInputs:
    """Collect and check the run's inputs (GUI thread, before submitting). ``variations`` is
    what the panel asks for; a method without variations runs once; ``use_mask`` False leaves
    the document's mask out."""
    info = methods.info(method)
    mask = None if info.mask == "none" or not use_mask else doc.mask_for_engine()
    paint = None
    if info.takes_paint(options):
        # No layer painted yet is an empty layer, which the check refuses with its sentence.
        paint = doc.paint_for_engine() or (np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1), np.float32))
    request = RunRequest(doc.current_photo(), doc.photo_key, method, source, target, mask, params,
                         dict(options), variations if info.variations else 1, paint)
    request.check()
    return RunInputs(request, info.step_plan(params, options, mask is not None))
