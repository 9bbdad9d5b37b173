"""LoRAs in the app (issue 12, point 5): Settings lists files with a weight each, OK reloads the
model with them, the status bar and the results' metadata name them, and a LoRA the model cannot
take leaves the app running with a message naming the file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from desktop_app.dialogs import SettingsDialog
from desktop_app.worker import EngineController, LoadModelRequest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from test_lora import _make_lora  # noqa: E402 - the engine tests' tiny LoRA maker


def _lora_file(path: Path) -> Path:
    """A file whose tensor names are a LoRA's (all the app's side reads before the model)."""
    save_file({"unet.down.attn2.to_k.lora_A.weight": np.zeros((4, 8), np.float32)}, str(path))
    return path


def test_settings_list_loras_with_weights_and_ok_reloads_the_model(window, monkeypatch, dialogs,
                                                                   tmp_path, qtbot):
    style = _lora_file(tmp_path / "film-grain.safetensors")
    window.settings.remember_model(str(tmp_path))  # a model path that exists, so OK is accepted

    def exec_dialog(dialog):
        dialogs.open_path = str(style)
        dialog.loras._choose()  # Add...: the file dialog (patched) returns ``style``
        dialog.loras.table.cellWidget(0, 1).setValue(0.8)
        dialog.accept()
        return SettingsDialog.DialogCode.Accepted

    monkeypatch.setattr(SettingsDialog, "exec", exec_dialog)
    with qtbot.waitSignal(window.engine.model_state, timeout=5000,
                          check_params_cb=lambda state, _m: state == "ready"):
        window.settings_dialog()
    assert window.settings.loras() == [f"{style}:0.8"]
    assert "film-grain:0.8" in window.model_label.text()
    # Reopened, the dialog shows the list as saved.
    dialog = SettingsDialog(window.settings)
    assert dialog.loras.specs() == [f"{style}:0.8"] and dialog.loras.table.item(0, 0).text() == style.name


def test_a_lora_file_that_is_gone_is_named_and_settings_stay_open(window, dialogs, tmp_path):
    gone = tmp_path / "gone.safetensors"
    window.settings.remember_model(str(tmp_path))  # a model path that exists
    window.settings.set_loras([f"{gone}:1"])
    dialog = SettingsDialog(window.settings)
    dialog.accept()
    assert dialog.result() != SettingsDialog.DialogCode.Accepted
    assert str(gone) in dialogs.texts() and "does not exist" in dialogs.texts()
    dialog.loras.table.selectRow(0)
    dialog.loras.remove.click()
    assert dialog.loras.specs() == []


def test_saved_lora_settings_that_are_not_specs_are_left_out(settings, tmp_path):
    good = f"{tmp_path / 'a.safetensors'}:0.5"
    settings.q.setValue("model/loras", json.dumps([good, 7, "", "x.safetensors:99"]))
    assert settings.loras() == [good]
    settings.q.setValue("model/loras", "not json")
    assert settings.loras() == []


@pytest.mark.slow
def test_the_real_engine_loads_the_loras_and_refuses_one_for_another_family(
        qtbot, tiny_model, tiny_model_path, tiny_sdxl, tmp_path):
    style = _make_lora(tiny_model, tmp_path, "tiny-style")
    xl_style = _make_lora(tiny_sdxl, tmp_path, "xl-style")
    engine = EngineController()
    states = []
    engine.model_state.connect(lambda state, message: states.append((state, message)))
    try:
        for spec in (f"{style}:0.5", f"{xl_style}:1"):
            with qtbot.waitSignal(engine.model_state, timeout=120_000,
                                  check_params_cb=lambda state, _m: state in ("ready", "failed")):
                engine.load_model(LoadModelRequest(str(tiny_model_path), device="cpu", loras=(spec,)))
    finally:
        engine.shutdown()
    ready, failed = [s for s in states if s[0] != "loading"]
    assert ready[0] == "ready" and "tiny-style:0.5" in ready[1]
    # (the tiny models' text widths stand in for the real families' names)
    assert failed[0] == "failed" and failed[1].startswith("xl-style.safetensors: this LoRA is for")
