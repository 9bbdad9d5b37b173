"""A seed the user types is the seed the next run uses; untouched, every run draws a new one."""

from __future__ import annotations

from PySide6.QtCore import Qt


def test_a_typed_seed_is_used_as_typed(window, qtbot):
    panel = window.params
    assert not panel.lock_seed.isChecked()
    editor = panel.seed.lineEdit()
    editor.selectAll()
    qtbot.keyClicks(editor, "12345")
    qtbot.keyClick(editor, Qt.Key.Key_Return)
    assert panel.run_seeds()[0] == 12345
    assert panel.run_seeds()[0] == 12345  # and again: it stays until the user unlocks it
    assert panel.lock_seed.isChecked()


def test_an_untouched_seed_is_new_at_every_run(window):
    panel = window.params
    seeds = {panel.run_seeds()[0] for _ in range(5)}
    assert len(seeds) > 1 and not panel.lock_seed.isChecked()
