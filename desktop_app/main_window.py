"""The main window: canvas, docks and status bar, and what the run controller reports (its file
commands are desktop_app/window_files.py)."""

from __future__ import annotations

from dataclasses import replace

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QColorDialog, QFrame, QHBoxLayout, QLabel, QMainWindow, QMessageBox,
                               QProgressBar, QPushButton, QVBoxLayout, QWidget)

from desktop_app.actions import build_actions, build_menus, build_toolbar
from desktop_app.autosave import Autosaver
from desktop_app.canvas import Canvas
from desktop_app.canvas.items import colour_swatch
from desktop_app.dialogs import (APP_TITLE, TINY_NOTE, SettingsDialog, ShortcutsDialog, ask,
                                 no_model_text, show_error)
from desktop_app.document import Document
from desktop_app.icons import icon
from desktop_app.panels.dock import add_dock
from desktop_app.panels.history import HistoryPanel
from desktop_app.panels.mask import MaskPanel
from desktop_app.panels.params import ParamsPanel
from desktop_app.methods import extension, finds_mask, shows, takes_paint
from desktop_app.results_store import MB
from desktop_app.runs import RunController, RunRefused
from desktop_app.segment_tool import SegmentTool
from desktop_app.window_files import WindowFiles
from desktop_app.worker import TINY_MODEL, LoadModelRequest
from engine.fields import label as field_label
from engine.methods import EXTEND_SIDES
from engine.params import field_table


LAYOUT_VERSION = 2  # of the saved dock layout: 2 put the history under the mask tools


