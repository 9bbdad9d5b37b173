"""Autosave files are data: the released format still restores, hostile or damaged manifests are
set aside with one message, and every crashed session is offered before anything is deleted."""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtWidgets import QMessageBox

from desktop_app import autosave
from desktop_app.autosave import Autosaver, find_orphans, install, restore_panel, storage
from desktop_app.document import Document
from desktop_app.panels.params import ParamsPanel
from doc_fingerprint import fingerprint
from engine.params import EditParams
from engine.results import EditResult
from test_autosave import _saved_session, busy_document, crash, make_window  # noqa: F401 - fixture
from test_autosave import make_photo, panel_with_values, stroke

FIXTURES = Path(__file__).parent / "fixtures"


def copy_fixture(root: Path, name: str = "session-v1") -> Path:
    folder = root / name
    shutil.copytree(FIXTURES / "autosave-v1", folder)
    return folder


def edit_manifest(folder: Path, change) -> None:
    """``change(manifest)`` edits it in place, or returns the text to write instead."""
    path = folder / storage.MANIFEST
    manifest = json.loads(path.read_text())
    text = change(manifest)
    path.write_text(text if isinstance(text, str) else json.dumps(manifest))


def as_json(value):
    return json.loads(json.dumps(value))  # tuples as lists, as in the expected file


# ----------------------------------------------------------------------------- the released format


def test_an_autosave_written_by_the_released_version_restores_exactly(qtbot, tmp_path):
    """tests/app/fixtures/autosave-v1 was written by the format 1 code; nothing is lost."""
    expected = json.loads((FIXTURES / "autosave-v1.expected.json").read_text())
    copy_fixture(tmp_path)
    sessions, problems = find_orphans(tmp_path)
    assert problems == [] and [s.photo_name for s in sessions] == ["fixture cat.png"]
    assert sessions[0].entries == 2
    state = sessions[0].load()
    doc, panel = Document(), ParamsPanel()
    qtbot.addWidget(panel)
    install(doc, state)
    restore_panel(panel, state["panel"])
    assert as_json(fingerprint(doc)) == expected["document"]
    assert as_json(autosave.panel_state(panel)) == expected["panel"]
    assert doc.composed.any() and doc.paint is not None and doc.applied == [1]

    # Saving on into the same folder rewrites it as format 2, which restores the same again.
    saver = Autosaver(doc, panel, root=tmp_path)
    saver.adopt(sessions[0], state["_names"])
    stroke(doc, "add", [(50, 10)])
    saver.flush()
    text = (saver.folder / storage.MANIFEST).read_text()
    assert json.loads(text)["format"] == 2 and "$type" not in text and "desktop_app" not in text
    after = fingerprint(doc)
    crash(saver)
    sessions, _ = find_orphans(tmp_path)
    again = Document()
    install(again, sessions[0].load())
    assert fingerprint(again) == after
    sessions[0].discard()


def test_entries_saved_with_their_metadata_text_get_their_model_and_loras_back(qtbot, tmp_path):
    """Format 2 files written before entries were EditResults hold each entry's metadata text
    instead of its model name and LoRAs; restored, they export the same metadata."""
    folder = _saved_session(qtbot, tmp_path)
    saved_metadata = []

    def to_old_layout(manifest):
        for entry in manifest["document"]["history"]:
            result = EditResult(image=np.zeros((1, 1, 3), np.uint8), mask=np.zeros((1, 1), np.float32),
                                heatmap=None, source=entry["source"], target=entry["target"],
                                params=EditParams(**entry["params"]), model_name=entry.pop("model_name"),
                                method=entry["method"], loras=entry.pop("loras"),
                                options=entry["options"], stats=entry["stats"])
            entry["metadata"] = result.metadata()
            saved_metadata.append(entry["metadata"])

    edit_manifest(folder, to_old_layout)
    [session], problems = find_orphans(tmp_path)
    doc = Document()
    install(doc, session.load())
    assert problems == [] and len(doc.history) == len(saved_metadata) > 0
    assert [(e.model_name, e.loras) for e in doc.history] == [("tiny", ["style:0.8"])] * len(saved_metadata)
    assert [e.metadata() for e in doc.history] == saved_metadata

    # Metadata text nested past the parser's limit leaves the name unknown; the rest restores.
    folder = _saved_session(qtbot, tmp_path / "deep")
    edit_manifest(folder, lambda m: [e.pop("model_name") and e.update(metadata={"diffedit": "[" * 100_000})
                                     for e in m["document"]["history"]])
    [session], _ = find_orphans(tmp_path / "deep")
    doc = Document()
    install(doc, session.load())
    assert doc.history and {e.model_name for e in doc.history} == {""}


