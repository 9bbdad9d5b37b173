"""The mask stays in sight after a run, the scribble paint layer shows only where it is used and
in a colour unlike the mask's, and an extend says so before it regenerates a mask left over."""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox

from test_methods import paint_box, run

EXTEND_ONLY, BOTH = QMessageBox.StandardButton.Yes, QMessageBox.StandardButton.No


def test_the_mask_overlay_stays_visible_after_a_run(qtbot, window):
    paint_box(window.doc)
    run(qtbot, window)
    assert window.doc.preview_id is not None
    assert window.actions["show_mask"].isChecked() and window.canvas.mask_item.isVisible()


def _paint(doc):
    doc.begin_stroke("paint", 6, 1.0, colour=(40, 110, 230))
    doc.stroke_to(30, 30)
    doc.end_stroke()


def test_the_paint_layer_and_its_tools_show_only_for_a_method_that_paints(qtbot, window):
    canvas, panel, paint = window.canvas, window.params, window.actions["paint"]
    panel.set_method("blended")
    panel.set_options({"action": "scribble"})
    paint.trigger()
    _paint(window.doc)
    assert canvas.paint_item.isVisible() and paint.isEnabled() and canvas.tool == "paint"
    panel.set_options({"action": "inpaint"})
    assert not canvas.paint_item.isVisible() and not paint.isEnabled()
    assert canvas.tool == "brush", "the hidden layer must not be painted blind"
    panel.set_options({"action": "scribble"})
    assert canvas.paint_item.isVisible()
    panel.set_method("diffedit")
    assert not canvas.paint_item.isVisible() and not window.actions["clear_paint"].isEnabled()


def test_the_paint_colour_is_unlike_the_mask_colour(window):
    paint, mask = window.canvas.paint_colour, window.canvas.mask_item.colour
    apart = abs(paint.hsvHue() - mask.hsvHue())
    assert min(apart, 360 - apart) > 90


def _extend(panel):
    panel.set_method("blended")
    panel.set_options({"action": "extend", "extend_right": 32})


def test_an_extend_warns_before_it_regenerates_a_leftover_mask(qtbot, window, submitted, dialogs):
    paint_box(window.doc)
    window.actions["show_mask"].setChecked(False)
    _extend(window.params)
    dialogs.answer = QMessageBox.StandardButton.Cancel
    window.run_edit()
    assert "regenerate that area too" in dialogs.texts() and submitted == []
    assert window.actions["show_mask"].isChecked(), "the warning shows the mask it speaks of"
    dialogs.answer = EXTEND_ONLY
    run(qtbot, window)
    assert submitted[-1].run.mask is None
    dialogs.answer = BOTH
    run(qtbot, window)
    assert (submitted[-1].run.mask > 0).any()
    assert len(submitted) == 2


def test_an_extend_without_a_mask_asks_nothing(qtbot, window, submitted, dialogs):
    _extend(window.params)
    run(qtbot, window)
    assert dialogs.shown == [] and len(submitted) == 1
