"""Rectangle and lasso selections on the mask (issue 17, point 13): a drag adds the shape, Alt
takes it away, each is one undo step, with keys and tooltips like the brush's."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QPolygonF

from desktop_app.canvas.selection import coverage
from mouse import drag

ALT = Qt.KeyboardModifier.AltModifier


def test_a_rectangle_adds_exactly_its_pixels_and_is_one_undo_step(qtbot, window):
    qtbot.keyClick(window.canvas, Qt.Key.Key_R)  # its key
    assert window.actions["rect_select"].isChecked()
    drag(qtbot, window.canvas, [(20, 10), (50, 30), (80, 40)])  # only the corners count
    m = window.doc.composed
    inside = m[12:38, 22:78]
    assert inside.min() > 0.99 and m[45:, :].max() == 0 and m[:, 85:].max() == 0
    assert window.doc.undo_stack.count() == 1
    assert "Rectangle" in window.doc.undo_stack.command(0).text()
    window.actions["undo"].trigger()
    assert not window.doc.composed.any()


def test_alt_takes_a_lasso_shape_away_and_undo_brings_it_back(qtbot, window):
    window.actions["rect_select"].trigger()
    drag(qtbot, window.canvas, [(0, 0), (128, 96)])  # the whole photo
    before = window.doc.composed.copy()
    qtbot.keyClick(window.canvas, Qt.Key.Key_L)
    assert window.actions["lasso"].isChecked()
    triangle = [(20, 80), (60, 10), (100, 80), (20, 80)]
    drag(qtbot, window.canvas, triangle, ALT)
    m = window.doc.composed
    assert m[60, 60] == 0.0 and m[90, 60] > 0.99 and m[20, 20] > 0.99  # out inside, kept outside
    assert window.doc.undo_stack.count() == 2
    window.actions["undo"].trigger()
    np.testing.assert_array_equal(window.doc.composed, before)


def test_selections_survive_a_threshold_change_like_strokes(qtbot, window):
    doc = window.doc
    doc.set_heatmap(np.tile(np.linspace(0, 1, 128, dtype=np.float32), (96, 1)))
    window.actions["lasso"].trigger()
    drag(qtbot, window.canvas, [(5, 5), (40, 5), (40, 40), (5, 40)])
    doc.set_threshold(0.95)
    assert doc.composed[20, 20] > 0.99  # the lasso's area is kept, like a brush stroke


def test_the_coverage_is_the_shapes_area_with_soft_edges_only():
    rect, values = coverage(QPolygonF([QPointF(2, 2), QPointF(12, 2), QPointF(12, 7), QPointF(2, 7)]),
                            (20, 10))
    assert rect == (2, 2, 10, 5) and values.min() == 1.0  # pixel-aligned: every pixel fully in
    rect, values = coverage(QPolygonF([QPointF(-5, -5), QPointF(4.5, -5), QPointF(4.5, 30)]), (20, 10))
    assert rect == (0, 0, 5, 10)  # clipped to the photo
    assert values[9, 2] == 1.0 and 0.3 < values[9, 4] < 0.7  # an edge across a pixel: half of it
    assert coverage(QPolygonF([QPointF(30, 30), QPointF(40, 30), QPointF(40, 40)]), (20, 10)) is None


def test_the_tools_have_tooltips_and_show_no_brush_ring(qtbot, window):
    for key, letter in (("rect_select", "R"), ("lasso", "L")):
        tip = window.actions[key].toolTip()
        assert f"({letter})" in tip and "Alt" in tip
    window.actions["lasso"].trigger()
    canvas = window.canvas
    qtbot.mouseMove(canvas.viewport(), canvas.mapFromScene(QPointF(60, 40)))
    assert not canvas.cursor_item.isVisible()
