"""The document's undo stack and steps. Each step stores region patches (a stroke the tiles it
touched, an apply the bounding box of what changed; a tile of one value is kept as that value) and
changes the document only through its undo-side methods. The stack holds at most a memory cap's
worth of steps: beyond it the oldest are dropped, and it says so."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QKeySequence, QUndoCommand

from desktop_app.mask_layers import MaskLayers, PaintLayer, Rect, Segment

# Stroke undo granularity in px: a stroke keeps the tiles it changed; smaller tiles keep less of
# the stroke's surroundings but cost more tiles per dab (128 kept 1.8 times as much).
TILE = 64
DEFAULT_LIMIT_MB = 1024  # the undo stack's memory cap unless Settings say otherwise
MB = 1024**2


def compact(tile: np.ndarray):
    """A tile as stored for undo: its one value where every pixel has it (a stroke's inside, an
    untouched area), else the tile itself. Writing either back into a slice gives the same pixels."""
    first = tile[0, 0]
    return first.copy() if np.all(tile == first) else tile


def held_bytes(*arrays) -> int:
    return sum(a.nbytes for a in arrays if isinstance(a, np.ndarray | np.generic))


class UndoStack(QObject):
    """The app's undo stack: QUndoStack's push/undo/redo/command with a memory cap. Steps are
    QUndoCommands that also tell their ``nbytes`` (what they keep alive for undo)."""

    changed = Signal()  # index, count or held memory changed
    dropped = Signal(int)  # how many of the oldest steps the cap just dropped

    def __init__(self, parent=None, limit_bytes: int = DEFAULT_LIMIT_MB * MB):
        super().__init__(parent)
        self.limit_bytes = int(limit_bytes)
        self._steps: list[QUndoCommand] = []
        self._index = 0  # steps below it are done

    def push(self, step: QUndoCommand) -> None:
        """Do ``step`` (its redo) and put it on top; the undone steps above are forgotten."""
        step.redo()
        del self._steps[self._index:]
        self._steps.append(step)
        self._index = len(self._steps)
        self._trim()
        self.changed.emit()

    def undo(self) -> None:
        if self._index > 0:
            self._index -= 1
            self._steps[self._index].undo()
            self.changed.emit()

    def redo(self) -> None:
        if self._index < len(self._steps):
            self._steps[self._index].redo()
            self._index += 1
            self.changed.emit()

    def clear(self) -> None:
        self._steps.clear()
        self._index = 0
        self.changed.emit()

    def set_limit(self, limit_bytes: int) -> None:
        self.limit_bytes = int(limit_bytes)
        self._trim()
        self.changed.emit()

    def count(self) -> int:
        return len(self._steps)

    def index(self) -> int:
        return self._index

    def command(self, index: int) -> QUndoCommand | None:
        return self._steps[index] if 0 <= index < len(self._steps) else None

    def held(self) -> int:
        """Bytes the steps keep alive for undo and redo."""
        return sum(step.nbytes for step in self._steps)

    def _trim(self) -> None:
        """Drop the oldest done steps until the rest fit under the cap (the newest always stays;
        undone steps wait for redo in order, so they stay too)."""
        held, drop = self.held(), 0
        while held > self.limit_bytes and drop < min(self._index, len(self._steps) - 1):
            held -= self._steps[drop].nbytes
            drop += 1
        if drop:
            del self._steps[:drop]
            self._index = max(0, self._index - drop)
            self.dropped.emit(drop)

    def create_action(self, parent, redo: bool, shortcuts: list[QKeySequence]) -> QAction:
        """The Undo (or Redo) action: names the step it would take, enabled when there is one;
        its tooltip says what undo holds."""
        verb = "&Redo" if redo else "&Undo"
        action = QAction(verb, parent)
        action.setShortcuts(shortcuts)
        action.triggered.connect(self.redo if redo else self.undo)
        keys = ", ".join(k.toString(QKeySequence.SequenceFormat.NativeText) for k in shortcuts)

        def follow():
            step = self.command(self._index if redo else self._index - 1)
            action.setEnabled(step is not None)
            action.setText(verb if step is None else f"{verb} {step.text()}")
            action.setToolTip(f"{action.text().replace('&', '')} ({keys})\n{self.summary()}")

        self.changed.connect(follow)
        follow()
        return action

    def summary(self) -> str:
        """What undo holds, for the Undo and Redo tooltips."""
        return (f"Undo holds {self.count()} step{'s' if self.count() != 1 else ''}, "
                f"{self.held() / MB:.0f} MB of its {self.limit_bytes / MB:.0f} MB (Settings)")


class StrokeRecorder:
    """Saves each touched tile's layers once, before the stroke first changes them."""

    def __init__(self, segment: int, mode: str, radius: float, hardness: float):
        self.segment = segment
        self.mode = mode
        self.radius = float(radius)
        self.hardness = float(hardness)
        self.last = None
        self.tiles: dict[tuple[int, int], tuple] = {}

    def save_tiles(self, rect: Rect, layers: tuple) -> None:
        x, y, w, h = rect
        height, width = layers[0].shape[:2]
        for ty in range(y // TILE, (y + h - 1) // TILE + 1):
            for tx in range(x // TILE, (x + w - 1) // TILE + 1):
                if (ty, tx) in self.tiles:
                    continue
                tile = (tx * TILE, ty * TILE, min(TILE, width - tx * TILE), min(TILE, height - ty * TILE))
                sl = np.s_[tile[1]:tile[1] + tile[3], tile[0]:tile[0] + tile[2]]
                self.tiles[(ty, tx)] = (tile, *(compact(layer[sl].copy()) for layer in layers))

    def patches(self, layers: tuple) -> dict:
        """{tile: (rect, *old, *new)} for the tiles the stroke changed in ``layers`` (those it
        only passed near are left out), every tile compacted."""
        out = {}
        for key, (rect, *old) in self.tiles.items():
            x, y, w, h = rect
            tiles = [layer[y:y + h, x:x + w] for layer in layers]
            if not all(np.array_equal(np.broadcast_to(a, t.shape), t) for a, t in zip(old, tiles)):
                out[key] = (rect, *old, *(compact(t.copy()) for t in tiles))
        return out


class StrokeCommand(QUndoCommand):
    def __init__(self, doc, segment: int, patches: dict, label: str):
        super().__init__(label)
        self.doc, self.segment, self.patches = doc, segment, patches
        self.nbytes = sum(held_bytes(*patch[1:]) for patch in patches.values())
        self._first = True

    def redo(self):
        if self._first:  # the stroke is already on the canvas
            self._first = False
            return
        self.doc.write_patches(self.segment, self.patches, new=True)

    def undo(self):
        self.doc.write_patches(self.segment, self.patches, new=False)


class OpCommand(QUndoCommand):
    def __init__(self, doc, op: tuple, label: str):
        super().__init__(label)
        self.doc = doc
        self.segment = Segment(op=op)

    @property
    def nbytes(self) -> int:
        """The stroke layers painted after the operation: undo alone keeps them while it is undone."""
        return held_bytes(self.segment.added, self.segment.erased)

    def redo(self):
        self.doc.mask.segments.append(self.segment)
        self.doc.mask_structure_changed()

    def undo(self):
        self.doc.mask.segments.pop()
        self.doc.mask_structure_changed()


def layers_bytes(layers: MaskLayers) -> int:
    return held_bytes(layers.heatmap, *(a for seg in layers.segments for a in (seg.added, seg.erased)))


class ReplaceMaskCommand(QUndoCommand):
    def __init__(self, doc, layers: MaskLayers, label: str):
        super().__init__(label)
        self.doc, self.new, self.old = doc, layers, doc.mask
        # The layers it replaced (the others are the document's while it is done).
        self.nbytes = layers_bytes(self.old)

    def redo(self):
        self.doc.mask = self.new
        self.doc.mask_structure_changed(heatmap=True)

    def undo(self):
        self.doc.mask = self.old
        self.doc.mask_structure_changed(heatmap=True)


class HeatmapCommand(QUndoCommand):
    def __init__(self, doc, heatmap: np.ndarray):
        super().__init__("Find mask")
        self.doc, self.new, self.old = doc, heatmap, doc.mask.heatmap
        self.nbytes = held_bytes(self.old)

    def redo(self):
        self.doc.mask.heatmap = self.new
        self.doc.mask_structure_changed(heatmap=True)

    def undo(self):
        self.doc.mask.heatmap = self.old
        self.doc.mask_structure_changed(heatmap=True)


class ApplyCommand(QUndoCommand):
    def __init__(self, doc, entry_id, rect, old, new, old_key, new_key, label):
        super().__init__(label)
        self.doc, self.entry_id, self.rect = doc, entry_id, rect
        self.old, self.new, self.old_key, self.new_key = old, new, old_key, new_key
        self.nbytes = held_bytes(old, new)

    def redo(self):
        self.doc.mark_applied(self.entry_id, True)
        self.doc.write_base(self.rect, self.new, self.new_key)
        self.doc.set_preview(None)

    def undo(self):
        self.doc.mark_applied(self.entry_id, False)
        self.doc.write_base(self.rect, self.old, self.old_key)
        self.doc.set_preview(None)


class PaintStrokeCommand(QUndoCommand):
    def __init__(self, doc, patches: dict):
        super().__init__("Paint stroke")
        self.doc, self.patches = doc, patches
        self.nbytes = sum(held_bytes(*patch[1:]) for patch in patches.values())
        self._first = True

    def redo(self):
        if self._first:  # the stroke is already on the canvas
            self._first = False
            return
        self.doc.write_paint_patches(self.patches, new=True)

    def undo(self):
        self.doc.write_paint_patches(self.patches, new=False)


class PaintReplaceCommand(QUndoCommand):
    def __init__(self, doc, layer: PaintLayer | None, label: str):
        super().__init__(label)
        self.doc, self.new, self.old = doc, layer, doc.paint
        self.nbytes = 0 if self.old is None else held_bytes(self.old.rgb, self.old.coverage)

    def redo(self):
        self.doc.paint = self.new
        self.doc.paint_changed.emit(None)

    def undo(self):
        self.doc.paint = self.old
        self.doc.paint_changed.emit(None)


@dataclass
class BaseState:
    """Everything that changes with the canvas size (kept whole by an extend's undo step)."""

    base: np.ndarray
    photo: object
    mask: MaskLayers
    paint: PaintLayer | None
    key: str


class ResizeCommand(QUndoCommand):
    def __init__(self, doc, entry_id: int, old: BaseState, new: BaseState, label: str):
        super().__init__(label)
        self.doc, self.entry_id, self.old, self.new = doc, entry_id, old, new
        # The canvas it replaced (base, layers, paint); the new one is the document's.
        paint = () if old.paint is None else (old.paint.rgb, old.paint.coverage)
        self.nbytes = held_bytes(old.base, *paint) + layers_bytes(old.mask)

    def redo(self):
        self.doc.mark_applied(self.entry_id, True)
        self.doc.preview_id = None
        self.doc.set_base_state(self.new)
        self.doc.preview_changed.emit()

    def undo(self):
        self.doc.mark_applied(self.entry_id, False)
        self.doc.preview_id = None
        self.doc.set_base_state(self.old)
        self.doc.preview_changed.emit()
