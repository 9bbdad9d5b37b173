"""Every editing method in the app: the panel built from the engine's option metadata, runs through
the worker on the real engine (tiny model), Blended's extend/background/scribble, the P2P heatmap."""

import dataclasses
import json

import numpy as np
import pytest
from PySide6.QtCore import QEventLoop, QPointF, Qt, QTimer
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QMessageBox,
                               QSpinBox)

from desktop_app.main_window import MainWindow
from desktop_app.worker import EngineController, LoadModelRequest
from engine.imaging import Photo
from engine.methods import METHODS
from engine.params import EditParams

FAST = EditParams(steps=4, strength=0.5, mask_samples=2, feather=0, seed=5)


def gradient(h=48, w=64):
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs * 4 % 256, ys * 5 % 256, np.full_like(xs, 90)], axis=2).astype(np.uint8)


def make_window(qtbot, settings, engine, ready=True):
    win = MainWindow(settings, engine)
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    if ready:
        win._on_model_state("ready", "test model")
    win.open_photo(Photo(rgb=gradient()), "test.png")
    win.params.source.setText("a cat")
    win.params.target.setText("a dog")
    win.params.set_params(FAST)
    win.params.lock_seed.setChecked(True)
    return win


def close(win):
    win.doc.mark_exported()
    win.close()


def paint_box(doc, box=(16, 8, 48, 32)):
    """Brush a rectangle into the mask (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    doc.begin_stroke("add", 3, 1.0)
    for y in range(y0 + 3, y1 - 2, 3):
        doc.stroke_to(x0 + 3, y)
        doc.stroke_to(x1 - 4, y)
    doc.end_stroke()


def run(qtbot, win, timeout=60_000):
    with qtbot.waitSignal(win.engine.job_finished, timeout=timeout):
        win.run_edit()


# ----------------------------------------------------------------------------- the real engine


@pytest.fixture(scope="module")
def real_engine(qapp, tiny_model_path):
    """One engine thread with the tiny model loaded, shared by this module's real runs."""
    engine = EngineController()
    loop, states = QEventLoop(), []

    def on_state(state, message):
        if state != "loading":
            states.append((state, message))
            loop.quit()

    engine.model_state.connect(on_state)
    QTimer.singleShot(120_000, loop.quit)
    engine.load_model(LoadModelRequest(str(tiny_model_path), device="cpu"))
    loop.exec()
    assert states and states[0][0] == "ready", states
    yield engine
    engine.shutdown()


MASKED = {"diffedit": {}, "blended": {"candidates": 2}, "sdedit": {"masked": True}}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["diffedit", "blended", "sdedit", "p2p", "pnp"])
def test_each_method_runs_through_the_worker_into_history(qtbot, settings, real_engine, dialogs,
                                                          method):
    win = make_window(qtbot, settings, real_engine)
    doc = win.doc
    try:
        win.params.set_method(method)
        if method == "p2p":
            win.params.target.setText("a cat dog")  # refine: an added word, blended locally
            win.params.set_options({"mode": "refine", "blend_words": "dog", "blend_threshold": 0.4})
        else:
            paint_box(doc)
            win.params.set_options(MASKED.get(method, {}))
        drawn = doc.composed.copy()
        original = doc.base.copy()
        run(qtbot, win)
        assert dialogs.shown == [], dialogs.texts()
        expected = 2 if method == "blended" else 1
        assert len(doc.history) == expected and len({e.group for e in doc.history}) == 1
        for entry in doc.history:
            assert entry.method == method
            record = json.loads(entry.metadata()["diffedit"])
            assert record["method"] == method and record["options"] == entry.options
            assert entry.image.shape == original.shape
            assert np.any(entry.image != original), "the run changed nothing"
        if method in MASKED:  # pixels outside the user's mask stay the photo's own
            outside = drawn == 0
            for entry in doc.history:
                np.testing.assert_array_equal(entry.image[outside], original[outside])
        if method == "blended":
            assert [e.params.seed for e in doc.history] == [5, 6]
            assert np.any(doc.history[0].image != doc.history[1].image), "candidates must differ"
            assert win.history.tree.topLevelItem(0).childCount() == 2
        if method == "p2p":  # the local blend's attention map is now the auto mask to refine
            entry = doc.history[0]
            assert entry.heatmap is not None
            np.testing.assert_array_equal(doc.heatmap, entry.heatmap)
            qtbot.waitUntil(lambda: doc.threshold == pytest.approx(0.4), timeout=2000)
            np.testing.assert_array_equal(doc.composed > 0.5, entry.mask > 0.5)
            np.testing.assert_array_equal(entry.image[entry.mask == 0], original[entry.mask == 0])
        if method == "pnp":  # mask "none": the whole photo is generated, no mask was sent
            assert doc.history[0].mask.min() == 1.0
    finally:
        close(win)


