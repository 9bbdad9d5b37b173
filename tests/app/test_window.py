"""The main window against the fake engine: painting, threshold, undo, runs, cancel, errors, files."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt, QTimer
from PySide6.QtWidgets import QMessageBox

from desktop_app import photo_io
from desktop_app.main_window import MainWindow
from desktop_app.worker import EngineController
from engine.params import EditParams

ROOT = Path(__file__).resolve().parents[2]


def drag(qtbot, canvas, points):
    """Press, move through and release at photo coordinates, like a user's mouse."""
    viewport = canvas.viewport()
    pos = [canvas.mapFromScene(QPointF(x, y)) for x, y in points]
    qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=pos[0])
    for p in pos[1:]:
        qtbot.mouseMove(viewport, p)
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=pos[-1])


def run_and_wait(qtbot, win, action="edit"):
    with qtbot.waitSignal(win.engine.job_finished, timeout=10000):
        win.actions[action].trigger()


def test_painting_with_the_mouse_changes_the_mask_where_dragged(qtbot, window):
    canvas = window.canvas
    canvas.set_brush_size(8)
    drag(qtbot, canvas, [(20, 30), (60, 30), (100, 30)])
    m = window.doc.composed
    assert m[30, 20] > 0.5 and m[30, 60] > 0.5 and m[30, 100] > 0.5
    assert m[30, 40] > 0.5, "the stroke must be continuous between mouse events"
    assert m[70, 60] == 0.0 and m[30, 120] == 0.0
    # The overlay shows it: coloured where painted, clear elsewhere.
    assert canvas.mask_item.pixel(60, 30)[3] > 0 and canvas.mask_item.pixel(60, 70)[3] == 0
    assert window.doc.undo_stack.count() == 1

    window.actions["eraser"].trigger()
    drag(qtbot, canvas, [(60, 20), (60, 40)])
    assert window.doc.composed[30, 60] == 0.0 and window.doc.composed[30, 20] > 0.5
    window.actions["undo"].trigger()
    assert window.doc.composed[30, 60] > 0.5
    window.actions["undo"].trigger()
    assert not window.doc.composed.any()
    window.actions["redo"].trigger()
    assert window.doc.composed[30, 60] > 0.5


def test_threshold_changes_keep_strokes(qtbot, window):
    run_and_wait(qtbot, window, "find_mask")
    heat = window.doc.heatmap
    assert heat is not None and window.doc.composed[48, 64] == 1.0  # the fake's disc
    window.canvas.set_brush_size(6)
    drag(qtbot, window.canvas, [(5, 5), (5, 15)])  # add in a corner the heatmap leaves out
    window.actions["eraser"].trigger()
    drag(qtbot, window.canvas, [(64, 48)])  # erase in the middle of the disc
    for value in (0.9, 0.2, 0.6):
        window.params.threshold_spin.setValue(value)
        qtbot.waitUntil(lambda: window.doc.threshold == pytest.approx(value), timeout=2000)
        m = window.doc.composed
        assert m[10, 5] == 1.0 and m[48, 64] == 0.0, f"strokes lost at threshold {value}"
        far = (heat > value)[80, 20]
        assert m[80, 20] == float(far), "away from strokes the threshold decides"
    window.params.threshold_slider.setValue(10)  # the slider drives the same value
    assert window.params.threshold_spin.value() == pytest.approx(0.10)


def test_the_threshold_lives_in_the_document_and_the_panel_follows_at_once(window):
    """One source of truth: the spin box and slider write through to the document and show what
    it says, with no timer or event-loop turn keeping two copies in step."""
    panel, doc = window.params, window.doc
    doc.set_threshold(0.3)  # as a P2P blend level, "Use its mask" or a restore would
    assert panel.threshold_spin.value() == pytest.approx(0.3) and panel.threshold_slider.value() == 30
    panel.threshold_slider.setValue(70)
    assert doc.threshold == pytest.approx(0.7) and panel.params().mask_threshold == pytest.approx(0.7)
    seen = []
    doc.threshold_changed.connect(seen.append)
    panel.threshold_spin.setValue(0.45)
    panel.threshold_spin.setValue(0.45)  # no change, no signal
    assert seen == [pytest.approx(0.45)]


