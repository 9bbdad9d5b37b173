"""The model that loaded is remembered: the next start loads it, and Settings shows it."""

from __future__ import annotations

import pytest


def _window(qtbot, settings, engine_backend):
    from desktop_app.main_window import MainWindow
    from desktop_app.worker import EngineController

    engine = EngineController(engine_backend)
    window = MainWindow(settings, engine)
    qtbot.addWidget(window)
    return window, engine


def _wait_ready(qtbot, engine, start):
    with qtbot.waitSignal(engine.model_state, timeout=5000,
                          check_params_cb=lambda state, _m: state == "ready"):
        start()


@pytest.mark.slow
def test_the_loaded_model_is_loaded_again_at_the_next_start(qtbot, settings, fake_engine):
    from desktop_app.dialogs import SettingsDialog

    first, engine = _window(qtbot, settings, fake_engine)
    first.start_engine()
    assert first.model_state == "none"  # nothing configured yet
    _wait_ready(qtbot, engine, first.use_tiny_model)
    engine.shutdown()
    first.close()

    again, engine = _window(qtbot, settings, fake_engine)
    _wait_ready(qtbot, engine, again.start_engine)
    assert again.model_source == "tiny" and again.model_state == "ready"
    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    assert dialog.model.text() == "tiny"
    engine.shutdown()
