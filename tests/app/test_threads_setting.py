"""The CPU threads setting: saved by the Settings dialog (shared with the CLI), sent with every
model load, and applied by the real backend on the engine thread (OpenMP counts are per thread)."""

from __future__ import annotations

import threading

import pytest
import torch

from desktop_app.worker import EngineBackend
from engine.config import physical_cores


@pytest.mark.slow
def test_the_threads_setting_is_saved_and_sent_with_the_model_load(qtbot, window, settings,
                                                                   fake_engine, tmp_path):
    from desktop_app.dialogs import SettingsDialog

    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    assert dialog.threads.value() == 0 and str(physical_cores()) in dialog.threads.specialValueText()
    dialog.model.setText(str(tmp_path))
    dialog.threads.setValue(1)
    dialog.accept()
    assert settings.engine().threads == 1  # what the CLI reads too
    window.start_engine()
    qtbot.waitUntil(lambda: fake_engine.load_threads[-1:] == [1], timeout=5000)


def test_the_real_backend_sets_the_count_on_the_thread_that_loads(tiny_model_path):
    seen = []

    def load():
        EngineBackend().load_model(str(tiny_model_path), device="cpu", threads=1)
        seen.append(torch.get_num_threads())

    worker = threading.Thread(target=load)
    worker.start()
    worker.join(120)
    assert seen == [1]