def test_mask_operations_through_actions_are_undoable(qtbot, window):
    window.canvas.set_brush_size(10)
    drag(qtbot, window.canvas, [(64, 48)])
    area = window.doc.composed.sum()
    window.actions["grow"].trigger()
    assert window.doc.composed.sum() > area
    window.actions["invert"].trigger()
    assert window.doc.composed[0, 0] == 1.0
    window.actions["undo"].trigger()
    window.actions["undo"].trigger()
    assert window.doc.composed.sum() == pytest.approx(area)


def test_edit_adds_history_and_apply_undo(qtbot, window):
    run_and_wait(qtbot, window)
    doc = window.doc
    assert len(doc.history) == 1 and doc.heatmap is not None, "Edit found a mask first"
    entry = doc.history[0]
    assert doc.preview_id == entry.id
    from engine import masks

    outside = masks.paste_alpha(entry.mask, entry.params.feather) == 0  # beyond the feathered edge
    assert outside.any() and not outside.all()
    np.testing.assert_array_equal(entry.image[outside], doc.base[outside])
    assert window.history.tree.topLevelItemCount() == 1
    original = doc.base.copy()
    window.history.apply_button.click()
    np.testing.assert_array_equal(doc.base, entry.image)
    window.actions["undo"].trigger()
    np.testing.assert_array_equal(doc.base, original)


def test_variations_are_grouped_and_settings_restore(qtbot, window):
    window.params.variations.setValue(3)
    window.params.lock_seed.setChecked(True)
    window.params.seed.setValue(41)
    run_and_wait(qtbot, window)
    doc = window.doc
    assert [e.params.seed for e in doc.history] == [41, 42, 43]
    assert len({e.group for e in doc.history}) == 1
    assert all(e.params.eta > 0 for e in doc.history), "variations need some variety"
    tree = window.history.tree
    assert tree.topLevelItemCount() == 1 and tree.topLevelItem(0).childCount() == 3
    tree.setCurrentItem(tree.topLevelItem(0).child(2))
    assert doc.preview_id == doc.history[2].id
    window.params.set_params(EditParams(steps=7), "x", "y")
    window.params.lock_seed.setChecked(False)
    window.history.settings_button.click()
    assert window.params.seed.value() == 43 and window.params.lock_seed.isChecked()
    assert window.params.steps.value() == 10 and window.params.target.text() == "a dog"
    window.history.delete_button.click()
    assert len(doc.history) == 2 and doc.preview_id is None


def test_a_result_cannot_be_applied_under_a_running_edit(qtbot, window, fake_engine, dialogs):
    run_and_wait(qtbot, window)
    doc = window.doc
    first, original = doc.history[0], doc.base.copy()
    fake_engine.pause_at = ("decode", 1)
    window.actions["edit"].trigger()
    assert fake_engine.paused.wait(5)
    window.apply_entry(first.id)  # refused while the run works on the current pixels
    np.testing.assert_array_equal(doc.base, original)
    assert "Wait for the run" in window.statusBar().currentMessage()
    doc.apply_entry(first.id)  # even if the pixels change under it (e.g. undo of an older apply)
    with qtbot.waitSignal(window.engine.job_finished, timeout=5000):
        fake_engine.resume.set()
    assert len(doc.history) == 1, "a result computed on replaced pixels is not kept"
    assert "photo changed during the run" in dialogs.texts()
    np.testing.assert_array_equal(doc.base, first.image)


def test_cancel_stops_and_leaves_the_document_as_it_was(qtbot, window, fake_engine):
    window.canvas.set_brush_size(10)
    drag(qtbot, window.canvas, [(30, 30), (50, 30)])
    doc = window.doc
    mask_before, undo_before = doc.composed.copy(), doc.undo_stack.count()
    fake_engine.pause_at = ("decode", 1)
    window.actions["edit"].trigger()
    assert fake_engine.paused.wait(5)
    qtbot.waitUntil(lambda: "Editing" in window.stage_label.text() or
                    "Encoding" in window.stage_label.text(), timeout=5000)
    assert window.cancel_button.isVisible() and window.actions["cancel"].isEnabled()
    with qtbot.waitSignal(window.engine.job_finished, timeout=5000):
        window.actions["cancel"].trigger()  # what Esc and the Cancel button do
        fake_engine.resume.set()
    assert doc.history == [] and doc.preview_id is None
    np.testing.assert_array_equal(doc.composed, mask_before)
    assert doc.undo_stack.count() == undo_before
    assert not window.progress.isVisible() and window.actions["edit"].isEnabled()
    assert "Cancelled" in window.statusBar().currentMessage()
    fake_engine.pause_at = None
    run_and_wait(qtbot, window)  # and the next run works
    assert len(doc.history) == 1