@pytest.mark.slow
def test_extend_apply_changes_the_size_and_undo_restores_it(qtbot, settings, real_engine, dialogs):
    win = make_window(qtbot, settings, real_engine)
    doc = win.doc
    try:
        paint_box(doc)
        mask_before, original = doc.composed.copy(), doc.base.copy()
        win.params.set_method("blended")
        win.params.set_options({"action": "extend", "extend_right": 16, "extend_top": 8,
                                "candidates": 1})
        dialogs.answer = QMessageBox.StandardButton.No  # regenerate the painted mask too
        run(qtbot, win)
        assert [title for _, title, _ in dialogs.shown] == ["Extend the photo"], dialogs.texts()
        assert doc.history[0].mask[8:, :64].max() > 0, "the painted mask was regenerated too"
        [entry] = doc.history
        assert entry.image.shape == (56, 80, 3)
        np.testing.assert_array_equal(entry.image[8:, :64][mask_before == 0],
                                      original[mask_before == 0])
        win.history.apply_button.click()
        assert doc.size == (80, 56) and doc.base.shape == (56, 80, 3)
        np.testing.assert_array_equal(doc.base, entry.image)
        # The mask stays over the same pixels; the new area is not masked.
        assert doc.composed.shape == (56, 80)
        np.testing.assert_array_equal(doc.composed[8:, :64], mask_before)
        assert not doc.composed[:8].any() and not doc.composed[:, 64:].any()
        assert doc.shown_photo().rgb.shape == (56, 80, 3)  # export writes the new size
        shown = win.canvas.photo_item.boundingRect()
        assert shown.size().toTuple() == (80, 56)  # the canvas shows the new size
        # With extend still chosen, the frame is around the new photo, in the scene with room.
        assert win.canvas.frame_item.frame_rect().topLeft().toTuple() == (0.0, -8.0)
        assert win.canvas.scene().sceneRect().contains(win.canvas.frame_item.frame_rect())
        win.actions["undo"].trigger()
        np.testing.assert_array_equal(doc.base, original)
        np.testing.assert_array_equal(doc.composed, mask_before)
        assert doc.photo.rgb.shape == original.shape
        win.actions["redo"].trigger()
        assert doc.base.shape == (56, 80, 3)
    finally:
        close(win)


@pytest.mark.slow
def test_scribble_paint_changes_the_runs_input_inside_the_mask_only(qtbot, settings, real_engine,
                                                                    dialogs):
    win = make_window(qtbot, settings, real_engine)
    doc = win.doc
    try:
        win.params.set_method("blended")
        win.params.set_options({"action": "scribble", "candidates": 1})
        paint_box(doc, (16, 8, 40, 32))
        doc.begin_stroke("paint", 6, 1.0, colour=(0, 0, 255))
        for x in range(4, 60, 4):  # across the mask and beyond it
            doc.stroke_to(x, 20)
        doc.end_stroke()
        assert doc.paint.coverage[20, 8] == 1.0 and doc.paint.coverage[20, 50] == 1.0
        run(qtbot, win)
        assert dialogs.shown == [], dialogs.texts()
        [entry] = doc.history
        assert entry.options["action"] == "scribble"
        key = next(k for k in real_engine.worker.sessions if "+scribble-" in k)
        painted = real_engine.worker.sessions[key].rgb
        inside = doc.composed > 0
        np.testing.assert_array_equal(painted[~inside], doc.base[~inside])
        np.testing.assert_array_equal(painted[20, 20:36], [[0, 0, 255]] * 16)
        np.testing.assert_array_equal(entry.image[~inside], doc.base[~inside])
    finally:
        close(win)


