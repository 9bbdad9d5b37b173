"""The canvas: zoom under the cursor, fit, 100 %, pan, brush and eraser on the mask, rectangle and
lasso selections and Segment (click) (Alt subtracts), the Paint tool on the scribble paint layer, before/after with a
draggable split, the extend frame's edges.

Scene coordinates are photo pixels ((0, 0) is the top-left corner of the top-left pixel). The view
only reads the document and calls its stroke methods; everything else arrives through signals.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QCursor, QPainter, QPixmap, QTransform
from PySide6.QtWidgets import (QFrame, QGraphicsPixmapItem, QGraphicsScene, QGraphicsView, QLabel,
                               QVBoxLayout)
from desktop_app.canvas.handles import EDGE_CURSORS, GRAB_PX, ExtendFrameItem, SplitGripItem
from desktop_app.canvas.hold_keys import COMPARE_KEY, PAN_KEY, HoldKeys
from desktop_app.canvas.selection import LABELS, LASSO, RECT, SelectionOutlineItem, coverage, outline
from desktop_app.canvas.items import (BrushCursorItem, MaskOverlayItem, PaintOverlayItem, PhotoItem,
                                      qimage_from_rgb, qimage_from_rgba)
from desktop_app.document import Document

MIN_ZOOM, MAX_ZOOM = 0.02, 32.0
BRUSH, ERASER, PAINT = "brush", "eraser", "paint"  # and selection.RECT, selection.LASSO
SEGMENT = "segment"  # a click asks SAM for the object under it (desktop_app.segment_tool)
STROKE_MODES = {BRUSH: "add", ERASER: "erase", PAINT: "paint"}


class Canvas(QGraphicsView):
    """Shows the document's photo, mask and results; paints strokes into its mask."""

    zoom_changed = Signal(float)
    split_dragged = Signal(float)  # the split the hand moved to (the toolbar's slider applies it)
    extend_dragged = Signal(tuple)  # (left, right, top, bottom) an edge drag asks for
    brush_changed = Signal()  # tool, size or hardness changed (panels mirror them)
    cursor_moved = Signal(int, int)  # photo pixel under the mouse
    segment_clicked = Signal(float, float, str)  # photo point (x, y), "add" or "erase" (Alt)

    def __init__(self, document: Document, parent=None):
        super().__init__(parent)
        self.doc = document
        self.setScene(QGraphicsScene(self))
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.MinimalViewportUpdate)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setBackgroundBrush(self.palette().dark())
        # Drops belong to the main window (open a photo), not to the scene.
        self.setAcceptDrops(False)
        self.viewport().setAcceptDrops(False)

        self.photo_item = PhotoItem()
        self.mask_item = MaskOverlayItem()
        self.mask_item.setZValue(10)
        self.paint_item = PaintOverlayItem()  # over the mask overlay: the colours read true
        self.paint_item.setZValue(15)
        self.preview_item = QGraphicsPixmapItem()
        self.preview_item.setZValue(20)
        self.preview_item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self.preview_item.setVisible(False)
        self.split_grip = SplitGripItem()
        self.split_grip.setVisible(False)
        self.frame_item = ExtendFrameItem()
        self.frame_item.setVisible(False)
        self.extend_margins: tuple[int, int, int, int] | None = None  # None: no extend frame
        self.selection_item = SelectionOutlineItem()
        self.selection_item.setVisible(False)
        self.cursor_item = BrushCursorItem()
        self.cursor_item.setVisible(False)
        # The ring is shown only once it sits under the mouse: until then its position is stale
        # (or the scene origin), and showing it would draw it at the photo's corner.
        self._ring_placed = False
        for item in (self.photo_item, self.paint_item, self.mask_item, self.preview_item,
                     self.frame_item, self.split_grip, self.selection_item, self.cursor_item):
            self.scene().addItem(item)

        self.tool = BRUSH
        self.brush_size = 60.0  # diameter in photo pixels
        self.hardness = 0.8
        self.paint_colour = QColor(40, 110, 230)  # the Paint tool's: unlike the mask's red
        self.mask_visible = True
        self.paint_shown = True  # the paint layer is a scribble's input: shown for such runs only
        self._painting = False
        self._dragging: str | None = None  # "split" or an extend frame side, while dragged
        self._selecting: tuple[str, str, list[QPointF]] | None = None  # (tool, mode, points)
        self._panning = False
        self._space = False
        self._pan_from = QPointF()
        self._fit_on_resize = True
        self.hold_keys = HoldKeys(self)

        self.placeholder = QLabel(self.viewport())
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self.placeholder.setText(
            "<p style='font-size:15pt'>Open a photo to start</p>"
            "<p>File \u25b8 Open (Ctrl+O), drop an image here, paste one (Ctrl+V),<br>"
            "or try File \u25b8 Open Sample.</p>")
        layout = QVBoxLayout(self.viewport())
        layout.addWidget(self.placeholder)

        document.photo_changed.connect(self._on_photo_changed)
        document.base_changed.connect(self._on_base_changed)
        document.mask_changed.connect(self._on_mask_changed)
        document.heatmap_changed.connect(self._on_heatmap_changed)
        document.preview_changed.connect(self._update_pixmaps)
        document.paint_changed.connect(self._on_paint_changed)
        self._base_pixmap: QPixmap | None = None
        self._original_pixmap: QPixmap | None = None
        self._on_photo_changed()

    # ------------------------------------------------------------------ document -> view

    def _on_photo_changed(self) -> None:
        doc = self.doc
        self.placeholder.setVisible(not doc.has_photo)
        self.clear_run_preview()
        self._hide_ring()  # the new photo is fitted anew: the old scene position means nothing
        if not doc.has_photo:
            self._base_pixmap = self._original_pixmap = None
            self.photo_item.set_pixmaps(None, None)
            self.mask_item.reset(None)
            self.paint_item.reset(None)
            self.scene().setSceneRect(QRectF())
            return
        self._base_pixmap = QPixmap.fromImage(qimage_from_rgb(doc.base))
        self._original_pixmap = self._base_pixmap.copy()
        w, h = doc.size
        self.mask_item.reset((h, w))  # the document's mask_changed(None) that follows fills it
        self.paint_item.reset((h, w))
        self._on_paint_changed(None)
        self._update_pixmaps()
        self._fit_on_resize = True
        self.fit()

    def _on_base_changed(self, rect) -> None:
        x, y, w, h = rect
        patch = qimage_from_rgb(self.doc.base[y:y + h, x:x + w])
        painter = QPainter(self._base_pixmap)
        painter.drawImage(x, y, patch)
        painter.end()
        self._update_pixmaps()

    def _update_pixmaps(self) -> None:
        if self._base_pixmap is None:
            return
        entry = self.doc.entry(self.doc.preview_id)
        resized = self._resized_shown()
        if entry is not None:
            after = QPixmap.fromImage(qimage_from_rgb(entry.image))
            # A result of another size (Blended extend) has no pixel-aligned "before".
            self.photo_item.set_pixmaps(None if resized else self._base_pixmap, after)
        else:
            # Nothing previewed: compare the current base with the photo as it was opened.
            self.photo_item.set_pixmaps(self._original_pixmap, self._base_pixmap)
        # Paint is the input of the next run, shown over the base only, not over results.
        self.paint_item.setVisible(entry is None and self.paint_shown)
        self.mask_item.setVisible(self.mask_visible and not resized)
        self._place_handles()

    def _resized_shown(self) -> bool:
        entry = self.doc.entry(self.doc.preview_id)
        return entry is not None and entry.image.shape != self.doc.base.shape

    def _place_handles(self) -> None:
        """The split grip, the extend frame and the scene rect (the picture shown, and the frame
        with room around it to drag its edges outwards)."""
        pix = self.photo_item.after
        if pix is None:
            self.split_grip.setVisible(False)
            self.frame_item.setVisible(False)
            return
        w, h = pix.width(), pix.height()
        item = self.photo_item
        # A grip where there is something to compare: a result, or the photo after an apply.
        self.split_grip.setVisible(item.before is not None and not item.show_before
                                   and (self.doc.preview_id is not None or bool(self.doc.applied)))
        self.split_grip.setPos(item.split * w, h / 2)
        framed = self.extend_margins is not None and not self._resized_shown()
        self.frame_item.setVisible(framed)
        rect = QRectF(0, 0, w, h)
        if framed:
            self.frame_item.set_frame((w, h), self.extend_margins)
            room = 0.25 * max(w, h)  # to drag an edge outwards; a frame beyond it gets room too
            rect = rect.adjusted(-room, -room, room, room).united(
                self.frame_item.frame_rect().adjusted(-room / 2, -room / 2, room / 2, room / 2))
        if self.scene().sceneRect() != rect:
            self.scene().setSceneRect(rect)
            if self._fit_on_resize and self._dragging is None:  # no zoom jump under the hand
                self.fit()

    def _on_paint_changed(self, rect) -> None:
        if self.doc.has_photo:
            self.paint_item.refresh(self.doc.paint, rect)

    def _on_mask_changed(self, rect) -> None:
        if not self.mask_item.show_heatmap:
            self._refresh_mask(rect)

    def _on_heatmap_changed(self) -> None:
        if self.mask_item.show_heatmap:
            self._refresh_mask(None)

    def _refresh_mask(self, rect) -> None:
        if not self.doc.has_photo:
            return
        values = self.doc.heatmap if self.mask_item.show_heatmap else self.doc.shown_mask
        self.mask_item.refresh(values, rect)

    # ------------------------------------------------------------------ display options

    def set_mask_visible(self, on: bool) -> None:
        self.mask_visible = bool(on)
        self.mask_item.setVisible(self.mask_visible and not self._resized_shown())

    def set_paint_shown(self, on: bool) -> None:
        """Show the paint layer (the chosen method paints with it) or hide it (it would not)."""
        self.paint_shown = bool(on)
        self._update_pixmaps()

    def set_mask_opacity(self, opacity: float) -> None:
        self.mask_item.setOpacity(float(opacity))

    def set_mask_colour(self, colour: QColor) -> None:
        self.mask_item.colour = QColor(colour)
        self._refresh_mask(None)

    def set_show_heatmap(self, on: bool) -> None:
        self.mask_item.show_heatmap = bool(on)
        self._refresh_mask(None)

    def set_split(self, fraction: float) -> None:
        self.photo_item.set_split(fraction)
        self._place_handles()

    def set_show_before(self, on: bool) -> None:
        self.photo_item.set_show_before(on)
        self._place_handles()

    def set_extend_frame(self, margins: tuple[int, int, int, int] | None) -> None:
        """Show the canvas an extend would make ((left, right, top, bottom) px), or no frame."""
        self.extend_margins = None if margins is None else tuple(int(m) for m in margins)
        self._place_handles()

    def show_run_preview(self, rgb: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Show a small engine preview stretched over the photo (inside the mask when given)."""
        if not self.doc.has_photo:
            return
        h, w = rgb.shape[:2]
        if mask is not None:
            from engine import masks as mask_ops

            alpha = mask_ops.resize(mask, (w, h))
            rgba = np.dstack([rgb, np.rint(alpha * 255).astype(np.uint8)])
            image = qimage_from_rgba(rgba)
        else:
            image = qimage_from_rgb(rgb)
        self.preview_item.setPixmap(QPixmap.fromImage(image))
        pw, ph = self.doc.size
        self.preview_item.setTransform(QTransform.fromScale(pw / w, ph / h))
        self.preview_item.setVisible(True)

    def clear_run_preview(self) -> None:
        self.preview_item.setVisible(False)
        self.preview_item.setPixmap(QPixmap())

    # ------------------------------------------------------------------ zoom

    @property
    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, zoom: float) -> None:
        zoom = min(max(zoom, MIN_ZOOM), MAX_ZOOM)
        factor = zoom / self.zoom
        self.scale(factor, factor)
        self._fit_on_resize = False
        self.zoom_changed.emit(self.zoom)

    def zoom_by(self, factor: float) -> None:
        self.set_zoom(self.zoom * factor)

    def fit(self) -> None:
        if self.doc.has_photo:
            self.fitInView(self.scene().sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)
            self._fit_on_resize = True
            self.zoom_changed.emit(self.zoom)

    def actual_pixels(self) -> None:
        """100 %: one photo pixel per physical screen pixel (crisp on high-DPI screens)."""
        self.setTransform(QTransform())
        self.set_zoom(1.0 / self.devicePixelRatioF())

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._fit_on_resize:
            self.fit()

    def wheelEvent(self, event) -> None:
        if not self.doc.has_photo:
            return
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.zoom_by(1.25 ** steps)  # AnchorUnderMouse keeps the point under the cursor
        event.accept()

    # ------------------------------------------------------------------ brush

    def set_tool(self, tool: str) -> None:
        self.tool = tool
        self._update_cursor_shape()
        self.brush_changed.emit()

    def set_brush_size(self, size: float) -> None:
        self.brush_size = float(min(max(size, 1.0), 2000.0))
        self.cursor_item.set_radius(self.brush_size / 2)
        self.brush_changed.emit()

    def set_paint_colour(self, colour: QColor) -> None:
        self.paint_colour = QColor(colour)
        self.brush_changed.emit()

    def set_hardness(self, hardness: float) -> None:
        self.hardness = float(min(max(hardness, 0.0), 1.0))
        self.brush_changed.emit()

    def grow_brush(self) -> None:
        self.set_brush_size(max(self.brush_size + 1, self.brush_size * 1.2))

    def shrink_brush(self) -> None:
        self.set_brush_size(min(self.brush_size - 1, self.brush_size / 1.2))

    # ------------------------------------------------------------------ mouse and keys

    def mousePressEvent(self, event) -> None:
        button = event.button()
        if button == Qt.MouseButton.MiddleButton or (button == Qt.MouseButton.LeftButton and self._space):
            self._panning = True
            self._pan_from = event.position()
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            event.accept()
            return
        if button == Qt.MouseButton.LeftButton and self.doc.has_photo and not self.doc.stroking:
            self.setFocus()
            self._dragging = self._grab_at(event.position())
            p = self.mapToScene(event.position().toPoint())
            if self._dragging is not None:
                self._drag_to(p)
                event.accept()
                return
            # Alt takes the shape away from the mask; plain or Shift adds it.
            alt = bool(event.modifiers() & Qt.KeyboardModifier.AltModifier)
            if self.tool == SEGMENT:
                self.segment_clicked.emit(p.x(), p.y(), "erase" if alt else "add")
                event.accept()
                return
            if self.tool in (RECT, LASSO):
                self._selecting = (self.tool, "erase" if alt else "add", [p])
                self.selection_item.show_shape(outline(self.tool, [p]))
                event.accept()
                return
            self._painting = True
            mode = STROKE_MODES.get(self.tool, "add")
            c = self.paint_colour
            self.doc.begin_stroke(mode, self.brush_size / 2, self.hardness,
                                  colour=(c.red(), c.green(), c.blue()))
            p = self.mapToScene(event.position().toPoint())
            self.doc.stroke_to(p.x(), p.y())
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:
        p = self.mapToScene(event.position().toPoint())
        self._move_cursor(p)
        if self._panning:
            delta = event.position() - self._pan_from
            self._pan_from = event.position()
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - round(delta.x()))
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - round(delta.y()))
            self._fit_on_resize = False
            event.accept()
            return
        if self._dragging is not None:
            self._drag_to(p)
            event.accept()
            return
        if self._selecting is not None:
            tool, _mode, points = self._selecting
            points[1 if tool == RECT else len(points):] = [p]  # a rectangle needs its corners only
            self.selection_item.show_shape(outline(tool, points))
            event.accept()
            return
        if self._painting:
            self.doc.stroke_to(p.x(), p.y())
            event.accept()
            return
        self._update_cursor_shape(self._grab_at(event.position()))
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event) -> None:
        if self._panning and event.button() in (Qt.MouseButton.MiddleButton, Qt.MouseButton.LeftButton):
            self._panning = False
            self._update_cursor_shape()
            event.accept()
            return
        if self._dragging is not None and event.button() == Qt.MouseButton.LeftButton:
            self._dragging = None
            if self._fit_on_resize:
                self.fit()  # the frame may have grown: it is all in sight again
            event.accept()
            return
        if self._selecting is not None and event.button() == Qt.MouseButton.LeftButton:
            tool, mode, points = self._selecting
            self._selecting = None
            self.selection_item.show_shape(None)
            hit = coverage(outline(tool, points), self.doc.size)
            if hit is not None:
                label = LABELS[tool] + (" taken away" if mode == "erase" else " added")
                self.doc.apply_selection(mode, *hit, label)
            event.accept()
            return
        if self._painting and event.button() == Qt.MouseButton.LeftButton:
            self._painting = False
            self.doc.end_stroke()
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def _grab_at(self, position) -> str | None:
        """"split" or an extend frame side when the pointer (viewport px) is on one, else None."""
        p = self.mapToScene(position.toPoint())
        reach = GRAB_PX / self.zoom
        if self.frame_item.isVisible():
            side = self.frame_item.edge_at(p, reach)
            if side is not None:
                return side
        grip = self.split_grip
        if grip.isVisible() and (abs(p.x() - grip.x()) <= max(reach, grip.RADIUS / self.zoom)):
            return "split"
        return None

    def _drag_to(self, p: QPointF) -> None:
        if self._dragging == "split":
            width = self.photo_item.boundingRect().width()
            self.split_dragged.emit(min(max(p.x() / width, 0.0), 1.0) if width else 0.0)
        else:
            self.extend_dragged.emit(self.frame_item.dragged(self._dragging, p))

    def hold_key(self, key, down: bool) -> None:
        """Space held: the left button pans; \\ held: the photo as it was before. HoldKeys sends
        these whichever widget has the keyboard focus, as long as the pointer is over the canvas."""
        if key == PAN_KEY:
            self._space = down
            self._update_cursor_shape()
        elif key == COMPARE_KEY:
            self.set_show_before(down)

    def enterEvent(self, event) -> None:
        # The enter position is in this widget's coordinates; the scene maps from the viewport's.
        point = self.viewport().mapFrom(self, event.position().toPoint())
        self._move_cursor(self.mapToScene(point))
        super().enterEvent(event)

    def leaveEvent(self, event) -> None:
        self._hide_ring()
        super().leaveEvent(event)

    def _hide_ring(self) -> None:
        self._ring_placed = False
        self.cursor_item.setVisible(False)

    def _move_cursor(self, p: QPointF) -> None:
        self.cursor_item.setPos(p)
        self.cursor_item.set_radius(self.brush_size / 2)
        if self.doc.has_photo:
            self._ring_placed = True
            self.cursor_item.setVisible(not self._panning and not self._space and self._brushing())
            self.cursor_moved.emit(int(p.x()), int(p.y()))

    def _update_cursor_shape(self, grab: str | None = None) -> None:
        """The hand over the canvas: pan, a handle to drag (no brush ring then), or the brush."""
        if self._space or self._panning:
            self.viewport().setCursor(Qt.CursorShape.OpenHandCursor)
        elif grab is not None:
            self.viewport().setCursor(EDGE_CURSORS.get(grab, Qt.CursorShape.SplitHCursor))
        else:
            self.viewport().setCursor(QCursor(Qt.CursorShape.CrossCursor))
        self.cursor_item.setVisible(self.doc.has_photo and self._ring_placed and not self._space
                                    and grab is None and self._brushing() and self.underMouse())

    def _brushing(self) -> bool:
        """Whether the tool paints with the brush (its ring shows); the selections do not."""
        return self.tool not in (RECT, LASSO, SEGMENT)
