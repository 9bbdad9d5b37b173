"""The open photo: base image, mask layers, run history and the undo stack (GUI thread only).

The mask's layers and their algebra live in desktop_app/mask_layers.py (numpy only), the undo
steps in desktop_app/undo.py; this is the Qt object the views subscribe to. The methods the undo
steps call (write_patches, write_paint_patches, write_base, set_base_state,
mask_structure_changed) change the state without pushing a step of their own.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal

from desktop_app import undo
from desktop_app.history_entry import HistoryEntry, make_thumbnail
from desktop_app.refold import Refolded, Refolder
from desktop_app.methods import extension
from desktop_app.mask_layers import (MaskLayers, PaintLayer, Rect, Segment, apply_strokes, bbox,
                                     fold, place, segment_coverage, union)
from desktop_app.results_store import ResultStore
from engine import masks
from engine.params import EditParams
from engine.results import EditResult


# ----------------------------------------------------------------------------- document


class Document(QObject):
    """The photo being edited. Views subscribe to its signals; they never change it directly."""

    photo_changed = Signal()  # a different photo (or none): everything must be redrawn
    base_changed = Signal(object)  # Rect of the base image that changed (apply / undo apply)
    mask_changed = Signal(object)  # Rect that changed, or None for the whole mask
    threshold_changed = Signal(float)  # the heatmap threshold: its one home is here
    heatmap_changed = Signal()
    history_changed = Signal()
    preview_changed = Signal()  # which history entry the canvas shows
    paint_changed = Signal(object)  # Rect of the paint layer that changed, or None for all of it
    work_changed = Signal()  # unexported-work state may have changed

    def __init__(self, parent=None):
        super().__init__(parent)
        self.undo_stack = undo.UndoStack(self)
        self.photo = None  # engine.imaging.Photo as opened (metadata, original pixels)
        self.base: np.ndarray | None = None  # current base RGB; applied results are patched in
        self.photo_key = ""  # identifies the base pixels for the worker's session cache
        self.generation = 0  # bumped per opened photo: results of an older photo are dropped
        self.display_name = ""
        self.mask = MaskLayers()
        self.threshold = EditParams().mask_threshold
        self.paint: PaintLayer | None = None  # scribble colours (None until the first paint stroke)
        self._composed: np.ndarray | None = None
        self._prefix: np.ndarray | None = None  # composed mask before the top segment's strokes
        # Re-thresholding runs on a thread of its own: _composed is folded at _levelled, which
        # trails self.threshold while a job runs; _version counts every other mask change, so a
        # job that started before one is dropped.
        self._levelled = self.threshold
        self._version = 0
        self._ranges = None  # the heatmap's tile ranges (mask_layers.HeatmapRanges), per heatmap
        self._refolder = Refolder(self)
        self._refolder.finished.connect(self._on_refolded)
        self.history: list[HistoryEntry] = []
        self.results = ResultStore()  # keeps the history's arrays within a memory budget
        self.preview_id: int | None = None
        self.applied: list[int] = []  # ids of applied entries, oldest first (export metadata)
        self._ids = itertools.count(1)
        self._groups = itertools.count(1)
        self._keys = itertools.count(1)
        self._stroke: undo.StrokeRecorder | None = None
        # The base pixels' key and the result ids when last exported (or opened); None: never.
        self._exported: tuple[str, frozenset[int]] | None = None

    # ------------------------------------------------------------------ photo

    @property
    def has_photo(self) -> bool:
        return self.base is not None

    @property
    def size(self) -> tuple[int, int]:
        return (0, 0) if self.base is None else (self.base.shape[1], self.base.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return (0, 0) if self.base is None else self.base.shape[:2]

    def set_photo(self, photo, display_name: str = "") -> None:
        """Start editing ``photo`` (engine.imaging.Photo); clears mask, history and undo."""
        self.undo_stack.clear()
        self.photo = photo
        self.generation += 1
        self.base = np.ascontiguousarray(photo.rgb).copy()
        self.photo_key = f"photo-{next(self._keys)}"
        path = getattr(photo, "path", None)
        self.display_name = display_name or (Path(path).name if path else "Untitled")
        self.mask = MaskLayers()
        self.paint = None
        self.history.clear()
        self.preview_id = None
        self.applied.clear()
        self._exported = (self.photo_key, frozenset())
        self._refold()
        self.photo_changed.emit()
        self.mask_changed.emit(None)
        self.paint_changed.emit(None)
        self.heatmap_changed.emit()
        self.history_changed.emit()
        self.preview_changed.emit()
        self.work_changed.emit()

    def restore_session(self, photo, display_name: str, fields: dict, unexported: bool) -> None:
        """Replace everything with a saved session (crash restore): ``fields`` are Document
        attributes (base, mask, paint, history, ...) as autosave wrote them; no undo steps."""
        self.set_photo(photo, display_name)
        for key, value in fields.items():
            setattr(self, key, value)
        self._ids = itertools.count(max((e.id for e in self.history), default=0) + 1)
        self._groups = itertools.count(max((e.group for e in self.history), default=0) + 1)
        self.results.fit(self.history)
        self._refold()
        self._exported = None if unexported else self._work_state()
        for signal in (self.photo_changed, self.heatmap_changed, self.history_changed,
                       self.preview_changed, self.work_changed):
            signal.emit()
        self.threshold_changed.emit(self.threshold)
        self.mask_changed.emit(None)
        self.paint_changed.emit(None)

    def current_photo(self):
        """The base as an engine photo (metadata of the opened file, current pixels)."""
        from desktop_app.photo_io import session_photo

        return session_photo(self.photo, self.base.copy())

    # ------------------------------------------------------------------ mask: reading

    @property
    def composed(self) -> np.ndarray:
        """The mask at the current threshold, (H, W) float32 in [0, 1] (waits for a re-threshold
        still running). Do not modify."""
        self.settle()
        return self._composed

    @property
    def shown_mask(self) -> np.ndarray:
        """The mask as the canvas shows it: one running re-threshold behind at most. Never waits."""
        return self._composed

    @property
    def heatmap(self) -> np.ndarray | None:
        return self.mask.heatmap

    def has_mask(self) -> bool:
        return self.mask.heatmap is not None or bool(self._composed is not None and self.composed.any())

    def mask_for_engine(self) -> np.ndarray | None:
        """None when nothing is there yet (the engine then finds a mask first)."""
        return self.composed.copy() if self.has_mask() else None

    def _refold(self) -> None:
        self._version += 1
        self._levelled = self.threshold
        if self.base is None:
            self._composed = self._prefix = None
            return
        self._prefix, self._composed = fold(self.mask, self.threshold, self.shape)

    def _recompose_region(self, rect: Rect) -> None:
        if self._refolder.delivering:  # half a threshold change is written: finish it first
            self._install(self._refolder.wait())
        self._version += 1
        x, y, w, h = rect
        seg = self.mask.segments[-1]
        sl = np.s_[y:y + h, x:x + w]
        self._composed[sl] = apply_strokes(
            self._prefix[sl],
            None if seg.added is None else seg.added[sl],
            None if seg.erased is None else seg.erased[sl],
        )

    # ------------------------------------------------------------------ mask: threshold

    def set_threshold(self, level: float) -> None:
        """Re-threshold the heatmap, keeping strokes and operations. The level is set at once (the
        panel's slider and spin box write through here and show what threshold_changed says);
        the mask follows from a thread of its own, so dragging the slider never blocks the window."""
        level = float(level)
        if level == self.threshold:
            return
        self.threshold = level
        self.threshold_changed.emit(level)
        self._start_refold()

    def _start_refold(self) -> None:
        """One job at a time: a slider flick computes the levels current when a job ends, and
        the last one is always the slider's."""
        if self.base is None or self._levelled == self.threshold or self._refolder.busy:
            return
        layers = MaskLayers(self.mask.heatmap, list(self.mask.segments))
        self._refolder.start(layers, self._levelled, self.threshold, self._ranges, self._version)

    def _on_refolded(self, result: Refolded) -> None:
        self._install(result)
        self._start_refold()

    def _install(self, result: Refolded) -> None:
        if result.version != self._version:  # the mask changed under the job: compute anew
            return
        for rect, prefix, composed in result.patches:
            x, y, w, h = rect
            self._prefix[y:y + h, x:x + w] = prefix
            self._composed[y:y + h, x:x + w] = composed
        for rect, _, _ in result.patches:
            self.mask_changed.emit(rect)
        if result.last:
            self._ranges = result.ranges
            self._levelled = result.level

    def settle(self) -> None:
        """Bring the mask to the current threshold now: take the running job's result, and
        fold here if that is not enough."""
        if self._levelled == self.threshold or self.base is None:
            return
        result = self._refolder.wait()
        if result is not None:
            self._install(result)
        if self._levelled != self.threshold:
            self._refold()
            self.mask_changed.emit(None)

    # ------------------------------------------------------------------ mask: strokes

    def begin_stroke(self, mode: str, radius: float, hardness: float, colour=None) -> None:
        """Start one brush ("add"), eraser ("erase") or paint ("paint", with an (r, g, b)
        ``colour``, onto the scribble paint layer) stroke; it becomes one undo step."""
        if self.base is None:
            return
        if mode not in ("add", "erase", "paint"):
            raise ValueError(mode)
        if mode == "paint":
            if self.paint is None:
                self.paint = PaintLayer(np.zeros((*self.shape, 3), np.uint8),
                                        np.zeros(self.shape, np.float32))
            self._stroke = undo.StrokeRecorder(-1, mode, radius, hardness)
            self._stroke.colour = np.array(colour if colour is not None else (255, 0, 0), np.float32)
            return
        seg = self.mask.segments[-1]
        if seg.added is None:
            seg.added = np.zeros(self.shape, np.float32)
        if seg.erased is None:
            seg.erased = np.zeros(self.shape, np.float32)
        self._stroke = undo.StrokeRecorder(len(self.mask.segments) - 1, mode, radius, hardness)

    def stroke_to(self, x: float, y: float) -> None:
        """Extend the stroke to image point (x, y); the first call paints a single dab."""
        stroke = self._stroke
        if stroke is None:
            return
        start = stroke.last if stroke.last is not None else (x, y)
        stroke.last = (x, y)
        hit = segment_coverage(start, (x, y), stroke.radius, stroke.hardness, self.shape)
        if hit is None:
            return
        rect, coverage = hit
        if stroke.mode == "paint":
            rx, ry, rw, rh = rect
            sl = np.s_[ry:ry + rh, rx:rx + rw]
            layer = self.paint
            stroke.save_tiles(rect, (layer.rgb, layer.coverage))
            c = coverage[..., None]
            mixed = layer.rgb[sl] * (1.0 - c) + stroke.colour * c  # soft edges blend colours
            layer.rgb[sl] = np.rint(mixed).astype(np.uint8)
            np.maximum(layer.coverage[sl], coverage, out=layer.coverage[sl])
            self.paint_changed.emit(rect)
            return
        self._cover(stroke, rect, coverage)

    def _cover(self, stroke: undo.StrokeRecorder, rect: Rect, coverage: np.ndarray) -> None:
        """Add (or erase) ``coverage`` over ``rect`` of the top segment, its tiles saved first."""
        seg = self.mask.segments[stroke.segment]
        stroke.save_tiles(rect, (seg.added, seg.erased))
        x, y, w, h = rect
        sl = np.s_[y:y + h, x:x + w]
        paint, clear = (seg.added, seg.erased) if stroke.mode == "add" else (seg.erased, seg.added)
        # Painting one layer also lifts the other there, so the last stroke always wins.
        np.maximum(paint[sl], coverage, out=paint[sl])
        clear[sl] *= 1.0 - coverage
        self._recompose_region(rect)
        self.mask_changed.emit(rect)

    def apply_selection(self, mode: str, rect: Rect, coverage: np.ndarray, label: str) -> None:
        """A rectangle or lasso selection's ``coverage`` over ``rect`` (inside the photo) added
        to the mask ("add") or taken from it ("erase"), like a brush stroke: one undo step."""
        if self.base is None or self.stroking:
            return
        self.begin_stroke(mode, 0.0, 1.0)
        self._cover(self._stroke, rect, np.asarray(coverage, np.float32))
        self.end_stroke(label)

    def end_stroke(self, label: str | None = None) -> None:
        stroke, self._stroke = self._stroke, None
        if stroke is None or not stroke.tiles:
            return
        if stroke.mode == "paint":
            patches = stroke.patches((self.paint.rgb, self.paint.coverage))
            step = undo.PaintStrokeCommand(self, patches)
        else:
            seg = self.mask.segments[stroke.segment]
            patches = stroke.patches((seg.added, seg.erased))
            label = label or ("Brush stroke" if stroke.mode == "add" else "Eraser stroke")
            step = undo.StrokeCommand(self, stroke.segment, patches, label)
        if patches:  # a stroke that changed nothing is no step
            self.undo_stack.push(step)

    @property
    def stroking(self) -> bool:
        return self._stroke is not None

    def write_patches(self, segment: int, patches: dict, new: bool) -> None:
        seg = self.mask.segments[segment]
        if seg.added is None:
            seg.added = np.zeros(self.shape, np.float32)
            seg.erased = np.zeros(self.shape, np.float32)
        changed = None
        for rect, old_a, old_e, new_a, new_e in patches.values():
            x, y, w, h = rect
            sl = np.s_[y:y + h, x:x + w]
            seg.added[sl] = new_a if new else old_a
            seg.erased[sl] = new_e if new else old_e
            changed = union(changed, rect)
        if segment == len(self.mask.segments) - 1 and changed is not None:
            self._recompose_region(changed)
            self.mask_changed.emit(changed)
        else:  # not reachable through LIFO undo, but stay correct if it ever is
            self._refold()
            self.mask_changed.emit(None)

    # ------------------------------------------------------------------ mask: operations

    def invert_mask(self) -> None:
        self._push_op(("invert",), "Invert mask")

    def grow_mask(self, px: int) -> None:
        self._push_op(("grow", int(px)), f"Grow mask {px} px")

    def shrink_mask(self, px: int) -> None:
        self._push_op(("shrink", int(px)), f"Shrink mask {px} px")

    def feather_mask(self, px: float) -> None:
        self._push_op(("feather", float(px)), f"Feather mask {px:g} px")

    def clear_mask(self) -> None:
        if self.base is not None:
            self.undo_stack.push(undo.ReplaceMaskCommand(self, MaskLayers(), "Clear mask"))

    def load_mask(self, mask: np.ndarray) -> None:
        """Replace every layer with a mask from a file (it becomes an 'added' layer)."""
        if self.base is None:
            return
        layers = MaskLayers(segments=[Segment(added=np.asarray(mask, np.float32).copy(),
                                              erased=np.zeros(self.shape, np.float32))])
        self.undo_stack.push(undo.ReplaceMaskCommand(self, layers, "Load mask"))

    def set_heatmap(self, heatmap: np.ndarray) -> None:
        """A new auto mask from "Find mask": undoable, keeps strokes and operations."""
        if self.base is None:
            return
        heatmap = np.asarray(heatmap, np.float32)
        if heatmap.shape != tuple(self.shape):
            heatmap = masks.resize(heatmap, self.size)
        self.undo_stack.push(undo.HeatmapCommand(self, heatmap))

    def _push_op(self, op: tuple, label: str) -> None:
        if self.base is not None:
            self.undo_stack.push(undo.OpCommand(self, op, label))

    def mask_structure_changed(self, heatmap: bool = False) -> None:
        self._refold()
        self.mask_changed.emit(None)
        if heatmap:
            self.heatmap_changed.emit()

    # ------------------------------------------------------------------ paint layer (scribble)

    def has_paint(self) -> bool:
        return self.paint is not None and bool(self.paint.coverage.any())

    def paint_for_engine(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(colours, coverage) copies for a scribble run, or None when nothing is painted."""
        if not self.has_paint():
            return None
        return self.paint.rgb.copy(), self.paint.coverage.copy()

    def clear_paint(self) -> None:
        if self.base is not None and self.paint is not None:
            self.undo_stack.push(undo.PaintReplaceCommand(self, None, "Clear paint"))

    def write_paint_patches(self, patches: dict, new: bool) -> None:
        changed = None
        for rect, old_rgb, old_cov, new_rgb, new_cov in patches.values():
            x, y, w, h = rect
            sl = np.s_[y:y + h, x:x + w]
            self.paint.rgb[sl] = new_rgb if new else old_rgb
            self.paint.coverage[sl] = new_cov if new else old_cov
            changed = union(changed, rect)
        self.paint_changed.emit(changed)

    # ------------------------------------------------------------------ history

    def new_group(self) -> int:
        return next(self._groups)

    def add_result(self, group: int, result: EditResult) -> HistoryEntry:
        """Keep ``result`` in the history, in run ``group``."""
        entry = HistoryEntry.of(result, id=next(self._ids), group=group, created=time.time(),
                                thumbnail=make_thumbnail(result.image))
        self.history.append(entry)
        self.results.fit(self.history)
        self.history_changed.emit()
        self.work_changed.emit()
        return entry

    def entry(self, entry_id: int | None) -> HistoryEntry | None:
        return next((e for e in self.history if e.id == entry_id), None)

    def delete_entry(self, entry_id: int) -> None:
        self.history = [e for e in self.history if e.id != entry_id]
        if self.preview_id == entry_id:
            self.set_preview(None)
        self.history_changed.emit()
        self.work_changed.emit()

    def set_preview(self, entry_id: int | None) -> None:
        """Show a history entry on the canvas (None: the base photo)."""
        if entry_id is not None and self.entry(entry_id) is None:
            entry_id = None
        if entry_id != self.preview_id:
            self.preview_id = entry_id
            self.preview_changed.emit()

    def shown_image(self) -> np.ndarray | None:
        """What the canvas shows (and Export writes): the previewed result, else the base."""
        entry = self.entry(self.preview_id)
        return entry.image if entry is not None else self.base

    def shown_photo(self):
        """The photo Export writes the shown image as (its metadata, at the shown image's size)."""
        entry = self.entry(self.preview_id)
        if entry is None or entry.image.shape == self.photo.rgb.shape:
            return self.photo
        return resized_photo(self.photo, entry.image, _offset(entry))

    def use_entry_mask(self, entry_id: int) -> bool:
        """Make a result's mask the document's (undoable). A result with an auto mask (P2P local
        blend) gives its heatmap at the level it used, to refine with the threshold and the
        brush; any other gives its mask as painted layers. False when nothing was done (a
        different size)."""
        entry = self.entry(entry_id)
        if entry is None or self.base is None or entry.image.shape != self.base.shape:
            return False
        if entry.heatmap is not None:
            self.set_heatmap(entry.heatmap)
            self.set_threshold(entry.options.get("blend_threshold", self.threshold))
        else:
            self.load_mask(entry.mask)
        return True

    def shown_metadata(self) -> dict:
        entry = self.entry(self.preview_id)
        if entry is None and self.applied:
            entry = self.entry(self.applied[-1])
        return entry.metadata() if entry is not None else {}

    def apply_entry(self, entry_id: int) -> bool:
        """Make a result the new base photo (undoable). False when it changes nothing."""
        entry = self.entry(entry_id)
        if entry is None or self.base is None:
            return False
        if entry.image.shape != self.base.shape:
            self._apply_resized(entry)
            return True
        changed = np.any(entry.image != self.base, axis=2)
        rect = bbox(changed)
        if rect is None:
            return False
        x, y, w, h = rect
        sl = np.s_[y:y + h, x:x + w]
        command = undo.ApplyCommand(self, entry.id, rect, self.base[sl].copy(), entry.image[sl].copy(),
                                self.photo_key, f"photo-{next(self._keys)}",
                                f"Apply \u201c{entry.target}\u201d")
        self.undo_stack.push(command)
        return True

    def _apply_resized(self, entry: HistoryEntry) -> None:
        """Apply a result of another size (Blended extend): the base, the photo's export data,
        the mask layers and the paint layer move onto the new canvas, the old ones kept in place
        (offset by the extension's left and top), the new area unmasked; one undo step."""
        offset, shape = _offset(entry), entry.image.shape[:2]
        layers = MaskLayers(
            heatmap=None if self.mask.heatmap is None else place(self.mask.heatmap, offset, shape),
            segments=[Segment(op=seg.op,
                              added=None if seg.added is None else place(seg.added, offset, shape),
                              erased=None if seg.erased is None else place(seg.erased, offset, shape))
                      for seg in self.mask.segments])
        paint = None
        if self.paint is not None:
            paint = PaintLayer(place(self.paint.rgb, offset, shape),
                               place(self.paint.coverage, offset, shape))
        new = undo.BaseState(entry.image.copy(), resized_photo(self.photo, entry.image, offset), layers,
                         paint, f"photo-{next(self._keys)}")
        old = undo.BaseState(self.base, self.photo, self.mask, self.paint, self.photo_key)
        w, h = entry.size
        self.undo_stack.push(undo.ResizeCommand(self, entry.id, old, new,
                                            f"Apply \u201c{entry.target}\u201d ({w}\u00d7{h})"))

    def set_base_state(self, state: "undo.BaseState") -> None:
        self.base, self.photo, self.mask, self.paint = state.base, state.photo, state.mask, state.paint
        self.photo_key = state.key
        self._refold()
        self.work_changed.emit()
        # A new size: every view rebuilds as for a new photo (history and undo stay).
        self.photo_changed.emit()
        self.mask_changed.emit(None)
        self.heatmap_changed.emit()
        self.paint_changed.emit(None)

    def write_base(self, rect: Rect, pixels: np.ndarray, key: str) -> None:
        x, y, w, h = rect
        self.base[y:y + h, x:x + w] = pixels
        self.photo_key = key
        self.work_changed.emit()
        self.base_changed.emit(rect)

    # ------------------------------------------------------------------ unexported work

    def _work_state(self) -> tuple[str, frozenset[int]]:
        return self.photo_key, frozenset(e.id for e in self.history)

    def has_unexported_work(self) -> bool:
        """True when the base differs from the one last exported (undo back to it: False again)
        or a result came after that export (deleting results adds no work)."""
        if self.base is None:
            return False
        if self._exported is None:
            return True
        key, ids = self._work_state()
        return key != self._exported[0] or not ids <= self._exported[1]

    def mark_exported(self) -> None:
        self._exported = self._work_state()
        self.work_changed.emit()

    def mark_applied(self, entry_id: int, on: bool) -> None:
        """The undo steps' record of which results the base holds (the history marks them)."""
        if on:
            self.applied.append(entry_id)
        elif self.applied and self.applied[-1] == entry_id:
            self.applied.pop()
        self.history_changed.emit()


def _offset(entry: HistoryEntry) -> tuple[int, int]:
    """Where the old canvas sits in a result of another size: the (left, top) its run added."""
    left, _right, top, _bottom = extension(entry.method, entry.options)
    return left, top


def resized_photo(photo, rgb: np.ndarray, offset: tuple[int, int]):
    """The opened photo's export data for pixels of another size (an extended result): its
    metadata and profile stay, the alpha moves along (see engine.imaging.extended_photo)."""
    from engine.imaging import extended_photo

    return extended_photo(photo, rgb, offset)