def test_the_new_format_holds_plain_values_only_and_round_trips(qtbot, tmp_path):
    doc = busy_document(qtbot)
    panel = panel_with_values(qtbot)
    saver = Autosaver(doc, panel, root=tmp_path)
    saver.flush()
    manifest = json.loads((saver.folder / storage.MANIFEST).read_text())
    before = fingerprint(doc)
    crash(saver)

    def values(node):
        if isinstance(node, dict):
            yield from node.keys()
            for v in node.values():
                yield from values(v)
        elif isinstance(node, list):
            for v in node:
                yield from values(v)
        else:
            yield node

    texts = [v for v in values(manifest) if isinstance(v, str)]
    assert texts and not [t for t in texts if t.startswith("$") or re.fullmatch(r"[\w.]+:\w+", t)], (
        "no tags and no module:Class names")
    assert manifest["format"] == 2 and manifest["document"]["history"][0]["params"]["seed"] == 1
    sessions, _ = find_orphans(tmp_path)
    restored = Document()
    install(restored, sessions[0].load())
    assert fingerprint(restored) == before
    sessions[0].discard()


# ----------------------------------------------------------------------------- hostile and damaged


def _deeply_nested(manifest: dict) -> str:
    """The manifest with a list nested 100,000 deep (more than json can even write)."""
    return json.dumps(manifest)[:-1] + ', "extra": ' + "[" * 100_000 + "]" * 100_000 + "}"


def _nested(depth: int):
    value = "deep"
    for _ in range(depth):
        value = [value]
    return value


def _small_mask(folder: Path) -> str:
    """An array file of the right kind but another size, as a half-updated writer might leave."""
    array = np.zeros((5, 7), np.float32)
    name = storage.array_name(array)
    storage.write_array(folder, name, array)
    return name


# (name, format 1 fixture or a format 2 save, change, words in the message). Faults in the header
# are found when the folder is listed; the rest when the user chooses Restore.
HEADER_FAULTS = [
    ("saved as text", "v2", lambda m, f: m.update(saved="yesterday"), "field saved is text"),
    ("saved 1e308", "v2", lambda m, f: m.update(saved=1e308), "field saved is the number 1e+308"),
    ("saved NaN", "v1", lambda m, f: m.update(saved=float("nan")), "field saved is the number nan"),
    ("summary a list", "v2", lambda m, f: m.update(summary=["x.png", 3]), "field summary is a list"),
    ("entries as text", "v1", lambda m, f: m["summary"].update(entries="many"),
     "field summary.entries is text"),
    ("deep nesting", "v2", lambda m, f: _deeply_nested(m), "nested too deeply"),
    ("format from the future", "v2", lambda m, f: m.update(format=99), "different version (format 99)"),
    ("not an object", "v2", lambda m, f: "[1, 2, 3]", "unexpected structure"),
]
RESTORE_FAULTS = [
    ("engine.__main__:Photo", "v1", lambda m, f: m["state"]["photo"].update({"$type": "engine.__main__:Photo"}),
     "names the type 'engine.__main__:Photo'"),
    ("a standard library type", "v1", lambda m, f: m["state"]["mask"].update({"$type": "os:PathLike"}),
     "names the type 'os:PathLike'"),
    ("entries as text", "v2", lambda m, f: m["document"].update(history="three results"),
     "field history is text where a list belongs"),
    ("seconds as text", "v2", lambda m, f: m["document"]["history"][1].update(seconds="2 s"),
     "field history[1].seconds is text"),
    ("deep stats", "v2", lambda m, f: m["document"]["history"][0].update(stats={"a": _nested(200)}),
     "history[0].stats is nested more than"),
    ("deep v1 values", "v1", lambda m, f: m["state"].update(extra={"$tuple": _nested(200)}),
     "nested more than"),
    ("lacks history", "v2", lambda m, f: m["document"].pop("history"), "it lacks history"),
    ("a path as array name", "v2", lambda m, f: m["document"].update(base="../../../etc/passwd"),
     "is not an autosave array file"),
    ("a mask as photo", "v2", lambda m, f: m["document"]["photo"].update(rgb=m["document"]["mask"]["heatmap"]),
     "field photo.rgb is not an RGB picture"),
    ("layers of another size", "v2", lambda m, f: m["document"]["mask"].update(heatmap=_small_mask(f)),
     "differ in size"),
    ("unknown method", "v2", lambda m, f: m["document"]["history"][0].update(method="rm -rf"),
     "names the method 'rm -rf'"),
    ("unknown mask operation", "v1",
     lambda m, f: m["state"]["mask"]["fields"]["segments"][1]["fields"].update(op={"$tuple": ["explode", 1]}),
     "segments[1].op is not a mask operation"),
]


def _hostile_folder(qtbot, kind: str, change) -> Path:
    root = autosave.autosave_root()
    root.mkdir(parents=True, exist_ok=True)
    folder = copy_fixture(root) if kind == "v1" else _saved_session(qtbot, root)
    edit_manifest(folder, lambda m: change(m, folder))
    return folder


def _assert_set_aside_once(window, folder, dialogs, title, words):
    assert dialogs.shown[-1][1] == title, dialogs.texts()
    assert words in dialogs.shown[-1][2] and "kept in" in dialogs.shown[-1][2], dialogs.shown[-1][2]
    assert not folder.exists() and folder.with_name(folder.name + ".damaged").is_dir(), "kept aside"
    assert not window.doc.has_photo and window.doc.undo_stack.count() == 0
    dialogs.shown.clear()
    assert autosave.offer_restore(window) is False and dialogs.shown == [], "the message comes once"