class MainWindow(WindowFiles, QMainWindow):
    def __init__(self, settings, engine, parent=None):
        super().__init__(parent)
        self.settings = settings
        self.engine = engine
        self.doc = Document(self)
        self.doc.results.budget = settings.history_memory_mb() * MB
        self.doc.undo_stack.set_limit(settings.undo_memory_mb() * MB)
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
        build_actions(self)
        self._build_central()
        self._build_docks()
        self.recent_menu, self.sample_menu = build_menus(self)
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        self._fill_samples()
        self.toolbar, self.split_slider = build_toolbar(self)
        self.split_slider.valueChanged.connect(lambda v: self.canvas.set_split(v / 100))
        self.canvas.split_dragged.connect(lambda f: self.split_slider.setValue(round(f * 100)))
        self._build_status()
        # One run's life (start, progress, cancel, commit) is the controller's; the window shows it.
        self.runs = RunController(self.doc, engine, self.params, lambda: self.model_state, self)
        self.segment_tool = SegmentTool(self.doc, parent=self)  # SAM on a thread of its own
        self._family_defaults: dict = {}  # the loaded model family's parameter values
        self._defaults_note = ""  # what they changed on the panel, said when the model is ready
        self._connect()
        self.params.set_params(settings.default_params())
        self._show_paint()
        self._show_extend_frame()
        # Crash safety: the session is saved to the data folder as it changes (desktop_app/autosave).
        self.autosaver = Autosaver(self.doc, self.params, self.statusBar(), parent=self)
        self._update_title()
        self._update_enabled()
        geometry, state = settings.window_state()
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(1360, 860)
        if state is not None:
            self.restoreState(state, LAYOUT_VERSION)  # an older layout is left behind

    # ================================================================== building

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

    def _build_docks(self) -> None:
        self.params = ParamsPanel()
        self.mask_panel = MaskPanel(self.canvas, self.actions)
        self.history = HistoryPanel(self.doc)
        right, left = Qt.DockWidgetArea.RightDockWidgetArea, Qt.DockWidgetArea.LeftDockWidgetArea
        # The Edit panel has the right side's full height (its options in sight at 1280x720);
        # the mask tools leave room below them for the history.
        self.params_dock = add_dock(self, "Edit", "edit_dock", self.params, right, scroll=True,
                                    footer=self.params.run_row)
        self.mask_dock = add_dock(self, "Mask", "mask_dock", self.mask_panel, left, scroll=True)
        self.history_dock = add_dock(self, "History", "history_dock", self.history, left)
        # All the mask tools stay in sight; the history takes the height left.
        self.mask_dock.widget().setMinimumHeight(self.mask_panel.sizeHint().height())
        self.resizeDocks([self.params_dock, self.mask_dock], [380, 300], Qt.Orientation.Horizontal)

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
        self.cost_label = QLabel()  # what the next Edit costs, while nothing runs
        self.model_label = QLabel("Model: none")
        for widget in (self.stage_label, self.progress, self.cancel_button):
            status.addPermanentWidget(widget)
        status.addPermanentWidget(self.cost_label)
        status.addPermanentWidget(self.zoom_label)
        status.addPermanentWidget(self.model_label)

    def _connect(self) -> None:
        e = self.engine
        e.model_state.connect(self._on_model_state)
        e.model_methods.connect(self.params.set_methods)
        e.model_family.connect(self._on_model_family)
        r = self.runs
        r.running_changed.connect(self._on_running)
        r.stage_text.connect(self.stage_label.setText)
        r.step_changed.connect(self._on_step)
        r.preview_ready.connect(self.canvas.show_run_preview)
        r.preview_cleared.connect(self.canvas.clear_run_preview)
        r.message.connect(self.statusBar().showMessage)
        r.failed.connect(lambda title, message, details: show_error(self, title, message, details))
        r.mask_found.connect(lambda: self.actions["show_mask"].setChecked(True))
        r.results_added.connect(self._on_results_added)
        p = self.params
        p.find_mask_requested.connect(self.find_mask)
        p.edit_requested.connect(self.run_edit)
        p.cancel_requested.connect(self.cancel)
        p.method_changed.connect(lambda _m: self._update_enabled())
        p.method_changed.connect(lambda _m: self._show_paint())
        p.options_changed.connect(self._show_paint)
        p.method_changed.connect(lambda _m: self._show_extend_frame())
        p.options_changed.connect(self._show_extend_frame)
        self.canvas.extend_dragged.connect(self._on_extend_dragged)
        self.canvas.segment_clicked.connect(self.segment_tool.click)
        self.segment_tool.message.connect(self.statusBar().showMessage)
        self.segment_tool.failed.connect(lambda message, details: show_error(
            self, "Segment", message, details))
        p.set_paint_actions([self.actions[k] for k in ("paint", "paint_colour", "clear_paint")])
        p.bind_threshold(self.doc)
        # The next run's cost follows its settings, the photo, the mask and the last run's pace
        # (measured once its results are in).
        for signal in (p.changed, self.doc.photo_changed, self.doc.heatmap_changed,
                       r.running_changed, r.results_added):
            signal.connect(self._show_cost)
        self.doc.mask_changed.connect(lambda rect: rect is None and self._show_cost())
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
        # After the stack moved: the status says what was undone, not what was done before it.
        self.actions["undo"].triggered.connect(lambda: self._report_undo("Undone", 0))
        self.actions["redo"].triggered.connect(lambda: self._report_undo("Redone", -1))
        self.doc.undo_stack.dropped.connect(self._on_undo_dropped)
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
        # the saved transformer file belongs to the saved model, not to one opened otherwise
        transformer = config.transformer if source == config.default_model else ""
        request = LoadModelRequest(source, config.device, config.dtype, config.memory, config.threads,
                                   tuple(self.settings.loras()), transformer)
        self.model_source = source
        self.engine.load_model(replace(request, **overrides))

    def use_tiny_model(self) -> None:
        self.load_model(TINY_MODEL)

    def _on_model_family(self, family) -> None:
        """The loaded model's family (worker.FamilyTraits) runs at its own values (FLUX.2 klein:
        4 steps, no guidance): a value the panel shows at the last model's default takes this
        one's; one the user set stays. The Settings defaults stand for the families that have
        none of their own. The fields and method options its runs ignore are hidden."""
        self.params.set_unused(family.unused, family.unused_options)
        values = family.defaults
        base = self.settings.default_params()
        before = self._family_defaults
        shown = self.params.params()
        carried = shown.carried(base.replace(**before), base.replace(**values), {*before, *values})
        # A hidden field holds the family's value, whatever the user had set: no run warns of it.
        carried = carried.replace(**{k: v for k, v in values.items() if k in family.unused})
        self._family_defaults = dict(values)
        was = shown.to_dict()
        changed = {k: v for k, v in carried.to_dict().items() if v != was[k]}
        if changed:
            self.params.set_params(carried)
        self._defaults_note = ("; its own defaults: " + ", ".join(
            f"{field_label(field_table()[k]).lower()} {v:g}"
            for k, v in changed.items())) if changed else ""

    def _on_model_state(self, state: str, message: str) -> None:
        self.model_state, self.model_message = state, message
        if state == "loading":
            self.model_label.setText(message or "Loading model\u2026")
        elif state == "ready":
            self.settings.remember_model(self.model_source)
            self.model_label.setText(f"Model: {message}")
            self.statusBar().showMessage(f"Model ready: {message}{self._defaults_note}", 8000)
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

    # ================================================================== runs

    def find_mask(self) -> None:
        self._start(self.runs.find_mask)

    def run_edit(self) -> None:
        use_mask = self._extend_with_mask()
        if use_mask is not None:
            self._start(lambda: self.runs.edit(use_mask=use_mask))

    def _extend_with_mask(self) -> bool | None:
        """Whether an extend regenerates the mask too (it does when there is one: the user may
        not remember a mask left from an earlier run); None: the user cancelled."""
        key, options = self.params.method_key(), self.params.options()
        if not any(extension(key, options)) or not self.doc.has_photo or not self.doc.composed.any():
            return True
        share = float((self.doc.composed > 0).mean()) * 100
        self.actions["show_mask"].setChecked(True)
        answer = ask(self, "Extend the photo", f"The mask covers {share:.0f} % of the photo: "
                     "the extend would regenerate that area too, not only the new border.",
                     QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No
                     | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Yes,
                     labels={QMessageBox.StandardButton.Yes: "Extend Only",
                             QMessageBox.StandardButton.No: "Regenerate the Mask Too"})
        if answer == QMessageBox.StandardButton.Cancel:
            return None
        return answer == QMessageBox.StandardButton.No

    def cancel(self) -> None:
        self.runs.cancel()

    def _start(self, start) -> None:
        try:
            start()
        except RunRefused as exc:
            show_error(self, exc.title, exc.message)
            if exc.field:
                getattr(self.params, exc.field).setFocus()

    def _on_running(self, running: bool) -> None:
        self.params.set_running(running)
        for widget in (self.progress, self.stage_label, self.cancel_button):
            widget.setVisible(running)
        if running:
            self.statusBar().clearMessage()
        self._update_enabled()

    def _on_step(self, done: int, total: int) -> None:
        self.progress.setRange(0, total)
        if total:
            self.progress.setValue(done)
            self.progress.setFormat(f"{done}/{total}")

    def _on_results_added(self) -> None:
        # The mask stays shown: it is what the next run regenerates (M hides it to look).
        self.history_dock.raise_()

    # ================================================================== history

    def apply_entry(self, entry_id: int) -> None:
        if self.runs.running:  # the run works on the current pixels: they must not change
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
        if not self.doc.use_entry_mask(entry_id):
            self.statusBar().showMessage("That result has another size than the photo; apply it "
                                         "first to use its mask.", 8000)
            return
        self.doc.set_preview(None)
        self.actions["show_mask"].setChecked(True)
        self.statusBar().showMessage("The result's mask is the current mask: refine it with the "
                                     "threshold and the brush, then edit again.", 10000)

    def _reveal_mask(self) -> None:
        if self.doc.has_photo and not self.actions["show_mask"].isChecked() and (
                self.doc.stroking or self.params.threshold_spin.hasFocus()
                or self.params.threshold_slider.isSliderDown()):
            self.actions["show_mask"].setChecked(True)

    def _report_undo(self, verb: str, offset: int) -> None:
        stack = self.doc.undo_stack
        command = stack.command(stack.index() + offset)
        if command is not None:
            self.statusBar().showMessage(f"{verb}: {command.text()}", 6000)

    def _on_undo_dropped(self, count: int) -> None:
        limit = self.doc.undo_stack.limit_bytes // MB
        self.statusBar().showMessage(
            f"Undo memory is full ({limit} MB, see Settings): the {count} oldest "
            f"step{'s' if count != 1 else ''} can no longer be undone.", 10000)

    def _on_preview_changed(self) -> None:
        entry = self.doc.entry(self.doc.preview_id)
        if entry is not None:
            self.statusBar().showMessage(f"Showing \u201c{entry.target}\u201d, seed {entry.params.seed}. "
                                         "Hold \\ or use the Before/After slider to compare.", 6000)

    # ================================================================== dialogs and misc

    def settings_dialog(self) -> None:
        before, before_defaults = self.settings.engine(), self.settings.default_params()
        before_loras = self.settings.loras()
        dialog = SettingsDialog(self.settings, self)
        if dialog.exec() != SettingsDialog.DialogCode.Accepted:
            return
        after, defaults = self.settings.engine(), self.settings.default_params()
        # Only a default the user changed reaches the panel; what the panel shows stays otherwise.
        changed_defaults = {k: v for k, v in defaults.to_dict().items()
                            if v != before_defaults.to_dict()[k]}
        if changed_defaults:
            self.params.set_params(self.params.params().replace(**changed_defaults))
        self.doc.results.budget = self.settings.history_memory_mb() * MB
        self.doc.results.fit(self.doc.history)
        self.doc.undo_stack.set_limit(self.settings.undo_memory_mb() * MB)
        changed = (before.default_model, before.transformer, before.device, before.dtype,
                   before.memory, before_loras) != (after.default_model, after.transformer,
                                                    after.device, after.dtype, after.memory,
                                                    self.settings.loras())
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

    def _show_paint(self) -> None:
        """The paint layer and its tools are there for a method that paints with them."""
        on = takes_paint(self.params.method_key(), self.params.options())
        self.canvas.set_paint_shown(on)
        for key in ("paint", "paint_colour", "clear_paint"):
            self.actions[key].setEnabled(on)
        if not on and self.actions["paint"].isChecked():
            self.actions["brush"].setChecked(True)

    def _show_cost(self, *_args) -> None:
        cost = self.runs.cost()
        self.params.set_cost(cost)
        self.cost_label.setText(f"Next edit: {self.runs.cost(short=True)}" if cost else "")
        self.cost_label.setToolTip(f"The next Edit: {cost}" if cost else "")
        self.cost_label.setVisible(bool(cost) and not self.runs.running)

    def move_split(self, percent: int) -> None:
        self.split_slider.setValue(self.split_slider.value() + percent)

    def _show_extend_frame(self) -> None:
        """The extend frame is on the canvas while the panel shows the extend margins."""
        key, options = self.params.method_key(), self.params.options()
        framed = shows(key, "extend_left", options)
        self.canvas.set_extend_frame(extension(key, options) if framed else None)

    def _on_extend_dragged(self, margins: tuple) -> None:
        self.params.set_options({f"extend_{side}": m for side, m in zip(EXTEND_SIDES, margins)})

    def _update_title(self) -> None:
        name = self.doc.display_name if self.doc.has_photo else ""
        star = "*" if self.doc.has_unexported_work() else ""
        self.setWindowTitle(f"{name}{star} \u2014 {APP_TITLE}" if name else APP_TITLE)

    def _update_enabled(self) -> None:
        has_photo = self.doc.has_photo
        running = self.runs.running
        for key in ("export", "find_mask", "edit", "invert", "clear_mask", "grow", "shrink",
                    "feather", "load_mask", "save_mask", "fit", "actual", "zoom_in", "zoom_out"):
            self.actions[key].setEnabled(has_photo)
        auto_mask = finds_mask(self.params.method_key())  # methods that find their own mask
        self.actions["find_mask"].setEnabled(has_photo and not running and auto_mask)
        self.actions["edit"].setEnabled(has_photo and not running)
        self.actions["cancel"].setEnabled(running)
        self.params.find_mask_button.setEnabled(has_photo and not running and auto_mask)
        self.params.edit_button.setEnabled(has_photo and not running)
        self.split_slider.setEnabled(has_photo)
        for key in ("split_left", "split_right"):
            self.actions[key].setEnabled(has_photo)

    def closeEvent(self, event) -> None:
        if not self.confirm_discard("closing"):
            event.ignore()
            return
        if self.runs.running:
            self.engine.cancel()
        self.settings.set_window_state(self.saveGeometry(), self.saveState(LAYOUT_VERSION))
        self.settings.sync()
        self.autosaver.remove()  # a clean close: the work was exported or discarded
        event.accept()


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
