"""Space (pan) and held \\ (before) belong to the canvas while the pointer is over it, whichever
widget has the keyboard focus: an application event filter takes them before a focused button does."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QCursor
from PySide6.QtWidgets import QAbstractSpinBox, QApplication, QLineEdit, QPlainTextEdit, QTextEdit

PAN_KEY = Qt.Key.Key_Space  # hold and drag to pan
COMPARE_KEY = Qt.Key.Key_Backslash  # hold to see "before"
HOLD_KEYS = (PAN_KEY, COMPARE_KEY)
_CHORDS = (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier
           | Qt.KeyboardModifier.MetaModifier)


class HoldKeys(QObject):
    """Calls ``canvas.hold_key(key, down)``; a key taken on press is taken on release too."""

    def __init__(self, canvas):
        super().__init__(canvas)
        self.canvas = canvas
        self._held: set[Qt.Key] = set()
        app = QApplication.instance()
        app.installEventFilter(self)
        # A key released while another application has the keyboard never comes back to us.
        app.applicationStateChanged.connect(self._on_state)

    def eventFilter(self, obj, event) -> bool:
        kind = event.type()
        if kind not in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease):
            return False
        key = Qt.Key(event.key())
        if key not in HOLD_KEYS:
            return False
        if key in self._held:  # its auto-repeats and its release are the canvas's too
            if kind == QEvent.Type.KeyRelease and not event.isAutoRepeat():
                self._release(key)
            return True
        if kind == QEvent.Type.KeyPress and not event.isAutoRepeat() and self._wanted(event):
            self._held.add(key)
            self.canvas.hold_key(key, True)
            return True
        return False

    def _wanted(self, event) -> bool:
        if event.modifiers() & _CHORDS or QApplication.activeModalWidget() is not None \
                or QApplication.activePopupWidget() is not None:
            return False
        focus = QApplication.focusWidget()
        if _types_text(focus):
            return False  # a space typed into a prompt stays a space, wherever the mouse rests
        if focus is self.canvas:
            return True
        under = QApplication.widgetAt(QCursor.pos())
        return under is not None and (under is self.canvas or self.canvas.isAncestorOf(under))

    def _release(self, key) -> None:
        self._held.discard(key)
        self.canvas.hold_key(key, False)

    def _on_state(self, state) -> None:
        if state != Qt.ApplicationState.ApplicationActive:
            for key in list(self._held):
                self._release(key)


def _types_text(widget) -> bool:
    """True for a focused editable text field (not a spin box's: a space means nothing there)."""
    if isinstance(widget, (QTextEdit, QPlainTextEdit)):
        return not widget.isReadOnly()
    return isinstance(widget, QLineEdit) and not widget.isReadOnly() \
        and not isinstance(widget.parent(), QAbstractSpinBox)