def test_escape_key_cancels(qtbot, window, fake_engine):
    fake_engine.pause_at = ("mask", 1)
    window.actions["find_mask"].trigger()
    assert fake_engine.paused.wait(5)
    window.activateWindow()
    with qtbot.waitSignal(window.engine.job_cancelled, timeout=5000):
        qtbot.keyClick(window.canvas, Qt.Key.Key_Escape)
        fake_engine.resume.set()
    assert window.doc.heatmap is None


@pytest.mark.slow
@pytest.mark.parametrize("where", ["mask", "edit"])
def test_engine_failure_shows_a_dialog_and_the_app_keeps_running(qtbot, window, fake_engine,
                                                                 dialogs, where):
    fake_engine.fail_on = where
    fake_engine.error = RuntimeError("CUDA driver fell over")
    run_and_wait(qtbot, window, "find_mask" if where == "mask" else "edit")
    assert dialogs.kinds() == ["box"]
    assert "CUDA driver fell over" in dialogs.texts()
    assert window.doc.history == []
    fake_engine.fail_on = None
    run_and_wait(qtbot, window)
    assert len(window.doc.history) == 1


def test_user_mistakes_get_messages_not_runs(qtbot, window, submitted, dialogs):
    window.params.target.setText("")
    window.actions["edit"].trigger()
    assert "Should become" in dialogs.texts() and window.runs.job is None
    window.params.target.setText("a dog")
    run_and_wait(qtbot, window, "find_mask")
    window.params.threshold_spin.setValue(1.0)  # a mask exists but covers nothing
    qtbot.waitUntil(lambda: window.doc.threshold == 1.0, timeout=2000)
    window.actions["edit"].trigger()
    assert "mask is empty" in dialogs.texts() and [type(r).__name__ for r in submitted] == ["MaskRequest"]


def test_the_window_never_blocks_during_a_run(qtbot, window, fake_engine):
    fake_engine.step_delay = 0.02  # 3 + 5 + 5 steps: about 0.26 s of "work" on the engine thread
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    with qtbot.waitSignal(window.engine.job_finished, timeout=10000):
        window.actions["edit"].trigger()
    timer.stop()
    gaps = np.diff(ticks)
    assert len(ticks) >= 10, "the GUI event loop kept running"
    assert gaps.max() < 0.15, f"the GUI stalled for {gaps.max():.2f} s"


@pytest.mark.slow
def test_second_edit_reuses_the_cached_encoding(qtbot, window):
    stages = []
    window.engine.progress.connect(lambda p: stages[-1].add(p.stage))
    stages.append(set())
    run_and_wait(qtbot, window)
    window.canvas.set_brush_size(6)
    drag(qtbot, window.canvas, [(10, 10)])  # refine, then edit again
    stages.append(set())
    run_and_wait(qtbot, window)
    assert stages == [{"mask", "encode", "decode"}, {"decode"}]  # same session, cached encoding


@pytest.mark.slow
def test_export_writes_metadata_and_protects_the_original(qtbot, window, dialogs, tmp_path):
    original = tmp_path / "coffee.png"
    shutil.copy(ROOT / "resources" / "samples" / "coffee.png", original)
    before = original.read_bytes()
    assert window.open_path(original)
    run_and_wait(qtbot, window)
    assert window.doc.has_unexported_work() and "*" in window.windowTitle()
    dialogs.save_path = str(original)
    dialogs.answer = QMessageBox.StandardButton.No
    assert window.export_dialog() is False
    assert original.read_bytes() == before and "Overwrite the original?" in dialogs.texts()
    out = tmp_path / "edited"
    dialogs.save_path = str(out)  # no suffix: PNG is added
    assert window.export_dialog() is True
    from engine.imaging import read_metadata

    meta = read_metadata(out.with_suffix(".png"))
    assert meta == window.doc.history[-1].metadata()  # the result's own record, as the CLI writes
    assert meta["parameters"].startswith("a dog\n") and "Source prompt: a cat" in meta["parameters"]
    assert not window.doc.has_unexported_work()


