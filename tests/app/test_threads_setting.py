"""The CPU threads setting: saved by the Settings dialog, applied by the engine thread at load."""

from __future__ import annotations

import torch

from engine.config import physical_cores


def test_threads_setting_reaches_the_engine_thread(qtbot, window, settings, fake_engine, tmp_path,
                                                   monkeypatch):
    from desktop_app.dialogs import SettingsDialog

    seen = []  # torch's thread count where the model loads: OpenMP counts are per thread
    load = fake_engine.load_model
    monkeypatch.setattr(fake_engine, "load_model",
                        lambda *a, **k: (seen.append(torch.get_num_threads()), load(*a, **k))[1])
    before = torch.get_num_threads()
    try:
        dialog = SettingsDialog(settings)
        qtbot.addWidget(dialog)
        assert dialog.threads.value() == 0 and str(physical_cores()) in dialog.threads.specialValueText()
        dialog.model.setText(str(tmp_path))
        dialog.threads.setValue(1)
        dialog.accept()
        assert settings.engine().threads == 1  # what the CLI reads too
        window.start_engine()
        qtbot.waitUntil(lambda: seen == [1], timeout=5000)
    finally:
        torch.set_num_threads(before)
