"""Autosave: the session survives a crash (round trip, debounce, damaged files, kill -9 of the app)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from desktop_app import autosave
from desktop_app.autosave import Autosaver, AutosaveError, find_orphans, install, restore_panel
from desktop_app.autosave import restore_dialog, saver as saver_module, storage
from desktop_app.document import Document
from desktop_app.panels.params import ParamsPanel
from doc_fingerprint import fingerprint
from engine.imaging import Photo
from engine.params import EditParams
from engine.results import EditResult

ROOT = Path(__file__).resolve().parents[2]


def make_photo(h=96, w=128):
    ys, xs = np.mgrid[0:h, 0:w]
    rgb = np.stack([xs * 2 % 256, ys * 2 % 256, (xs + ys) % 256], axis=2).astype(np.uint8)
    alpha = np.full((h, w), 200, np.uint8)
    alpha[:10] = 0
    return Photo(rgb=rgb, alpha=alpha, path=Path("/photos/holiday shot.png"), exif=b"Exif\0\0MM\0*fake",
                 icc_profile=b"fake icc profile bytes", format="PNG", warnings=["a note"])


def stroke(doc, mode, points, radius=6.0, hardness=0.7):
    doc.begin_stroke(mode, radius, hardness)
    for x, y in points:
        doc.stroke_to(x, y)
    doc.end_stroke()


def add_result(doc, group, variation, seed, target="a dog"):
    rng = np.random.default_rng(seed)
    image = doc.base.copy()
    image[20:60, 30:90] = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    mask = np.zeros(doc.shape, np.float32)
    mask[20:60, 30:90] = rng.random((40, 60), dtype=np.float32)
    return doc.add_result(group, EditResult(
        image=image, mask=mask, heatmap=None, source="a cat", target=target,
        params=EditParams(steps=12, seed=seed, eta=0.25), model_name="tiny", method="diffedit",
        loras=["style:0.8"], stats={"seconds": {"decode": 0.5}, "device": "cpu"}, warnings=["w"],
        variation=variation, seconds=1.25 + seed))


def busy_document(qtbot):
    """A document with every kind of state: heatmap, threshold, strokes, operations, results."""
    doc = Document()
    doc.set_photo(make_photo(), "holiday shot.png")
    ys, xs = np.mgrid[0:96, 0:128]
    doc.set_heatmap((np.sin(xs / 9.0) * np.cos(ys / 7.0) * 0.5 + 0.5).astype(np.float32))
    doc.set_threshold(0.62)
    stroke(doc, "add", [(10, 10), (40, 20), (70, 15)])
    stroke(doc, "erase", [(50, 50), (52, 60)], radius=4.5, hardness=0.3)
    doc.grow_mask(3)
    stroke(doc, "add", [(100, 80)], radius=8.0)
    doc.invert_mask()
    group = doc.new_group()
    first = add_result(doc, group, 0, 1)
    add_result(doc, group, 1, 2)
    doc.apply_entry(first.id)
    add_result(doc, doc.new_group(), 0, 3, target="a fox")
    doc.set_preview(doc.history[-1].id)
    return doc


def panel_with_values(qtbot):
    panel = ParamsPanel()
    qtbot.addWidget(panel)
    panel.set_params(EditParams(steps=33, strength=0.55, guidance=9.5, mask_threshold=0.62,
                                mask_samples=4, feather=7, seed=1234, eta=0.3,
                                negative_prompt="blurry"), "a cat on a sofa", "a dog on a sofa")
    panel.variations.setValue(3)
    panel.lock_seed.setChecked(True)
    return panel


def crash(saver: Autosaver) -> None:
    """What a crash leaves: the files, and a lock no live process holds."""
    saver._timer.stop()
    saver.wait()
    saver._lock.unlock()  # QLockFile removes the file; a killed process leaves it (tested below)


def test_round_trip_restores_everything_exactly(qtbot, tmp_path):
    doc = busy_document(qtbot)
    panel = panel_with_values(qtbot)
    saver = Autosaver(doc, panel, root=tmp_path)
    saver.flush()
    before = fingerprint(doc)
    panel_before = autosave.panel_state(panel)
    assert doc.has_unexported_work()  # an applied result
    crash(saver)

    sessions, problems = find_orphans(tmp_path)
    assert problems == [] and len(sessions) == 1
    session = sessions[0]
    assert session.photo_name == "holiday shot.png" and session.entries == 3
    assert "holiday shot.png, 3 history entries" in restore_dialog.restore_text(session)
    state = session.load()
    restored, panel2 = Document(), ParamsPanel()
    qtbot.addWidget(panel2)
    install(restored, state)
    restore_panel(panel2, state["panel"])
    assert fingerprint(restored) == before
    assert autosave.panel_state(panel2) == panel_before
    assert panel2.params() == panel.params() and panel2.prompts() == panel.prompts()
    # The restored document keeps working: painting, undo, new results with fresh ids.
    composed = restored.composed.copy()
    stroke(restored, "add", [(5, 90)])
    assert not np.array_equal(restored.composed, composed)
    restored.undo_stack.undo()
    np.testing.assert_array_equal(restored.composed, composed)
    entry = add_result(restored, restored.new_group(), 0, 9)
    assert entry.id not in [e.id for e in restored.history[:-1]]
    assert entry.group > max(e.group for e in restored.history[:-1])
    assert restored.photo.rgb is not restored.base, "painting the base must not touch the photo"
    session.discard()


def test_unchanged_arrays_are_written_once(qtbot, tmp_path):
    doc = busy_document(qtbot)
    saver = Autosaver(doc, root=tmp_path)
    saver.flush()
    files = {p.name: p.stat().st_mtime_ns for p in saver.folder.glob("*.arr")}
    add_result(doc, doc.new_group(), 0, 7)
    saver.flush()
    after = {p.name: p.stat().st_mtime_ns for p in saver.folder.glob("*.arr")}
    assert {k: after[k] for k in files} == files, "earlier arrays were rewritten"
    assert len(set(after) - set(files)) == 3, "only the new result's image, mask, thumbnail"
    saver.flush()  # nothing changed: nothing written, manifest only
    assert {p.name: p.stat().st_mtime_ns for p in saver.folder.glob("*.arr")} == after
    # A stroke rewrites its own layers at most, and the files they replace are deleted.
    stroke(doc, "add", [(60, 60)])
    stroke(doc, "add", [(20, 60)])
    saver.flush()
    final = {p.name for p in saver.folder.glob("*.arr")}
    assert 1 <= len(final - set(after)) <= 2 and len(set(after) - final) <= 2
    saver.remove()
    assert not any(tmp_path.iterdir()), "a clean close leaves nothing behind"


def test_changes_made_in_place_after_a_save_are_saved(qtbot, tmp_path):
    """Strokes, undo and Apply write into existing arrays; the next save must see that."""
    doc = busy_document(qtbot)
    saver = Autosaver(doc, root=tmp_path)
    saver.flush()
    stroke(doc, "add", [(90, 20), (110, 30)])
    saver.flush()
    stroke(doc, "erase", [(95, 25)])
    doc.undo_stack.undo()  # back to the state just saved, through the undo patches
    doc.undo_stack.undo()  # and one further, into the previous save's pixels
    doc.apply_entry(doc.history[-1].id)  # the base changes in place
    doc.set_threshold(0.4)
    saver.flush()
    expected = fingerprint(doc)
    crash(saver)
    restored = Document()
    sessions, _ = find_orphans(tmp_path)
    install(restored, sessions[0].load())
    assert fingerprint(restored) == expected
    sessions[0].discard()


@pytest.mark.slow
def test_debounce_saves_once_after_the_last_change(qtbot, tmp_path, monkeypatch):
    monkeypatch.setattr(saver_module, "DEBOUNCE_MS", 800)  # long against a busy machine's waits
    doc = Document()
    doc.set_photo(make_photo(), "p.png")
    saver = Autosaver(doc, root=tmp_path)
    saves = []
    saver.saved.connect(lambda path: saves.append((path, time.perf_counter())))
    for i in range(20):  # a stroke's worth of mouse moves, 20 ms apart
        stroke(doc, "add", [(5 + i * 5, 40)])
        last_change = time.perf_counter()
        qtbot.wait(20)
    assert saves == [], "no save while the user is still painting"
    qtbot.waitUntil(lambda: len(saves) == 1, timeout=5000)
    assert saves[0][1] - last_change >= 0.8 * 0.95
    qtbot.wait(1000)
    assert len(saves) == 1, "one save per burst of changes"
    manifest = json.loads(Path(saves[0][0]).read_text())
    assert manifest["summary"] == {"photo": "p.png", "entries": 0}
    saver.remove()


@pytest.mark.slow
def test_a_changed_prompt_or_parameter_is_saved_at_once_without_polling(qtbot, tmp_path, monkeypatch):
    """The panel's editors tell the autosaver when they change (it used to compare the panel
    every 2 s, so a prompt typed just before a crash could be lost)."""
    monkeypatch.setattr(saver_module, "DEBOUNCE_MS", 200)
    doc = busy_document(qtbot)
    panel = panel_with_values(qtbot)
    saver = Autosaver(doc, panel, root=tmp_path)
    saver.flush()
    saves = []
    saver.saved.connect(saves.append)
    changes = (lambda: panel.target.setText("a wolf on a sofa"), lambda: panel.steps.setValue(20),
               lambda: panel.lock_seed.setChecked(False), lambda: panel.negative.setPlainText("dark"))
    for count, change in enumerate(changes, 1):
        change()
        qtbot.waitUntil(lambda: len(saves) == count, timeout=1500)
    saved = json.loads(Path(saves[-1]).read_text())["panel"]
    assert (saved["target"], saved["params"]["steps"], saved["lock_seed"],
            saved["params"]["negative_prompt"]) == ("a wolf on a sofa", 20, False, "dark")
    qtbot.wait(500)
    assert len(saves) == len(changes), "nothing changed, nothing saved"
    saver.remove()


def test_nothing_is_saved_for_an_untouched_photo_and_a_new_photo_replaces_it(qtbot, tmp_path):
    doc = Document()
    doc.set_photo(make_photo(), "p.png")
    saver = Autosaver(doc, root=tmp_path)
    saver.flush()
    assert saver.folder is None, "opening a photo alone is not work to protect"
    stroke(doc, "add", [(20, 20)])
    saver.flush()
    assert (saver.folder / storage.MANIFEST).exists()
    doc.set_photo(make_photo(40, 50), "other.png")  # the user chose to discard
    saver.flush()
    assert not (saver.folder / storage.MANIFEST).exists() and not list(saver.folder.glob("*.arr"))
    saver.remove()


def test_a_running_app_keeps_its_autosave(qtbot, tmp_path):
    doc = busy_document(qtbot)
    saver = Autosaver(doc, root=tmp_path)
    saver.flush()
    assert find_orphans(tmp_path) == ([], []), "the lock of a live session is respected"
    saver.remove()


def test_a_crash_mid_save_leaves_the_previous_autosave_loadable(qtbot, tmp_path, monkeypatch):
    doc = busy_document(qtbot)
    saver = Autosaver(doc, root=tmp_path)
    saver.flush()
    before = fingerprint(doc)
    real_write = storage.write_array
    calls = []

    def dies_half_way(folder, name, array, reference=None):
        calls.append(name)
        (folder / f".{name}.part").write_bytes(b"DEA1 half written")  # what a kill leaves
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage, "write_array", dies_half_way)
    problems = []
    saver.problem.connect(problems.append)
    add_result(doc, doc.new_group(), 0, 11)
    stroke(doc, "erase", [(64, 48)])
    saver.flush()
    assert calls and problems and "Autosave failed" in problems[0]
    monkeypatch.setattr(storage, "write_array", real_write)
    crash(saver)
    sessions, problems = find_orphans(tmp_path)
    restored = Document()
    install(restored, sessions[0].load())
    assert fingerprint(restored) == before
    # The restored session saves again, and the half-written files go.
    assert list(sessions[0].folder.glob(".*.part"))
    saver2 = Autosaver(restored, root=tmp_path)
    saver2.adopt(sessions[0], {})
    saver2.flush()
    assert not list(saver2.folder.glob(".*.part"))
    saver2.remove()


def _saved_session(qtbot, tmp_path):
    doc = busy_document(qtbot)
    saver = Autosaver(doc, root=tmp_path)
    saver.flush()
    folder = saver.folder
    crash(saver)
    return folder


def test_damaged_manifest_is_reported_and_set_aside(qtbot, tmp_path):
    folder = _saved_session(qtbot, tmp_path)
    text = (folder / storage.MANIFEST).read_text()
    (folder / storage.MANIFEST).write_text(text[: len(text) // 2])  # cut short
    sessions, problems = find_orphans(tmp_path)
    assert sessions == [] and len(problems) == 1
    assert "cannot be restored" in problems[0] and "damaged" in problems[0]
    assert folder.with_name(folder.name + ".damaged").is_dir(), "the files are kept"
    assert find_orphans(tmp_path) == ([], []), "and not offered again"


@pytest.mark.parametrize("damage", ["missing", "truncated", "flipped"])
def test_damaged_array_file_gives_a_clear_error(qtbot, tmp_path, damage):
    folder = _saved_session(qtbot, tmp_path)
    victim = max(folder.glob("*.arr"), key=lambda p: p.stat().st_size)
    if damage == "missing":
        victim.unlink()
    elif damage == "truncated":
        victim.write_bytes(victim.read_bytes()[:-100])
    else:
        data = bytearray(victim.read_bytes())
        data[-50] ^= 0xFF
        victim.write_bytes(bytes(data))
    sessions, _ = find_orphans(tmp_path)
    with pytest.raises(AutosaveError, match=victim.name):
        sessions[0].load()
    sessions[0].release()


# ----------------------------------------------------------------------------- in the window


@pytest.fixture
def make_window(qtbot, settings, fake_engine):
    from desktop_app.main_window import MainWindow
    from desktop_app.worker import EngineController

    made = []

    def make():
        engine = EngineController(fake_engine)
        win = MainWindow(settings, engine)
        qtbot.addWidget(win)
        win.show()
        made.append((win, engine))
        return win

    yield make
    for win, engine in made:
        win.doc.mark_exported()
        win.close()
        engine.shutdown()


@pytest.mark.slow
def test_window_offers_restore_and_restores(qtbot, make_window, photo, dialogs):
    first = make_window()
    first.open_photo(photo, "cat.png")
    stroke(first.doc, "add", [(30, 30), (60, 40)])
    add_result(first.doc, first.doc.new_group(), 0, 5)
    first.params.source.setText("a cat")
    first.params.target.setText("a tiger")
    first.autosaver.flush()
    expected = fingerprint(first.doc)
    crash(first.autosaver)
    first.autosaver._closed = True  # the "crashed" window must not save again at teardown
    first.autosaver.folder = None

    second = make_window()
    assert autosave.offer_restore(second) is True
    assert dialogs.shown[0][1] == "Restore unsaved session"
    assert "cat.png, 1 history entry)?" in dialogs.shown[0][2]
    assert fingerprint(second.doc) == expected
    assert second.params.prompts() == ("a cat", "a tiger")
    assert second.history.tree.topLevelItemCount() == 1
    assert "cat.png*" in second.windowTitle()
    # It keeps autosaving into the restored folder; a clean close removes it.
    folder = second.autosaver.folder
    assert folder is not None and (folder / storage.MANIFEST).exists()
    dialogs.answer = dialogs.answer.Discard
    assert second.close()
    assert not folder.exists()


@pytest.mark.slow
def test_window_discard_deletes_and_damage_gives_a_message(qtbot, make_window, photo, dialogs):
    from PySide6.QtWidgets import QMessageBox

    first = make_window()
    first.open_photo(photo, "cat.png")
    stroke(first.doc, "add", [(30, 30)])
    first.autosaver.flush()
    folder = first.autosaver.folder
    crash(first.autosaver)
    first.autosaver._closed = True
    first.autosaver.folder = None
    victim = next(folder.glob("*.arr"))
    victim.write_bytes(b"garbage")
    second = make_window()
    assert autosave.offer_restore(second) is False
    assert dialogs.shown[-1][1] == "Cannot restore the session"
    assert "damaged" in dialogs.shown[-1][2] and "starts without it" in dialogs.shown[-1][2]
    assert not second.doc.has_photo and second.isVisible()
    dialogs.shown.clear()
    assert autosave.offer_restore(second) is False and dialogs.shown == [], "not offered twice"

    third_folder = _saved_session(qtbot, autosave.autosave_root())
    dialogs.answer = QMessageBox.StandardButton.Discard
    assert autosave.offer_restore(second) is False
    assert not third_folder.exists()


def test_restore_dialog_screenshot(qtbot, tmp_path):
    folder = _saved_session(qtbot, tmp_path)
    sessions, _ = find_orphans(tmp_path)
    box = restore_dialog.restore_box(sessions[0])
    qtbot.addWidget(box)
    box.show()
    qtbot.waitExposed(box)
    shots = Path(os.environ.get("DIFFEDIT_SHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    assert box.grab().save(str(shots / "restore_dialog.png"))
    assert "Restore your unsaved session" in box.text() and "undo" in box.informativeText()
    sessions[0].release()
    assert folder.exists()


# ----------------------------------------------------------------------------- kill -9


DRIVER = r'''
import json, runpy, sys
from PySide6.QtCore import QTimer
import desktop_app.app as app
sys.path.insert(0, {tests!r})
from doc_fingerprint import fingerprint

build = app.build_window

def build_and_drive(*args, **kwargs):
    window, engine = build(*args, **kwargs)
    state = {{"edited": False}}

    def on_model(model_state, message):
        if model_state != "ready" or state["edited"]:
            return
        state["edited"] = True
        doc = window.doc
        doc.begin_stroke("add", 9.0, 0.8)      # a painted mask (no mouse needed)
        for x, y in ((12, 12), (40, 30), (60, 50)):
            doc.stroke_to(x, y)
        doc.end_stroke()
        window.params.source.setText("a cup of coffee")
        window.params.target.setText("a cup of tea")
        window.params.steps.setValue(4)
        window.params.strength.setValue(0.5)
        window.run_edit()

    def on_finished(job_id):
        if window.doc.history:
            with open({out!r}, "w") as f:
                json.dump(fingerprint(window.doc), f)
            print("EDITED", flush=True)

    engine.model_state.connect(on_model)
    engine.job_finished.connect(on_finished)
    QTimer.singleShot(0, window.use_tiny_model)
    return window, engine

app.build_window = build_and_drive
sys.argv = ["desktop_app", {photo!r}]
runpy.run_module("desktop_app", run_name="__main__")
'''


@pytest.mark.slow
def test_kill_9_of_a_real_app_then_restore(qtbot, tmp_path, tiny_model_path, make_window, dialogs,
                                           monkeypatch):
    """The issue's test: a real app process with a mask and a result is killed; all comes back."""
    from PIL import Image

    photo_path = tmp_path / "coffee.png"
    Image.open(ROOT / "resources" / "samples" / "coffee.png").convert("RGB").resize((96, 64)).save(photo_path)
    data = tmp_path / "data"
    expected_file = tmp_path / "expected.json"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", DIFFEDIT_DATA_DIR=str(data),
               DIFFEDIT_CONFIG_DIR=str(tmp_path / "config"), HOME=str(tmp_path),
               XDG_CONFIG_HOME=str(tmp_path / "xdg"), PYTHONPATH=str(ROOT),
               DIFFEDIT_CACHE_DIR=str(Path(tiny_model_path).parent))
    script = DRIVER.format(tests=str(Path(__file__).parent), out=str(expected_file),
                           photo=str(photo_path))
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        manifest = None
        deadline = time.monotonic() + 180  # a cold start of torch on a busy machine takes over 60 s
        while time.monotonic() < deadline and process.poll() is None:
            found = list(data.glob("autosave/*/manifest.json"))
            if found and expected_file.exists():
                manifest = json.loads(found[0].read_text())
                if manifest["summary"]["entries"] == 1:
                    break
            time.sleep(0.1)
        assert manifest is not None and manifest["summary"]["entries"] == 1, (
            "the app did not autosave its edit:\n" + (process.stdout.read() if process.poll() is not None else ""))
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(10) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    killed_after = time.perf_counter() - started
    folder = found[0].parent
    assert (folder / storage.LOCK).exists(), "a killed app leaves its lock behind"

    monkeypatch.setenv("DIFFEDIT_DATA_DIR", str(data))
    window = make_window()
    assert autosave.offer_restore(window) is True
    assert "coffee.png, 1 history entry" in dialogs.texts()
    expected = json.loads(expected_file.read_text())
    restored = json.loads(json.dumps(fingerprint(window.doc)))  # same JSON types as the dump
    assert restored == expected
    assert window.doc.composed.any() and len(window.doc.history) == 1
    assert window.params.prompts() == ("a cup of coffee", "a cup of tea")
    print(f"kill -9 test: edit autosaved and killed after {killed_after:.1f} s")

