"""UI polish: the brush ring's first position, the shortcuts table, error sentences and icons,
which methods need the source text, SDEdit's mask widgets, seeds in the history, and the
parameter panel's one change signal."""

import numpy as np
import pytest
from PySide6.QtCore import QPointF
from PySide6.QtGui import QEnterEvent, QGuiApplication
from PySide6.QtWidgets import QApplication, QMessageBox

from desktop_app import methods
from desktop_app.dialogs import SettingsDialog, ShortcutsDialog, sentence, show_error
from desktop_app.panels.history import describe, details
from engine.imaging import Photo
from engine.params import EditParams
from engine.results import EditResult


def enter(canvas, point):
    """The mouse entering the canvas at ``point`` (the canvas widget's coordinates)."""
    local = QPointF(point)
    QApplication.sendEvent(canvas, QEnterEvent(local, local, QPointF(canvas.mapToGlobal(point))))


# ----------------------------------------------------------------------------- brush ring


def test_the_brush_ring_appears_where_the_mouse_enters(window):
    canvas = window.canvas
    canvas.fit()
    assert not canvas.cursor_item.isVisible()  # nothing at the photo's corner before the mouse
    enter(canvas, canvas.rect().center())
    w, h = window.doc.size
    ring = canvas.cursor_item.pos()
    assert canvas.cursor_item.isVisible()
    # Fitted, the middle of the view is the middle of the photo, not its top-left corner.
    assert abs(ring.x() - w / 2) <= 2 and abs(ring.y() - h / 2) <= 2


def test_the_brush_ring_hides_when_another_photo_opens(window):
    canvas = window.canvas
    enter(canvas, canvas.rect().center())
    assert canvas.cursor_item.isVisible()
    # The new photo is fitted anew: the old ring position would be somewhere else on it.
    window.open_photo(Photo(rgb=np.full((40, 300, 3), 128, np.uint8)), "wide.png")
    assert not canvas.cursor_item.isVisible()


# ----------------------------------------------------------------------------- shortcuts


def shortcut_table(qtbot, window) -> list[tuple[str, str]]:
    dialog = ShortcutsDialog(window.actions.values(), window)
    qtbot.addWidget(dialog)
    return [(dialog.table.item(r, 0).text(), dialog.table.item(r, 1).text())
            for r in range(dialog.table.rowCount())]


def test_shortcuts_name_undo_and_redo_not_the_step(qtbot, window):
    doc = window.doc
    doc.begin_stroke("erase", 5, 1.0)
    doc.stroke_to(20, 20)
    doc.end_stroke()
    assert window.actions["undo"].text().replace("&", "") != "Undo"  # the step is in the menu text
    rows = dict((label, keys) for keys, label in shortcut_table(qtbot, window))
    assert "Undo" in rows and "Redo" in rows
    assert not any(label.startswith(("Undo ", "Redo ")) for label in rows)


def test_shortcuts_have_one_row_per_action_and_no_empty_keys(qtbot, window):
    rows = shortcut_table(qtbot, window)
    labels = [label for _, label in rows]
    keys = [key for key, _ in rows]
    assert len(labels) == len(set(labels))
    assert all(keys)
    # Every key appears in exactly one row ("[", "]" and Esc were listed twice).
    singles = [k for key in keys for k in key.split(" or ")]
    assert len(singles) == len(set(singles))
    by_label = dict((label, key) for key, label in rows)
    assert by_label["Larger Brush"] == "]" and by_label["Smaller Brush"] == "["
    assert by_label["Cancel Run"] == "Esc"
    # An action whose only (standard) key has no binding on this platform gets no row.
    for action in window.actions.values():
        if not any(k.toString() for k in action.shortcuts()):
            assert action.iconText() not in by_label


def test_shortcuts_name_the_mask_operations(qtbot, window):
    by_label = dict((label, key) for key, label in shortcut_table(qtbot, window))
    assert by_label["Invert mask"] == window.actions["invert"].shortcut().toString()
    assert by_label["Clear mask"]
    assert "Invert" not in by_label and "Clear" not in by_label


# ----------------------------------------------------------------------------- error boxes


