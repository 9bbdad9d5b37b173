"""Scene items: the photo with a before/after split, the mask overlay, the live run preview.

Big photos stay smooth because items repaint only what is exposed, and the mask overlay converts
only the changed rectangle of the mask into pixels.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem


def qimage_from_rgb(rgb: np.ndarray) -> QImage:
    """A QImage that owns a copy of an (H, W, 3) uint8 array."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def qimage_from_rgba(rgba: np.ndarray) -> QImage:
    rgba = np.ascontiguousarray(rgba, dtype=np.uint8)
    h, w = rgba.shape[:2]
    return QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()


def heat_colours() -> np.ndarray:
    """A 256-entry blue -> yellow -> red ramp (RGB float) for showing the heatmap."""
    t = np.linspace(0.0, 1.0, 256, dtype=np.float32)
    r = np.clip(1.8 * t - 0.2, 0, 1)
    g = np.clip(1.0 - np.abs(2.0 * t - 1.0) * 1.2, 0, 1)
    b = np.clip(1.0 - 2.0 * t, 0, 1)
    return np.stack([r, g, b], axis=1)


class PhotoItem(QGraphicsItem):
    """The photo. With a result shown it draws "before" left of the split and "after" right of it."""

    def __init__(self):
        super().__init__()
        self.before: QPixmap | None = None
        self.after: QPixmap | None = None
        self.split = 0.0  # fraction of the width that shows "before" (0: all after)
        self.show_before = False  # held compare key: before everywhere
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)

    def boundingRect(self) -> QRectF:
        pix = self.after or self.before
        return QRectF(0, 0, pix.width(), pix.height()) if pix is not None else QRectF()

    def set_pixmaps(self, before: QPixmap | None, after: QPixmap | None) -> None:
        self.prepareGeometryChange()
        self.before, self.after = before, after
        self.update()

    def set_split(self, fraction: float) -> None:
        self.split = min(max(float(fraction), 0.0), 1.0)
        self.update()

    def set_show_before(self, on: bool) -> None:
        self.show_before = bool(on)
        self.update()

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget=None) -> None:
        if self.after is None:
            return
        exposed = option.exposedRect.intersected(self.boundingRect())
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform,
                              painter.transform().m11() < 1.0)  # zoomed in: crisp pixels
        split_x = self.boundingRect().width() * (1.0 if self.show_before else self.split)
        before = self.before or self.after
        if split_x > exposed.left():
            left = QRectF(exposed)
            left.setRight(min(exposed.right(), split_x))
            painter.drawPixmap(left, before, left)
        if split_x < exposed.right():
            right = QRectF(exposed)
            right.setLeft(max(exposed.left(), split_x))
            painter.drawPixmap(right, self.after, right)
        if 0.0 < split_x < self.boundingRect().width() and not self.show_before:
            pen = QPen(QColor(255, 255, 255, 220), 0)  # cosmetic: one screen pixel at any zoom
            painter.setPen(pen)
            painter.drawLine(QPointF(split_x, exposed.top()), QPointF(split_x, exposed.bottom()))


class _BufferItem(QGraphicsItem):
    """An item drawn from an (H, W, 4) premultiplied BGRA numpy buffer at photo size."""

    def __init__(self):
        super().__init__()
        self._buffer: np.ndarray | None = None  # backs _image
        self._image: QImage | None = None
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)

    def boundingRect(self) -> QRectF:
        if self._buffer is None:
            return QRectF()
        h, w = self._buffer.shape[:2]
        return QRectF(0, 0, w, h)

    def reset(self, shape) -> None:
        self.prepareGeometryChange()
        if shape is None or shape == (0, 0):
            self._buffer = self._image = None
        else:
            h, w = shape
            self._buffer = np.zeros((h, w, 4), np.uint8)
            # The QImage shares the numpy memory: updating a region is a numpy slice assignment.
            self._image = QImage(self._buffer.data, w, h, 4 * w,
                                 QImage.Format.Format_ARGB32_Premultiplied)
        self.update()

    def pixel(self, x: int, y: int) -> tuple[int, int, int, int]:
        """(b, g, r, a) at a pixel: for tests."""
        return tuple(int(v) for v in self._buffer[y, x])

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget=None) -> None:
        if self._image is None:
            return
        exposed = option.exposedRect.intersected(self.boundingRect()).toAlignedRect()
        painter.drawImage(exposed, self._image, exposed)


