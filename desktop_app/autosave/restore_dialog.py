"""At start: offer each crashed session (newest first) and put the one the user picks back."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, wait

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMessageBox, QProgressDialog

from desktop_app.autosave.schema import AutosaveError
from desktop_app.autosave.storage import SavedSession, find_orphans

UNDO_NOTE = ("The undo steps (Ctrl+Z) cannot be brought back; the photo, the mask layers and every "
             "result with its settings are restored as they were.")
RESTORE = QMessageBox.StandardButton.Yes
LATER = QMessageBox.StandardButton.No
DISCARD = QMessageBox.StandardButton.Discard


def install(doc, state: dict) -> None:
    """Put a loaded session into ``doc`` (no undo steps); the Document tells every view."""
    fields = {key: value for key, value in state.items()
              if key not in ("photo", "display_name", "unexported", "panel", "_names")}
    doc.restore_session(state["photo"], state["display_name"], fields, state["unexported"])


def restore_panel(panel, state: dict) -> None:
    if panel is None or not state:
        return
    panel.set_params(state["params"], state["source"], state["target"], state["method"])
    panel.variations.setValue(state["variations"])
    panel.lock_seed.setChecked(state["lock_seed"])
    panel.set_options(state["options"])


def _entries(n: int) -> str:
    return f"{n} history entr{'y' if n == 1 else 'ies'}"


def restore_text(session: SavedSession) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(session.saved))
    return f"Restore your unsaved session from {when} ({session.photo_name}, {_entries(session.entries)})?"


def restore_box(session: SavedSession, parent=None, index: int = 0, count: int = 1) -> QMessageBox:
    title = "Restore unsaved session" + (f" ({index + 1} of {count})" if count > 1 else "")
    box = QMessageBox(QMessageBox.Icon.Question, title, restore_text(session),
                      RESTORE | LATER | DISCARD, parent)
    box.button(RESTORE).setText("Restore")
    later = box.button(LATER)
    later.setText("Later")
    later.setToolTip("Keep it; it is offered again at the next start")
    discard = box.button(DISCARD)
    discard.setText("Discard")
    discard.setToolTip("Delete the autosaved session for good")
    box.setDefaultButton(RESTORE)
    box.setEscapeButton(later)  # closing the question never deletes anything
    more = (f" {count} sessions did not close normally; they are offered newest first."
            if count > 1 else "")
    box.setInformativeText("DiffEdit Studio did not close normally last time." + more + " " + UNDO_NOTE)
    return box


def offer_restore(window, found: tuple[list[SavedSession], list[str]] | None = None) -> bool:
    """Ask about each crashed session, newest first, until one is restored; True when one was.

    Only a session the user discards is deleted; one kept for later is offered at the next start.
    """
    from desktop_app.dialogs import show_error

    sessions, problems = found if found is not None else find_orphans()
    for problem in problems:
        show_error(window, "Autosave", problem)
    kept = 0  # sessions left on disk for the next start
    for index, session in enumerate(sessions):
        answer = restore_box(session, window, index, len(sessions)).exec()
        if answer == DISCARD:
            session.discard()
        elif answer == RESTORE and _restore(window, session):
            for other in sessions[index + 1:]:
                other.release()
            kept += len(sessions) - index - 1
            note = (f" {kept} other unsaved session{'s are' if kept > 1 else ' is'} kept for the "
                    "next start." if kept else "")
            window.statusBar().showMessage(f"Restored {session.photo_name} with "
                                           f"{_entries(session.entries)}.{note}", 10000)
            return True
        elif session.lock is not None:  # Later (a session that failed was set aside)
            session.release()
            kept += 1
    return False


def _load_with_progress(session: SavedSession, progress: QProgressDialog) -> dict:
    """session.load() on a thread of its own (seconds for a big photo) while the GUI thread
    paints the window and moves the bar by the bytes read."""
    total = max(session.stored_bytes(), 1)
    read = [0]  # the loader adds; the GUI thread only reads it

    def on_read(n: int) -> None:
        read[0] += n

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffedit-restore") as pool:
        future = pool.submit(session.load, on_read)
        while not wait([future], timeout=0.03).done:
            progress.setValue(min(99, 100 * read[0] // total))
            QApplication.processEvents()
    return future.result()


def _restore(window, session: SavedSession) -> bool:
    from desktop_app.dialogs import show_error

    progress = QProgressDialog(f"Restoring {session.photo_name}\u2026", "", 0, 100, window)
    progress.setWindowTitle("Restore unsaved session")
    progress.setCancelButton(None)  # a half-read session is of no use; it takes seconds
    progress.setWindowModality(Qt.WindowModality.WindowModal)
    progress.setMinimumDuration(0)
    progress.setAutoClose(False)
    progress.show()
    QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
    try:
        state = _load_with_progress(session, progress)
        progress.setLabelText(f"Showing {session.photo_name}\u2026")
        progress.setValue(100)
        QApplication.processEvents()
        install(window.doc, state)
        restore_panel(getattr(window, "params", None), state["panel"])
        reason = None
    except AutosaveError as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - a session from another version must not stop the app
        reason = f"it does not fit this version of the editor ({type(exc).__name__}: {exc})"
    finally:
        QApplication.restoreOverrideCursor()
        progress.close()
        progress.deleteLater()
    if reason is not None:
        kept = session.set_aside()
        show_error(window, "Cannot restore the session",
                   f"The autosaved session cannot be restored: {reason}. The editor starts without "
                   f"it; its files were kept in {kept}.")
        return False
    autosaver = getattr(window, "autosaver", None)
    if autosaver is not None:
        autosaver.adopt(session, state["_names"])
    else:
        session.release()
    return True
