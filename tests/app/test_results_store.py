"""History memory: results beyond the budget move to disk, stay usable, and the Settings say so."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

from desktop_app.document import Document
from desktop_app.results_store import MB, ResultStore, resident_bytes
from engine.params import EditParams
from engine.results import EditResult


def _add(doc, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (*doc.shape, 3), dtype=np.uint8)
    mask = (rng.random(doc.shape) > 0.5).astype(np.float32)
    doc.add_result(doc.new_group(), EditResult(image=image, mask=mask, heatmap=None, source="a",
                                               target="b", params=EditParams(), model_name="tiny",
                                               seconds=1.0))
    return image, mask


def _document(tmp_path, photo, budget_mb):
    doc = Document()
    doc.results = ResultStore(budget_mb * MB, root=tmp_path)
    doc.set_photo(photo)
    return doc


@pytest.mark.slow
def test_results_beyond_the_budget_move_to_disk_and_memory_stops_growing(qtbot, tmp_path):
    from engine.imaging import Photo

    doc = _document(tmp_path, Photo(rgb=np.zeros((400, 600, 3), np.uint8)), budget_mb=4)
    kept = [_add(doc, seed) for seed in range(2)]
    per_result = resident_bytes(doc.history[0])  # 1.7 MB: a 12 MP result takes 84 MB
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for seed in range(2, 22):
        _add(doc, seed)
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    # Without the store the 20 new results hold 20 x per_result (34 MB); with it, what fits in
    # the 4 MB budget, the newest one beyond it, and thumbnails and bookkeeping (well under 1 MB).
    assert grown < 4 * MB + 2 * per_result + 1 * MB, (grown, per_result)
    assert sum(resident_bytes(e) for e in doc.history) <= 4 * MB + per_result
    assert isinstance(doc.history[0].image, np.memmap)
    assert not isinstance(doc.history[-1].image, np.memmap)
    for entry, (image, mask) in zip(doc.history, kept):  # moved results keep their pixels
        assert np.array_equal(entry.image, image) and np.array_equal(entry.mask, mask)


def test_a_moved_result_can_be_shown_applied_and_its_mask_used(qtbot, tmp_path, photo):
    doc = _document(tmp_path, photo, budget_mb=0)
    image, mask = _add(doc, 1)
    _add(doc, 2)
    first = doc.history[0]
    assert isinstance(first.image, np.memmap)
    doc.set_preview(first.id)
    assert np.array_equal(doc.shown_image(), image)
    doc.use_entry_mask(first.id)
    assert np.array_equal(doc.composed > 0.5, mask > 0.5)
    doc.apply_entry(first.id)
    assert np.array_equal(doc.base, image)
    doc.base[0, 0] = 0  # the base is the document's own copy, not the read-only map
    assert np.array_equal(first.image, image)


@pytest.mark.slow
def test_the_folder_goes_with_the_store(tmp_path):
    store = ResultStore(0, root=tmp_path)

    class Entry:
        image, mask, heatmap = np.ones((8, 8, 3), np.uint8), np.ones((8, 8), np.float32), None
    entries = [Entry(), Entry()]
    assert store.fit(entries) == 1 and len(list(tmp_path.glob("diffedit-history-*/*.npy"))) == 2
    del entries, store
    gc.collect()
    assert not list(tmp_path.glob("diffedit-history-*"))


@pytest.mark.slow
def test_settings_say_so_and_set_the_budget(qtbot, window, settings, dialogs, monkeypatch):
    from PySide6.QtWidgets import QDialog, QLabel

    from desktop_app.dialogs import SettingsDialog

    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    assert "kept on disk" in " ".join(label.text() for label in dialog.findChildren(QLabel))
    dialog.history_memory.setValue(300)
    dialog.model.setText("")  # no model path that could keep the dialog from accepting
    dialog.accept()
    assert dialog.result() == QDialog.DialogCode.Accepted
    assert settings.history_memory_mb() == 300
    window.doc.results.budget = 0
    monkeypatch.setattr(SettingsDialog, "exec", lambda self: QDialog.DialogCode.Accepted)
    window.settings_dialog()
    assert window.doc.results.budget == 300 * MB
