"""The compare split and the extend frame on the canvas (issue 17, point 14): the hand drags the
split (or moves it with , and .), and drags the extend frame's edges in step with the panel."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from engine.params import EditParams
from engine.results import EditResult
from mouse import drag


@pytest.fixture
def previewed(window):
    """A result of the photo's size, shown on the canvas (split at 0: all after)."""
    doc = window.doc
    image = 255 - doc.base
    doc.add_result(doc.new_group(), EditResult(
        image=image, mask=np.ones(doc.shape, np.float32), heatmap=None, source="a", target="b",
        params=EditParams(), model_name="tiny", method="diffedit", loras=[], stats={},
        warnings=[], variation=0, seconds=1.0))
    doc.set_preview(doc.history[-1].id)
    return window


def test_the_split_is_dragged_on_the_canvas_and_the_slider_follows(qtbot, previewed):
    window, canvas = previewed, previewed.canvas
    w, h = window.doc.size
    assert canvas.split_grip.isVisible() and canvas.split_grip.x() == 0
    drag(qtbot, canvas, [(0, h / 2), (w * 0.3, h / 2), (w * 0.6, h / 2)])
    assert window.split_slider.value() == 60
    assert canvas.photo_item.split == pytest.approx(0.6)
    assert canvas.split_grip.x() == pytest.approx(0.6 * w)
    assert window.doc.undo_stack.count() == 0, "dragging the split painted the mask"
    # Grabbing the line itself (away from the grip) moves it too.
    drag(qtbot, canvas, [(0.6 * w, 5), (0.25 * w, 5)])
    assert window.split_slider.value() == 25


def test_the_split_moves_by_keyboard(qtbot, previewed):
    window = previewed
    window.canvas.setFocus()
    qtbot.keyClick(window.canvas, Qt.Key.Key_Period)
    qtbot.keyClick(window.canvas, Qt.Key.Key_Period)
    assert window.split_slider.value() == 10 and window.canvas.photo_item.split == pytest.approx(0.1)
    qtbot.keyClick(window.canvas, Qt.Key.Key_Comma)
    assert window.split_slider.value() == 5


def test_without_a_result_there_is_no_split_to_grab_and_a_drag_paints(qtbot, window):
    assert not window.canvas.split_grip.isVisible()
    window.canvas.set_brush_size(6)
    drag(qtbot, window.canvas, [(2, 40), (2, 60)])
    assert window.doc.composed[50, 2] > 0.5


def extend(window, **margins):
    window.params.set_method("blended")
    window.params.set_options({"action": "extend", **margins})


def test_the_extend_frame_follows_the_panel(window):
    canvas = window.canvas
    assert not canvas.frame_item.isVisible()
    extend(window, extend_right=64, extend_top=16)
    w, h = window.doc.size
    frame = canvas.frame_item
    assert frame.isVisible()
    assert frame.frame_rect().getRect() == (0, -16, w + 64, h + 16)
    assert f"{w + 64} \u00d7 {h + 16} px" in frame.readout.text()
    assert canvas.sceneRect().contains(frame.frame_rect())  # in sight, with room to drag
    window.params.set_options({"action": "inpaint"})
    assert not frame.isVisible()


def test_dragging_a_frame_edge_sets_the_panel_numbers(qtbot, window):
    extend(window)
    canvas = window.canvas
    w, h = window.doc.size
    drag(qtbot, canvas, [(w, h / 2), (w + 20, h / 2), (w + 41, h / 2)])  # snaps to 8 px
    assert window.params.options()["extend_right"] == 40
    assert canvas.frame_item.frame_rect().width() == w + 40
    drag(qtbot, canvas, [(w / 2, 0), (w / 2, -24)])
    assert window.params.options()["extend_top"] == 24
    drag(qtbot, canvas, [(w / 2, -24), (w / 2, 30)])  # never into the photo
    assert window.params.options()["extend_top"] == 0
    assert window.doc.undo_stack.count() == 0, "dragging the frame painted the mask"
    # Away from the edges the brush still paints.
    window.canvas.set_brush_size(6)
    drag(qtbot, canvas, [(w / 2, h / 2), (w / 2 + 10, h / 2)])
    assert window.doc.composed[h // 2, w // 2] > 0.5
