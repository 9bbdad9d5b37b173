"""The Models dialog: the models on this computer, the default one, adding places, downloading."""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from engine.catalog import ModelEntry, discover_models, format_size
from engine.config import Settings
from engine.downloads import offline_mode
from engine.errors import Cancelled, EngineError
from engine.families import SUPPORTED

COLUMNS = ("", "Name", "Family", "Size", "Source", "Location")
_KIND_LABELS = {"hub": "Hugging Face cache", "folder": "Folder", "file": "Single file"}
_SOURCE_ROLE = Qt.ItemDataRole.UserRole


class _DownloadSignals(QObject):
    # 64-bit byte counts travel as Python objects: a Qt int would overflow past 2 GB.
    progress = Signal(object, object, str)
    finished = Signal(str)
    failed = Signal(str)
    cancelled = Signal()


class _DownloadJob(QRunnable):
    """One download on a pool thread.

    DESIGN.md keeps QThread ownership in desktop_app/worker.py, whose single long-lived thread
    owns the model and the edit sessions. A download is plain network and disk I/O that needs
    neither, and must not wait in line behind a minutes-long edit, so it runs as a QRunnable on
    this dialog's own QThreadPool: Qt owns and recycles the thread, nothing here subclasses or
    manages a QThread, and results come back through queued signals to the GUI thread.
    """

    def __init__(self, download, repo_id: str, stop: threading.Event, signals: _DownloadSignals):
        super().__init__()
        self._download, self._repo_id, self._stop, self.signals = download, repo_id, stop, signals

    def run(self) -> None:
        try:
            folder = self._download(
                self._repo_id,
                on_progress=lambda done, total, name: self.signals.progress.emit(done, total, name),
                should_stop=self._stop.is_set,
            )
        except Cancelled:
            self.signals.cancelled.emit()
        except EngineError as exc:
            self.signals.failed.emit(str(exc))
        except Exception as exc:  # noqa: BLE001 - a pool thread must report, never die silently
            self.signals.failed.emit(f"the download failed unexpectedly: {type(exc).__name__}: {exc}")
        else:
            self.signals.finished.emit(str(folder))


