"""Settings > OK keeps what the panel shows; only a default the user changed there reaches it."""

from __future__ import annotations

import pytest

from desktop_app.dialogs import SettingsDialog


@pytest.fixture
def accept_settings(monkeypatch, window, tmp_path, dialogs):
    """Settings opens, each of ``changes`` runs on the dialog as the user's hand, then OK."""
    changes = []
    # The fake engine's model path does not exist, and Settings refuses a missing model path.
    window.settings.remember_model(str(tmp_path))

    def exec_dialog(dialog):
        for change in changes:
            change(dialog)
        dialog.accept()
        assert dialog.result() == SettingsDialog.DialogCode.Accepted, dialogs.texts()
        return SettingsDialog.DialogCode.Accepted

    monkeypatch.setattr(SettingsDialog, "exec", exec_dialog)
    return changes


def test_ok_without_changes_leaves_the_panel_alone(window, accept_settings):
    window.params.strength.setValue(0.65)
    before = window.params.params()
    window.settings_dialog()
    assert window.params.params() == before
    assert before.steps == 10  # not the factory default of 50


def test_a_changed_default_reaches_the_panel_and_nothing_else(window, accept_settings):
    window.params.strength.setValue(0.65)
    accept_settings.append(lambda dialog: dialog.steps.setValue(30))
    window.settings_dialog()
    shown = window.params.params()
    assert shown.steps == 30 and shown.strength == 0.65


@pytest.mark.slow
def test_the_undo_memory_cap_is_set_in_settings_and_kept(window, accept_settings):
    accept_settings.append(lambda dialog: dialog.undo_memory.setValue(300))
    window.settings_dialog()
    assert window.doc.undo_stack.limit_bytes == 300 * 1024**2
    assert window.settings.undo_memory_mb() == 300
    assert "of its 300 MB" in window.actions["undo"].toolTip()


@pytest.mark.parametrize("name", ["z-image-turbo-Q8_0.gguf", "flux-2-klein-4b-fp8.safetensors"])
def test_a_transformer_file_is_saved_with_the_model_and_loaded_with_it(
        window, accept_settings, fake_engine, tmp_path, qtbot, name):
    file = tmp_path / name
    file.write_bytes(b"GGUF")
    accept_settings.append(lambda dialog: dialog.transformer.setText(str(file)))
    window.settings_dialog()
    assert window.settings.engine().transformer == str(file)
    # OK reloads the model with it
    qtbot.waitUntil(lambda: fake_engine.transformers[-1:] == [str(file)], timeout=5000)
    window.settings.remember_model(str(tmp_path / "another model"))
    assert window.settings.engine().transformer == ""


@pytest.mark.parametrize("name", ["missing.gguf", "missing.safetensors", "transformer.ckpt"])
def test_a_transformer_file_that_is_no_gguf_or_safetensors_is_refused_by_name(window, tmp_path, name):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    (tmp_path / "transformer.ckpt").write_bytes(b"x")
    window.settings.remember_model(str(tmp_path))
    dialog = SettingsDialog(window.settings, window)
    dialog.transformer.setText(str(tmp_path / name))
    assert f"The transformer file {tmp_path / name} is not an existing .gguf or .safetensors file" in dialog.problem()
    dialog.transformer.setText("")
    assert dialog.problem() == ""
