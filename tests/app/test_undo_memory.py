"""Undo memory (issue 17, point 10): steps keep only the tiles a stroke changed, undo and redo give
back every state exactly, and a memory cap drops the oldest steps (and the window says so)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from desktop_app.document import Document
from desktop_app.undo import MB
from engine.imaging import Photo


def state(doc) -> list[np.ndarray]:
    """The composed mask and every layer (a layer not made yet reads as zeros, as it paints)."""
    zeros = np.zeros(doc.shape, np.float32)
    layers = [doc.composed.copy()]
    for seg in doc.mask.segments:
        layers += [zeros if a is None else a.copy() for a in (seg.added, seg.erased)]
    paint = doc.paint
    layers += [np.zeros((*doc.shape, 3), np.uint8) if paint is None else paint.rgb.copy(),
               zeros if paint is None else paint.coverage.copy()]
    return layers


def same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def stroke(doc, mode, points, radius, hardness=0.8, colour=(200, 30, 30)):
    doc.begin_stroke(mode, radius, hardness, colour=colour)
    for x, y in points:
        doc.stroke_to(x, y)
    doc.end_stroke()


@pytest.mark.slow
def test_undo_and_redo_give_back_every_state_exactly_after_many_strokes(qtbot):
    rng = np.random.default_rng(3)
    doc = Document()
    doc.set_photo(Photo(rgb=np.zeros((300, 420, 3), np.uint8)))
    states = [state(doc)]
    for i in range(40):
        mode = ("add", "erase", "paint")[i % 3]
        points = rng.uniform((0, 0), (420, 300), size=(int(rng.integers(1, 6)), 2))
        stroke(doc, mode, points, radius=float(rng.uniform(3, 90)), hardness=float(rng.uniform(0, 1)),
               colour=tuple(int(c) for c in rng.integers(0, 256, 3)))
        states.append(state(doc))
        if i == 20:
            doc.grow_mask(5)  # strokes after an operation land on a new segment
            states.append(state(doc))
    assert doc.undo_stack.count() == len(states) - 1
    for expected in reversed(states[:-1]):
        doc.undo_stack.undo()
        assert same(state(doc), expected)
    for expected in states[1:]:
        doc.undo_stack.redo()
        assert same(state(doc), expected)


@pytest.fixture
def big(qtbot):
    """A 24 MP (6000x4000) photo with its stroke layers already made by a first dab."""
    doc = Document()
    doc.set_photo(Photo(rgb=np.zeros((4000, 6000, 3), np.uint8), path=Path("big.png")))
    stroke(doc, "add", [(10, 10)], 5)
    return doc


def wide_strokes(doc, count):
    for i in range(count):
        y = 150 + i * 190
        stroke(doc, "add" if i % 4 else "erase", [(0, y), (3000, y + 60), (6000, y)], radius=100)


UNDO_BUDGET_MB = 160  # 20 wide strokes on 24 MP keep about 128 MB; whole 128 px tiles took 705 MB


@pytest.mark.slow
def test_twenty_wide_strokes_on_24_mp_stay_under_the_memory_budget(big):
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        wide_strokes(big, 20)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < UNDO_BUDGET_MB * MB, f"{grown / MB:.0f} MB for 20 strokes"
    # What the stack says it holds is what it keeps alive (within the bookkeeping's change).
    assert big.undo_stack.held() <= grown + 8 * MB
    assert big.undo_stack.count() == 21


@pytest.mark.slow
def test_the_memory_cap_drops_the_oldest_steps_and_the_rest_still_undo_exactly(qtbot):
    doc = Document()
    doc.set_photo(Photo(rgb=np.zeros((1500, 2000, 3), np.uint8)))
    cap = 12 * MB
    doc.undo_stack.set_limit(cap)
    dropped = []
    doc.undo_stack.dropped.connect(dropped.append)
    states = [state(doc)]
    for i in range(12):
        y = 60 + i * 120
        stroke(doc, "add" if i % 3 else "erase", [(0, y), (1000, y + 40), (2000, y)], radius=60)
        states.append(state(doc))
        assert doc.undo_stack.held() <= cap
    count = doc.undo_stack.count()
    assert 1 < count < 12 and sum(dropped) == 12 - count
    for expected in reversed(states[-count - 1:-1]):
        doc.undo_stack.undo()
        assert same(state(doc), expected)
    doc.undo_stack.undo()  # nothing older is left to undo
    assert same(state(doc), states[-count - 1])


def test_the_window_says_when_undo_drops_steps_and_what_it_holds(qtbot, window):
    stack = window.doc.undo_stack
    window.canvas.set_brush_size(40)
    stroke(window.doc, "add", [(20, 20), (100, 60)], 20)
    assert "Undo holds 1 step" in window.actions["undo"].toolTip()
    stack.set_limit(1)  # a byte: only the newest step may stay
    stroke(window.doc, "add", [(60, 60)], 10)
    assert stack.count() == 1
    message = window.statusBar().currentMessage()
    assert "1 oldest step can no longer be undone" in message and "Settings" in message
