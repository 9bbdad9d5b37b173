"""Work-arounds for Qt binding bugs, checked at import so they switch off once fixed.

PySide6 6.12.0 returns the bool from ``SignalInstance.emit()`` and ``.disconnect()`` without a
new reference. On Python < 3.12 (where True and False are not immortal) each call takes one
reference from ``True`` and, after a few hundred calls, the interpreter aborts with
"bool_dealloc: deallocating True or False". Every emit and disconnect in the app goes through
:func:`emit` / :func:`disconnect`, which give the missing reference back.
"""

from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QObject, Signal


class _Probe(QObject):
    fired = Signal()

    def slot(self):
        pass


def _incref(value) -> None:
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(value))


def _steals(call) -> bool:
    """True when ``call()`` (which returns True) takes a reference it does not own."""
    if sys.version_info >= (3, 12):
        return False  # bools are immortal there: a missing reference cannot hurt
    before = sys.getrefcount(True)
    for _ in range(4):
        call()
    lost = before - sys.getrefcount(True)
    for _ in range(max(lost, 0)):  # give back what the probe itself took
        _incref(True)
    return lost >= 4


_probe = _Probe()
EMIT_STEALS = _steals(_probe.fired.emit)
DISCONNECT_STEALS = _steals(lambda: (_probe.fired.connect(_probe.slot),
                                     _probe.fired.disconnect(_probe.slot)))


def emit(signal, *args):
    """``signal.emit(*args)``, safe on bindings whose emit returns a borrowed bool."""
    result = signal.emit(*args)
    if EMIT_STEALS and result is not None:
        _incref(result)
    return result


def disconnect(signal, slot):
    """``signal.disconnect(slot)``, safe on bindings whose disconnect returns a borrowed bool."""
    result = signal.disconnect(slot)
    if DISCONNECT_STEALS and result is not None:
        _incref(result)
    return result
