"""The photo canvas: QGraphicsView with zoom, pan, mask overlay, brush and before/after."""

from desktop_app.canvas.view import BRUSH, ERASER, Canvas

__all__ = ["BRUSH", "ERASER", "Canvas"]
