"""Rectangle and lasso selections on the mask: the outline while dragging, and the anti-aliased
coverage of the closed shape at photo resolution (within its bounding box) when released."""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPainterPath, QPen, QPolygonF
from PySide6.QtWidgets import QGraphicsPathItem

RECT, LASSO = "rect", "lasso"
LABELS = {RECT: "Rectangle selection", LASSO: "Lasso selection"}


def outline(tool: str, points: list[QPointF]) -> QPolygonF:
    """The shape so far: the rectangle spanned by the first and last points, or the lasso's path."""
    if tool == RECT and points:
        return QPolygonF(QRectF(points[0], points[-1]).normalized())
    return QPolygonF(points)


def coverage(shape: QPolygonF, size: tuple[int, int]) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """((x, y, w, h), coverage in [0, 1]) of the closed ``shape`` (photo px) clipped to the photo's
    ``size`` (width, height); None when it covers no pixel."""
    width, height = size
    box = shape.boundingRect()
    left, top = max(0, math.floor(box.left())), max(0, math.floor(box.top()))
    right, bottom = min(width, math.ceil(box.right())), min(height, math.ceil(box.bottom()))
    if right <= left or bottom <= top or shape.size() < 3:
        return None
    w, h = right - left, bottom - top
    image = QImage(w, h, QImage.Format.Format_Grayscale8)
    image.fill(0)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    painter.translate(-left, -top)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QColor(255, 255, 255))
    painter.drawPolygon(shape)
    painter.end()
    rows = np.frombuffer(image.constBits(), np.uint8).reshape(h, image.bytesPerLine())
    values = rows[:, :w].astype(np.float32) / 255.0
    if not values.any():
        return None
    return (left, top, w, h), values


class SelectionOutlineItem(QGraphicsPathItem):
    """The shape being dragged: a black and white dashed line, one screen pixel at any zoom."""

    def __init__(self):
        super().__init__()
        self.setZValue(95)
        self.setPen(QPen(QColor(255, 255, 255), 0, Qt.PenStyle.DashLine))

    def show_shape(self, shape: QPolygonF | None) -> None:
        path = QPainterPath()
        if shape is not None and shape.size():
            path.addPolygon(shape)
            path.closeSubpath()
        self.setPath(path)
        self.setVisible(shape is not None)

    def paint(self, painter, option, widget=None) -> None:
        painter.setPen(QPen(QColor(0, 0, 0, 220), 0))
        painter.drawPath(self.path())
        super().paint(painter, option, widget)
