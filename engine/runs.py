"""One run as one request: RunRequest (plain data) and execute(), the one run path of the app's
worker and the CLI: variations, the auto mask found first, the scribble input and the memory retry.

No torch at import: a request can be built and checked on the app's GUI thread before the model
loads. execute() takes sessions from the caller (``open_session(key, photo)``), so the caller
decides how long sessions and their caches live.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from engine import masks, methods
from engine.errors import InputError
from engine.params import EditParams
from engine.results import EditResult

if TYPE_CHECKING:  # engine.runtime imports torch
    from engine.runtime import OnStep, ShouldStop

OpenSession = Callable[[str, object], object]  # (photo key, photo) -> EditSession


@dataclass(frozen=True)
class RunRequest:
    """Everything one run of one method needs, as plain values (no Qt, no torch)."""

    photo: object  # engine.imaging.Photo (or an (H, W, 3) uint8 array): the pixels to edit
    photo_key: str  # names those pixels: the same key reuses the session and its caches
    method: str  # an engine.methods.METHODS name
    source: str  # what is in the photo now ("" when not said)
    target: str  # what it should become
    mask: np.ndarray | None  # the user's (H, W) mask in [0, 1]; None: found first ("auto") or none
    params: EditParams = EditParams()  # params.seed is the first variation's seed
    options: dict = field(default_factory=dict)  # the method's own options, as plain values
    variations: int = 1  # runs with seeds params.seed, params.seed + 1, ... (one result or more each)
    # The scribble paint layer ((H, W, 3) uint8 colours, (H, W) coverage) laid over the photo
    # inside the mask before the run, or methods.PAINT_IN_PHOTO when the photo already carries
    # the colours (the CLI), or None when the method takes no paint.
    paint: object = None

    def check(self):
        """Raise InputError (methods.check_inputs' sentence) before any work; the parsed options."""
        info = methods.info(self.method)
        if isinstance(self.variations, bool) or not isinstance(self.variations, int) \
                or self.variations < 1:
            raise InputError(f"variations must be a whole number of 1 or more, got {self.variations!r}")
        if self.variations > 1 and not info.variations:
            raise InputError(f"{info.title} makes no variations (its results for one seed do not "
                             "vary, or it makes several itself); run it once")
        parsed = methods.check_inputs(self.method, self.source, self.target, self.mask,
                                      self.params, self.options, self.paint)
        last = self.params.seed + self.variations - 1
        if last > methods.SEED_MAX:
            raise InputError(f"seed {self.params.seed} leaves no room for {self.variations} "
                             f"variations (each takes the next seed, up to {methods.SEED_MAX}); "
                             "pick a smaller seed")
        return parsed


def execute(request: RunRequest, open_session: OpenSession, *, on_step: OnStep | None = None,
            should_stop: ShouldStop | None = None,
            on_variation: Callable[[int, int], None] | None = None,
            on_result: Callable[[EditResult], None] | None = None) -> list[EditResult]:
    """Run ``request``: every variation's results, in order (``result.variation`` numbers them).

    ``on_variation(index, count)`` is called before each variation's run and ``on_result`` with
    each result as soon as it exists; ``on_step``/``should_stop`` as for EditSession.run (a stop
    raises Cancelled). Each run retries once at a lower memory tier (engine.memory.with_fallback).
    """
    # 1. Check inputs
    request.check()
    info = methods.info(request.method)
    # 2. Open the session: the photo, or the photo with the scribble paint laid over it
    photo, key = request.photo, request.photo_key
    if info.takes_paint(request.options) and request.paint is not methods.PAINT_IN_PHOTO:
        photo, key = _painted(request)
    session = open_session(key, photo)
    # 3. The automatic mask, found once for every variation (the app shows it for refining)
    mask, heatmap, mask_stats = request.mask, None, None
    if mask is None and info.finds_mask(request.options):
        if on_variation is not None:
            on_variation(0, request.variations)
        heatmap = session.estimate_mask(request.source, request.target, request.params,
                                        method=request.method, on_step=on_step,
                                        should_stop=should_stop)
        mask = masks.threshold_auto(heatmap, request.params.mask_threshold)
        mask_stats = getattr(session, "mask_stats", None)
    # 4. The variations, each with the next seed
    results: list[EditResult] = []
    for index in range(request.variations):
        if on_variation is not None:
            on_variation(index, request.variations)
        params = request.params.replace(seed=request.params.seed + index)
        started = time.perf_counter()
        batch = session.run(request.method, request.source, request.target, mask, params,
                            dict(request.options), on_step=on_step, should_stop=should_stop)
        for result in batch:
            result.seconds = (time.perf_counter() - started) / len(batch)
            if heatmap is not None:
                result.heatmap = heatmap
                if index == 0 and mask_stats:
                    _add_stage(result.stats, mask_stats, "mask")
            result.variation = len(results)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def _add_stage(stats: dict, stage_stats: dict, stage: str) -> None:
    """Count the shared mask step's time and UNet work in the first variation's figures."""
    seconds = stage_stats.get("seconds", {}).get(stage)
    evals = stage_stats.get("unet_evals", {}).get(stage)
    if seconds is not None and "seconds" in stats:
        stats["seconds"][stage] = seconds
    if evals is not None and "unet_evals" in stats:
        stats["unet_evals"] = {stage: evals, **stats["unet_evals"]}
        stats["unet_evals_total"] = sum(stats["unet_evals"].values())


def _painted(request: RunRequest):
    """(the photo with the paint laid over it inside the mask, its session key).

    A painted photo is a different photo: its key carries a digest of the pixels, so the session
    (and its cached latents) of the unpainted photo is never reused for it.
    """
    from engine.methods.blended import scribble_photo

    colours, coverage = request.paint
    rgb = np.asarray(getattr(request.photo, "rgb", request.photo))
    painted = scribble_photo(rgb, colours, coverage, request.mask)
    digest = hashlib.blake2b(painted.tobytes(), digest_size=12).hexdigest()
    photo = (dataclasses.replace(request.photo, rgb=painted)
             if dataclasses.is_dataclass(request.photo) else painted)
    return photo, f"{request.photo_key}+scribble-{digest}"
