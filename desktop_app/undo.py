"""The document's undo steps. Each stores region patches (a stroke the tiles it touched, an apply
the bounding box of what changed) and changes the document only through its undo-side methods."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PySide6.QtGui import QUndoCommand

from desktop_app.mask_layers import MaskLayers, PaintLayer, Rect, Segment

TILE = 128  # stroke undo granularity in px: small enough that a dab saves little, big enough to be few


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
                self.tiles[(ty, tx)] = (tile, *(layer[sl].copy() for layer in layers))


class StrokeCommand(QUndoCommand):
    def __init__(self, doc, segment: int, patches: dict, label: str):
        super().__init__(label)
        self.doc, self.segment, self.patches = doc, segment, patches
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

    def redo(self):
        self.doc.mask.segments.append(self.segment)
        self.doc.mask_structure_changed()

    def undo(self):
        self.doc.mask.segments.pop()
        self.doc.mask_structure_changed()


class ReplaceMaskCommand(QUndoCommand):
    def __init__(self, doc, layers: MaskLayers, label: str):
        super().__init__(label)
        self.doc, self.new, self.old = doc, layers, doc.mask

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
    def __init__(self, doc, entry_id: int, old: _BaseState, new: _BaseState, label: str):
        super().__init__(label)
        self.doc, self.entry_id, self.old, self.new = doc, entry_id, old, new

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
