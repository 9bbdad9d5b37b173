"""Segment (click) (issue 17, point 13): a click on the canvas, at any zoom and pan, becomes SAM's
prompt point at that photo pixel; the tiny random-weight SAM in a temporary hub cache (loaded as a
real facebook/sam-vit-base would be) returns the mask that lands on the mask layer; Alt takes it
away; undo removes it; without a model in the cache the user is told what to download."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt

from desktop_app.canvas import SEGMENT
from engine import segment
from engine.tiny_sam import cache_tiny_sam


@pytest.fixture
def clicks(monkeypatch):
    """The photo points the app handed to SAM (the real Segmenter is called through)."""
    seen = []
    real = segment.Segmenter.segment

    def record(self, photo_key, rgb, x, y):
        seen.append((x, y))
        return real(self, photo_key, rgb, x, y)

    monkeypatch.setattr(segment.Segmenter, "segment", record)
    return seen


def click(qtbot, window, x, y, modifier=Qt.KeyboardModifier.NoModifier):
    """A left click at photo point (x, y), where the canvas shows it now."""
    window.actions["segment"].trigger()
    assert window.canvas.tool == SEGMENT
    qtbot.mouseClick(window.canvas.viewport(), Qt.MouseButton.LeftButton, modifier,
                     window.canvas.mapFromScene(QPointF(x, y)))
    qtbot.waitUntil(lambda: not window.segment_tool.busy, timeout=30000)


def last_step(window) -> str:
    stack = window.doc.undo_stack
    return stack.command(stack.index() - 1).text()


def sam_mask(x, y, rgb) -> np.ndarray:
    """What SAM gives for that point, from a model of its own."""
    return segment.load_segmenter(device="cpu").segment("reference", rgb, x, y)


def test_a_click_at_zoom_and_pan_prompts_sam_at_that_photo_pixel(qtbot, window, hub_cache, clicks):
    cache_tiny_sam(hub_cache)
    canvas = window.canvas
    canvas.zoom_by(3.0)
    canvas.centerOn(QPointF(80, 60))  # panned to the lower right quarter
    target = QPointF(90.5, 70.5)  # the middle of photo pixel (90, 70), on screen after the pan
    assert canvas.viewport().rect().contains(canvas.mapFromScene(target))
    before = window.doc.shown_mask.copy()
    click(qtbot, window, target.x(), target.y())
    assert len(clicks) == 1
    x, y = clicks[0]
    assert (int(x), int(y)) == (90, 70)
    expected = np.maximum(before, sam_mask(x, y, window.doc.base))
    assert expected.any()
    np.testing.assert_array_equal(window.doc.shown_mask, expected)
    assert last_step(window) == "Segment added"
    window.doc.undo_stack.undo()
    np.testing.assert_array_equal(window.doc.shown_mask, before)


def test_alt_click_takes_the_segment_away(qtbot, window, hub_cache, clicks):
    cache_tiny_sam(hub_cache)
    window.doc.load_mask(np.ones(window.doc.shape, np.float32))
    click(qtbot, window, 30, 40, Qt.KeyboardModifier.AltModifier)
    x, y = clicks[0]
    found = sam_mask(x, y, window.doc.base)
    assert found.any()
    np.testing.assert_array_equal(window.doc.shown_mask, 1.0 - found)
    assert last_step(window) == "Segment taken away"


def test_without_a_sam_model_the_tool_says_what_to_download(qtbot, window, hub_cache, dialogs):
    before = window.doc.shown_mask.copy()
    click(qtbot, window, 30, 40)
    assert len(dialogs.shown) == 1
    text = dialogs.texts()
    assert "facebook/sam-vit-base" in text and "hf download" in text
    assert "Traceback" not in text
    np.testing.assert_array_equal(window.doc.shown_mask, before)
    cache_tiny_sam(hub_cache)  # downloaded meanwhile: the next click loads it
    click(qtbot, window, 30, 40)
    assert last_step(window) == "Segment added"
