"""The history marks the applied result, the working photo is one click away, and the title's *
and the status text follow undo and redo."""

from __future__ import annotations

from test_window import run_and_wait

from desktop_app.panels.history import APPLIED


def _item(window, entry_id):
    return window.history._find(entry_id)


def test_the_working_photo_is_one_click_back_from_a_result(qtbot, window):
    run_and_wait(qtbot, window)
    doc, history = window.doc, window.history
    entry = doc.history[0]
    assert doc.preview_id == entry.id and not history.working_button.isChecked()
    history.working_button.click()
    assert doc.preview_id is None and doc.shown_image() is doc.base
    assert history.working_button.isChecked() and history.selected_id() is None
    assert "as opened" in history.working_button.text()
    history.tree.setCurrentItem(_item(window, entry.id))  # and forth again
    assert doc.preview_id == entry.id and not history.working_button.isChecked()


def test_applied_mark_title_star_and_status_follow_undo_and_redo(qtbot, window):
    run_and_wait(qtbot, window)
    doc, history = window.doc, window.history
    entry = doc.history[0]
    doc.mark_exported()  # as an export does
    assert "*" not in window.windowTitle()
    assert APPLIED not in _item(window, entry.id).text(0)

    history.apply_button.click()
    assert doc.applied == [entry.id] and "*" in window.windowTitle()
    item = _item(window, entry.id)
    assert item.text(0).startswith(APPLIED) and item.font(0).bold()
    assert item.toolTip(0).startswith("Applied")
    assert "1 result applied" in history.working_button.text()

    window.actions["undo"].trigger()
    assert doc.applied == [] and "*" not in window.windowTitle(), "undo is back at the export"
    assert APPLIED not in _item(window, entry.id).text(0)
    message = window.statusBar().currentMessage()
    assert message.startswith("Undone: Apply") and "a dog" in message

    window.actions["redo"].trigger()
    assert doc.applied == [entry.id] and "*" in window.windowTitle()
    assert APPLIED in _item(window, entry.id).text(0)
    assert window.statusBar().currentMessage().startswith("Redone: Apply")


def test_a_result_after_the_export_is_unexported_work_and_deleting_one_is_not(qtbot, window):
    run_and_wait(qtbot, window)
    doc = window.doc
    doc.mark_exported()
    run_and_wait(qtbot, window)
    assert doc.has_unexported_work() and "*" in window.windowTitle()
    doc.delete_entry(doc.history[-1].id)
    assert not doc.has_unexported_work() and "*" not in window.windowTitle()
    doc.delete_entry(doc.history[0].id)  # one that was exported: nothing new to lose
    assert not doc.has_unexported_work()


def test_an_applied_variation_is_marked_inside_its_group(qtbot, window):
    window.params.variations.setValue(2)
    run_and_wait(qtbot, window)
    second = window.doc.history[1]
    window.history.tree.setCurrentItem(_item(window, second.id))
    window.history.apply_button.click()
    assert window.doc.applied == [second.id]
    assert _item(window, second.id).text(0).startswith(APPLIED + "Variation 2")
    assert not _item(window, window.doc.history[0].id).text(0).startswith(APPLIED)