@pytest.mark.parametrize("raw, shown", [
    ("the clipboard holds no picture; copy an image first",
     "The clipboard holds no picture; copy an image first."),
    ("Already a sentence.", "Already a sentence."),
    ("seed 9 leaves no room (pick a smaller seed)", "Seed 9 leaves no room (pick a smaller seed)."),
    ("notes.jpg could not be read", "notes.jpg could not be read."),  # a file name keeps its case
    ("Is it?", "Is it?"),
])
def test_messages_are_shown_as_sentences(raw, shown):
    assert sentence(raw) == shown


@pytest.fixture
def icons(monkeypatch, dialogs):
    """The icons of the message boxes shown (the dialogs fixture records their texts)."""
    shown = []
    record = QMessageBox.exec  # the dialogs fixture's recorder

    def exec_box(box):
        shown.append(box.icon())
        return record(box)

    monkeypatch.setattr(QMessageBox, "exec", exec_box)
    return shown


def test_a_user_mistake_gets_a_warning_icon_and_a_sentence(window, dialogs, icons):
    show_error(window, "Paste", "the clipboard holds no picture; copy an image first")
    assert dialogs.shown == [("box", "Paste", "The clipboard holds no picture; copy an image first.")]
    assert icons == [QMessageBox.Icon.Warning]


def test_a_failure_with_details_or_asked_for_gets_the_error_icon(window, dialogs, icons):
    show_error(window, "The run failed", "out of memory", "Traceback (most recent call last): ...")
    show_error(window, "Export failed", "could not write the file", kind="error")
    show_error(window, "Settings", "the path is wrong", kind="warning")
    assert icons == [QMessageBox.Icon.Critical, QMessageBox.Icon.Critical, QMessageBox.Icon.Warning]
    assert dialogs.kinds() == ["box", "box", "box"]
    with pytest.raises(ValueError, match="warning"):
        show_error(window, "x", "y", kind="critical")


def test_the_window_shows_an_input_error_as_a_sentence(window, dialogs, icons):
    QGuiApplication.clipboard().clear()
    window.paste()
    [(_, title, text)] = dialogs.shown
    assert title == "Paste" and text.startswith("The clipboard") and text.endswith(".")
    assert icons == [QMessageBox.Icon.Warning]


# ----------------------------------------------------------------------------- methods


def test_only_diffedit_prompt_to_prompt_and_flowedit_ask_for_the_source_text(window):
    panel = window.params
    asked = set()
    for name in methods.METHODS:
        panel.set_method(name)
        if panel.source.placeholderText() == "a bowl of fruits":
            asked.add(name)
    assert asked == {m for m in methods.METHODS if methods.METHODS[m].uses_source} == {"diffedit", "p2p", "flowedit"}


def test_sdedit_shows_threshold_and_feather_only_when_masked():
    for widget in ("mask_threshold", "feather"):
        assert not methods.shows("sdedit", widget, {"masked": False})
        assert methods.shows("sdedit", widget, {"masked": True})
    assert methods.shows("sdedit", "strength", {"masked": False})  # the others stay
    assert methods.shows("diffedit", "feather", {})  # and other methods are unaffected


def test_the_panel_follows_sdedits_masked_box(window):
    panel = window.params
    panel.set_method("sdedit")
    threshold, feather = panel.fields["mask_threshold"], panel.fields["feather"]
    masked = panel.option_widgets["sdedit"]["masked"]
    masked.setChecked(False)
    assert threshold.isHidden() and feather.isHidden()
    masked.setChecked(True)
    assert not threshold.isHidden() and not feather.isHidden()


# ----------------------------------------------------------------------------- history


def add(doc, method, seed):
    image = doc.base.copy()
    image[:10, :10] = 255 - image[:10, :10]
    return doc.add_result(doc.new_group(), EditResult(
        image=image, mask=np.zeros(doc.shape, np.float32), heatmap=None, source="a cat",
        target="a dog", params=EditParams(steps=10, seed=seed), model_name="tiny", method=method,
        seconds=2.0))


