"""Keyboard shortcuts: every key is bound once, and Redo answers to both of its usual keys."""

from __future__ import annotations

from collections import Counter

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence


def _keys(window):
    return Counter(seq.toString() for action in window.findChildren(type(window.actions["undo"]))
                   for seq in action.shortcuts() if not seq.isEmpty())


@pytest.mark.slow
def test_no_key_is_bound_to_two_actions(window):
    twice = {key: n for key, n in _keys(window).items() if n > 1}
    assert not twice  # an ambiguous key triggers nothing in Qt


def _stroke(window):
    doc = window.doc
    doc.begin_stroke("add", 6, 1.0)
    doc.stroke_to(20, 20)
    doc.stroke_to(60, 40)
    doc.end_stroke()


def test_redo_by_ctrl_shift_z_and_ctrl_y(window, qtbot):
    window.activateWindow()
    stack = window.doc.undo_stack
    _stroke(window)
    done = stack.index()
    for chord in (QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")):
        stack.undo()
        assert stack.index() == done - 1
        combo = chord[0]
        qtbot.keyClick(window.canvas, combo.key(), combo.keyboardModifiers())
        assert stack.index() == done, chord.toString()


def test_redo_keys_are_listed_once_whatever_the_platform_binds():
    from desktop_app.actions import redo_keys

    x11 = [QKeySequence("Ctrl+Shift+Z")]  # what KDE and GNOME bind to Redo
    windows = [QKeySequence("Ctrl+Y"), QKeySequence("Alt+Shift+Backspace")]
    for platform in (x11, windows, []):
        keys = [k.toString() for k in redo_keys(platform)]
        assert keys[:2] == ["Ctrl+Shift+Z", "Ctrl+Y"]
        assert len(keys) == len(set(keys))