# ----------------------------------------------------------------------------- the panel


@pytest.fixture
def window(qtbot, settings, fake_engine):
    engine = EngineController(fake_engine)
    with qtbot.waitSignal(engine.model_state, timeout=5000,
                          check_params_cb=lambda state, _m: state == "ready"):
        engine.load_model(LoadModelRequest("/models/fake-sd"))
    win = make_window(qtbot, settings, engine)
    yield win
    close(win)
    engine.shutdown()


def test_panel_lists_the_engine_methods_and_builds_options_from_metadata(window):
    panel = window.params
    assert [panel.method.itemData(i) for i in range(panel.method.count())] == list(METHODS)
    assert panel.method_key() == "diffedit"
    for i, info in enumerate(METHODS.values()):
        assert panel.method.itemText(i) == info.title
        tip = panel.method.itemData(i, Qt.ItemDataRole.ToolTipRole)
        assert " ".join(tip.split()).lower() == info.summary.lower()
    for name, info in METHODS.items():
        panel.set_method(name)
        shown = [m for m, box in panel.option_boxes.items() if box.isVisible()]
        assert shown == ([name] if dataclasses.fields(info.options) else [])
        for f in dataclasses.fields(info.options):
            widget = panel.option_widgets[name][f.name]
            help_text = " ".join(widget.toolTip().split()).lower()
            assert help_text == " ".join(f.metadata["help"].split()).lower()
            if f.metadata["choices"]:
                assert isinstance(widget, QComboBox)
                assert tuple(widget.itemData(i) for i in range(widget.count())) == f.metadata["choices"]
            elif f.type in (bool, "bool"):
                assert isinstance(widget, QCheckBox)
            elif f.metadata["range"]:
                assert isinstance(widget, (QSpinBox, QDoubleSpinBox))
                assert (widget.minimum(), widget.maximum()) == pytest.approx(f.metadata["range"])
            else:
                assert isinstance(widget, QLineEdit)
        assert panel.options() == dataclasses.asdict(info.options())  # defaults shown
        finds = name in ("diffedit", "instruct")  # Instruction edit's from its instruction
        assert panel.find_mask_button.isVisible() == finds
        assert window.actions["find_mask"].isEnabled() == finds
    panel.set_method("p2p")
    assert not panel.seed.isVisible() and not panel.negative.isVisible()
    assert not panel.mask_samples.isVisible()
    panel.set_method("blended")
    assert not panel.variations.isVisible() and not panel.strength.isVisible()
    extend = panel.option_widgets["blended"]["extend_left"]
    assert not extend.isVisible() and not panel.paint_row.isVisible()
    panel.set_options({"action": "extend"})
    assert extend.isVisible() and extend.suffix() == " px"
    panel.set_options({"action": "scribble"})
    assert not extend.isVisible() and panel.paint_row.isVisible() and panel.strength.isVisible()


def test_the_menu_lists_only_the_methods_the_loaded_model_runs(qtbot, window, fake_engine):
    """A flow model (FLUX.2 klein) runs DiffEdit, Blended and SDEdit: only those are listed, and
    a chosen Prompt-to-Prompt gives way to the first of them; an SD model lists all again."""
    panel = window.params
    panel.set_method("p2p")
    fake_engine.supported = {"diffedit", "blended", "sdedit"}
    with qtbot.waitSignal(window.engine.model_state, timeout=5000,
                          check_params_cb=lambda state, _m: state == "ready"):
        window.load_model("/models/fake-klein")
    listed = [panel.method.itemData(i) for i in range(panel.method.count())
              if not panel.method.view().isRowHidden(i)]
    assert listed == ["diffedit", "blended", "sdedit"] and panel.method_key() == "diffedit"
    fake_engine.supported = set(METHODS)
    with qtbot.waitSignal(window.engine.model_state, timeout=5000,
                          check_params_cb=lambda state, _m: state == "ready"):
        window.load_model("/models/fake-sd")
    assert not any(panel.method.view().isRowHidden(i) for i in range(panel.method.count()))