class MaskOverlayItem(_BufferItem):
    """The mask (or the heatmap) as a semi-transparent colour over the photo."""

    def __init__(self):
        super().__init__()
        self.colour = QColor(255, 40, 90)
        self.show_heatmap = False
        self._ramp = heat_colours()
        self.setOpacity(0.5)


    def refresh(self, values: np.ndarray | None, rect=None) -> None:
        """Recolour ``rect`` (x, y, w, h) from the mask or heatmap ``values``; None: everything."""
        if self._buffer is None:
            return
        h, w = self._buffer.shape[:2]
        x, y, rw, rh = rect if rect is not None else (0, 0, w, h)
        region = self._buffer[y:y + rh, x:x + rw]
        if values is None:
            region[:] = 0
        else:
            # 8-bit levels through a 256-entry colour table: a 12 MP refresh stays well under 0.2 s.
            v = np.clip(values[y:y + rh, x:x + rw], 0.0, 1.0) * 255.0 + 0.5
            np.take(self._table(), v.astype(np.uint8), axis=0, out=region)
        self.update(QRectF(x, y, rw, rh))

    def _table(self) -> np.ndarray:
        """(256, 4) premultiplied BGRA for each level of the mask or heatmap."""
        key = (self.show_heatmap, self.colour.rgb())
        if getattr(self, "_table_key", None) != key:
            levels = np.arange(256, dtype=np.float32) / 255.0
            if self.show_heatmap:
                rgb = self._ramp
                alpha = 0.35 + 0.65 * levels  # low values stay faintly visible so the ramp reads
            else:
                c = self.colour
                rgb = np.tile(np.array([c.redF(), c.greenF(), c.blueF()], np.float32), (256, 1))
                alpha = levels
            table = np.empty((256, 4), np.uint8)
            premultiplied = rgb * alpha[:, None]
            table[:, 0] = np.rint(premultiplied[:, 2] * 255)  # little-endian ARGB32 is B, G, R, A
            table[:, 1] = np.rint(premultiplied[:, 1] * 255)
            table[:, 2] = np.rint(premultiplied[:, 0] * 255)
            table[:, 3] = np.rint(alpha * 255)
            self._table_cache, self._table_key = table, key
        return self._table_cache



class BrushCursorItem(QGraphicsItem):
    """A circle the size of the brush, visible on light and dark photos (two cosmetic pens)."""

    def __init__(self):
        super().__init__()
        self.radius = 20.0
        self.setZValue(100)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)

    def set_radius(self, radius: float) -> None:
        self.prepareGeometryChange()
        self.radius = float(radius)

    def boundingRect(self) -> QRectF:
        r = self.radius + 2
        return QRectF(-r, -r, 2 * r, 2 * r)

    def paint(self, painter: QPainter, option, widget=None) -> None:
        r = self.radius
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setPen(QPen(QColor(0, 0, 0, 200), 0))
        painter.drawEllipse(QRectF(-r, -r, 2 * r, 2 * r))
        dashed = QPen(QColor(255, 255, 255, 230), 0, Qt.PenStyle.DashLine)
        painter.setPen(dashed)
        painter.drawEllipse(QRectF(-r, -r, 2 * r, 2 * r))


class PaintOverlayItem(_BufferItem):
    """Blended scribble's paint layer: its colours where painted, drawn over the photo."""


    def refresh(self, layer, rect=None) -> None:
        """Redraw ``rect`` (x, y, w, h) from a PaintLayer (None: nothing painted)."""
        if self._buffer is None:
            return
        h, w = self._buffer.shape[:2]
        x, y, rw, rh = rect if rect is not None else (0, 0, w, h)
        region = self._buffer[y:y + rh, x:x + rw]
        if layer is None or layer.coverage.shape != (h, w):
            region[:] = 0
        else:
            alpha = layer.coverage[y:y + rh, x:x + rw, None]
            rgb = layer.rgb[y:y + rh, x:x + rw].astype(np.float32) * alpha
            region[..., 0] = np.rint(rgb[..., 2])  # little-endian ARGB32 is B, G, R, A
            region[..., 1] = np.rint(rgb[..., 1])
            region[..., 2] = np.rint(rgb[..., 0])
            region[..., 3] = np.rint(alpha[..., 0] * 255)
        self.update(QRectF(x, y, rw, rh))



def colour_swatch(colour: QColor, side: int = 16):
    """A small icon filled with ``colour`` (the Paint tool shows its colour)."""
    from PySide6.QtGui import QIcon

    pixmap = QPixmap(side, side)
    pixmap.fill(colour)
    painter = QPainter(pixmap)
    painter.setPen(QPen(QColor(0, 0, 0, 160), 1))
    painter.drawRect(0, 0, side - 1, side - 1)
    painter.end()
    return QIcon(pixmap)
