"""Re-thresholding the mask off the GUI thread: one job at a time on a thread of its own, its
result handed back on the GUI thread, where the document drops it if the mask changed meanwhile.

A job computes only the tiles the threshold move reaches when the mask has no operation (the
common case: heatmap plus strokes), else the whole fold and the tiles that changed; either way the
GUI thread then writes and redraws those tiles alone.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, Qt, Signal

from desktop_app.mask_layers import (HeatmapRanges, MaskLayers, Rect, changed_tiles, fold,
                                     rethreshold_patches, tile_runs)

_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refold")


@dataclass
class Refolded:
    """The mask at ``level``: patches to write, or whole new arrays with the rects that changed."""

    level: float
    version: int  # the document's mask version the job started from
    ranges: HeatmapRanges | None  # the heatmap's tile ranges, kept for the next job
    patches: list[tuple[Rect, np.ndarray, np.ndarray]]  # (rect, prefix, composed)
    whole: tuple[np.ndarray, np.ndarray] | None = None  # (prefix, composed) of a full fold
    rects: list[Rect] | None = None  # where ``whole`` differs from the mask before


def refold(layers: MaskLayers, shape, old: float, new: float, before: np.ndarray,
           ranges: HeatmapRanges | None, version: int) -> Refolded:
    """The mask folded at ``new`` from one folded at ``old`` (``before``); numpy only."""
    if layers.heatmap is None:  # nothing depends on the threshold
        return Refolded(new, version, ranges, [])
    if len(layers.segments) == 1:
        if ranges is None or ranges.heatmap is not layers.heatmap:
            ranges = HeatmapRanges.of(layers.heatmap)
        return Refolded(new, version, ranges, rethreshold_patches(layers, ranges, old, new))
    prefix, composed = fold(layers, new, shape)
    rects = tile_runs(changed_tiles(before, composed), shape)
    return Refolded(new, version, ranges, [], (prefix, composed), rects)


class Refolder(QObject):
    """Runs refold() jobs one at a time; ``finished`` carries the result of the job started last."""

    finished = Signal(object)  # Refolded, on the GUI thread
    _done = Signal(object)  # a job's Future, emitted on the job's thread

    def __init__(self, parent=None):
        super().__init__(parent)
        self._job: Future | None = None
        self._done.connect(self._deliver, Qt.ConnectionType.QueuedConnection)

    @property
    def busy(self) -> bool:
        return self._job is not None

    def start(self, *args) -> None:
        """refold(*args) on the job thread (call only when not busy)."""
        self._job = _THREAD.submit(refold, *args)
        self._job.add_done_callback(self._hand_back)

    def _hand_back(self, job: Future) -> None:
        try:
            self._done.emit(job)
        except RuntimeError:  # the document was deleted while the job ran: nobody to tell
            pass

    def wait(self) -> Refolded | None:
        """The running job's result now (blocks until it ends); it is not delivered again."""
        job, self._job = self._job, None
        return None if job is None else job.result()

    def _deliver(self, job: Future) -> None:
        if job is not self._job:  # waited for already
            return
        self._job = None
        self.finished.emit(job.result())
