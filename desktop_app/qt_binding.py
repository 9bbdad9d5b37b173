"""Refuses a Qt binding with the reference-counting defect that aborts the app on Python < 3.12."""

from __future__ import annotations

import ctypes
import sys

import PySide6
from PySide6.QtCore import QObject

FIX = ("Install a PySide6 without the defect: pip install \"PySide6-Essentials>=6.6,<6.12\" "
       "(bash packaging/dev.sh setup does this), or run on Python 3.12 or newer.")


def none_references_lost(calls: int = 64) -> int:
    """How many references to None ``calls`` Qt calls that return nothing take and never give back.

    PySide6 6.12.0 takes one per call. Python 3.12+ makes None immortal, so it cannot hurt there;
    below 3.12 the interpreter aborts ("none_dealloc") once the count reaches zero. The probe
    gives back what it took, so running it is harmless either way.
    """
    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(calls):
        probe.setObjectName("probe")
    lost = before - sys.getrefcount(None)
    for _ in range(max(lost, 0)):
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(None))
    return max(lost, 0)


def binding_problem() -> str | None:
    """A sentence naming the defect and its fix when this binding would abort the app, else None."""
    if sys.version_info >= (3, 12):
        return None
    calls = 64
    if none_references_lost(calls) < calls // 2:
        return None
    python = ".".join(map(str, sys.version_info[:3]))
    return (f"PySide6 {PySide6.__version__} on Python {python} loses a reference to None on every "
            f"Qt call, so the app would abort within minutes (\"Fatal Python error: none_dealloc\"). "
            + FIX)
