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


# ----------------------------------------------------------------------------- shortcuts


def shortcut_table(qtbot, window) -> list[tuple[str, str]]:
    dialog = ShortcutsDialog(window.actions.values(), window)
    qtbot.addWidget(dialog)
    return [(dialog.table.item(r, 0).text(), dialog.table.item(r, 1).text())
            for r in range(dialog.table.rowCount())]


def test_shortcuts_name_undo_and_redo_not_the_step(qtbot, window):
    doc = window.doc
    doc.begin_stroke("erase", 5, 1.0)
    doc.stroke_to(20, 20)
    doc.end_stroke()
    assert window.actions["undo"].text().replace("&", "") != "Undo"  # the step is in the menu text
    rows = dict((label, keys) for keys, label in shortcut_table(qtbot, window))
    assert "Undo" in rows and "Redo" in rows
    assert not any(label.startswith(("Undo ", "Redo ")) for label in rows)


def test_shortcuts_have_one_row_per_action_and_no_empty_keys(qtbot, window):
    rows = shortcut_table(qtbot, window)
    labels = [label for _, label in rows]
    keys = [key for key, _ in rows]
    assert len(labels) == len(set(labels))
    assert all(keys)
    # Every key appears in exactly one row ("[", "]" and Esc were listed twice).
    singles = [k for key in keys for k in key.split(" or ")]
    assert len(singles) == len(set(singles))
    by_label = dict((label, key) for key, label in rows)
    assert by_label["Larger Brush"] == "]" and by_label["Smaller Brush"] == "["
    assert by_label["Cancel Run"] == "Esc"
    # An action whose only (standard) key has no binding on this platform gets no row.
    for action in window.actions.values():
        if not any(k.toString() for k in action.shortcuts()):
            assert action.iconText() not in by_label


def test_shortcuts_name_the_mask_operations(qtbot, window):
    by_label = dict((label, key) for key, label in shortcut_table(qtbot, window))
    assert by_label["Invert mask"] == window.actions["invert"].shortcut().toString()
    assert by_label["Clear mask"]
    assert "Invert" not in by_label and "Clear" not in by_label
