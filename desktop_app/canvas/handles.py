"""What the hand drags on the canvas besides the brush: the before/after split's grip and the
extend frame (Blended's outpainting margins) with its edge handles and size readout."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetricsF, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import QGraphicsItem

from engine.methods import EXTEND_SIDES

GRAB_PX = 7  # how near (screen px) the pointer must be to a line or edge to take it
SNAP_PX = 8  # extend margins snap to the latent grid (the engine works in 8 px cells)
MAX_MARGIN = 4096  # the engine's limit for each side


class SplitGripItem(QGraphicsItem):
    """A round grip on the split line, the same size at any zoom; drag it (or the line) to move
    the split, or use , and . on the keyboard."""

    RADIUS = 10

    def __init__(self):
        super().__init__()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations, True)
        self.setZValue(90)
        self.setToolTip("Drag to compare before (left) with after (right); , and . move it too")
        self.setCursor(Qt.CursorShape.SplitHCursor)

    def boundingRect(self) -> QRectF:
        r = self.RADIUS + 1
        return QRectF(-r, -r, 2 * r, 2 * r)

    def paint(self, painter: QPainter, option, widget=None) -> None:
        r = self.RADIUS
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setPen(QPen(QColor(0, 0, 0, 160), 1))
        painter.setBrush(QColor(255, 255, 255, 235))
        painter.drawEllipse(QRectF(-r, -r, 2 * r, 2 * r))
        painter.setBrush(QColor(40, 40, 40))
        painter.setPen(Qt.PenStyle.NoPen)
        for sign in (-1, 1):  # two arrows: it moves sideways
            tip = sign * (r - 3)
            painter.drawPolygon(QPolygonF([QPointF(tip, 0), QPointF(sign * 2, -4), QPointF(sign * 2, 4)]))


class ExtendFrameItem(QGraphicsItem):
    """The canvas an extend will make around the photo: its new margins shaded, a dashed outline
    with a handle mid-edge, and the size it will have. ``margins`` are (left, right, top, bottom)."""

    HANDLE_PX = 9

    def __init__(self):
        super().__init__()
        self.setZValue(80)
        self.photo_size = (0, 0)
        self.margins = (0, 0, 0, 0)
        self.readout = ReadoutItem(self)

    def set_frame(self, photo_size: tuple[int, int], margins: tuple[int, int, int, int]) -> None:
        self.prepareGeometryChange()
        self.photo_size, self.margins = tuple(photo_size), tuple(int(m) for m in margins)
        left, right, top, bottom = self.margins
        w, h = self.photo_size
        extra = ", ".join(f"+{m} {side}" for side, m in zip(EXTEND_SIDES, self.margins) if m)
        self.readout.set_text(f"{w + left + right} \u00d7 {h + top + bottom} px"
                              + (f"  ({extra})" if extra else "  (drag an edge outwards)"))
        self.readout.setPos(-left, -top)
        self.update()

    def frame_rect(self) -> QRectF:
        left, right, top, bottom = self.margins
        w, h = self.photo_size
        return QRectF(-left, -top, w + left + right, h + top + bottom)

    def boundingRect(self) -> QRectF:
        return self.frame_rect().adjusted(-2, -2, 2, 2)

    def paint(self, painter: QPainter, option, widget=None) -> None:
        frame = self.frame_rect()
        photo = QRectF(0, 0, *self.photo_size)
        shade = QBrush(QColor(120, 170, 255, 70), Qt.BrushStyle.Dense4Pattern)
        for part in (QRectF(frame.left(), frame.top(), frame.width(), -frame.top()),  # top band
                     QRectF(frame.left(), photo.bottom(), frame.width(), frame.bottom() - photo.bottom()),
                     QRectF(frame.left(), 0, -frame.left(), photo.height()),
                     QRectF(photo.right(), 0, frame.right() - photo.right(), photo.height())):
            if part.width() > 0 and part.height() > 0:
                painter.fillRect(part, shade)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.setPen(QPen(QColor(0, 0, 0, 200), 0))
        painter.drawRect(frame)
        painter.setPen(QPen(QColor(255, 255, 255, 230), 0, Qt.PenStyle.DashLine))
        painter.drawRect(frame)
        scale = painter.transform().m11() or 1.0
        half = self.HANDLE_PX / 2 / scale  # handles keep their screen size at any zoom
        painter.setPen(QPen(QColor(0, 0, 0, 200), 0))
        painter.setBrush(QColor(255, 255, 255))
        for point in self._handle_points().values():
            painter.drawRect(QRectF(point.x() - half, point.y() - half, 2 * half, 2 * half))

    def _handle_points(self) -> dict[str, QPointF]:
        f = self.frame_rect()
        cx, cy = f.center().x(), f.center().y()
        return {"left": QPointF(f.left(), cy), "right": QPointF(f.right(), cy),
                "top": QPointF(cx, f.top()), "bottom": QPointF(cx, f.bottom())}

    def edge_at(self, point: QPointF, reach: float) -> str | None:
        """The side whose edge lies within ``reach`` (scene px) of ``point``, along its length."""
        f = self.frame_rect().adjusted(-reach, -reach, reach, reach)
        if not f.contains(point):
            return None
        frame = self.frame_rect()
        distances = {"left": abs(point.x() - frame.left()), "right": abs(point.x() - frame.right()),
                     "top": abs(point.y() - frame.top()), "bottom": abs(point.y() - frame.bottom())}
        side = min(distances, key=distances.get)
        return side if distances[side] <= reach else None

    def dragged(self, side: str, point: QPointF) -> tuple[int, int, int, int]:
        """The margins with ``side``'s edge moved to ``point`` (snapped, never inside the photo)."""
        w, h = self.photo_size
        outward = {"left": -point.x(), "right": point.x() - w, "top": -point.y(),
                   "bottom": point.y() - h}[side]
        margin = min(max(0, round(outward / SNAP_PX) * SNAP_PX), MAX_MARGIN)
        margins = list(self.margins)
        margins[EXTEND_SIDES.index(side)] = int(margin)
        return tuple(margins)


class ReadoutItem(QGraphicsItem):
    """A label in a dark box just above its anchor (the frame's top-left corner), the same size at
    any zoom."""

    PAD = 4

    def __init__(self, parent):
        super().__init__(parent)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations, True)
        self._text = ""
        self._font = QFont()

    def text(self) -> str:
        return self._text

    def set_text(self, text: str) -> None:
        self.prepareGeometryChange()
        self._text = text

    def boundingRect(self) -> QRectF:
        box = QFontMetricsF(self._font).boundingRect(self._text)
        pad = self.PAD
        return QRectF(0, -box.height() - 2 * pad - 3, box.width() + 2 * pad, box.height() + 2 * pad)

    def paint(self, painter: QPainter, option, widget=None) -> None:
        rect = self.boundingRect()
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(20, 20, 20, 200))
        painter.drawRoundedRect(rect, 3, 3)
        painter.setPen(QColor(255, 255, 255))
        painter.setFont(self._font)
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, self._text)


EDGE_CURSORS = {"left": Qt.CursorShape.SizeHorCursor, "right": Qt.CursorShape.SizeHorCursor,
                "top": Qt.CursorShape.SizeVerCursor, "bottom": Qt.CursorShape.SizeVerCursor}
