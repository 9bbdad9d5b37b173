"""Export proposes the photo's own format in the last export's folder, asks JPEG/WebP quality,
and a write that fails says why and asks again."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtWidgets import QFileDialog

from engine.resources import resource_path
from test_window import run_and_wait


class SaveAnswers:
    """Stands in for the save dialog: records where each call starts, answers in turn."""

    def __init__(self, monkeypatch, *answers):
        self.answers, self.calls = list(answers), []
        monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(self))

    def __call__(self, parent, title, start, filters, selected="", *args, **kwargs):
        self.calls.append((Path(start), selected))
        return (str(self.answers.pop(0)) if self.answers else ""), selected


@pytest.fixture
def jpeg_window(qtbot, window, tmp_path):
    photo = tmp_path / "shoot" / "rocket.jpg"
    photo.parent.mkdir()
    shutil.copy(resource_path("samples", "rocket.jpg"), photo)
    assert window.open_path(photo)
    run_and_wait(qtbot, window)
    return window


def test_a_jpeg_photo_exports_as_jpeg_at_the_quality_asked(jpeg_window, monkeypatch, dialogs,
                                                          tmp_path):
    out = tmp_path / "exports"
    out.mkdir()
    saves = SaveAnswers(monkeypatch, out / "fine.jpg", out / "small.jpg")
    dialogs.quality = 97
    assert jpeg_window.export_dialog()
    start, selected = saves.calls[0]
    assert start == tmp_path / "shoot" / "rocket-edited.jpg" and selected.startswith("JPEG")
    assert ("number", "JPEG quality") == dialogs.shown[-1][:2]
    dialogs.quality = 20
    assert jpeg_window.export_dialog()
    assert saves.calls[1][0].parent == out, "the second export starts where the first went"
    assert (out / "small.jpg").stat().st_size < (out / "fine.jpg").stat().st_size / 2
    assert jpeg_window.settings.export_quality() == 20  # proposed next time
    with Image.open(out / "fine.jpg") as image:
        assert image.format == "JPEG" and image.size == jpeg_window.doc.size


def test_the_export_folder_is_remembered_across_a_restart(jpeg_window, monkeypatch, settings,
                                                         tmp_path):
    SaveAnswers(monkeypatch, tmp_path / "rocket-edited.jpg")
    assert jpeg_window.export_dialog()
    from desktop_app.settings import AppSettings

    assert AppSettings(settings.q).export_folder() == tmp_path


def test_a_sample_photo_does_not_export_into_the_apps_own_folder(window, qtbot, monkeypatch):
    assert window.open_path(resource_path("samples", "coffee.png"))
    run_and_wait(qtbot, window)
    saves = SaveAnswers(monkeypatch)  # cancelled
    assert window.export_dialog() is False
    start, selected = saves.calls[0]
    assert start.parent != resource_path("samples") and start.suffix == ".png"
    assert selected.startswith("PNG")


def test_a_failed_export_shows_why_and_reopens_the_dialog(jpeg_window, monkeypatch, dialogs,
                                                         tmp_path):
    missing = tmp_path / "gone" / "edit.png"
    saves = SaveAnswers(monkeypatch, missing, tmp_path / "edit.png")
    assert jpeg_window.export_dialog() is True
    assert "does not exist" in dialogs.texts()
    assert [start for start, _ in saves.calls] == [tmp_path / "shoot" / "rocket-edited.jpg", missing]
    assert (tmp_path / "edit.png").is_file() and not jpeg_window.doc.has_unexported_work()
