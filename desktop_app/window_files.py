"""The main window's file commands: open (dialog, recent, samples, paste, drop), export, the
batch command line, and loading and saving masks. A mixin of MainWindow, which owns the
document (``doc``), the settings, the run controller and the status bar these use."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QStandardPaths, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFileDialog, QInputDialog, QMessageBox

from desktop_app import photo_io
from desktop_app.dialogs import APP_TITLE, BatchDialog, TextDialog, ask, show_error
from engine.batch import command_line
from engine.errors import InputError
from engine.resources import resource_path


class WindowFiles:
    """Open, export and mask-file commands of the main window (used as its base class)."""

    def confirm_discard(self, doing: str) -> bool:
        """True when there is no unexported work or the user agrees to lose or export it."""
        if not self.doc.has_unexported_work():
            return True
        answer = ask(self, APP_TITLE, f"{self.doc.display_name} has edits that were not exported. "
                     f"Export them before {doing}?",
                     QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                     | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Save,
                     labels={QMessageBox.StandardButton.Save: "Export\u2026"})
        if answer == QMessageBox.StandardButton.Save:
            return self.export_dialog()
        return answer == QMessageBox.StandardButton.Discard

    def open_dialog(self) -> None:
        start = self.settings.recent_files()[0] if self.settings.recent_files() else str(Path.home())
        path, _ = QFileDialog.getOpenFileName(
            self, "Open a photo", str(Path(start).parent),
            "Images (*.png *.jpg *.jpeg *.webp *.tif *.tiff *.bmp);;All files (*)")
        if path:
            self.open_path(path)

    def open_path(self, path, display_name: str = "") -> bool:
        if not self.confirm_discard("opening another photo"):
            return False
        try:
            photo = photo_io.load_photo(path)
        except InputError as exc:
            show_error(self, "Cannot open the photo", str(exc))
            return False
        except Exception as exc:  # an unreadable file must never take the app down
            show_error(self, "Cannot open the photo", f"{Path(path).name} could not be read: {exc}")
            return False
        self.settings.add_recent(path)
        self._set_photo(photo, display_name)
        return True

    def open_photo(self, photo, display_name: str) -> bool:
        """Open an in-memory photo (clipboard, dropped picture)."""
        if not self.confirm_discard("opening another photo"):
            return False
        self._set_photo(photo, display_name)
        return True

    def _set_photo(self, photo, display_name: str) -> None:
        if self.runs.running:
            self.cancel()
        self.doc.set_photo(photo, display_name)
        for warning in getattr(photo, "warnings", []) or []:
            self.statusBar().showMessage(warning, 10000)

    def paste(self) -> None:
        clipboard = QGuiApplication.clipboard()
        mime = clipboard.mimeData()
        if mime is not None and mime.hasUrls():
            files = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()]
            if files:
                self.open_path(files[0])
                return
        try:
            photo = photo_io.photo_from_qimage(clipboard.image())
        except InputError as exc:
            show_error(self, "Paste", str(exc))
            return
        self.open_photo(photo, "Pasted photo")

    def dragEnterEvent(self, event) -> None:
        mime = event.mimeData()
        if mime.hasImage() or any(u.isLocalFile() for u in mime.urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        mime = event.mimeData()
        files = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()]
        if files:
            event.acceptProposedAction()
            QTimer.singleShot(0, lambda: self.open_path(files[0]))  # not inside the drag loop
        elif mime.hasImage():
            event.acceptProposedAction()
            image = mime.imageData()
            QTimer.singleShot(0, lambda: self._open_dropped_image(image))

    def _open_dropped_image(self, image) -> None:
        try:
            self.open_photo(photo_io.photo_from_qimage(image), "Dropped photo")
        except InputError as exc:
            show_error(self, "Cannot open the picture", str(exc))

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        files = self.settings.recent_files()
        for path in files:
            action = self.recent_menu.addAction(Path(path).name)
            action.setToolTip(path)
            action.setStatusTip(path)
            action.triggered.connect(lambda _=False, p=path: self.open_path(p))
        if not files:
            self.recent_menu.addAction("No recent photos").setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear List", self.settings.clear_recent)

    def _fill_samples(self) -> None:
        self.sample_menu.clear()
        for path, description in photo_io.sample_photos():
            action = self.sample_menu.addAction(f"{path.stem.title()} \u2014 {description.split(' (')[0]}")
            action.setToolTip(description)
            action.setStatusTip(description)
            action.triggered.connect(lambda _=False, p=path, d=description: self.open_sample(p, d))
        self.sample_menu.addSeparator()
        self.sample_menu.addAction(self.actions["credits"])

    def open_sample(self, path: Path, description: str = "") -> bool:
        if self.open_path(path):
            self.statusBar().showMessage(f"Sample photo {path.name}: {description}", 15000)
            return True
        return False

    def sample_credits(self) -> None:
        try:
            text = resource_path("samples", "README.md").read_text(encoding="utf-8")
        except OSError:
            text = "The sample photos' credits file is missing from this installation."
        TextDialog("Sample photo credits", text, self).exec()

    def batch_dialog(self) -> None:
        """Batch editing is the CLI's (hours of work that must survive a crash, or a cluster, away
        from the photo being edited here): the command for the current settings, to copy."""
        source, target = self.params.prompts()
        line = command_line(self.settings.engine().default_model, self.params.method_key(), source,
                            target, self.params.params(), self.params.options())
        BatchDialog(line, self).exec()

    def export_dialog(self) -> bool:
        """Ask where (in the last export's folder, as the photo's own format) and, for JPEG or
        WebP, how fine; then export the image on the canvas. A write that fails says why and
        asks again. True when a file was written."""
        if self.doc.shown_image() is None:
            return False
        original = Path(self.doc.photo.path) if getattr(self.doc.photo, "path", None) else None
        suffix = photo_io.export_suffix(original)
        start = self._export_folder(original) / f"{original.stem if original else 'photo'}-edited{suffix}"
        while True:
            path, chosen = QFileDialog.getSaveFileName(
                self, "Export image", str(start), ";;".join(photo_io.EXPORT_FILTERS),
                photo_io.export_filter(suffix))
            if not path:
                return False
            path = Path(path)
            if not path.suffix:
                path = path.with_suffix(photo_io.EXPORT_FILTERS.get(chosen, suffix))
            if original is not None and path.resolve() == original.resolve():
                answer = ask(self, "Overwrite the original?",
                             f"{path.name} is the photo you opened. Replace the original with the "
                             "edit? This cannot be undone.", default=QMessageBox.StandardButton.No)
                if answer != QMessageBox.StandardButton.Yes:
                    return False
            quality = self._ask_quality(path)
            if quality is None:
                return False
            if self.export_to(path, quality):
                self.settings.set_export_folder(path.parent)
                return True
            start = path  # the error was shown: choose another place or name

    def _export_folder(self, original: Path | None) -> Path:
        """The last export's folder; else the photo's own unless it ships with the app (a
        sample); else the Pictures folder."""
        remembered = self.settings.export_folder()
        if remembered is not None:
            return remembered
        if original is not None and original.parent.resolve() != resource_path("samples").resolve():
            return original.parent
        pictures = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation)
        return Path(pictures) if pictures and Path(pictures).is_dir() else Path.home()

    def _ask_quality(self, path: Path) -> int | None:
        """JPEG/WebP quality (remembered); PNG and TIFF are lossless. None: cancelled."""
        if path.suffix.lower() not in photo_io.QUALITY_SUFFIXES:
            return self.settings.export_quality()
        kind = "WebP" if path.suffix.lower() == ".webp" else "JPEG"
        quality, ok = QInputDialog.getInt(
            self, f"{kind} quality", "Quality (1-100): higher keeps finer detail in a larger file.",
            self.settings.export_quality(), 1, 100, 1)
        if not ok:
            return None
        self.settings.set_export_quality(quality)
        return quality

    def export_to(self, path, quality: int | None = None) -> bool:
        """Write the image on the canvas to ``path`` (JPEG/WebP at ``quality``, default the
        remembered one); an error is shown and False returned."""
        try:
            written = photo_io.export(path, self.doc.shown_photo(), self.doc.shown_image(),
                                      self.doc.shown_metadata(),
                                      quality or self.settings.export_quality())
        except InputError as exc:
            show_error(self, "Export failed", str(exc))
            return False
        except OSError as exc:
            show_error(self, "Export failed", f"Could not write {path}: {exc.strerror or exc}. "
                       "Check that the folder exists and is writable, and that the disk has space.",
                       kind="error")
            return False
        self.doc.mark_exported()
        self.statusBar().showMessage(f"Exported {written}", 8000)
        return True

    def load_mask_dialog(self) -> None:
        if not self.doc.has_photo:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Load a mask", "", "Images (*.png *.jpg *.webp *.tif)")
        if path:
            self.load_mask(path)

    def load_mask(self, path) -> bool:
        try:
            mask = photo_io.read_mask(path, self.doc.size)
        except InputError as exc:
            show_error(self, "Cannot load the mask", str(exc))
            return False
        self.doc.load_mask(mask)
        return True

    def save_mask_dialog(self) -> None:
        if not self.doc.has_photo:
            return
        stem = Path(self.doc.display_name).stem
        path, _ = QFileDialog.getSaveFileName(self, "Save the mask", f"{stem}-mask.png", "PNG image (*.png)")
        if path:
            self.save_mask(path)

    def save_mask(self, path) -> bool:
        try:
            path = photo_io.write_mask(path, self.doc.composed)
        except (InputError, OSError) as exc:
            show_error(self, "Cannot save the mask", str(exc))
            return False
        self.statusBar().showMessage(f"Saved the mask to {path}", 8000)
        return True
