"""The Segment tool's runs: SAM (engine.segment) on a thread of its own, so the window
keeps painting and an edit can run meanwhile; the mask it finds lands on the document's mask
like a selection (one undo step; Alt takes it away)."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, Qt, Signal

from desktop_app.mask_layers import bbox
from engine.errors import InputError

_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segment")


@dataclass(frozen=True)
class Click:
    generation: int  # the document's photo when clicked: a mask for another photo is dropped
    photo_key: str
    x: float
    y: float
    mode: str  # "add" | "erase"


def load_segmenter():
    """The first SAM model in the local hub cache (engine.segment says which to download if none)."""
    from engine.segment import load_segmenter as load

    return load()


class SegmentTool(QObject):
    """Turns canvas clicks into SAM masks on the document's mask layer."""

    message = Signal(str, int)  # status bar text and how long to show it (ms)
    failed = Signal(str, str)  # what went wrong for the user, technical details ("" for a user's fix)
    _done = Signal(object, object)  # (Click, Future), emitted on the job thread

    def __init__(self, doc, load=load_segmenter, parent=None):
        super().__init__(parent)
        self.doc = doc
        self._load = load  # called on the job thread at the first click (and after a failure)
        self._segmenter = None
        self._job: Future | None = None
        self._done.connect(self._deliver, Qt.ConnectionType.QueuedConnection)

    @property
    def busy(self) -> bool:
        return self._job is not None

    def click(self, x: float, y: float, mode: str) -> None:
        """Segment the object under photo point (x, y) and add it to the mask (or take it away)."""
        if not self.doc.has_photo:
            return
        if self._job is not None:
            self.message.emit("Still segmenting the last click\u2026", 3000)
            return
        click = Click(self.doc.generation, self.doc.photo_key, x, y, mode)
        self.message.emit("Segmenting\u2026" if self._segmenter is not None
                          else "Loading the segment model\u2026", 0)
        self._job = _THREAD.submit(self._segment, click, self.doc.base.copy())
        self._job.add_done_callback(lambda job: self._hand_back(click, job))

    def _segment(self, click: Click, rgb: np.ndarray) -> np.ndarray:  # on the job thread
        if self._segmenter is None:
            self._segmenter = self._load()
        return self._segmenter.segment(click.photo_key, rgb, click.x, click.y)

    def _hand_back(self, click: Click, job: Future) -> None:
        try:
            self._done.emit(click, job)
        except RuntimeError:  # the tool was deleted while SAM ran: nobody to tell
            pass

    def _deliver(self, click: Click, job: Future) -> None:
        from desktop_app.worker import describe_exception

        self._job = None
        try:
            mask = job.result()
        except InputError as exc:
            self.message.emit("", 0)
            self.failed.emit(str(exc), "")
            return
        except Exception as exc:  # noqa: BLE001 - a failed model must not take the window down
            self.message.emit("", 0)
            self.failed.emit(*describe_exception(exc))
            return
        if (click.generation, click.photo_key) != (self.doc.generation, self.doc.photo_key):
            self.message.emit("", 0)  # the photo changed while SAM ran
            return
        rect = bbox(mask > 0)
        if rect is None:
            self.message.emit("Segment found no object at that point.", 5000)
            return
        x, y, w, h = rect
        taken = click.mode == "erase"
        self.doc.apply_selection(click.mode, rect, mask[y:y + h, x:x + w],
                                 "Segment taken away" if taken else "Segment added")
        self.message.emit("Segment taken away from the mask." if taken
                          else "Segment added to the mask (Alt+click takes one away).", 5000)
