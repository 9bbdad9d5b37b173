"""Dialogs: error and question boxes, Settings, keyboard shortcuts, sample-photo credits, batch."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QGuiApplication, QKeySequence
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QHeaderView, QLabel, QLineEdit, QMessageBox,
                               QPlainTextEdit, QPushButton, QSpinBox, QTableWidget,
                               QTableWidgetItem, QTabWidget, QTextBrowser, QVBoxLayout, QWidget)

from desktop_app.lora_list import LoraList
from desktop_app.panels.fields import param_box
from desktop_app.worker import TINY_MODEL
from engine.config import MAX_THREADS, physical_cores
from engine.families import SUPPORTED
from engine.params import EditParams
from engine.transformer_file import SUFFIXES

APP_TITLE = "DiffEdit Studio"
TINY_NOTE = "random weights: produces noise, for trying the workflow"


ERROR_ICONS = {"warning": QMessageBox.Icon.Warning, "error": QMessageBox.Icon.Critical}


def sentence(message: str) -> str:
    """The engine's InputError texts read like log lines ("the clipboard holds no picture; copy
    an image first"); a dialog shows them as a sentence: capital first letter, closing full stop.
    A first word that is not a plain lower-case word (a file name such as notes.jpg, a path, an
    option name) is left as it is."""
    text = message.strip()
    if not text:
        return text
    first = text.split(None, 1)[0].rstrip(",;:")
    if first.isalpha() and first.islower():
        text = text[0].upper() + text[1:]
    # A sentence that already ends, perhaps inside a closing quote or bracket, gets no second stop.
    if text.rstrip("\"'\u201d\u2019)")[-1:] not in (".", "!", "?"):
        text += "."
    return text


def show_error(parent, title: str, message: str, details: str = "", kind: str | None = None) -> None:
    """A modal message box for something that went wrong; technical details (a traceback) go
    behind "Show Details". ``kind`` "warning" (a user mistake or a problem the user can fix: the
    Warning icon) or "error" (the app failed: the Critical icon); by default a message with
    details is an error and one without a warning."""
    if kind is None:
        kind = "error" if details else "warning"
    if kind not in ERROR_ICONS:
        raise ValueError(f"show_error kind must be 'warning' or 'error', not {kind!r}")
    box = QMessageBox(ERROR_ICONS[kind], title, sentence(message), QMessageBox.StandardButton.Ok,
                      parent)
    if details:
        box.setDetailedText(details)
    box.exec()


def ask(parent, title: str, question: str, buttons=None, default=None, labels=None):
    """A modal question; returns the StandardButton clicked. ``labels`` renames buttons
    ({StandardButton: text}) where the standard word would mislead."""
    buttons = buttons or (QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
    box = QMessageBox(QMessageBox.Icon.Question, title, question, buttons, parent)
    for button, text in (labels or {}).items():
        box.button(button).setText(text)
    if default is not None:
        box.setDefaultButton(default)
    return QMessageBox.StandardButton(box.exec())


# ----------------------------------------------------------------------------- settings


def megabytes_box(value: int) -> QSpinBox:
    box = QSpinBox()
    box.setRange(64, 1 << 20)
    box.setSingleStep(256)
    box.setSuffix(" MB")
    box.setValue(value)
    return box


class SettingsDialog(QDialog):
    """Model, device, precision and the default parameters; OK saves them."""

    def __init__(self, settings, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.settings = settings
        engine = settings.engine()
        layout = QVBoxLayout(self)
        # Three pages, not three stacked groups: stacked, the dialog was 754 px tall and did not
        # fit a 1280x720 screen.
        self.tabs = QTabWidget()
        layout.addWidget(self.tabs)

        model_box = QWidget()
        form = QFormLayout(model_box)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        self.model = QLineEdit(engine.default_model)
        self.model.setPlaceholderText("Folder, .safetensors file or hub id")
        self.model.setToolTip(f"A model ({SUPPORTED}): a diffusers folder, a single .safetensors "
                              "checkpoint, or a hub id already in your local cache, such as "
                              "stabilityai/stable-diffusion-2-1-base.")
        self.model.setMinimumWidth(380)
        folder = QPushButton("Folder\u2026")
        folder.clicked.connect(self._choose_folder)
        single = QPushButton("File\u2026")
        single.clicked.connect(self._choose_file)
        tiny = QPushButton("Use the tiny test model (random weights)")
        tiny.setToolTip(f"A tiny model with {TINY_NOTE}")
        tiny.clicked.connect(lambda: self.model.setText(TINY_MODEL))
        row = QHBoxLayout()
        row.addWidget(self.model, 1)
        row.addWidget(folder)
        row.addWidget(single)
        form.addRow("Model", row)
        form.addRow("", tiny)
        self.transformer = QLineEdit(engine.transformer)
        self.transformer.setPlaceholderText("Optional: a .gguf (Q8_0, Q4_K_M, ...) or .safetensors "
                                            "(bf16, fp8) transformer")
        self.transformer.setToolTip("A transformer file used in place of the model's own "
                                    "(FLUX.2 klein, Z-Image, SD3.5): a GGUF takes about half the "
                                    "memory at Q8_0, a third at Q4_K_M; a .safetensors is the "
                                    "bf16 or fp8 single file ComfyUI uses. The model above gives "
                                    "the text encoder, VAE and configs. Leave empty for the "
                                    "model's own.")
        choose = QPushButton("File\u2026")
        choose.clicked.connect(self._choose_transformer)
        row = QHBoxLayout()
        row.addWidget(self.transformer, 1)
        row.addWidget(choose)
        form.addRow("Transformer file", row)
        hint = QLabel("Models are never downloaded from here; use Models\u2026 to fetch one.\n"
                      f"\u201c{TINY_MODEL}\u201d is the tiny test model ({TINY_NOTE}).")
        # Two short lines, broken by hand, and the height they need: the form gave a wrapped
        # label less, and cut off both lines' lower halves.
        hint.setMinimumHeight(hint.sizeHint().height())
        form.addRow(hint)
        self.device = QComboBox()
        for key, label in (("auto", "Automatic (CUDA, then Apple MPS, then CPU)"), ("cuda", "CUDA GPU"),
                           ("mps", "Apple MPS"), ("cpu", "CPU")):
            self.device.addItem(label, key)
        self.device.setCurrentIndex(max(0, self.device.findData(engine.device)))
        self.dtype = QComboBox()
        for key, label in (("auto", "Automatic (float16 on GPU, float32 on CPU)"),
                           ("float16", "float16 (half the memory)"), ("bfloat16", "bfloat16"),
                           ("float32", "float32 (most exact, slowest)")):
            self.dtype.addItem(label, key)
        self.dtype.setCurrentIndex(max(0, self.dtype.findData(engine.dtype)))
        self.memory = QComboBox()
        for key, label in (("auto", "Automatic (from free GPU memory)"),
                           ("full", "Full (fastest, most memory)"),
                           ("sliced", "Sliced attention, tiled VAE (4-8 GB GPUs)"),
                           ("offload", "Offload weights to the CPU (smallest GPUs, slowest)")):
            self.memory.addItem(label, key)
        self.memory.setCurrentIndex(max(0, self.memory.findData(engine.memory)))
        self.memory.setToolTip("How much GPU memory a run may use. After running out of memory, "
                               "the app retries once a step lower; choose a lower step here if it "
                               "keeps happening. No effect on the CPU.")
        self.threads = QSpinBox()
        self.threads.setRange(0, MAX_THREADS)
        self.threads.setSpecialValueText(f"Automatic ({physical_cores()}, the physical cores)")
        self.threads.setValue(engine.threads if isinstance(engine.threads, int) else 0)
        self.threads.setToolTip("CPU threads for the model's arithmetic (also used on a GPU for "
                                "the CPU-side work). Fewer than the cores keeps a busy machine "
                                "responsive. Used from the next model load.")
        self.loras = LoraList(settings.loras())
        form.addRow("LoRAs", self.loras)
        form.addRow("Device", self.device)
        form.addRow("Precision", self.dtype)
        form.addRow("GPU memory", self.memory)
        form.addRow("CPU threads", self.threads)
        self.tabs.addTab(model_box, "Model")

        defaults = settings.default_params()
        params_box = QWidget()
        pform = QFormLayout(params_box)
        pform.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        self.steps, self.strength, self.guidance, self.threshold, self.samples, self.feather = (
            param_box(name, getattr(defaults, name)) for name in
            ("steps", "strength", "guidance", "mask_threshold", "mask_samples", "feather"))
        for label, widget in (("Steps", self.steps), ("Strength", self.strength),
                              ("Guidance", self.guidance), ("Mask threshold", self.threshold),
                              ("Mask samples", self.samples), ("Edge feather", self.feather)):
            pform.addRow(label, widget)
        reset = QPushButton("Restore factory defaults")
        reset.clicked.connect(self._reset)
        pform.addRow("", reset)
        family_note = QLabel("A model family with values of its own (FLUX.2 klein and the other "
                             "few-step models: their steps, no guidance) shows those when it "
                             "loads, unless you changed the value on the panel.")
        family_note.setWordWrap(True)
        pform.addRow(family_note)
        self.tabs.addTab(params_box, "Defaults for new edits")

        history_box = QWidget()
        hform = QFormLayout(history_box)
        self.history_memory, self.undo_memory = (megabytes_box(value) for value in (
            settings.history_memory_mb(), settings.undo_memory_mb()))
        hform.addRow("Results in memory", self.history_memory)
        note = QLabel("Beyond this, older results are kept on disk in a temporary folder and read "
                      "back when you show them (a 12 MP result with its mask takes up to 84 MB). "
                      "The folder is removed when the app closes.")
        note.setWordWrap(True)
        hform.addRow(note)
        self.undo_memory.setToolTip("Undo keeps only what each step changed (a brush stroke the "
                                    "tiles it touched); beyond this the oldest steps are dropped.")
        hform.addRow("Undo memory", self.undo_memory)
        self.tabs.addTab(history_box, "History and undo")

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a diffusers model folder",
                                                  self.model.text() or str(Path.home()))
        if folder:
            self.model.setText(folder)

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a checkpoint", str(Path.home()),
                                              "Safetensors checkpoints (*.safetensors)")
        if path:
            self.model.setText(path)

    def _choose_transformer(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a transformer file", str(Path.home()),
                                              "Transformer files (*.gguf *.safetensors)")
        if path:
            self.transformer.setText(path)

    def _transformer_path(self) -> str:
        text = self.transformer.text().strip()
        return str(Path(text).expanduser()) if text else ""

    def _reset(self) -> None:
        d = EditParams()
        self.steps.setValue(d.steps)
        self.strength.setValue(d.strength)
        self.guidance.setValue(d.guidance)
        self.threshold.setValue(d.mask_threshold)
        self.samples.setValue(d.mask_samples)
        self.feather.setValue(d.feather)

    def problem(self) -> str:
        """Why the values cannot be saved, or "" when they can."""
        text = self.model.text().strip()
        looks_like_path = text.startswith(("/", "~", ".", "\\")) or (len(text) > 1 and text[1] == ":")
        if text and text != TINY_MODEL and looks_like_path and not Path(text).expanduser().exists():
            return (f"The model path {text} does not exist. Choose a diffusers folder or a "
                    ".safetensors file, or leave it empty.")
        transformer = self._transformer_path()
        if transformer and (Path(transformer).suffix.lower() not in SUFFIXES
                            or not Path(transformer).is_file()):
            return (f"The transformer file {transformer} is not an existing .gguf or "
                    ".safetensors file. Choose one, or leave the field empty for the model's own "
                    "transformer.")
        missing = self.loras.missing()
        if missing:
            return (f"The LoRA file {missing[0]} does not exist. Remove it from the list or add "
                    "it again from where it is now.")
        return ""

    def accept(self) -> None:
        problem = self.problem()
        if problem:
            show_error(self, "Settings", problem)
            return
        model = self.model.text().strip()
        if model.startswith("~"):
            model = str(Path(model).expanduser())
        self.settings.save_engine(model, self.device.currentData(), self.dtype.currentData(),
                                  self.memory.currentData(), self.threads.value(),
                                  transformer=self._transformer_path())
        self.settings.set_loras(self.loras.specs())
        self.settings.set_default_params(self.settings.default_params().replace(
            steps=self.steps.value(), strength=round(self.strength.value(), 4),
            guidance=round(self.guidance.value(), 4), mask_threshold=round(self.threshold.value(), 4),
            mask_samples=self.samples.value(), feather=self.feather.value()))
        self.settings.set_history_memory_mb(self.history_memory.value())
        self.settings.set_undo_memory_mb(self.undo_memory.value())
        super().accept()


# ----------------------------------------------------------------------------- shortcuts

# Keys the canvas handles itself (not actions). "[", "]" and Esc are actions (Smaller Brush,
# Larger Brush, Cancel Run) and get their rows from them.
CANVAS_KEYS = [
    ("Mouse wheel", "Zoom in or out under the cursor"),
    ("Space + drag, middle drag", "Pan"),
    ("Hold \\", "Show the photo before the edit"),
]
# Action labels that are too short out of their menu: the Mask menu's "Invert" and "Clear".
SHORTCUT_LABELS = {"Invert": "Invert mask", "Clear": "Clear mask"}


def shortcut_label(action) -> str:
    """The action's name for the shortcuts table: its short label (no "&", no "\u2026"), never
    the undo stack's step text ("Undo Eraser stroke" is listed as "Undo")."""
    label = action.iconText().strip()
    for fixed in ("Undo", "Redo"):
        if label.startswith(fixed + " "):
            label = fixed
    return SHORTCUT_LABELS.get(label, label)


