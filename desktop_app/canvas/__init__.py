"""The photo canvas: QGraphicsView with zoom, pan, mask overlay, brush and before/after."""

from desktop_app.canvas.selection import LASSO, RECT
from desktop_app.canvas.view import BRUSH, ERASER, PAINT, SEGMENT, Canvas

__all__ = ["BRUSH", "ERASER", "LASSO", "PAINT", "RECT", "SEGMENT", "Canvas"]
