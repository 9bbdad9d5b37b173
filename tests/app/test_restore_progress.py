"""A crash restore reads the session off the GUI thread: the window keeps handling events and a
progress dialog says what is being restored."""

from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QProgressDialog

from desktop_app import autosave
from desktop_app.autosave import storage
from doc_fingerprint import fingerprint
from test_autosave import add_result, crash, make_photo, make_window, stroke  # noqa: F401


def _crashed_session(make_window):
    first = make_window()
    first.open_photo(make_photo(480, 640), "big.png")
    stroke(first.doc, "add", [(30, 30), (60, 40)])
    add_result(first.doc, first.doc.new_group(), 0, 5)
    first.autosaver.flush()
    expected = fingerprint(first.doc)
    crash(first.autosaver)
    first.autosaver._closed = True  # the "crashed" window must not save again at teardown
    first.autosaver.folder = None
    return expected


@pytest.mark.slow
def test_restore_keeps_the_window_responsive_and_shows_progress(qtbot, make_window, monkeypatch):
    expected = _crashed_session(make_window)
    second = make_window()
    # Every array read waits until the GUI thread has handled a timer event: a load on the GUI
    # thread would sit out the whole wait with no event handled.
    handled, seen = threading.Event(), []
    real_read = storage.read_array

    def read_after_an_event(*args, **kwargs):
        handled.wait(10)
        return real_read(*args, **kwargs)

    def tick():
        dialog = next((w for w in QApplication.topLevelWidgets()
                       if isinstance(w, QProgressDialog) and w.isVisible()), None)
        seen.append(dialog.labelText() if dialog is not None else None)
        handled.set()

    monkeypatch.setattr(storage, "read_array", read_after_an_event)
    QTimer.singleShot(20, tick)
    assert autosave.offer_restore(second) is True
    assert seen == ["Restoring big.png\u2026"], "no event was handled while the session loaded"
    assert fingerprint(second.doc) == expected
    assert not any(isinstance(w, QProgressDialog) and w.isVisible()
                   for w in QApplication.topLevelWidgets())
