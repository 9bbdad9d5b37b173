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


@pytest.mark.slow
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


OPS = st.one_of(st.just(("invert",)), st.tuples(st.sampled_from(["grow", "shrink"]), st.integers(1, 9)),
                st.tuples(st.just("feather"), st.sampled_from([0.6, 1.0, 2.5, 4.0])))


@st.composite
def layers_with_ops(draw):
    """Level heatmaps up to 60 px (many 4 px tiles, several 8 px blocks) with one to three mask
    operations, each followed by optional soft strokes, as a user grows, paints, feathers."""
    shape = draw(st.tuples(st.integers(1, 60), st.integers(1, 60)))
    heatmap = draw(arrays(np.float32, shape, elements=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])))
    soft = st.one_of(st.none(), arrays(np.float32, shape, elements=st.floats(0, 1, width=32)))
    segments = [Segment(added=draw(soft), erased=draw(soft))]
    for op in draw(st.lists(OPS, min_size=1, max_size=3)):
        segments.append(Segment(op=op, added=draw(soft), erased=draw(soft)))
    return shape, MaskLayers(heatmap=heatmap, segments=segments)


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(data=layers_with_ops(), old=LEVELS, new=LEVELS)
def test_after_operations_the_patches_also_give_the_synchronous_fold(data, old, new):
    """Grow, shrink, feather and invert carry a threshold move beyond the reached tiles: the patches
    (each folded on a window with the operations' reach around it) still give fold() exactly."""
    shape, mask = data
    prefix, composed = fold(mask, old, shape)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mask_layers, "TILE", 4)
        patch.setattr(mask_layers, "BLOCK", 2)
        result = refold.refold(mask, old, new, None, 0)
    for (x, y, w, h), p, c in result.patches:
        prefix[y:y + h, x:x + w], composed[y:y + h, x:x + w] = p, c
    want_prefix, want = fold(mask, new, shape)
    np.testing.assert_array_equal(composed, want)
    np.testing.assert_array_equal(prefix, want_prefix)


def test_a_small_move_after_grow_recomputes_a_band_not_the_photo():
    """The point of the windows: a 0.01 move on a ramp after Grow touches a band of blocks."""
    shape = (512, 2048)
    mask = MaskLayers(heatmap=ramp(shape), segments=[Segment(), Segment(op=("grow", 20))])
    result = refold.refold(mask, 0.5, 0.51, None, 0)
    area = sum(w * h for (_, _, w, h), _, _ in result.patches)
    assert 0 < area <= 2 * 512 * 512


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


def test_parts_cover_the_patches_within_the_budget():
    shape = (96, 128)
    mask = MaskLayers(heatmap=ramp(shape), segments=[Segment(), Segment(op=("grow", 3))])
    result = refold.refold(mask, 0.1, 0.9, None, 0)
    parts = result.parts(1000)
    assert len(parts) > 1 and [p.last for p in parts] == [False] * (len(parts) - 1) + [True]
    whole, pieces = fold(mask, 0.1, shape)[1], fold(mask, 0.1, shape)[1]
    for (x, y, w, h), _, c in result.patches:
        whole[y:y + h, x:x + w] = c
    for part in parts:
        assert sum(w * h for (_, _, w, h), _, _ in part.patches) <= 1000
        for (x, y, w, h), _, c in part.patches:
            pieces[y:y + h, x:x + w] = c
    np.testing.assert_array_equal(pieces, whole)


@pytest.fixture
def small_parts(monkeypatch):
    monkeypatch.setattr(refold, "PART", 600)  # a ramp's move comes in many parts


def test_a_big_change_is_written_over_several_event_loop_turns(qtbot, doc, small_parts):
    seen = []
    doc.mask_changed.connect(lambda rect: seen.append(doc._refolder.delivering))
    doc.set_threshold(0.1)
    settled(qtbot, doc)
    assert True in seen and seen[-1] is False  # redrawn part by part, the last ends the job
    np.testing.assert_array_equal(doc.shown_mask, expected(doc))


def test_a_stroke_between_parts_finishes_the_change_first(qtbot, doc, small_parts):
    doc.set_threshold(0.1)
    with qtbot.waitSignal(doc.mask_changed, timeout=5000):  # the first part is written
        pass
    assert doc._refolder.delivering
    doc.begin_stroke("erase", 6, 1.0)
    doc.stroke_to(60, 40)
    doc.end_stroke()
    assert not doc._refolder.busy and doc._levelled == 0.1
    np.testing.assert_array_equal(doc.shown_mask, expected(doc))
    assert doc.shown_mask[40, 60] == 0.0


def test_a_flick_during_parts_ends_on_the_last_level(qtbot, doc, small_parts):
    for level in (0.1, 0.6, 0.55, 0.3):
        doc.set_threshold(level)
        qtbot.wait(1)
    settled(qtbot, doc)
    assert doc._levelled == 0.3
    np.testing.assert_array_equal(doc.shown_mask, expected(doc))