def test_history_hides_the_seed_of_a_deterministic_method(window):
    p2p = add(window.doc, "p2p", 4242)
    diffedit = add(window.doc, "diffedit", 777)
    assert "4242" not in describe(p2p) and "seed" not in describe(p2p).lower()
    assert "4242" not in details(p2p)
    assert "seed 777" in describe(diffedit) and "Seed 777" in details(diffedit)
    texts = [window.history.tree.topLevelItem(i).text(0)
             for i in range(window.history.tree.topLevelItemCount())]
    assert any("seed 777" in t for t in texts) and not any("4242" in t for t in texts)


# ----------------------------------------------------------------------------- settings


def test_the_model_placeholder_is_short_and_the_example_is_in_the_tooltip(qtbot, settings):
    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    placeholder = dialog.model.placeholderText()
    assert len(placeholder) <= 40 and "hub id" in placeholder
    assert dialog.model.fontMetrics().horizontalAdvance(placeholder) < dialog.model.minimumWidth()
    assert "stabilityai/stable-diffusion-2-1-base" in dialog.model.toolTip()


def test_the_close_question_names_export_not_save(window, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    labels = []

    def answer(box):
        labels.extend(b.text() for b in box.buttons())
        return QMessageBox.StandardButton.Cancel

    monkeypatch.setattr(QMessageBox, "exec", answer)
    window.doc.add_result(window.doc.new_group(), EditResult(
        image=window.doc.base.copy(), mask=window.doc.composed.copy(), heatmap=None, source="a",
        target="b", params=window.params.params(), model_name="tiny", seconds=0.1))
    assert window.doc.has_unexported_work()
    assert not window.confirm_discard("closing")
    assert "Export\u2026" in labels and "Save" not in labels


# ----------------------------------------------------------------------------- change signal


def test_the_panel_says_when_anything_it_shows_changes(qtbot):
    """Autosave subscribes to ParamsPanel.changed instead of polling the widgets."""
    from desktop_app.panels.params import ParamsPanel

    panel = ParamsPanel()
    qtbot.addWidget(panel)
    edits = {"target": lambda: panel.target.setText("a dog"),
             "negative": lambda: panel.negative.setPlainText("blurry"),
             "steps": lambda: panel.steps.setValue(12),
             "threshold": lambda: panel.threshold_slider.setValue(20),
             "variations": lambda: panel.variations.setValue(3),
             "lock": lambda: panel.lock_seed.setChecked(True),
             "method": lambda: panel.set_method("sdedit"),
             "option": lambda: panel.set_options({"masked": True})}
    for name, edit in edits.items():
        with qtbot.waitSignal(panel.changed, timeout=1000, raising=False) as blocker:
            edit()
        assert blocker.signal_triggered, f"no change signal for {name}"
    with qtbot.assertNotEmitted(panel.changed):
        panel.steps.setValue(12)  # the same value again is no change


def test_parameter_widgets_take_range_and_default_from_the_engines_field_table(qtbot, settings):
    """The panel's and the Settings dialog's spin boxes allow exactly what validation accepts."""
    from desktop_app.panels.params import ParamsPanel
    from engine.fields import AUTO
    from engine.params import field_table

    panel, dialog = ParamsPanel(), SettingsDialog(settings)
    qtbot.addWidget(panel)
    qtbot.addWidget(dialog)
    table = field_table()
    boxes = [(name, getattr(panel, name)) for name in
             ("steps", "strength", "guidance", "mask_samples", "feather", "eta", "seed")]
    boxes += [("mask_threshold", panel.threshold_spin), ("mask_threshold", dialog.threshold),
              ("mask_samples", dialog.samples), ("guidance", dialog.guidance)]
    for name, box in boxes:
        low, high = table[name].metadata["range"]
        if table[name].metadata.get("auto"):  # one step below the range: "Auto" (fields.AUTO)
            low = AUTO
            assert box.specialValueText() == "Auto" and AUTO < table[name].metadata["range"][0]
        assert (box.minimum(), box.maximum()) == (low, high), name
    assert panel.steps.value() == table["steps"].default and panel.seed.maximum() == 2**31 - 1
