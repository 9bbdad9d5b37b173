"""Space (pan) and held \\ (compare) belong to the canvas whenever the pointer is over it, whatever
widget has the keyboard focus, and never press a focused button."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QCursor
from PySide6.QtWidgets import QApplication, QPushButton

from test_window import drag


def _button(window, text):
    return next(b for b in window.mask_panel.findChildren(QPushButton) if b.text() == text)


def _point_at(widget, pos: QPoint | None = None) -> None:
    QCursor.setPos(widget.mapToGlobal(pos if pos is not None else widget.rect().center()))
    QApplication.processEvents()


@pytest.fixture
def invert_focused(window, qtbot):
    """A mask stroke, then the Invert button clicked with the mouse (it keeps the focus)."""
    window.canvas.set_brush_size(10)
    drag(qtbot, window.canvas, [(30, 30), (50, 30)])
    invert = _button(window, "Invert")
    qtbot.mouseClick(invert, Qt.MouseButton.LeftButton)
    assert QApplication.focusWidget() is invert
    return invert


def test_space_over_the_canvas_pans_and_never_presses_the_focused_button(window, qtbot,
                                                                         invert_focused):
    canvas, doc = window.canvas, window.doc
    canvas.set_zoom(12.0)  # room to pan
    assert canvas.horizontalScrollBar().maximum() > 0
    mask, strokes = doc.composed.copy(), doc.undo_stack.count()
    _point_at(canvas.viewport())
    qtbot.keyPress(invert_focused, Qt.Key.Key_Space)
    assert canvas._space
    bar = canvas.horizontalScrollBar().value()
    drag(qtbot, canvas, [(60, 48), (40, 48), (20, 48)])  # space+drag pans, paints nothing
    qtbot.keyRelease(invert_focused, Qt.Key.Key_Space)
    assert not canvas._space
    assert canvas.horizontalScrollBar().value() != bar
    assert doc.undo_stack.count() == strokes
    assert (doc.composed == mask).all(), "the space press or release inverted the mask again"


def test_held_backslash_over_the_canvas_shows_before_whatever_has_focus(window, qtbot,
                                                                        invert_focused):
    photo_item = window.canvas.photo_item
    _point_at(window.canvas.viewport())
    qtbot.keyPress(invert_focused, Qt.Key.Key_Backslash)
    assert photo_item.show_before
    qtbot.keyRelease(invert_focused, Qt.Key.Key_Backslash)
    assert not photo_item.show_before


def test_keys_away_from_the_canvas_reach_the_focused_widget(window, qtbot, invert_focused):
    mask = window.doc.composed.copy()
    _point_at(invert_focused)
    qtbot.keyClick(invert_focused, Qt.Key.Key_Space)  # a keyboard user presses the button
    assert not window.canvas._space
    assert (window.doc.composed == 1.0 - mask).all()


def test_a_space_typed_in_a_prompt_stays_a_space(window, qtbot):
    field = window.params.target
    field.setFocus()
    field.setText("a")
    _point_at(window.canvas.viewport())  # the mouse resting over the photo while typing
    qtbot.keyClicks(field, " dog")
    assert field.text() == "a dog" and not window.canvas._space