class ModelsDialog(QDialog):
    """Lists models (engine.catalog), sets the default (engine.config.Settings, shared with the
    CLI), adds folders and files, and downloads by Hugging Face id (engine.downloads)."""

    default_changed = Signal(str)  # the new Settings.default_model
    models_changed = Signal()  # places added or a download finished

    def __init__(self, parent: QWidget | None = None, *, discover=None, download=None):
        super().__init__(parent)
        self._discover = discover or discover_models
        if download is None:
            from engine.downloads import download_model as download
        self._download = download
        self._entries: list[ModelEntry] = []
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._stop = threading.Event()
        self._job: _DownloadJob | None = None
        self._downloaded_folder = ""

        self.setWindowTitle("Models")
        self.setMinimumSize(820, 520)
        self._build()
        self.refresh()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        title = QLabel("Models on this computer")
        font = title.font()
        font.setPointSizeF(font.pointSizeF() * 1.3)
        font.setBold(True)
        title.setFont(font)
        intro = QLabel(
            f"{SUPPORTED} models found in the Hugging Face cache, in your model folders and as "
            "single .safetensors files. The default model is used by the editor and by the "
            "diffedit-studio command line."
        )
        intro.setWordWrap(True)
        intro.setObjectName("hint")

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        header = self.table.horizontalHeader()
        header.setHighlightSections(False)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        for column, mode in enumerate((QHeaderView.ResizeMode.ResizeToContents,
                                       QHeaderView.ResizeMode.Interactive,
                                       QHeaderView.ResizeMode.ResizeToContents,
                                       QHeaderView.ResizeMode.ResizeToContents,
                                       QHeaderView.ResizeMode.ResizeToContents,
                                       QHeaderView.ResizeMode.Stretch)):
            header.setSectionResizeMode(column, mode)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemDoubleClicked.connect(lambda _item: self.set_default())

        self.empty_label = QLabel(
            "No models yet. Add a folder or a .safetensors file, or download a model below."
        )
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setObjectName("hint")

        self.detail = QLabel()
        self.detail.setWordWrap(True)
        self.detail.setObjectName("hint")
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.default_button = QPushButton("Set as default")
        self.default_button.setToolTip("Use the selected model in the editor and the command line")
        self.default_button.clicked.connect(self.set_default)
        self.add_folder_button = QPushButton("Add folder…")
        self.add_folder_button.setToolTip("A diffusers model folder, or a folder that contains models")
        self.add_folder_button.clicked.connect(self.add_folder)
        self.add_file_button = QPushButton("Add file…")
        self.add_file_button.setToolTip("A single-file SD 1.x/2.x checkpoint (.safetensors)")
        self.add_file_button.clicked.connect(self.add_file)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        actions = QHBoxLayout()
        actions.addWidget(self.default_button)
        actions.addStretch(1)
        for button in (self.add_folder_button, self.add_file_button, self.refresh_button):
            actions.addWidget(button)

        download_box = QGroupBox("Download from Hugging Face")
        self.repo_edit = QLineEdit()
        self.repo_edit.setPlaceholderText("owner/name, e.g. stable-diffusion-v1-5/stable-diffusion-v1-5")
        self.repo_edit.setClearButtonEnabled(True)
        self.repo_edit.returnPressed.connect(self.start_download)
        self.repo_edit.textChanged.connect(self._update_buttons)
        self.download_button = QPushButton("Download")
        self.download_button.clicked.connect(self.start_download)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_download)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)  # per mille: byte counts exceed a Qt int
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        self.download_status = QLabel(
            "Only safetensors weights, configs and tokenizer files are fetched. An interrupted "
            "download continues where it stopped when you start it again."
        )
        self.download_status.setWordWrap(True)
        self.download_status.setObjectName("hint")
        row = QHBoxLayout()
        row.addWidget(self.repo_edit, 1)
        row.addWidget(self.download_button)
        row.addWidget(self.cancel_button)
        box_layout = QVBoxLayout(download_box)
        box_layout.addLayout(row)
        box_layout.addWidget(self.progress)
        box_layout.addWidget(self.download_status)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)

        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        line.setFrameShadow(QFrame.Shadow.Sunken)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(18, 16, 18, 14)
        layout.setSpacing(10)
        layout.addWidget(title)
        layout.addWidget(intro)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.empty_label)
        layout.addWidget(self.detail)
        layout.addLayout(actions)
        layout.addSpacing(4)
        layout.addWidget(download_box)
        layout.addWidget(line)
        layout.addWidget(buttons)
        self.setStyleSheet("QLabel#hint { color: palette(placeholder-text); }")

    # ------------------------------------------------------------------ model list
    def refresh(self) -> None:
        selected = self.selected_entry()
        keep = selected.source if selected else None
        self._entries = self._discover(Settings.load())
        self.table.setRowCount(0)
        muted = self.palette().placeholderText().color()
        for entry in self._entries:
            row = self.table.rowCount()
            self.table.insertRow(row)
            badge = "Default" if entry.is_default else ("" if entry.usable else "Not usable")
            cells = (badge, entry.name, entry.family_label if entry.usable else "—",
                     entry.size_text if entry.size_bytes else "", _KIND_LABELS.get(entry.kind, entry.kind),
                     str(entry.path))
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(_SOURCE_ROLE, entry.source)
                tip = str(entry.path) if entry.usable else f"Not usable: {entry.problem}"
                item.setToolTip(tip)
                if column == 3:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if entry.is_default:
                    font = QFont(item.font())
                    font.setBold(True)
                    item.setFont(font)
                if not entry.usable:
                    item.setForeground(muted)
                if column == 0 and not entry.usable:
                    item.setForeground(QColor("#c0392b"))
                self.table.setItem(row, column, item)
            if entry.source == keep:
                self.table.selectRow(row)
        self.table.resizeColumnToContents(1)
        self.table.setColumnWidth(1, min(max(self.table.columnWidth(1), 180), 320))
        has_rows = bool(self._entries)
        self.table.setVisible(has_rows)
        self.empty_label.setVisible(not has_rows)
        if self.selected_entry() is None and has_rows:
            default_rows = [i for i, e in enumerate(self._entries) if e.is_default]
            self.table.selectRow(default_rows[0] if default_rows else 0)
        self._update_buttons()

    def entries(self) -> list[ModelEntry]:
        return list(self._entries)

    def selected_entry(self) -> ModelEntry | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows or rows[0].row() >= len(self._entries):
            return None
        return self._entries[rows[0].row()]

    def select_source(self, source: str) -> bool:
        for row, entry in enumerate(self._entries):
            if entry.source == source or str(entry.path) == source:
                self.table.selectRow(row)
                return True
        return False

    def set_default(self) -> None:
        entry = self.selected_entry()
        if entry is None or not entry.usable:
            return
        settings = Settings.load()
        settings.default_model = entry.source
        settings.save()
        self.refresh()
        self.select_source(entry.source)
        self.default_changed.emit(entry.source)

    def add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a model folder", str(Path.home()))
        if folder:
            self.add_place(folder)

    def add_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Add a model file", str(Path.home()), "Safetensors checkpoints (*.safetensors)"
        )
        if path:
            self.add_place(path)

    def add_place(self, place: str) -> bool:
        """Remember a folder or checkpoint file in Settings.model_folders if it holds a model."""
        path = Path(place).expanduser()
        settings = Settings.load()
        if str(path) in settings.model_folders:
            self.refresh()
            self.select_source(str(path))
            return True
        found = self._discover(Settings(model_folders=[str(path)]))
        found = [e for e in found if _inside(e.path, path)]
        if not any(e.usable for e in found):
            reason = "; ".join(f"{e.name}: {e.problem}" for e in found[:3]) or "no models were found there"
            QMessageBox.warning(
                self, "No usable model",
                f"{path} was not added: {reason}.\n\nDiffEdit Studio uses Stable Diffusion 1.x/2.x "
                "models as diffusers folders or single .safetensors files.",
            )
            return False
        settings.model_folders.append(str(path))
        settings.save()
        self.refresh()
        first = next(e for e in found if e.usable)
        self.select_source(first.source)
        self.models_changed.emit()
        return True

    # ------------------------------------------------------------------ download
    def start_download(self) -> None:
        repo_id = self.repo_edit.text().strip()
        if not repo_id or self.is_downloading():
            return
        self._stop.clear()
        self._downloaded_folder = ""
        signals = _DownloadSignals(self)
        signals.progress.connect(self._on_progress)
        signals.finished.connect(self._on_finished)
        signals.failed.connect(self._on_failed)
        signals.cancelled.connect(self._on_cancelled)
        self._job = _DownloadJob(self._download, repo_id, self._stop, signals)
        self.progress.setValue(0)
        self.progress.setFormat("Connecting…")
        self.download_status.setText(f"Looking up {repo_id} on huggingface.co…")
        self._pool.start(self._job)
        self._update_buttons()

    def cancel_download(self) -> None:
        if self.is_downloading():
            self._stop.set()  # read by the pool thread between chunks; a signal would queue
            self.download_status.setText("Stopping…")
            self.cancel_button.setEnabled(False)

    def is_downloading(self) -> bool:
        return self._job is not None

    def _on_progress(self, done, total, name) -> None:
        if total:
            self.progress.setValue(int(1000 * done / total))
            self.progress.setFormat(f"{format_size(done)} of {format_size(total)}  (%p%)")
        if name:
            self.download_status.setText(f"Downloading {name}")

    def _on_finished(self, folder: str) -> None:
        self._job = None
        self._downloaded_folder = folder
        self.progress.setValue(1000)
        self.progress.setFormat("Done")
        self.download_status.setText(f"Downloaded to {folder}. Select it and press “Set as default” to use it.")
        self.refresh()
        self.select_source(folder)
        self.models_changed.emit()

    def _on_failed(self, message: str) -> None:
        self._job = None
        self.progress.setFormat("Failed")
        self.download_status.setText(f"Download failed: {message}")
        self._update_buttons()

    def _on_cancelled(self) -> None:
        self._job = None
        self.progress.setFormat("Cancelled")
        self.download_status.setText("Download cancelled. Start it again to continue where it stopped.")
        self._update_buttons()

    # ------------------------------------------------------------------ state
    def _update_buttons(self) -> None:
        entry = self.selected_entry()
        self.default_button.setEnabled(bool(entry and entry.usable and not entry.is_default))
        if entry is None:
            self.detail.setText("")
        elif entry.usable:
            note = f" ({entry.family_note})" if entry.family_note else ""
            self.detail.setText(f"{entry.name} — {entry.family_label}{note}, {entry.size_text}: "
                                f"{entry.path}")
        else:
            self.detail.setText(f"{entry.name} cannot be used: {entry.problem}")
        busy = self.is_downloading()
        offline = offline_mode()
        self.repo_edit.setEnabled(not busy and not offline)
        self.download_button.setEnabled(not busy and not offline and bool(self.repo_edit.text().strip()))
        self.cancel_button.setEnabled(busy and not self._stop.is_set())
        self.progress.setVisible(busy or self.progress.format() in ("Done", "Failed", "Cancelled"))
        if offline and not busy:
            self.download_status.setText(
                "Downloads are off because HF_HUB_OFFLINE is set. Unset it and restart DiffEdit "
                "Studio to download models."
            )

    def done(self, result: int) -> None:
        """Closing stops a running download (it resumes next time) before the dialog goes away."""
        if self.is_downloading():
            answer = QMessageBox.question(
                self, "Download in progress",
                "Stop the download? It continues where it stopped when you start it again.",
            )
            if answer != QMessageBox.StandardButton.Yes:
                return
            self._stop.set()
        self._pool.waitForDone()  # the job's signals belong to this dialog
        super().done(result)


def _inside(path: Path, place: Path) -> bool:
    try:
        Path(path).resolve().relative_to(place.resolve())
        return True
    except ValueError:
        return False
