"""Re-thresholding off the GUI thread (issue 17, point 11): the tiles a threshold move reaches give
exactly the synchronous fold, the GUI thread never waits for the job, and a job overtaken by a
stroke never writes its older mask over the stroke."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from desktop_app import mask_layers, refold
from desktop_app.document import Document
from desktop_app.mask_layers import HeatmapRanges, MaskLayers, Segment, fold, rethreshold_patches

LEVELS = st.sampled_from([0.0, 0.2, 0.25, 0.5, 0.7, 0.75, 1.0])


@st.composite
def layers(draw):
    """Heatmaps of a few levels (so that many tiles hold no value between two thresholds) with
    optional soft strokes, on shapes spanning several 4 px tiles."""
    shape = draw(st.tuples(st.integers(1, 21), st.integers(1, 21)))
    heatmap = draw(arrays(np.float32, shape, elements=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])))
    soft = arrays(np.float32, shape, elements=st.floats(0, 1, width=32))
    added, erased = (draw(st.one_of(st.none(), soft)) for _ in range(2))
    return shape, MaskLayers(heatmap=heatmap, segments=[Segment(added=added, erased=erased)])


@settings(max_examples=80, deadline=None)
@given(data=layers(), old=LEVELS, new=LEVELS)
def test_patches_of_the_reached_tiles_give_the_synchronous_fold(data, old, new):
    shape, mask = data
    prefix, composed = fold(mask, old, shape)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mask_layers, "TILE", 4)
        patches = rethreshold_patches(mask, HeatmapRanges.of(mask.heatmap), old, new)
    for (x, y, w, h), p, c in patches:
        prefix[y:y + h, x:x + w], composed[y:y + h, x:x + w] = p, c
    want_prefix, want = fold(mask, new, shape)
    np.testing.assert_array_equal(composed, want)
    np.testing.assert_array_equal(prefix, want_prefix)


@settings(max_examples=40, deadline=None)
@given(data=layers(), old=LEVELS, new=LEVELS, px=st.integers(1, 3))
def test_a_whole_fold_names_every_tile_that_changed(data, old, new, px):
    shape, mask = data
    mask.segments.append(Segment(op=("grow", px)))  # an operation: the fold runs whole
    before = fold(mask, old, shape)[1]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mask_layers, "TILE", 4)
        result = refold.refold(mask, shape, old, new, before, None, 0)
    np.testing.assert_array_equal(result.whole[1], fold(mask, new, shape)[1])
    covered = np.zeros(shape, bool)
    for x, y, w, h in result.rects:
        covered[y:y + h, x:x + w] = True
    assert not np.any((before != result.whole[1]) & ~covered)


def ramp(shape):
    h, w = shape
    return np.tile(np.linspace(0, 1, w, dtype=np.float32), (h, 1))


@pytest.fixture
def doc(qtbot, photo):
    d = Document()
    d.set_photo(photo)
    d.set_heatmap(ramp(d.shape))
    return d


def settled(qtbot, doc):
    qtbot.waitUntil(lambda: doc._levelled == doc.threshold and not doc._refolder.busy, timeout=5000)


def expected(doc) -> np.ndarray:
    return fold(doc.mask, doc.threshold, doc.shape)[1]


def test_the_gui_thread_sets_the_level_and_the_mask_follows_from_the_job_thread(qtbot, doc):
    gate = threading.Event()
    refold._THREAD.submit(gate.wait, 5)  # the job thread is busy: the job queues behind this
    before = doc.shown_mask.copy()
    seen = []
    doc.threshold_changed.connect(seen.append)
    doc.set_threshold(0.2)  # returns at once although no job can run yet
    assert seen == [0.2] and doc.threshold == 0.2
    np.testing.assert_array_equal(doc.shown_mask, before)  # not computed here
    gate.set()
    settled(qtbot, doc)
    np.testing.assert_array_equal(doc.shown_mask, expected(doc))
    assert not np.array_equal(doc.shown_mask, before)


def test_a_job_overtaken_by_a_stroke_never_writes_over_it(qtbot, doc, monkeypatch):
    computed, release = threading.Event(), threading.Event()
    real = refold.refold

    def held(*args):  # computed before the stroke, handed back after it
        result = real(*args)
        computed.set()
        release.wait(5)
        return result

    monkeypatch.setattr(refold, "refold", held)
    doc.set_threshold(0.9)  # the right-hand tile column is reached
    assert computed.wait(5)
    doc.begin_stroke("add", 6, 1.0)
    doc.stroke_to(120, 20)  # right, where the heatmap is below 0.9 now
    doc.end_stroke()
    release.set()
    settled(qtbot, doc)
    assert doc.shown_mask[20, 120] == 1.0, "the older job wrote its mask over the stroke"
    np.testing.assert_array_equal(doc.shown_mask, expected(doc))


def test_composed_waits_for_the_job_and_equals_the_synchronous_fold(doc):
    for level in (0.3, 0.31, 0.8, 0.05):
        doc.set_threshold(level)
    np.testing.assert_array_equal(doc.composed, expected(doc))


def test_a_slider_flick_ends_on_the_slider_value_on_the_canvas(qtbot, window):
    window.doc.set_heatmap(ramp(window.doc.shape))
    slider = window.params.threshold_slider
    for value in range(10, 91, 7):  # no event-loop turn in between: jobs overlap the moves
        slider.setValue(value)
    settled(qtbot, window.doc)
    assert window.doc.threshold == pytest.approx(slider.value() / 100)
    np.testing.assert_array_equal(window.doc.shown_mask, expected(window.doc))
    # The overlay shows it: masked right of 0.94 of the width, clear left of it.
    item = window.canvas.mask_item
    assert item.pixel(127, 40)[3] == 255 and item.pixel(100, 40)[3] == 0