def test_close_asks_about_unexported_work(qtbot, window, dialogs):
    run_and_wait(qtbot, window)
    dialogs.answer = QMessageBox.StandardButton.Cancel
    assert window.close() is False and window.isVisible()
    dialogs.answer = QMessageBox.StandardButton.Discard
    assert window.close() is True


def test_open_errors_are_messages(qtbot, window, dialogs, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    window.doc.mark_exported()
    assert window.open_path(bad) is False
    assert dialogs.kinds() == ["box"] and "notes.jpg" in dialogs.texts()
    assert window.doc.display_name == "test.png"


def test_open_sample_and_recent(qtbot, window, settings):
    samples = photo_io.sample_photos()
    names = {p.name for p, _ in samples}
    assert {"coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg"} <= names
    coffee = next((p, d) for p, d in samples if p.name == "coffee.png")
    assert "CC0" in coffee[1] and "Rachel Michetti" in coffee[1]
    assert window.open_sample(*coffee)
    assert window.doc.size == (600, 400)
    assert "Rachel Michetti" in window.statusBar().currentMessage()
    assert settings.recent_files()[0].endswith("coffee.png")


def test_mask_save_and_load_round_trip(qtbot, window, tmp_path, dialogs):
    window.canvas.set_brush_size(10)
    drag(qtbot, window.canvas, [(30, 30), (60, 60)])
    saved = window.doc.composed.copy()
    assert window.save_mask(tmp_path / "m.png")
    window.actions["clear_mask"].trigger()
    assert window.load_mask(tmp_path / "m.png")
    np.testing.assert_allclose(window.doc.composed, saved, atol=1 / 255)
    from PIL import Image

    Image.new("L", (10, 10)).save(tmp_path / "small.png")
    assert not window.load_mask(tmp_path / "small.png")
    assert "10x10" in dialogs.texts()


@pytest.mark.slow
@pytest.mark.parametrize("name,fragment", [("bomb.png", "100000x100000"),
                                           ("text.png", "not a picture"),
                                           ("absent.png", "does not exist")])
def test_a_bad_mask_file_gives_a_dialog(qtbot, window, tmp_path, dialogs, name, fragment):
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    if name == "bomb.png":  # a header claiming 10 gigapixels: refused before decoding
        ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
        (tmp_path / name).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    elif name == "text.png":
        (tmp_path / name).write_text("not pixels")
    before = window.doc.composed.copy()
    assert not window.load_mask(tmp_path / name)
    assert fragment in dialogs.texts() and "Cannot load the mask" in str(dialogs.shown)
    assert np.array_equal(window.doc.composed, before)


def test_no_model_state_offers_the_tiny_model(qtbot, settings, fake_engine):
    engine = EngineController(fake_engine)
    win = MainWindow(settings, engine)
    qtbot.addWidget(win)
    win.show()
    win.start_engine()  # nothing configured
    assert win.banner_wrap.isVisible()
    assert "random weights: produces noise" in win.banner_text.text()
    with qtbot.waitSignal(engine.model_state, timeout=5000,
                          check_params_cb=lambda state, _m: state == "ready"):
        win.banner_tiny.click()
    assert not win.banner_wrap.isVisible()
    assert fake_engine.loaded_sources == ["/fake/tiny-model"]
    assert "random weights" in win.model_label.text()
    engine.shutdown()


def test_settings_dialog_saves_shared_settings(qtbot, settings, dialogs, tmp_path):
    from desktop_app.dialogs import SettingsDialog

    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    dialog.model.setText(str(tmp_path / "missing-model"))
    dialog.accept()
    assert "does not exist" in dialogs.texts() and settings.engine().default_model == ""
    dialog.model.setText(str(tmp_path))
    dialog.device.setCurrentIndex(dialog.device.findData("cpu"))
    dialog.steps.setValue(25)
    dialog.accept()
    from engine.config import Settings

    saved = Settings.load()  # what the CLI will read
    assert saved.default_model == str(tmp_path) and saved.device == "cpu"
    assert settings.default_params().steps == 25


@pytest.mark.slow
def test_gpu_memory_setting_reaches_the_model_load(qtbot, window, settings, fake_engine, tmp_path):
    from desktop_app.dialogs import SettingsDialog

    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    dialog.model.setText(str(tmp_path))
    dialog.memory.setCurrentIndex(dialog.memory.findData("offload"))
    assert dialog.memory.toolTip()
    dialog.accept()
    assert settings.engine().memory == "offload"
    window.start_engine()
    qtbot.waitUntil(lambda: fake_engine.memory_tiers[-1:] == ["offload"], timeout=5000)


@pytest.mark.slow
def test_shortcuts_dialog_lists_the_actions(qtbot, window):
    from desktop_app.dialogs import ShortcutsDialog

    dialog = ShortcutsDialog(window.actions.values(), window)
    qtbot.addWidget(dialog)
    rows = {dialog.table.item(r, 1).text(): dialog.table.item(r, 0).text()
            for r in range(dialog.table.rowCount())}
    assert rows["Brush"] == "B" and rows["Eraser"] == "E" and "Ctrl+Shift+Z" in rows["Redo"]
    assert "Esc" in rows["Cancel Run"]


@pytest.mark.slow
def test_the_window_paints_before_torch_is_imported(tmp_path):
    script = (
        "import sys\n"
        "from desktop_app.app import create_application, build_window\n"
        "app = create_application()\n"
        "window, engine = build_window()\n"
        "window.show(); app.processEvents()\n"
        "painted = not window.grab().isNull()\n"
        "print('torch' in sys.modules, painted)\n"
        "engine.shutdown()\n"
    )
    env = {"QT_QPA_PLATFORM": "offscreen", "DIFFEDIT_CONFIG_DIR": str(tmp_path),
           "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["False", "True"]


@pytest.mark.slow
def test_paste_and_drop_open_photos(qtbot, window, tmp_path):
    from PySide6.QtCore import QMimeData, QPoint, QUrl
    from PySide6.QtGui import QDropEvent, QGuiApplication, QImage

    image = QImage(40, 30, QImage.Format.Format_RGB32)
    image.fill(0x336699)
    QGuiApplication.clipboard().setImage(image)
    window.actions["paste"].trigger()
    assert window.doc.size == (40, 30) and window.doc.display_name == "Pasted photo"
    assert tuple(window.doc.base[0, 0]) == (0x33, 0x66, 0x99)

    path = tmp_path / "dropped.png"
    image.save(str(path))
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(QPoint(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    qtbot.waitUntil(lambda: window.doc.display_name == "dropped.png", timeout=2000)


def test_command_line_arguments(capsys):
    from desktop_app.app import main

    assert main(["a.jpg", "b.jpg"]) == 2
    assert "usage" in capsys.readouterr().err
    assert main(["--help"]) == 0


@pytest.mark.slow
def test_the_app_and_the_cli_refuse_missing_texts_with_the_engines_sentence(qtbot, window, dialogs):
    from engine import methods
    from engine.errors import InputError

    def engine_sentence(method, source, target):
        with pytest.raises(InputError) as caught:
            methods.check_inputs(method, source, target, None, EditParams(), {})
        return str(caught.value)

    window.params.target.setText("")
    window.actions["find_mask"].trigger()
    sentence = engine_sentence("diffedit", "a cat", "")
    assert dialogs.shown[-1][2] == (sentence[:1].upper() + sentence[1:]
                                    + " (the \u201cShould become\u201d field).")
    assert window.params.target.hasFocus() and window.runs.job is None
    window.params.target.setText("a dog")
    window.params.source.setText("")
    window.params.set_method("p2p")
    window.actions["edit"].trigger()
    assert engine_sentence("p2p", "", "a dog")[1:] in dialogs.shown[-1][2]
    assert "\u201cIn the photo\u201d" in dialogs.shown[-1][2] and window.runs.job is None
    # DiffEdit contrasts the target with the empty text when no source is given: the engine
    # allows it, so the app runs it as the CLI does.
    window.params.set_method("diffedit")
    shown = len(dialogs.shown)
    with qtbot.waitSignal(window.engine.job_finished, timeout=10_000):
        window.actions["find_mask"].trigger()
    assert len(dialogs.shown) == shown and window.doc.heatmap is not None
