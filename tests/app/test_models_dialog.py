"""The Models dialog: listing, default model, adding places, downloading with progress and cancel."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QLabel, QMessageBox
from safetensors.torch import save_file

from desktop_app.models_dialog import ModelsDialog
from engine.catalog import ModelEntry
from engine.config import Settings
from engine.errors import Cancelled, ModelError


def checkpoint(path: Path, width=768, in_channels=4) -> Path:
    """A single-file checkpoint header with the tensors the family is read from."""
    text = ("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" if width == 768
            else "cond_stage_model.model.token_embedding.weight")
    shapes = {"model.diffusion_model.input_blocks.0.0.weight": (8, in_channels, 3, 3),
              "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (8, width),
              "first_stage_model.encoder.conv_in.weight": (8, 3, 3, 3), text: (4, width)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: torch.zeros(s, dtype=torch.float16) for k, s in shapes.items()}, str(path))
    return path


@pytest.fixture
def library(tmp_path):
    """Two usable checkpoints and one depth model (which cannot edit) in a configured folder."""
    folder = tmp_path / "library"
    checkpoint(folder / "portrait-sd15.safetensors", 768)
    checkpoint(folder / "v2-1_768-ema-pruned.safetensors", 1024)
    checkpoint(folder / "depth-map.safetensors", 768, in_channels=5)
    Settings(model_folders=[str(folder)]).save()
    return folder


def rows(dialog):
    table = dialog.table
    return [[table.item(r, c).text() for c in range(table.columnCount())] for r in range(table.rowCount())]


def test_lists_models_and_sets_the_default(qtbot, library):
    dialog = ModelsDialog()
    qtbot.addWidget(dialog)
    table = rows(dialog)
    assert [r[1] for r in table] == ["portrait-sd15", "v2-1_768-ema-pruned", "depth-map"]
    assert table[0][2] == "SD 1.x" and table[1][2] == "SD 2.x (v)"
    assert table[2][0] == "Not usable" and "5 input channels" in dialog.table.item(2, 1).toolTip()
    assert table[0][5] == str(library / "portrait-sd15.safetensors")

    dialog.table.selectRow(2)
    assert not dialog.default_button.isEnabled()  # an unusable model cannot become the default
    assert "cannot be used" in dialog.detail.text()

    dialog.table.selectRow(1)
    assert dialog.default_button.isEnabled()
    with qtbot.waitSignal(dialog.default_changed) as signal:
        qtbot.mouseClick(dialog.default_button, Qt.MouseButton.LeftButton)
    chosen = str(library / "v2-1_768-ema-pruned.safetensors")
    assert signal.args == [chosen]
    assert Settings.load().default_model == chosen  # the CLI reads the same settings
    assert rows(dialog)[1][0] == "Default" and dialog.table.item(1, 1).font().bold()
    assert not dialog.default_button.isEnabled()  # already the default


def test_add_folder_and_file(qtbot, tmp_path, monkeypatch, dialogs):
    dialog = ModelsDialog()
    qtbot.addWidget(dialog)
    assert dialog.table.isHidden() and not dialog.empty_label.isHidden()

    folder = tmp_path / "more"
    checkpoint(folder / "nested" / "anime-sd15.safetensors", 768)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(folder)))
    with qtbot.waitSignal(dialog.models_changed):
        qtbot.mouseClick(dialog.add_folder_button, Qt.MouseButton.LeftButton)
    assert Settings.load().model_folders == [str(folder)]
    assert [r[1] for r in rows(dialog)] == ["anime-sd15"]
    assert dialog.selected_entry().name == "anime-sd15"

    single = checkpoint(tmp_path / "loose" / "base-512.safetensors", 1024)
    dialogs.open_path = str(single)
    qtbot.mouseClick(dialog.add_file_button, Qt.MouseButton.LeftButton)
    assert Settings.load().model_folders == [str(folder), str(single)]
    assert dialog.selected_entry().name == "base-512" and dialog.selected_entry().family == "sd2"


def test_unusable_places_are_refused_with_the_reason(qtbot, tmp_path, dialogs):
    dialog = ModelsDialog()
    qtbot.addWidget(dialog)
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"this is not a checkpoint")
    assert not dialog.add_place(str(bad))
    assert dialogs.kinds() == ["warning"] and "not a valid safetensors file" in dialogs.texts()
    assert not dialog.add_place(str(tmp_path / "empty-folder"))
    assert "was not added" in dialogs.shown[-1][2]
    assert Settings.load().model_folders == []


class ScriptedDownload:
    """Stands in for engine.downloads.download_model; the test decides when each step happens."""

    def __init__(self, folder: Path, total=3 * 1024**3):
        self.folder, self.total = folder, total
        self.step = threading.Event()
        self.calls = []
        self.fail_with = None

    def __call__(self, repo_id, *, on_progress, should_stop):
        self.calls.append(repo_id)
        if self.fail_with:
            raise self.fail_with
        for done in range(0, self.total + 1, self.total // 4):  # values beyond 2**31 on purpose
            on_progress(done, self.total, "unet/diffusion_pytorch_model.safetensors")
            while not self.step.wait(0.01):
                if should_stop():
                    raise Cancelled("download cancelled")
            self.step.clear()
        checkpoint(self.folder / "downloaded.safetensors", 768)
        return self.folder


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_download_progress_then_listed(qtbot, tmp_path, online):
    target = tmp_path / "dl"
    Settings(model_folders=[str(target)]).save()
    fake = ScriptedDownload(target)
    dialog = ModelsDialog(download=fake)
    qtbot.addWidget(dialog)
    qtbot.keyClicks(dialog.repo_edit, "someone/sd15")
    qtbot.mouseClick(dialog.download_button, Qt.MouseButton.LeftButton)
    assert dialog.is_downloading() and dialog.cancel_button.isEnabled()
    assert not dialog.download_button.isEnabled()
    qtbot.waitUntil(lambda: dialog.progress.format().startswith("0 B of 3.0 GB"))
    fake.step.set()
    qtbot.waitUntil(lambda: dialog.progress.value() == 250)
    assert "768.0 MB of 3.0 GB" in dialog.progress.format()
    assert "unet/diffusion_pytorch_model.safetensors" in dialog.download_status.text()
    with qtbot.waitSignal(dialog.models_changed, timeout=5000):
        for _ in range(4):
            qtbot.waitUntil(lambda: not fake.step.is_set())
            fake.step.set()
    assert fake.calls == ["someone/sd15"]
    assert not dialog.is_downloading() and dialog.progress.value() == 1000
    assert [r[1] for r in rows(dialog)] == ["downloaded"]
    assert str(target) in dialog.download_status.text()


def test_cancel_stops_the_download(qtbot, tmp_path, online):
    fake = ScriptedDownload(tmp_path / "dl")
    dialog = ModelsDialog(download=fake)
    qtbot.addWidget(dialog)
    dialog.repo_edit.setText("someone/sd15")
    dialog.start_download()
    qtbot.waitUntil(lambda: dialog.progress.format().startswith("0 B"))
    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    assert not dialog.cancel_button.isEnabled()  # pressed once; the job is stopping
    qtbot.waitUntil(lambda: not dialog.is_downloading(), timeout=3000)
    assert dialog.progress.format() == "Cancelled"
    assert "continue where it stopped" in dialog.download_status.text()
    assert dialog.download_button.isEnabled()


def test_download_errors_are_shown(qtbot, tmp_path, online):
    fake = ScriptedDownload(tmp_path / "dl")
    fake.fail_with = ModelError("no model called someone/typo on the Hugging Face hub")
    dialog = ModelsDialog(download=fake)
    qtbot.addWidget(dialog)
    dialog.repo_edit.setText("someone/typo")
    dialog.start_download()
    qtbot.waitUntil(lambda: not dialog.is_downloading(), timeout=3000)
    assert dialog.download_status.text() == "Download failed: no model called someone/typo on the Hugging Face hub"
    fake.fail_with = RuntimeError("disk on fire")
    dialog.start_download()
    qtbot.waitUntil(lambda: not dialog.is_downloading(), timeout=3000)
    assert "unexpectedly: RuntimeError: disk on fire" in dialog.download_status.text()


def test_closing_during_a_download_stops_it(qtbot, tmp_path, online, dialogs):
    fake = ScriptedDownload(tmp_path / "dl")
    dialog = ModelsDialog(download=fake)
    qtbot.addWidget(dialog)
    dialog.repo_edit.setText("someone/sd15")
    dialog.start_download()
    qtbot.waitUntil(lambda: dialog.progress.format().startswith("0 B"))
    dialogs.answer = QMessageBox.StandardButton.No
    dialog.reject()
    assert dialog.is_downloading()  # the user chose to keep downloading
    dialogs.answer = QMessageBox.StandardButton.Yes
    dialog.reject()  # returns once the pool thread has stopped
    assert dialog._pool.activeThreadCount() == 0
    assert [k for k, _, _ in dialogs.shown] == ["question", "question"]


def test_offline_mode_disables_downloads(qtbot, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dialog = ModelsDialog(download=lambda *a, **k: pytest.fail("must not download offline"))
    qtbot.addWidget(dialog)
    assert not dialog.repo_edit.isEnabled() and not dialog.download_button.isEnabled()
    assert "HF_HUB_OFFLINE" in dialog.download_status.text()


def test_uses_the_injected_catalog(qtbot, tmp_path):
    entry = ModelEntry("org/model", "hub", "org/model", tmp_path, family="sd1", size_bytes=2 * 1024**3,
                       is_default=True)
    dialog = ModelsDialog(discover=lambda settings: [entry])
    qtbot.addWidget(dialog)
    assert rows(dialog) == [["Default", "org/model", "SD 1.x", "2.0 GB", "Hugging Face cache", str(tmp_path)]]
    assert json.dumps(Settings.load().model_folders) == "[]"


def test_flow_families_are_listed_with_their_steps_licence_and_methods(qtbot, tmp_path):
    entries = [ModelEntry(name, "folder", str(tmp_path / name), tmp_path / name, family=family,
                          size_bytes=2**30)
               for name, family in (("klein-4b", "flux2-klein"), ("sd3.5-large", "sd3"),
                                    ("z-image-turbo", "zimage"), ("kontext-dev", "flux1-kontext"),
                                    ("sd15", "sd1"))]
    dialog = ModelsDialog(discover=lambda settings: entries)
    qtbot.addWidget(dialog)
    assert [r[2] for r in rows(dialog)] == ["FLUX.2 klein", "SD3.5", "Z-Image", "FLUX.1 Kontext",
                                            "SD 1.x"]
    intro = " ".join(label.text() for label in dialog.findChildren(QLabel))
    assert ("SDXL, SD3.5, Z-Image, FLUX.2 klein, FLUX.1, FLUX.1 Kontext and Qwen-Image-Edit "
            "models found") in intro
    expected = ["4 steps, guidance built in", "Large 28, with CFG", "Z-Image-Turbo: 8 steps, no CFG",
                "FLUX.1 [dev] Non-Commercial License"]
    for row, words in enumerate(expected):
        dialog.table.selectRow(row)
        detail = dialog.detail.text()
        assert words in detail and "runs DiffEdit, Blended, SDEdit and FlowEdit" in detail
    assert "Kontext [dev]: Instruction edit" in dialog.detail.text()
    dialog.table.selectRow(2)
    assert "Apache-2.0" in dialog.detail.text()
    dialog.table.selectRow(4)  # SD 1.x: no note
    assert dialog.detail.text() == f"sd15 — SD 1.x, 1.0 GB: {tmp_path / 'sd15'}"


@pytest.mark.parametrize("damage", ["fifo", "nested", "huge-layers"])
def test_a_hostile_model_folder_is_listed_as_unusable_beside_the_others(qtbot, library, damage):
    import os

    bad = library / "hostile"
    (bad / "unet").mkdir(parents=True)
    (bad / "model_index.json").write_text(json.dumps(
        {"unet": [], "vae": [], "text_encoder": [], "tokenizer": [], "scheduler": []}))
    config = bad / "unet" / "config.json"
    if damage == "fifo":
        os.mkfifo(config)  # reading it would block the dialog forever
    elif damage == "nested":
        config.write_text("[" * 100_000 + "]" * 100_000)
    else:
        config.write_text(json.dumps({"layers_per_block": 100_000}))
    dialog = ModelsDialog()
    qtbot.addWidget(dialog)
    table = rows(dialog)
    assert [r[1] for r in table][:2] == ["portrait-sd15", "v2-1_768-ema-pruned"]
    hostile = next(i for i, r in enumerate(table) if r[1] == "hostile")
    assert table[hostile][0] == "Not usable"
    assert {"fifo": "FIFO", "nested": "nested too deeply", "huge-layers": "layers_per_block"}[damage] \
        in dialog.table.item(hostile, 1).toolTip()
