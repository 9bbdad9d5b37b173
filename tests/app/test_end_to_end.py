"""The real engine with the tiny random-weight model, through the window like a user would."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPointF, Qt

from desktop_app.main_window import MainWindow
from edit_checks import check_only_the_mask_changed_then_apply_and_undo
from desktop_app.worker import EngineController
from engine.geometry import default_feather
from engine.imaging import read_metadata
from engine.params import EditParams

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_open_find_paint_edit_apply_undo_export(qtbot, settings, tiny_model_path, tmp_path, dialogs):
    photo_path = tmp_path / "chelsea.png"
    shutil.copy(ROOT / "resources" / "samples" / "chelsea.png", photo_path)
    engine = EngineController()  # the real engine backend: torch loads on the engine thread
    win = MainWindow(settings, engine)
    qtbot.addWidget(win)
    win.resize(1100, 760)
    win.show()
    try:
        with qtbot.waitSignal(engine.model_state, timeout=120_000,
                              check_params_cb=lambda state, _m: state in ("ready", "failed")):
            win.load_model(str(tiny_model_path), device="cpu")
        assert win.model_state == "ready", win.model_message
        assert win.open_path(photo_path)
        doc = win.doc
        original = doc.base.copy()
        assert original.shape == (300, 451, 3)
        win.params.source.setText("a cat")
        win.params.target.setText("a dog")
        win.params.set_params(EditParams(steps=10, strength=0.5, mask_samples=2, seed=3))
        win.params.lock_seed.setChecked(True)

        with qtbot.waitSignal(engine.job_finished, timeout=120_000):
            win.actions["find_mask"].trigger()
        assert dialogs.shown == [], dialogs.texts()
        heat = doc.heatmap
        assert heat is not None and heat.shape == (300, 451)
        assert 0.0 <= heat.min() and heat.max() <= 1.0

        # Refine: paint a stroke across the top-left corner with the mouse.
        win.canvas.set_brush_size(30)
        viewport = win.canvas.viewport()
        points = [win.canvas.mapFromScene(QPointF(x, 40)) for x in (30, 90, 150)]
        qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=points[0])
        for p in points[1:]:
            qtbot.mouseMove(viewport, p)
        qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=points[-1])
        refined = doc.composed.copy()
        assert refined[40, 30:151].min() == 1.0

        with qtbot.waitSignal(engine.job_finished, timeout=120_000):
            win.actions["edit"].trigger()
        assert dialogs.shown == [], dialogs.texts()
        assert len(doc.history) == 1
        entry = doc.history[0]
        np.testing.assert_array_equal(entry.mask > 0.5, refined > 0.5)  # the refined mask was used
        # the panel's Auto feather became this photo's own (4 px of the tiny model's 128 px side)
        assert entry.params.feather == default_feather((451, 300), 128) == 11
        outside = check_only_the_mask_changed_then_apply_and_undo(win, entry, original)

        doc.set_preview(entry.id)
        out = tmp_path / "chelsea-edited.png"
        assert win.export_to(out)
        with Image.open(out) as image:
            assert image.size == (451, 300)
            exported = np.asarray(image.convert("RGB"))
        np.testing.assert_array_equal(exported[outside], original[outside])
        np.testing.assert_array_equal(exported, entry.image)
        record = json.loads(read_metadata(out)["diffedit"])
        assert record["source"] == "a cat" and record["target"] == "a dog"
        assert record["params"]["seed"] == 3 and record["params"]["steps"] == 10
        assert photo_path.read_bytes() == (ROOT / "resources" / "samples" / "chelsea.png").read_bytes()
    finally:
        win.doc.mark_exported()
        win.close()
        engine.shutdown()