@pytest.mark.slow
@pytest.mark.parametrize("name,kind,change,words", HEADER_FAULTS, ids=[f[0] for f in HEADER_FAULTS])
def test_a_manifest_with_a_bad_header_is_set_aside_with_one_message(qtbot, make_window, dialogs,
                                                                    name, kind, change, words):
    folder = _hostile_folder(qtbot, kind, change)
    window = make_window()
    assert autosave.offer_restore(window) is False
    assert [title for _, title, _ in dialogs.shown] == ["Autosave"], "no question about it"
    _assert_set_aside_once(window, folder, dialogs, "Autosave", words)


@pytest.mark.slow
@pytest.mark.parametrize("name,kind,change,words", RESTORE_FAULTS, ids=[f[0] for f in RESTORE_FAULTS])
def test_a_hostile_or_damaged_session_is_set_aside_with_one_message(qtbot, make_window, dialogs,
                                                                   monkeypatch, name, kind, change, words):
    # Were engine.__main__ imported, it would run the CLI with these arguments and exit.
    monkeypatch.setattr(sys, "argv", ["diffedit-studio", "--version"])
    folder = _hostile_folder(qtbot, kind, change)
    window = make_window()
    assert autosave.offer_restore(window) is False
    assert dialogs.shown[0][1] == "Restore unsaved session"
    _assert_set_aside_once(window, folder, dialogs, "Cannot restore the session", words)
    assert "engine.__main__" not in sys.modules


# ----------------------------------------------------------------------------- several crashed sessions


def _crashed_sessions(qtbot, count: int) -> list[Path]:
    """``count`` crashed sessions with unexported work, the last one newest."""
    folders = []
    for index in range(count):
        doc = Document()
        doc.set_photo(make_photo(), f"photo-{index}.png")
        stroke(doc, "add", [(10 + index, 10)])
        doc.add_result(doc.new_group(), EditResult(
            image=doc.base.copy(), mask=doc.composed.copy(), heatmap=None, source="a cat",
            target=f"a dog {index}", params=EditParams(seed=index), model_name="tiny",
            seconds=1.0))
        saver = Autosaver(doc, root=autosave.autosave_root())
        saver.flush()
        edit_manifest(saver.folder, lambda m: m.update(saved=time.time() - 3600 * (count - index)))
        folders.append(saver.folder)
        crash(saver)
    return folders


def _answers(monkeypatch, dialogs, answers: list):
    """Answer the restore questions in turn (the dialogs fixture gives one answer to all)."""
    queue = list(answers)

    def exec_box(box):
        dialogs.shown.append(("box", box.windowTitle(), box.text()))
        return queue.pop(0) if queue else QMessageBox.StandardButton.No

    monkeypatch.setattr(QMessageBox, "exec", exec_box)
    return queue


@pytest.mark.slow
def test_several_crashed_sessions_are_offered_newest_first_and_only_declined_ones_go(
        qtbot, make_window, dialogs, monkeypatch):
    folders = _crashed_sessions(qtbot, 5)
    later, discard, restore = (QMessageBox.StandardButton.No, QMessageBox.StandardButton.Discard,
                               QMessageBox.StandardButton.Yes)
    window = make_window()
    _answers(monkeypatch, dialogs, [later, discard, later, later, later])
    assert autosave.offer_restore(window) is False
    asked = [text for _, _, text in dialogs.shown]
    assert [f"photo-{i}.png" in text for i, text in zip((4, 3, 2, 1, 0), asked)] == [True] * 5
    assert dialogs.shown[0][1] == "Restore unsaved session (1 of 5)"
    assert [f.exists() for f in folders] == [True, True, True, False, True], "only the declined one"

    dialogs.shown.clear()
    _answers(monkeypatch, dialogs, [later, restore])
    second = make_window()
    assert autosave.offer_restore(second) is True
    assert len(dialogs.shown) == 2 and "photo-2.png" in dialogs.shown[1][2]
    assert second.doc.display_name == "photo-2.png" and second.autosaver.folder == folders[2]
    assert "3 other unsaved sessions are kept" in second.statusBar().currentMessage()
    assert [f.exists() for f in folders] == [True, True, True, False, True]
    sessions, _ = find_orphans()
    assert [s.photo_name for s in sessions] == ["photo-4.png", "photo-1.png", "photo-0.png"], (
        "the rest are offered at the next start")
    for session in sessions:
        session.release()


@pytest.mark.slow
def test_an_old_crashed_session_is_still_offered(qtbot, make_window, dialogs):
    (folder,) = _crashed_sessions(qtbot, 1)
    edit_manifest(folder, lambda m: m.update(saved=time.time() - 400 * 86400))
    window = make_window()
    dialogs.answer = QMessageBox.StandardButton.No
    assert autosave.offer_restore(window) is False
    assert len(dialogs.shown) == 1 and folder.exists(), "kept: the user said Later"