def test_the_panels_defaults_are_the_engines_for_each_method(qtbot):
    from desktop_app.panels.params import ParamsPanel

    panel = ParamsPanel()
    qtbot.addWidget(panel)
    assert panel.params() == METHODS["diffedit"].default_params()
    panel.set_method("p2p")  # Prompt-to-Prompt inverts fully: its own default ratio
    assert panel.params() == METHODS["p2p"].default_params() and panel.strength.value() == 1.0
    panel.set_method("pnp")
    assert panel.strength.value() == 1.0
    panel.set_method("sdedit")
    assert panel.params() == METHODS["sdedit"].default_params()
    panel.strength.setValue(0.6)  # the user's ratio stays on every method
    for method in ("p2p", "diffedit"):
        panel.set_method(method)
        assert panel.strength.value() == 0.6
    # Settings given with their method are shown as given, even at another method's default.
    panel.set_params(FAST.replace(strength=0.8), method="pnp")
    assert panel.method_key() == "pnp" and panel.params() == FAST.replace(strength=0.8)


def test_options_are_remembered_per_method_and_restored_from_history(qtbot, window):
    panel = window.params
    panel.set_method("sdedit")
    panel.set_options({"masked": True})
    panel.set_method("pnp")
    panel.set_options({"feature_fraction": 0.3})
    run(qtbot, window)
    entry = window.doc.history[-1]
    assert entry.method == "pnp" and entry.options["feature_fraction"] == pytest.approx(0.3)
    panel.set_method("sdedit")
    assert panel.options() == {"masked": True}
    panel.set_method("pnp")
    panel.set_options({"feature_fraction": 0.9})
    panel.set_method("diffedit")
    window.history.settings_button.click()
    assert panel.method_key() == "pnp"
    assert panel.options()["feature_fraction"] == pytest.approx(0.3)


def test_mask_rules_per_method(qtbot, window, submitted, dialogs):
    panel = window.params
    panel.set_method("blended")
    window.find_mask()  # not offered for Blended: nothing runs
    assert window.runs.job is None and submitted == []
    window.run_edit()  # Blended inpaint without a mask: a clear message, no run
    assert "needs a mask" in dialogs.texts() and window.runs.job is None
    panel.set_options({"action": "scribble"})
    paint_box(window.doc)
    dialogs.shown.clear()
    window.run_edit()
    assert "Paint (P)" in dialogs.texts() and window.runs.job is None
    panel.set_method("pnp")  # mask "none": a painted mask is not sent
    run(qtbot, window)
    assert submitted[-1].run.method == "pnp" and submitted[-1].run.mask is None
    window.doc.clear_mask()
    panel.set_method("sdedit")  # mask optional: no mask is fine unmasked, and no mask is found
    run(qtbot, window)
    assert (submitted[-1].run.method, submitted[-1].run.options, submitted[-1].run.mask) == (
        "sdedit", {"masked": False}, None)
    assert len(submitted) == 2 and window.doc.heatmap is None


def test_candidates_show_ranked_with_their_clip_score(qtbot, window):
    paint_box(window.doc)
    window.params.set_method("blended")
    window.params.set_options({"candidates": 3, "clip_model": "fake-clip"})
    run(qtbot, window)
    doc = window.doc
    assert [e.stats["rank"] for e in doc.history] == [1, 2, 3]
    scores = [e.stats["clip_score"] for e in doc.history]
    assert scores == sorted(scores, reverse=True)
    group = window.history.tree.topLevelItem(0)
    assert group.childCount() == 3 and "3 candidates, ranked" in group.text(0)
    assert "rank 1" in group.child(0).text(0) and f"CLIP {scores[0]:.3f}" in group.child(0).text(0)
    assert doc.preview_id == doc.history[0].id  # the best one is shown