def shortcut_rows(actions) -> list[tuple[str, str]]:
    """(keys, action name) for each action with a shortcut, every key of one action in one row,
    then the canvas's own keys."""
    rows = []
    for action in actions:
        keys = [k.toString(QKeySequence.SequenceFormat.NativeText) for k in action.shortcuts()]
        # A standard key may have no binding on this platform (""), or repeat an explicit one.
        keys = list(dict.fromkeys(k for k in keys if k))
        if keys:
            rows.append((" or ".join(keys), shortcut_label(action)))
    return rows + CANVAS_KEYS


class ShortcutsDialog(QDialog):
    """Built from the window's actions, so it can never disagree with them."""

    def __init__(self, actions, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        rows = shortcut_rows(actions)
        table = QTableWidget(len(rows), 2)
        table.setHorizontalHeaderLabels(["Keys", "Action"])
        table.verticalHeader().setVisible(False)
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        table.setSelectionMode(QTableWidget.SelectionMode.NoSelection)
        for r, (keys, what) in enumerate(rows):
            table.setItem(r, 0, QTableWidgetItem(keys))
            table.setItem(r, 1, QTableWidgetItem(what))
        table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        table.horizontalHeader().setStretchLastSection(True)
        self.table = table
        layout = QVBoxLayout(self)
        layout.addWidget(table)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        layout.addWidget(close)
        self.resize(520, 560)


class TextDialog(QDialog):
    """Read-only Markdown (sample-photo credits, about)."""

    def __init__(self, title: str, markdown: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle(title)
        view = QTextBrowser()
        view.setOpenExternalLinks(True)
        view.setMarkdown(markdown)
        layout = QVBoxLayout(self)
        layout.addWidget(view)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        layout.addWidget(close)
        self.resize(720, 360)


class BatchDialog(QDialog):
    """File > Batch...: batch editing is a command-line feature; this shows the command for the
    current settings with a button that copies it."""

    def __init__(self, command: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Batch editing")
        intro = QLabel(
            "Batch editing runs from the command line, so that a catalogue can run for hours "
            "(or on a Ray cluster) without tying up the app, and a crash or Ctrl+C loses nothing: "
            "a rerun skips the photos already done. This command applies the current method, "
            "texts and parameters to every photo of a folder. Replace PHOTOS_FOLDER and "
            "RESULTS_FOLDER, or give a manifest (.jsonl or .csv, one line per photo) instead of "
            "the folder (diffedit-studio batch --help lists the fields).")
        intro.setWordWrap(True)
        self.command = QPlainTextEdit(command)
        self.command.setReadOnly(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        copy = buttons.addButton("&Copy Command", QDialogButtonBox.ButtonRole.ActionRole)
        copy.clicked.connect(self.copy)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.command)
        layout.addWidget(buttons)
        self.resize(640, 240)

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.command.toPlainText())


def no_model_text() -> str:
    return (f"<b>No model is configured.</b> Choose a model ({SUPPORTED}: a diffusers folder, "
            "a .safetensors file, or a hub id in your local cache) in <i>Settings</i>, or get "
            "one with <i>Models</i>. To try the workflow right now, use the tiny test model "
            f"({TINY_NOTE}).")

