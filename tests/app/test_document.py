"""Document logic: mask layers, threshold that keeps strokes, mask operations, undo, apply."""

import numpy as np
import pytest

from desktop_app.document import Document
from desktop_app.mask_layers import segment_coverage
from engine import masks
from engine.params import EditParams
from engine.results import EditResult


@pytest.fixture
def doc(qtbot, photo):
    d = Document()
    d.set_photo(photo)
    return d


def ramp_heatmap(shape):
    """Heatmap rising left to right: the threshold decides how far the mask reaches."""
    h, w = shape
    return np.tile(np.linspace(0, 1, w, dtype=np.float32), (h, 1))


def paint(doc, points, mode="add", radius=6.0, hardness=1.0):
    doc.begin_stroke(mode, radius, hardness)
    for x, y in points:
        doc.stroke_to(x, y)
    doc.end_stroke()


def test_fast_drag_leaves_no_gaps():
    # Two points 80 px apart with a 3 px radius: every pixel centre on the line must be covered.
    rect, cov = segment_coverage((10.0, 20.5), (90.0, 20.5), 3.0, 1.0, (40, 100))
    x, y, w, h = rect
    row = cov[20 - y, 10 - x:91 - x]
    assert row.min() == 1.0
    assert cov[:, :].shape == (h, w)


def test_stroke_changes_only_where_painted_and_is_one_undo_step(doc):
    paint(doc, [(20, 20), (60, 20)])
    m = doc.composed
    assert m[20, 40] == 1.0 and m[20, 20] == 1.0
    assert m[60, 100] == 0.0 and m[40, 40] == 0.0
    assert doc.undo_stack.count() == 1
    doc.undo_stack.undo()
    assert not doc.composed.any()
    doc.undo_stack.redo()
    assert doc.composed[20, 40] == 1.0


def test_threshold_change_keeps_added_and_erased_strokes(doc):
    doc.set_heatmap(ramp_heatmap(doc.shape))
    paint(doc, [(10, 50)], radius=4)  # add on the left, where the heatmap is low
    paint(doc, [(110, 50)], mode="erase", radius=4)  # erase on the right, where it is high
    for level in (0.9, 0.5, 0.1, 0.7):
        doc.set_threshold(level)
        segment = doc.mask.segments[0]  # (heatmap > level OR added) AND NOT erased
        expected = np.maximum(masks.threshold(doc.heatmap, level), segment.added) * (1 - segment.erased)
        np.testing.assert_array_equal(doc.composed, expected)
        assert doc.composed[50, 10] == 1.0, "added stroke lost"
        assert doc.composed[50, 110] == 0.0, "erased stroke lost"
    # Far from the strokes, the heatmap threshold rules.
    doc.set_threshold(0.5)
    assert doc.composed[10, 100] == 1.0 and doc.composed[10, 30] == 0.0


def test_eraser_then_brush_last_stroke_wins(doc):
    paint(doc, [(40, 40)], radius=8)
    paint(doc, [(40, 40)], mode="erase", radius=8)
    assert doc.composed[40, 40] == 0.0
    paint(doc, [(40, 40)], radius=8)
    assert doc.composed[40, 40] == 1.0
    doc.undo_stack.undo()
    assert doc.composed[40, 40] == 0.0
    doc.undo_stack.undo()
    assert doc.composed[40, 40] == 1.0


def test_operations_apply_to_the_mask_so_far_and_undo(doc):
    paint(doc, [(64, 48)], radius=10)
    before = doc.composed.copy()
    doc.grow_mask(5)
    assert doc.composed.sum() > before.sum()
    assert doc.composed[48, 64 + 13] == 1.0 and before[48, 64 + 13] == 0.0
    doc.invert_mask()
    assert doc.composed[48, 64] == 0.0 and doc.composed[0, 0] == 1.0
    # Painting after invert adds where painted (strokes land on top of the operations).
    paint(doc, [(64, 48)], radius=3)
    assert doc.composed[48, 64] == 1.0
    doc.undo_stack.undo()  # the stroke
    doc.undo_stack.undo()  # invert
    doc.undo_stack.undo()  # grow
    np.testing.assert_array_equal(doc.composed, before)


def test_shrink_feather_clear_and_load(doc):
    paint(doc, [(64, 48)], radius=20)
    area = doc.composed.sum()
    doc.shrink_mask(4)
    assert 0 < doc.composed.sum() < area
    doc.feather_mask(3)
    soft = doc.composed
    assert ((soft > 0) & (soft < 1)).any()
    doc.clear_mask()
    assert not doc.has_mask()
    loaded = np.zeros(doc.shape, np.float32)
    loaded[10:20, 30:40] = 1.0
    doc.load_mask(loaded)
    np.testing.assert_array_equal(doc.composed, loaded)
    doc.undo_stack.undo()
    assert not doc.composed.any()
    doc.undo_stack.undo()
    assert doc.composed.any()


def test_mask_for_engine_is_none_until_something_exists(doc):
    assert doc.mask_for_engine() is None
    paint(doc, [(5, 5)], radius=2)
    assert doc.mask_for_engine() is not None


def test_apply_stores_a_patch_and_undoes(doc):
    original = doc.base.copy()
    image = original.copy()
    image[30:40, 50:70] = 255 - image[30:40, 50:70]
    group = doc.new_group()
    entry = doc.add_result(group, EditResult(image=image, mask=np.zeros(doc.shape, np.float32),
                                             heatmap=None, source="a", target="b",
                                             params=EditParams(), model_name="tiny", seconds=1.0))
    key = doc.photo_key
    assert doc.apply_entry(entry.id)
    np.testing.assert_array_equal(doc.base, image)
    command = doc.undo_stack.command(doc.undo_stack.count() - 1)
    assert command.rect == (50, 30, 20, 10), "only the changed region is stored"
    assert doc.photo_key != key and doc.has_unexported_work()
    doc.undo_stack.undo()
    np.testing.assert_array_equal(doc.base, original)
    assert doc.photo_key == key


def test_stroke_undo_stores_tiles_not_copies(qtbot):
    from engine.imaging import Photo

    d = Document()
    d.set_photo(Photo(rgb=np.zeros((1000, 1200, 3), np.uint8)))
    paint(d, [(10, 10), (30, 12)], radius=5)
    command = d.undo_stack.command(0)
    stored = sum(p[1].size for p in command.patches.values())
    assert stored <= 128 * 128, "a small stroke must store one tile, not the whole layer"


@pytest.mark.slow
def test_strokes_on_a_large_photo_update_only_their_region(qtbot):
    """4000x3000: each mouse move recomputes and announces only the few pixels it touched."""
    import time

    from engine.imaging import Photo

    d = Document()
    d.set_photo(Photo(rgb=np.zeros((3000, 4000, 3), np.uint8)))
    d.set_heatmap(np.zeros((3000, 4000), np.float32))
    rects = []
    d.mask_changed.connect(rects.append)
    d.begin_stroke("add", 40, 0.8)
    started = time.perf_counter()
    for i in range(20):
        d.stroke_to(1000 + 15 * i, 1500)
    elapsed = (time.perf_counter() - started) / 20
    d.end_stroke()
    assert all(r is not None and r[2] <= 2 * 40 + 20 and r[3] <= 2 * 40 + 4 for r in rects)
    assert elapsed < 0.05, f"{elapsed * 1000:.1f} ms per mouse move"