def test_p2p_use_its_mask_after_the_mask_changed(qtbot, window):
    panel = window.params
    panel.set_method("p2p")
    panel.set_options({"blend_words": "dog", "blend_threshold": 0.5})
    run(qtbot, window)
    entry = window.doc.history[-1]
    np.testing.assert_array_equal(window.doc.heatmap, entry.heatmap)
    window.doc.clear_mask()
    assert window.doc.heatmap is None
    window.history.tree.setCurrentItem(window.history.tree.topLevelItem(0))
    panel.threshold_spin.setValue(0.9)
    window.history.mask_button.click()
    qtbot.waitUntil(lambda: window.doc.threshold == pytest.approx(0.5), timeout=2000)
    np.testing.assert_array_equal(window.doc.heatmap, entry.heatmap)
    np.testing.assert_array_equal(window.doc.composed, entry.mask)
    window.actions["undo"].trigger()
    assert window.doc.heatmap is None


def test_paint_tool_paints_the_layer_on_the_canvas_undoable(qtbot, window):
    canvas, doc = window.canvas, window.doc
    window.params.set_method("blended")  # the paint layer is scribble's: its tools show there
    window.params.set_options({"action": "scribble"})
    window.actions["paint"].trigger()
    canvas.set_paint_colour(Qt.GlobalColor.green)
    canvas.set_brush_size(6)
    viewport = canvas.viewport()
    points = [canvas.mapFromScene(QPointF(x, 20)) for x in (10, 30, 50)]
    qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=points[0])
    for p in points[1:]:
        qtbot.mouseMove(viewport, p)
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=points[-1])
    assert doc.paint.coverage[20, 30] == 1.0 and tuple(doc.paint.rgb[20, 30]) == (0, 255, 0)
    assert not doc.composed.any(), "paint is not the mask"
    assert canvas.paint_item.pixel(30, 20) == (0, 255, 0, 255)
    assert canvas.paint_item.pixel(30, 40)[3] == 0
    window.actions["undo"].trigger()
    assert not doc.has_paint() and canvas.paint_item.pixel(30, 20)[3] == 0
    window.actions["redo"].trigger()
    assert doc.has_paint()
    window.actions["clear_paint"].trigger()
    assert not doc.has_paint() and canvas.paint_item.pixel(30, 20)[3] == 0
    window.actions["undo"].trigger()
    assert doc.paint.coverage[20, 30] == 1.0


def test_outside_mask_pixels_of_fake_background_run(qtbot, window):
    """Replace background: the painted subject is what stays."""
    paint_box(window.doc)
    subject, background = window.doc.composed == 1.0, window.doc.composed == 0.0
    original = window.doc.base.copy()
    window.params.set_method("blended")
    window.params.set_options({"action": "background", "candidates": 1})
    run(qtbot, window)
    [entry] = window.doc.history
    assert subject.any() and background.any()
    np.testing.assert_array_equal(entry.image[subject], original[subject])
    assert np.all(entry.image[background] != original[background])


def test_methods_that_do_not_use_the_source_text_run_without_it(qtbot, window):
    from desktop_app.methods import METHODS

    window.params.source.setText("")
    assert not METHODS["sdedit"].uses_source and METHODS["diffedit"].uses_source
    window.params.set_method("sdedit")
    with qtbot.waitSignal(window.engine.job_finished, timeout=10000):
        window.actions["edit"].trigger()
    assert window.doc.history and window.doc.history[-1].method == "sdedit"


def test_the_edge_blend_choice_reaches_the_run_and_comes_back_with_its_settings(qtbot, window):
    panel = window.params
    panel.seam.setCurrentIndex(panel.seam.findData("poisson"))
    assert panel.params().seam == "poisson"
    panel.set_params(panel.params().replace(seam="feather"))
    assert panel.seam.currentData() == "feather"
    panel.set_params(panel.params().replace(seam="poisson"))
    assert panel.run_params().seam == "poisson"
