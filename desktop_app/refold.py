"""Re-thresholding the mask off the GUI thread: one job at a time on a thread of its own, its
result handed back on the GUI thread, where the document drops it if the mask changed meanwhile.

A job computes only the tiles the threshold move reaches (grown by how far the mask's operations
carry a change), so the GUI thread then writes and redraws those tiles alone; a big result comes
in parts of at most PART pixels, one per event-loop turn, so the window never waits long for it.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
from PySide6.QtCore import QObject, Qt, QTimer, Signal

from desktop_app.mask_layers import HeatmapRanges, MaskLayers, Rect, rethreshold_patches

_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refold")
PART = 1 << 20  # pixels written and redrawn per event-loop turn: ~10 ms, so a 24 MP change never blocks


@dataclass
class Refolded:
    """The mask at ``level`` as patches to write over the mask folded at the level before."""

    level: float
    version: int  # the document's mask version the job started from
    ranges: HeatmapRanges | None  # the heatmap's tile ranges, kept for the next job
    patches: list[tuple[Rect, np.ndarray, np.ndarray]]  # (rect, prefix, composed)
    last: bool = True  # False: a part, more of the job follows (the mask is at ``level`` after the last)

    def parts(self, budget: int) -> list["Refolded"]:
        """This result in parts of at most ``budget`` pixels each (big patches cut into row bands)."""
        parts, current, size = [], [], 0
        for (x, y, w, h), prefix, composed in self.patches:
            step = max(1, budget // max(w, 1))
            for top in range(0, h, step):
                band = slice(top, min(h, top + step))
                if current and size + w * (band.stop - top) > budget:
                    parts.append(replace(self, patches=current, last=False))
                    current, size = [], 0
                current.append(((x, y + top, w, band.stop - top), prefix[band], composed[band]))
                size += w * (band.stop - top)
        parts.append(replace(self, patches=current, last=True))
        return parts


def refold(layers: MaskLayers, old: float, new: float, ranges: HeatmapRanges | None,
           version: int) -> Refolded:
    """The patches that take the mask folded at ``old`` to ``new``; numpy only."""
    if layers.heatmap is None:  # nothing depends on the threshold
        return Refolded(new, version, ranges, [])
    if ranges is None or ranges.heatmap is not layers.heatmap:
        ranges = HeatmapRanges.of(layers.heatmap)
    return Refolded(new, version, ranges, rethreshold_patches(layers, ranges, old, new))


class Refolder(QObject):
    """Runs refold() jobs one at a time; ``finished`` carries the result of the job started last,
    in parts; it is busy until the last part is delivered."""

    finished = Signal(object)  # Refolded, on the GUI thread
    _done = Signal(object)  # a job's Future, emitted on the job's thread

    def __init__(self, parent=None):
        super().__init__(parent)
        self._job: Future | None = None
        self._parts: deque[Refolded] = deque()  # of the finished job, not yet delivered
        self._next = QTimer(self, singleShot=True, interval=0)
        self._next.timeout.connect(self._deliver_part)
        self._done.connect(self._deliver, Qt.ConnectionType.QueuedConnection)

    @property
    def busy(self) -> bool:
        return self._job is not None

    @property
    def delivering(self) -> bool:
        """Parts of a job were delivered and more are to come."""
        return bool(self._parts)

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
        """What the running job has not delivered yet, now, in one (blocks until the job ends)."""
        job, self._job = self._job, None
        if job is None:
            return None
        parts, self._parts = list(self._parts) or job.result().parts(PART), deque()
        self._next.stop()
        return replace(parts[-1], patches=[patch for part in parts for patch in part.patches])

    def _deliver(self, job: Future) -> None:
        if job is not self._job:  # waited for already
            return
        self._parts = deque(job.result().parts(PART))
        self._deliver_part()

    def _deliver_part(self) -> None:
        if not self._parts:
            return
        part = self._parts.popleft()
        if part.last:
            self._job = None
        else:
            self._next.start()
        self.finished.emit(part)
