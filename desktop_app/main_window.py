"""The main window: menus, toolbar, canvas, docks, status bar, and the run/cancel/result flow."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (QColorDialog, QDockWidget, QFileDialog, QFrame, QHBoxLayout, QLabel,
                               QMainWindow, QMessageBox, QProgressBar, QPushButton, QScrollArea,
                               QSizePolicy, QSlider, QVBoxLayout, QWidget)

from desktop_app import photo_io
from desktop_app.autosave import Autosaver
from desktop_app.canvas import BRUSH, ERASER, PAINT, Canvas
from desktop_app.canvas.items import colour_swatch
from desktop_app.dialogs import (TINY_NOTE, SettingsDialog, ShortcutsDialog, TextDialog, ask,
                                 no_model_text, show_error)
from desktop_app.document import Document
from desktop_app.icons import icon
from desktop_app.panels.history import HistoryPanel
from desktop_app.panels.mask import MaskPanel
from desktop_app.panels.params import ParamsPanel
from desktop_app.method_runs import run_inputs
from desktop_app.methods import finds_mask, needs_source, shows
from desktop_app.worker import TINY_MODEL, EditRequest, LoadModelRequest, MaskRequest
from engine import masks
from engine.errors import InputError
from engine.resources import resource_path

APP_TITLE = "DiffEdit Studio"
STAGE_NAMES = {"mask": "Finding the mask", "encode": "Encoding the photo", "decode": "Editing"}


@dataclass
class Job:
    """The run in progress, as the GUI sees it. Nothing reaches the document until it finishes."""

    kind: str  # "mask" | "edit"
    job_id: int
    generation: int  # document.generation when started: results for another photo are dropped
    photo_key: str = ""  # the base pixels it ran on: a result for pixels since replaced is dropped
    group: int = 0
    mask: np.ndarray | None = None
    variations: int = 1
    plan: dict = field(default_factory=dict)  # stage -> steps per variation, for "time left"
    started: float = field(default_factory=time.perf_counter)
    stage: str = ""
    stage_started: float = 0.0
    seconds_per_step: float = 0.0
    results: list = field(default_factory=list)
    heatmap: np.ndarray | None = None
    error: tuple[str, str] | None = None
    cancelled: bool = False


class MainWindow(QMainWindow):
    def __init__(self, settings, engine, parent=None):
        super().__init__(parent)
        self.settings = settings
        self.engine = engine
        self.doc = Document(self)
        self.job: Job | None = None
        self.model_state = "none"  # none | loading | ready | failed
        self.model_message = ""
        self.model_source = ""
        self.setWindowTitle(APP_TITLE)
        self.setWindowIcon(icon("app_logo"))
        self.setAcceptDrops(True)
        self.setDockOptions(QMainWindow.DockOption.AnimatedDocks | QMainWindow.DockOption.AllowTabbedDocks)

        self.canvas = Canvas(self.doc)
        self.canvas.set_mask_colour(settings.mask_colour())
        self.actions: dict[str, QAction] = {}
        self._build_actions()
        self._build_central()
        self._build_docks()
        self._build_menus()
        self._build_toolbar()
        self._build_status()
        self._connect()
        self.params.set_params(settings.default_params())
        # Crash safety: the session is saved to the data folder as it changes (desktop_app/autosave).
        self.autosaver = Autosaver(self.doc, self.params, self.statusBar(), parent=self)
        self._update_title()
        self._update_enabled()
        geometry, state = settings.window_state()
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(1360, 860)
        if state is not None:
            self.restoreState(state)

    # ================================================================== building

    def _action(self, key, text, slot=None, shortcut=None, icon_name=None, tip="", checkable=False):
        action = QAction(text, self)
        if shortcut is not None:
            shortcuts = shortcut if isinstance(shortcut, list) else [shortcut]
            action.setShortcuts([QKeySequence(s) for s in shortcuts])
        if icon_name:
            action.setIcon(icon(icon_name))
        keys = ", ".join(k.toString(QKeySequence.SequenceFormat.NativeText) for k in action.shortcuts())
        tooltip = tip or text.replace("&", "").rstrip("\u2026")
        action.setToolTip(f"{tooltip} ({keys})" if keys else tooltip)
        action.setStatusTip(tip)
        action.setCheckable(checkable)
        if slot is not None:
            (action.toggled if checkable else action.triggered).connect(slot)
        self.actions[key] = action
        self.addAction(action)  # shortcuts work whichever dock has focus
        return action

    def _build_actions(self) -> None:
        A, K = self._action, QKeySequence.StandardKey
        A("open", "&Open\u2026", self.open_dialog, K.Open, "open", "Open a photo")
        A("paste", "&Paste Photo", self.paste, K.Paste, tip="Open the picture on the clipboard")
        A("export", "&Export\u2026", self.export_dialog, ["Ctrl+E", "Ctrl+Shift+S"], "export",
          "Save the image on the canvas as PNG, JPEG or WebP with the edit's settings")
        A("settings", "&Settings\u2026", self.settings_dialog, K.Preferences, "settings",
          "Model, device, precision and default parameters")
        A("quit", "&Quit", self.close, K.Quit)
        undo = self.doc.undo_stack.createUndoAction(self, "&Undo")
        undo.setShortcuts([QKeySequence(K.Undo)])
        undo.setIcon(icon("undo"))
        redo = self.doc.undo_stack.createRedoAction(self, "&Redo")
        redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence(K.Redo)])
        redo.setIcon(icon("redo"))
        for key, action in (("undo", undo), ("redo", redo)):
            action.setIconText(key.title())  # the toolbar keeps a short label; the menu names the step
            self.actions[key] = action
            self.addAction(action)
        A("find_mask", "&Find Mask", self.find_mask, "Ctrl+M", "find_mask",
          "Estimate where to edit from the two prompts")
        A("edit", "&Edit", self.run_edit, ["Ctrl+Return", "Ctrl+Enter"], "edit",
          "Re-generate inside the mask (finds a mask first if there is none)")
        A("cancel", "&Cancel Run", self.cancel, "Esc", "cancel", "Stop the run within one step")
        tools = QActionGroup(self)
        A("brush", "&Brush", lambda on: on and self.canvas.set_tool(BRUSH), "B", "brush",
          "Paint the mask: add to where the edit happens", checkable=True)
        A("eraser", "E&raser", lambda on: on and self.canvas.set_tool(ERASER), "E", "eraser",
          "Erase the mask: protect from the edit", checkable=True)
        A("paint", "&Paint", lambda on: on and self.canvas.set_tool(PAINT), "P", None,
          "Paint rough colours for Blended scribble (they steer the edit inside the mask)",
          checkable=True)
        A("paint_colour", "Paint C&olour\u2026", self.choose_paint_colour,
          tip="The Paint tool's colour")
        A("clear_paint", "Clear Pa&int", lambda: self.doc.clear_paint(),
          tip="Remove all painted colours (undoable)")
        for key in ("brush", "eraser", "paint"):
            tools.addAction(self.actions[key])
        self.actions["paint"].setIcon(colour_swatch(self.canvas.paint_colour))
        self.actions["brush"].setChecked(True)
        A("bigger", "Larger Brush", self.canvas.grow_brush, "]")
        A("smaller", "Smaller Brush", self.canvas.shrink_brush, "[")
        A("show_mask", "Show &Mask", self.canvas.set_mask_visible, "M", "mask",
          "Show or hide the mask overlay", checkable=True)
        self.actions["show_mask"].setChecked(True)
        A("show_heatmap", "Show &Heatmap", self.canvas.set_show_heatmap, "H",
          tip="Show the automatic mask's heatmap instead of the mask", checkable=True)
        A("mask_colour", "Mask &Colour\u2026", self.choose_mask_colour)
        A("invert", "&Invert", self.doc.invert_mask, "Ctrl+I", "invert", "Swap edited and kept areas")
        A("clear_mask", "&Clear", self.doc.clear_mask, "Ctrl+Shift+Delete",
          tip="Remove the whole mask (heatmap and strokes)")
        A("grow", "&Grow", lambda: self.doc.grow_mask(self.mask_panel.amount.value()),
          tip="Grow the mask by the pixels set beside")
        A("shrink", "&Shrink", lambda: self.doc.shrink_mask(self.mask_panel.amount.value()),
          tip="Shrink the mask by the pixels set beside")
        A("feather", "&Feather", lambda: self.doc.feather_mask(self.mask_panel.amount.value()),
          tip="Soften the mask's edge by the pixels set beside")
        A("load_mask", "&Load Mask\u2026", self.load_mask_dialog, tip="Use a greyscale PNG as the mask")
        A("save_mask", "Sa&ve Mask\u2026", self.save_mask_dialog, tip="Save the mask as a PNG")
        A("fit", "&Fit to Window", self.canvas.fit, "Ctrl+0", "fit")
        A("actual", "&100 %", self.canvas.actual_pixels, "Ctrl+1", "zoom100")
        A("zoom_in", "Zoom &In", lambda: self.canvas.zoom_by(1.25), K.ZoomIn)
        A("zoom_out", "Zoom &Out", lambda: self.canvas.zoom_by(0.8), K.ZoomOut)
        A("models", "&Models\u2026", self.models_dialog, tip="Find, add and download models")
        A("tiny", "Use the &Tiny Test Model", self.use_tiny_model,
          tip=f"Load the tiny test model ({TINY_NOTE})")
        A("shortcuts", "&Keyboard Shortcuts", self.shortcuts_dialog, K.HelpContents)
        A("credits", "Sample Photo &Credits", self.sample_credits)
        A("about", "&About DiffEdit Studio", self.about)

    def _build_central(self) -> None:
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        self.banner = QFrame()
        self.banner.setObjectName("banner")
        banner_layout = QHBoxLayout(self.banner)
        banner_layout.setContentsMargins(12, 8, 12, 8)
        self.banner_text = QLabel(no_model_text())
        self.banner_text.setWordWrap(True)
        self.banner_text.setTextFormat(Qt.TextFormat.RichText)
        banner_layout.addWidget(self.banner_text, 1)
        self.banner_settings = QPushButton("Settings\u2026")
        self.banner_settings.clicked.connect(self.settings_dialog)
        self.banner_tiny = QPushButton("Use tiny test model")
        self.banner_tiny.setToolTip(f"The tiny test model: {TINY_NOTE}")
        self.banner_tiny.clicked.connect(self.use_tiny_model)
        banner_layout.addWidget(self.banner_settings)
        banner_layout.addWidget(self.banner_tiny)
        wrap = QWidget()
        wrap_layout = QVBoxLayout(wrap)
        wrap_layout.setContentsMargins(8, 8, 8, 4)
        wrap_layout.addWidget(self.banner)
        self.banner_wrap = wrap
        layout.addWidget(wrap)
        layout.addWidget(self.canvas, 1)
        self.setCentralWidget(central)

    def _dock(self, title: str, name: str, widget: QWidget, area, scroll=False,
              footer: QWidget | None = None) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        if scroll:
            area_widget = QScrollArea()
            area_widget.setWidgetResizable(True)
            area_widget.setFrameShape(QFrame.Shape.NoFrame)
            area_widget.setWidget(widget)
            # Scroll only vertically: the dock is never narrower than its content.
            area_widget.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
            area_widget.setMinimumWidth(widget.minimumSizeHint().width()
                                        + area_widget.verticalScrollBar().sizeHint().width())
            widget = area_widget
        if footer is not None:  # pinned below the scrolling part
            holder = QWidget()
            column = QVBoxLayout(holder)
            column.setContentsMargins(0, 0, 0, 0)
            column.setSpacing(0)
            column.addWidget(widget, 1)
            column.addWidget(footer)
            widget = holder
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(area, dock)
        return dock

    def _build_docks(self) -> None:
        self.params = ParamsPanel()
        self.mask_panel = MaskPanel(self.canvas, self.actions)
        self.history = HistoryPanel(self.doc)
        right = Qt.DockWidgetArea.RightDockWidgetArea
        self.params_dock = self._dock("Edit", "edit_dock", self.params, right, scroll=True,
                                      footer=self.params.run_row)
        self.mask_dock = self._dock("Mask", "mask_dock", self.mask_panel, Qt.DockWidgetArea.LeftDockWidgetArea,
                                    scroll=True)
        self.history_dock = self._dock("History", "history_dock", self.history, right)
        self.resizeDocks([self.params_dock, self.history_dock], [480, 340], Qt.Orientation.Vertical)
        self.resizeDocks([self.params_dock, self.mask_dock], [380, 240], Qt.Orientation.Horizontal)

    def _build_menus(self) -> None:
        a = self.actions
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addAction(a["open"])
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.sample_menu = file_menu.addMenu("Open &Sample")
        file_menu.addAction(a["paste"])
        file_menu.addSeparator()
        file_menu.addAction(a["export"])
        file_menu.addSeparator()
        file_menu.addAction(a["settings"])
        file_menu.addSeparator()
        file_menu.addAction(a["quit"])
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        self._fill_samples()
        edit_menu = bar.addMenu("&Edit")
        for key in ("undo", "redo", None, "find_mask", "edit", "cancel"):
            edit_menu.addSeparator() if key is None else edit_menu.addAction(a[key])
        mask_menu = bar.addMenu("&Mask")
        for key in ("brush", "eraser", "paint", "paint_colour", "clear_paint", "smaller", "bigger",
                    None, "show_mask", "show_heatmap",
                    "mask_colour", None, "invert", "clear_mask", "grow", "shrink", "feather", None,
                    "load_mask", "save_mask"):
            mask_menu.addSeparator() if key is None else mask_menu.addAction(a[key])
        view_menu = bar.addMenu("&View")
        for key in ("fit", "actual", "zoom_in", "zoom_out"):
            view_menu.addAction(a[key])
        view_menu.addSeparator()
        for dock in (self.params_dock, self.mask_dock, self.history_dock):
            view_menu.addAction(dock.toggleViewAction())
        models_menu = bar.addMenu("M&odels")
        models_menu.addAction(a["models"])
        models_menu.addAction(a["tiny"])
        help_menu = bar.addMenu("&Help")
        for key in ("shortcuts", "credits", "about"):
            help_menu.addAction(a[key])

    def _build_toolbar(self) -> None:
        bar = self.addToolBar("Main")
        bar.setObjectName("main_toolbar")
        bar.setIconSize(QSize(20, 20))
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for key in ("open", "export", None, "undo", "redo", None, "brush", "eraser", "paint", "show_mask",
                    None, "fit", "actual", None, "find_mask", "edit", "cancel"):
            bar.addSeparator() if key is None else bar.addAction(self.actions[key])
        # Secondary actions show only their icon (the tooltip has the name and keys), so that the
        # compare slider fits without an overflow menu at common window widths.
        for key in ("undo", "redo", "show_mask", "fit", "actual", "cancel"):
            bar.widgetForAction(self.actions[key]).setToolButtonStyle(
                Qt.ToolButtonStyle.ToolButtonIconOnly)
        bar.addSeparator()
        compare = QWidget()
        row = QHBoxLayout(compare)
        row.setContentsMargins(6, 0, 6, 0)
        label = QLabel("Before")
        self.split_slider = QSlider(Qt.Orientation.Horizontal)
        self.split_slider.setRange(0, 100)
        self.split_slider.setValue(0)
        self.split_slider.setFixedWidth(120)
        self.split_slider.setToolTip("Split view: drag to compare before (left) with after (right). "
                                     "Hold \\ on the canvas to see the whole photo before.")
        self.split_slider.valueChanged.connect(lambda v: self.canvas.set_split(v / 100))
        row.addWidget(label)
        row.addWidget(self.split_slider)
        row.addWidget(QLabel("After"))
        compare.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Preferred)
        bar.addWidget(compare)
        self.toolbar = bar

    def _build_status(self) -> None:
        status = self.statusBar()
        self.stage_label = QLabel()
        self.progress = QProgressBar()
        self.progress.setFixedWidth(220)
        self.progress.setTextVisible(True)
        self.progress.setVisible(False)
        self.stage_label.setVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the run within one step (Esc)")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setVisible(False)
        self.zoom_label = QLabel()
        self.model_label = QLabel("Model: none")
        for widget in (self.stage_label, self.progress, self.cancel_button):
            status.addPermanentWidget(widget)
        status.addPermanentWidget(self.zoom_label)
        status.addPermanentWidget(self.model_label)

    def _connect(self) -> None:
        e = self.engine
        e.model_state.connect(self._on_model_state)
        e.progress.connect(self._on_progress)
        e.preview.connect(self._on_preview)
        e.mask_ready.connect(self._on_mask_ready)
        e.result_ready.connect(self._on_result)
        e.job_failed.connect(self._on_failed)
        e.job_cancelled.connect(self._on_cancelled)
        e.job_finished.connect(self._on_finished)
        p = self.params
        p.find_mask_requested.connect(self.find_mask)
        p.edit_requested.connect(self.run_edit)
        p.cancel_requested.connect(self.cancel)
        p.method_changed.connect(lambda _m: self._update_enabled())
        p.set_paint_actions([self.actions[k] for k in ("paint", "paint_colour", "clear_paint")])
        # Slider moves arrive faster than a 12 MP refold; apply only the latest when idle.
        self._threshold_timer = QTimer(self)
        self._threshold_timer.setSingleShot(True)
        self._threshold_timer.setInterval(0)
        self._threshold_timer.timeout.connect(
            lambda: self.doc.set_threshold(self.params.threshold_spin.value()))
        p.threshold_changed.connect(lambda _v: self._threshold_timer.start())
        h = self.history
        h.preview_requested.connect(self.doc.set_preview)
        h.apply_requested.connect(self.apply_entry)
        h.use_settings_requested.connect(self.use_settings)
        h.delete_requested.connect(self.doc.delete_entry)
        h.use_mask_requested.connect(self.use_entry_mask)
        self.doc.photo_changed.connect(self._update_title)
        self.doc.photo_changed.connect(self._update_enabled)
        self.doc.work_changed.connect(self._update_title)
        self.doc.preview_changed.connect(self._on_preview_changed)
        # Working on the mask brings the overlay back if it was hidden to look at a result.
        self.doc.mask_changed.connect(lambda _rect: self._reveal_mask())
        self.canvas.zoom_changed.connect(lambda z: self.zoom_label.setText(f"{z * 100:.0f} %"))

    # ================================================================== model

    def start_engine(self) -> None:
        """Load the configured model on the engine thread (the window is already painted)."""
        config = self.settings.engine()
        if not config.default_model:
            self._on_model_state("none", "")
            return
        self.load_model(config.default_model)

    def load_model(self, source: str, **overrides) -> None:
        """Load ``source`` on the engine thread with the configured device, precision and memory
        tier (``overrides`` replaces any of them, e.g. device="cpu")."""
        config = self.settings.engine()
        request = LoadModelRequest(source, config.device, config.dtype, config.memory)
        self.model_source = source
        self.engine.load_model(replace(request, **overrides))

    def use_tiny_model(self) -> None:
        self.load_model(TINY_MODEL)

    def _on_model_state(self, state: str, message: str) -> None:
        self.model_state, self.model_message = state, message
        if state == "loading":
            self.model_label.setText(message or "Loading model\u2026")
        elif state == "ready":
            self.model_label.setText(f"Model: {message}")
            self.statusBar().showMessage(f"Model ready: {message}", 8000)
        elif state == "failed":
            self.model_label.setText("Model: failed to load")
        else:
            self.model_label.setText("Model: none")
        self.banner_wrap.setVisible(state in ("none", "failed"))
        if state == "failed":
            self.banner_text.setText(f"<b>The model could not be loaded.</b> {_html(message)}<br>"
                                     "Choose another in <i>Settings</i>, or try the tiny test model "
                                     f"({TINY_NOTE}).")
        elif state == "none":
            self.banner_text.setText(no_model_text())
        tiny = state == "ready" and self.model_source == TINY_MODEL
        self.model_label.setToolTip(f"Tiny test model: {TINY_NOTE}" if tiny else message)
        self._update_enabled()

    # ================================================================== files

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
        if self.job is not None:
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

    def samples(self) -> list[tuple[Path, str]]:
        """(path, description) of the shipped sample photos, described by their README."""
        folder = resource_path("samples")
        described = {}
        try:
            for line in (folder / "README.md").read_text(encoding="utf-8").splitlines():
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                if len(cells) >= 4 and (folder / cells[0]).is_file():
                    described[cells[0]] = f"{cells[2]} ({cells[3]})"
        except OSError:
            pass
        files = sorted(p for p in folder.glob("*") if photo_io.is_image_path(p.name))
        return [(p, described.get(p.name, p.name)) for p in files]

    def _fill_samples(self) -> None:
        self.sample_menu.clear()
        for path, description in self.samples():
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

    def export_dialog(self) -> bool:
        """Ask where, then export the image on the canvas. True when a file was written."""
        image = self.doc.shown_image()
        if image is None:
            return False
        original = Path(self.doc.photo.path) if getattr(self.doc.photo, "path", None) else None
        folder = original.parent if original else Path.home()
        stem = original.stem if original else "photo"
        path, chosen = QFileDialog.getSaveFileName(
            self, "Export image", str(folder / f"{stem}-edited.png"), ";;".join(photo_io.EXPORT_FILTERS))
        if not path:
            return False
        path = Path(path)
        if not path.suffix:
            path = path.with_suffix(photo_io.EXPORT_FILTERS.get(chosen, ".png"))
        if original is not None and path.resolve() == original.resolve():
            answer = ask(self, "Overwrite the original?",
                         f"{path.name} is the photo you opened. Replace the original with the edit? "
                         "This cannot be undone.", default=QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                return False
        return self.export_to(path)

    def export_to(self, path) -> bool:
        try:
            written = photo_io.export(path, self.doc.shown_photo(), self.doc.shown_image(),
                                      self.doc.shown_metadata())
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
        from PIL import Image

        try:
            with Image.open(path) as image:
                mask = masks.from_image(image, expected_size=self.doc.size)
        except InputError as exc:
            show_error(self, "Cannot load the mask", str(exc))
            return False
        except (OSError, ValueError) as exc:
            show_error(self, "Cannot load the mask", f"{Path(path).name} is not a readable image ({exc}).")
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
        path = Path(path).with_suffix(".png")
        grey = np.asarray(masks.to_image(self.doc.composed))
        try:
            from engine.imaging import save_image

            save_image(path, np.repeat(grey[..., None], 3, axis=2))
        except (InputError, OSError) as exc:
            show_error(self, "Cannot save the mask", str(exc))
            return False
        self.statusBar().showMessage(f"Saved the mask to {path}", 8000)
        return True

    # ================================================================== runs

    def _check_ready(self, need_target: bool = True) -> tuple[str, str] | None:
        if not self.doc.has_photo:
            show_error(self, APP_TITLE, "Open a photo first (File \u25b8 Open, or File \u25b8 Open Sample).")
            return None
        if self.model_state not in ("ready", "loading"):
            show_error(self, "No model", "No model is loaded. Choose one in Settings, or use the "
                       f"tiny test model from the Models menu ({TINY_NOTE}).")
            return None
        source, target = self.params.prompts()
        if not source and needs_source(self.params.method_key()):
            show_error(self, APP_TITLE, "Describe what is in the photo (the \u201cIn the photo\u201d "
                       "field), e.g. \u201ca bowl of fruits\u201d.")
            self.params.source.setFocus()
            return None
        if need_target and not target:
            show_error(self, APP_TITLE, "Describe what the photo should become (the \u201cShould "
                       "become\u201d field), e.g. \u201ca bowl of pears\u201d.")
            self.params.target.setFocus()
            return None
        try:
            self.params.params().validate()
        except InputError as exc:
            show_error(self, "Check the parameters", str(exc))
            return None
        return source, target

    def find_mask(self) -> None:
        if self.job is not None or not finds_mask(self.params.method_key()):
            return
        prompts = self._check_ready()
        if prompts is None:
            return
        params = self.params.params()
        job_id = self.engine.next_job_id()
        self.job = Job("mask", job_id, self.doc.generation, self.doc.photo_key,
                       plan={"mask": params.mask_samples})
        self.engine.submit(MaskRequest(job_id, self.doc.photo_key, self.doc.current_photo(),
                                       prompts[0], prompts[1], params))
        self._set_running(True)

    def run_edit(self) -> None:
        if self.job is not None:
            return
        prompts = self._check_ready()
        if prompts is None:
            return
        params = self.params.run_params()
        try:  # the method's own needs (a mask, paint, valid options) are checked before the run
            inputs = run_inputs(self.params.method_key(), self.params.options(), params, self.doc,
                                *prompts)
        except InputError as exc:
            title = "The mask is empty" if "mask is empty" in str(exc) else "Check the inputs"
            show_error(self, title, str(exc))
            return
        seeds = self.params.run_seeds()
        if not shows(inputs.method, "variations", inputs.options):
            seeds = seeds[:1]  # candidates (Blended) or a deterministic method (P2P): one run
        params = params.replace(seed=seeds[0])
        job_id = self.engine.next_job_id()
        self.job = Job("edit", job_id, self.doc.generation, self.doc.photo_key,
                       group=self.doc.new_group(),
                       mask=inputs.mask, variations=len(seeds), plan=inputs.plan)
        self.engine.submit(EditRequest(job_id, self.doc.photo_key, self.doc.current_photo(),
                                       prompts[0], prompts[1], inputs.mask, params, seeds,
                                       inputs.method, inputs.options, inputs.paint))
        self._set_running(True)

    def cancel(self) -> None:
        if self.job is not None:
            self.engine.cancel()
            self.stage_label.setText("Cancelling\u2026")

    def _set_running(self, running: bool) -> None:
        self.params.set_running(running)
        for widget in (self.progress, self.stage_label, self.cancel_button):
            widget.setVisible(running)
        if running:
            self.statusBar().clearMessage()
            self.progress.setRange(0, 0)  # busy until the first step reports
            self.stage_label.setText("Starting\u2026" if self.model_state == "ready"
                                     else "Waiting for the model\u2026")
        self._update_enabled()

    def _on_progress(self, p) -> None:
        job = self.job
        if job is None or p.job_id != job.job_id:
            return
        now = time.perf_counter()
        if p.stage != job.stage:
            job.stage, job.stage_started = p.stage, now
        done = p.step + 1
        job.seconds_per_step = (now - job.stage_started) / done
        self.progress.setRange(0, p.total)
        self.progress.setValue(done)
        self.progress.setFormat(f"{done}/{p.total}")
        left = self._steps_left(job, p) * job.seconds_per_step
        variation = f" \u00b7 variation {p.variation + 1}/{p.variations}" if p.variations > 1 else ""
        self.stage_label.setText(f"{STAGE_NAMES.get(p.stage, p.stage)} {done}/{p.total}{variation}"
                                 f" \u00b7 about {_duration(left)} left")

    @staticmethod
    def _steps_left(job: Job, p) -> int:
        left = p.total - p.step - 1
        order = ["mask", "encode", "decode"]
        if p.stage in order:
            for stage in order[order.index(p.stage) + 1:]:
                left += job.plan.get(stage, 0)
        left += (p.variations - p.variation - 1) * job.plan.get("decode", 0)
        return left

    def _on_preview(self, job_id: int, preview) -> None:
        job = self.job
        if job is None or job_id != job.job_id or job.generation != self.doc.generation:
            return
        if job.stage in ("encode", "decode"):
            self.canvas.show_run_preview(preview, job.mask if job.stage == "decode" else None)

    def _on_mask_ready(self, job_id: int, heatmap) -> None:
        if self.job is not None and job_id == self.job.job_id:
            self.job.heatmap = heatmap

    def _on_result(self, job_id: int, result) -> None:
        if self.job is not None and job_id == self.job.job_id:
            self.job.results.append(result)
            if self.job.mask is None and result.mask is not None:
                self.job.mask = result.mask  # the decode preview can now be clipped to it

    def _on_failed(self, job_id: int, message: str, details: str) -> None:
        if self.job is not None and job_id == self.job.job_id:
            self.job.error = (message, details)

    def _on_cancelled(self, job_id: int) -> None:
        if self.job is not None and job_id == self.job.job_id:
            self.job.cancelled = True

    def _on_finished(self, job_id: int) -> None:
        job = self.job
        if job is None or job_id != job.job_id:
            return
        self.job = None
        self._set_running(False)
        self.canvas.clear_run_preview()
        if job.cancelled:
            self.statusBar().showMessage("Cancelled. The photo and mask are as they were.", 8000)
            return
        if job.error is not None:
            show_error(self, "The run failed", job.error[0], job.error[1])
            return
        if job.generation != self.doc.generation:
            self.statusBar().showMessage("A different photo is open now; the run's result was not kept.", 8000)
            return
        if job.photo_key != self.doc.photo_key:
            show_error(self, "The photo changed during the run",
                       "A result was applied (or undone) while the run was working on the photo "
                       "as it was before, so its result was not kept. Run it again.")
            return
        self._commit(job)

    def _commit(self, job: Job) -> None:
        elapsed = time.perf_counter() - job.started
        if job.kind == "mask":
            if job.heatmap is not None:
                self.doc.set_heatmap(job.heatmap)
                self.actions["show_mask"].setChecked(True)
                self.statusBar().showMessage(f"Mask found in {elapsed:.1f} s. Refine it with the "
                                             "threshold and the brush, then Edit.", 10000)
            return
        first = None
        for result in job.results:
            if result.heatmap is not None and self.doc.heatmap is None and \
                    result.image.shape == self.doc.base.shape:
                # The mask the run found (DiffEdit, or a P2P local blend), kept for refining.
                self.doc.set_heatmap(result.heatmap)
                if "blend_threshold" in result.options:
                    self.params.threshold_spin.setValue(result.options["blend_threshold"])
            entry = self.doc.add_result(
                job.group, result.variation, image=result.image, mask=result.mask,
                source=result.source, target=result.target, method=result.method,
                params=result.params, seconds=result.seconds, metadata=result.metadata,
                stats=result.stats, warnings=result.warnings, options=result.options,
                heatmap=result.heatmap if result.method == "p2p" else None)
            first = first or entry
            for warning in result.warnings:
                self.statusBar().showMessage(warning, 10000)
        if first is not None:
            self.doc.set_preview(first.id)
            self.actions["show_mask"].setChecked(False)  # see the result; M brings the mask back
            self.history_dock.raise_()
            count = len(job.results)
            self.statusBar().showMessage(
                f"{count} result{'s' if count > 1 else ''} in {elapsed:.1f} s. Apply one to keep "
                "editing from it, or export it.", 10000)

    # ================================================================== history

    def apply_entry(self, entry_id: int) -> None:
        if self.job is not None:  # the run works on the current pixels: they must not change
            self.statusBar().showMessage("Wait for the run to finish (or cancel it) before "
                                         "applying a result.", 8000)
            return
        entry = self.doc.entry(entry_id)
        if self.doc.apply_entry(entry_id):
            self.statusBar().showMessage(f"Applied \u201c{entry.target}\u201d: edits now start "
                                         "from it (Ctrl+Z to undo).", 8000)
        else:
            self.statusBar().showMessage("That result is the same as the current photo.", 5000)

    def use_settings(self, entry_id: int) -> None:
        entry = self.doc.entry(entry_id)
        if entry is None:
            return
        self.params.set_params(entry.params, entry.source, entry.target, entry.method, entry.options)
        self.params.lock_seed.setChecked(True)  # "these settings" includes the seed: repeat it
        self.params_dock.raise_()

    def use_entry_mask(self, entry_id: int) -> None:
        threshold = self.doc.use_entry_mask(entry_id)
        if threshold is None:
            self.statusBar().showMessage("That result has another size than the photo; apply it "
                                         "first to use its mask.", 8000)
            return
        self.params.threshold_spin.setValue(threshold)
        self.doc.set_preview(None)
        self.actions["show_mask"].setChecked(True)
        self.statusBar().showMessage("The result's mask is the current mask: refine it with the "
                                     "threshold and the brush, then edit again.", 10000)

    def _reveal_mask(self) -> None:
        if self.doc.has_photo and not self.actions["show_mask"].isChecked() and (
                self.doc.stroking or self.params.threshold_spin.hasFocus()
                or self.params.threshold_slider.isSliderDown()):
            self.actions["show_mask"].setChecked(True)

    def _on_preview_changed(self) -> None:
        entry = self.doc.entry(self.doc.preview_id)
        if entry is not None:
            self.statusBar().showMessage(f"Showing \u201c{entry.target}\u201d, seed {entry.params.seed}. "
                                         "Hold \\ or use the Before/After slider to compare.", 6000)

    # ================================================================== dialogs and misc

    def settings_dialog(self) -> None:
        before = self.settings.engine()
        dialog = SettingsDialog(self.settings, self)
        if dialog.exec() != SettingsDialog.DialogCode.Accepted:
            return
        after = self.settings.engine()
        self.params.set_params(self.settings.default_params().replace(seed=self.params.seed.value()))
        changed = (before.default_model, before.device, before.dtype, before.memory) != (
            after.default_model, after.device, after.dtype, after.memory)
        if changed and after.default_model:
            self.load_model(after.default_model)
        elif changed:
            self._on_model_state("none", "")

    def models_dialog(self) -> None:
        try:
            from desktop_app.models_dialog import ModelsDialog
        except ImportError:
            QMessageBox.information(self, "Models", "The Models dialog is not part of this build yet. "
                                    "Set a model folder or file in Settings meanwhile.")
            return
        dialog = ModelsDialog(self)
        dialog.exec()
        config = self.settings.engine()
        if config.default_model and config.default_model != self.model_source:
            self.load_model(config.default_model)

    def shortcuts_dialog(self) -> None:
        ShortcutsDialog(self.actions.values(), self).exec()

    def about(self) -> None:
        QMessageBox.about(self, "About DiffEdit Studio",
                          "<b>DiffEdit Studio</b><br>Offline, text-guided photo editing: say what "
                          "is in the photo and what it should become; refine the mask; edit only "
                          "there.<br><br>Runs on your own GPU or CPU. Nothing leaves your computer.")

    def choose_paint_colour(self) -> None:
        colour = QColorDialog.getColor(self.canvas.paint_colour, self, "Paint colour")
        if colour.isValid():
            self.canvas.set_paint_colour(colour)
            self.actions["paint"].setIcon(colour_swatch(colour))
            self.actions["paint"].setChecked(True)

    def choose_mask_colour(self) -> None:
        colour = QColorDialog.getColor(self.settings.mask_colour(), self, "Mask colour")
        if colour.isValid():
            self.settings.set_mask_colour(colour)
            self.canvas.set_mask_colour(colour)

    def _update_title(self) -> None:
        name = self.doc.display_name if self.doc.has_photo else ""
        star = "*" if self.doc.has_unexported_work() else ""
        self.setWindowTitle(f"{name}{star} \u2014 {APP_TITLE}" if name else APP_TITLE)

    def _update_enabled(self) -> None:
        has_photo = self.doc.has_photo
        running = self.job is not None
        for key in ("export", "find_mask", "edit", "invert", "clear_mask", "grow", "shrink",
                    "feather", "load_mask", "save_mask", "fit", "actual", "zoom_in", "zoom_out"):
            self.actions[key].setEnabled(has_photo)
        auto_mask = finds_mask(self.params.method_key())  # only DiffEdit finds its own mask
        self.actions["find_mask"].setEnabled(has_photo and not running and auto_mask)
        self.actions["edit"].setEnabled(has_photo and not running)
        self.actions["cancel"].setEnabled(running)
        self.params.find_mask_button.setEnabled(has_photo and not running and auto_mask)
        self.params.edit_button.setEnabled(has_photo and not running)
        self.split_slider.setEnabled(has_photo)

    def closeEvent(self, event) -> None:
        if not self.confirm_discard("closing"):
            event.ignore()
            return
        if self.job is not None:
            self.engine.cancel()
        self.settings.set_window_state(self.saveGeometry(), self.saveState())
        self.settings.sync()
        self.autosaver.remove()  # a clean close: the work was exported or discarded
        event.accept()


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
