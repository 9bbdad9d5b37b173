"""Composition root: build the application, settings, engine thread and window; wire; run.

Importing this module is light: torch loads on the engine thread when the first model loads,
after the window has painted.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication

from engine.resources import resource_path

USAGE = "usage: diffedit-studio [IMAGE]   (or: python -m desktop_app [IMAGE])"


def create_application(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance()
    if app is not None:
        return app
    # Fractional scale factors (150 %) stay exact, so the canvas and icons are crisp.
    QGuiApplication.setHighDpiScaleFactorRoundingPolicy(
        QGuiApplication.highDpiScaleFactorRoundingPolicy().PassThrough)
    app = QApplication([sys.argv[0] if sys.argv else "diffedit-studio"] + list(argv or []))
    app.setOrganizationName("DiffEditStudio")
    app.setApplicationName("DiffEdit Studio")
    app.setApplicationDisplayName("DiffEdit Studio")
    app.setDesktopFileName("diffedit-studio")
    try:
        app.setStyleSheet(resource_path("style", "app.qss").read_text(encoding="utf-8"))
    except OSError:
        pass  # the look degrades a little; the app still works
    return app


def build_window(settings=None, backend=None):
    """The main window with its engine thread (not started on a model yet). Returns (window, engine)."""
    from desktop_app.main_window import MainWindow
    from desktop_app.settings import AppSettings
    from desktop_app.worker import EngineController

    engine = EngineController(backend)
    window = MainWindow(settings or AppSettings(), engine)
    return window, engine


def main(argv: list[str] | None = None) -> int:
    """Start the editor; ``argv`` may hold one photo to open. Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    photos = [a for a in argv if not a.startswith("-")]
    if len(photos) > 1 or len(photos) != len(argv):
        print(f"error: unexpected arguments {' '.join(argv)}\n{USAGE}", file=sys.stderr)
        return 2
    from desktop_app.autosave import offer_restore
    from desktop_app.qt_binding import binding_problem

    problem = binding_problem()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    app = create_application()
    window, engine = build_window()
    window.show()
    if photos:
        path = Path(photos[0])
        QTimer.singleShot(0, lambda: window.open_path(path))
    # After the photo argument opens: a session that crashed last time can be restored over it.
    QTimer.singleShot(0, lambda: offer_restore(window))
    # The model loads once the event loop runs, so the first paint is never held up by torch.
    QTimer.singleShot(0, window.start_engine)
    try:
        return app.exec()
    finally:
        engine.shutdown()
