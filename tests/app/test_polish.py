"""UI polish: the brush ring's first position, the shortcuts table, error sentences and icons,
which methods need the source text, SDEdit's mask widgets, and seeds in the history."""

import numpy as np
from PySide6.QtCore import QPointF
from PySide6.QtGui import QEnterEvent
from PySide6.QtWidgets import QApplication

from desktop_app.dialogs import ShortcutsDialog
from engine.imaging import Photo
from engine.params import EditParams


def enter(canvas, point):
    """The mouse entering the canvas at ``point`` (the canvas widget's coordinates)."""
    local = QPointF(point)
    QApplication.sendEvent(canvas, QEnterEvent(local, local, QPointF(canvas.mapToGlobal(point))))


# ----------------------------------------------------------------------------- brush ring


def test_the_brush_ring_appears_where_the_mouse_enters(window):
    canvas = window.canvas
    canvas.fit()
    assert not canvas.cursor_item.isVisible()  # nothing at the photo's corner before the mouse
    enter(canvas, canvas.rect().center())
    w, h = window.doc.size
    ring = canvas.cursor_item.pos()
    assert canvas.cursor_item.isVisible()
    # Fitted, the middle of the view is the middle of the photo, not its top-left corner.
    assert abs(ring.x() - w / 2) <= 2 and abs(ring.y() - h / 2) <= 2


def test_the_brush_ring_hides_when_another_photo_opens(window):
    canvas = window.canvas
    enter(canvas, canvas.rect().center())
    assert canvas.cursor_item.isVisible()
    # The new photo is fitted anew: the old ring position would be somewhere else on it.
    window.open_photo(Photo(rgb=np.full((40, 300, 3), 128, np.uint8)), "wide.png")
    assert not canvas.cursor_item.isVisible()
