"""Fixtures for the app tests: offscreen Qt, isolated settings, no blocking dialogs, a fake engine."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest
from PySide6.QtWidgets import QFileDialog, QInputDialog, QMessageBox

# The fake engine sits next to this file; tests/ is not a package.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake_engine import FakeEngine  # noqa: E402


class DialogLog:
    """Every message box the app tried to show; answers questions with ``answer``."""

    def __init__(self):
        self.shown: list[tuple[str, str, str]] = []  # (kind, title, text)
        self.answer = QMessageBox.StandardButton.Yes
        self.save_path = ""  # what QFileDialog.getSaveFileName returns
        self.open_path = ""
        self.quality = None  # what QInputDialog.getInt returns (None: the value it proposes)

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.shown]

    def texts(self) -> str:
        return "\n".join(f"{t}: {x}" for _, t, x in self.shown)


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path, monkeypatch):
    """Settings, caches and data of the app and engine go to a temporary folder."""
    for name in ("CONFIG", "DATA"):
        monkeypatch.setenv(f"DIFFEDIT_{name}_DIR", str(tmp_path / name.lower()))
    return tmp_path


@pytest.fixture(autouse=True)
def dialogs(monkeypatch):
    """No modal dialog may block a test: message boxes and file dialogs are recorded instead."""
    log = DialogLog()

    def exec_box(box):
        log.shown.append(("box", box.windowTitle(), box.text()))
        return log.answer

    def static(kind):
        def show(parent, title, text, *args, **kwargs):
            log.shown.append((kind, title, text))
            return log.answer if kind == "question" else QMessageBox.StandardButton.Ok
        return show

    monkeypatch.setattr(QMessageBox, "exec", exec_box)
    for kind in ("critical", "warning", "information", "question"):
        monkeypatch.setattr(QMessageBox, kind, staticmethod(static(kind)))
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda *a, **k: (log.save_path, "")))
    monkeypatch.setattr(QFileDialog, "getOpenFileName",
                        staticmethod(lambda *a, **k: (log.open_path, "")))

    def get_int(parent, title, label, value, *args, **kwargs):
        log.shown.append(("number", title, label))
        return (value if log.quality is None else log.quality), True

    monkeypatch.setattr(QInputDialog, "getInt", staticmethod(get_int))
    return log


@pytest.fixture
def fake_engine():
    return FakeEngine()


@pytest.fixture
def settings(tmp_path):
    from PySide6.QtCore import QSettings

    from desktop_app.settings import AppSettings

    return AppSettings(QSettings(str(tmp_path / "app.ini"), QSettings.Format.IniFormat))


@pytest.fixture
def photo():
    """A small photo with a gradient so every pixel differs from its inverse."""
    from engine.imaging import Photo

    h, w = 96, 128
    ys, xs = np.mgrid[0:h, 0:w]
    rgb = np.stack([xs * 2 % 256, ys * 2 % 256, np.full_like(xs, 60)], axis=2).astype(np.uint8)
    return Photo(rgb=rgb)


@pytest.fixture
def window(qtbot, settings, fake_engine, photo):
    """The main window on the fake engine, with a photo open and prompts filled in
    (10 steps at strength 0.5: 5 encode and 5 decode steps; 3 mask samples)."""
    from desktop_app.main_window import MainWindow
    from desktop_app.worker import EngineController
    from engine.params import EditParams

    engine = EngineController(fake_engine)
    win = MainWindow(settings, engine)
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    qtbot.waitExposed(win)
    with qtbot.waitSignal(engine.model_state, timeout=5000,
                          check_params_cb=lambda state, _m: state == "ready"):
        win.load_model("/models/fake-sd")
    win.open_photo(photo, "test.png")
    win.params.source.setText("a cat")
    win.params.target.setText("a dog")
    win.params.set_params(EditParams(steps=10, strength=0.5, mask_samples=3))
    yield win
    win.doc.mark_exported()  # nothing to ask about at teardown
    win.close()
    engine.shutdown()


@pytest.fixture
def submitted(window, monkeypatch):
    """Every request the window hands to its engine thread, in order (what the app asked for,
    seen from the app's side rather than counted by the fake)."""
    requests = []
    submit = window.engine.submit

    def record(request):
        requests.append(request)
        return submit(request)

    monkeypatch.setattr(window.engine, "submit", record)
    return requests


@pytest.fixture
def engine_controller(qtbot, fake_engine):
    from desktop_app.worker import EngineController

    controller = EngineController(fake_engine)
    yield controller
    controller.shutdown()
