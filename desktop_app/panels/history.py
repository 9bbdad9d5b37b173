"""The history panel: every run's results with thumbnail, method, prompts, parameters, seed and time;
a run's candidates or variations together, ranked ones best first with their CLIP score."""

from __future__ import annotations

import time

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QGridLayout, QPushButton, QSizePolicy,
                               QToolButton, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from desktop_app import methods
from desktop_app.canvas.items import qimage_from_rgb
from desktop_app.document import Document
from desktop_app.history_entry import HistoryEntry, make_thumbnail

ENTRY_ROLE = Qt.ItemDataRole.UserRole
THUMB = 64
APPLIED = "\u2713 "  # marks an applied result's first line (its tooltip says what it means)


def method_title(entry: HistoryEntry) -> str:
    return methods.action_title(entry.method, entry.options)


def ranking(entry: HistoryEntry) -> str:
    """"rank 1 · CLIP 0.312" for a ranked candidate, else ""."""
    if "rank" not in entry.stats:
        return ""
    score = entry.stats.get("clip_score")
    return f"rank {entry.stats['rank']}" + (f" \u00b7 CLIP {score:.3f}" if score is not None else "")


def uses_seed(entry: HistoryEntry) -> bool:
    return methods.uses_seed(entry.method)


def seed_text(entry: HistoryEntry) -> str:
    """"seed 7 · " before the rest of a result's line, or "" for a method without a seed."""
    return f"seed {entry.params.seed} \u00b7 " if uses_seed(entry) else ""


def describe(entry: HistoryEntry) -> str:
    p = entry.params
    size = f" \u00b7 {entry.size[0]}\u00d7{entry.size[1]}" if any(
        methods.extension(entry.method, entry.options)) else ""
    return (f"{entry.target}\n{method_title(entry)}{size}\n"
            f"{seed_text(entry)}{p.steps} steps \u00b7 {entry.seconds:.1f} s")


def details(entry: HistoryEntry) -> str:
    p = entry.params
    lines = [
        f"Reference: {entry.source}", f"Target: {entry.target}",
        f"Negative: {p.negative_prompt or '(reference text)'}", f"Method: {method_title(entry)}",
        f"Steps {p.steps}, strength {p.strength:g}, guidance {p.guidance:g}",
        f"Mask threshold {p.mask_threshold:g}, mask samples {p.mask_samples}, "
        f"feather {p.feather} px{' (Poisson)' if p.seam == 'poisson' else ''}, variety {p.eta:g}",
        f"Time {entry.seconds:.1f} s, made {time.strftime('%H:%M:%S', time.localtime(entry.created))}",
    ]
    if uses_seed(entry):
        lines.insert(-1, f"Seed {p.seed}")
    if entry.options:
        lines.append("Options: " + ", ".join(f"{k} {v!r}" if isinstance(v, str) else f"{k} {v:g}"
                                             if isinstance(v, float) else f"{k} {v}"
                                             for k, v in entry.options.items()))
    if ranking(entry):
        lines.append(f"Ranked: {ranking(entry)} (how well the masked area matches the target)")
    lines += [f"Warning: {w}" for w in entry.warnings]
    return "\n".join(lines)


class HistoryPanel(QWidget):
    preview_requested = Signal(object)  # entry id or None
    apply_requested = Signal(int)
    use_settings_requested = Signal(int)
    use_mask_requested = Signal(int)
    delete_requested = Signal(int)

    def __init__(self, document: Document, parent=None):
        super().__init__(parent)
        self.doc = document
        layout = QVBoxLayout(self)
        # The way back from a previewed result: the photo that edits start from.
        self.working_button = QToolButton()
        self.working_button.setCheckable(True)
        self.working_button.setAutoRaise(True)
        self.working_button.setIconSize(QSize(THUMB * 5 // 8, THUMB * 5 // 8))
        self.working_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.working_button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.working_button.clicked.connect(self._show_working)
        self._working_key = None  # the base pixels its thumbnail shows
        layout.addWidget(self.working_button)
        self.tree = QTreeWidget()
        self.tree.setHeaderHidden(True)
        self.tree.setIconSize(QSize(THUMB, THUMB))
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setUniformRowHeights(False)
        self.tree.setWordWrap(True)
        self.tree.setRootIsDecorated(True)
        layout.addWidget(self.tree, 1)
        buttons = QGridLayout()  # two by two: the dock stays narrow beside the canvas
        self.apply_button = QPushButton("Apply")
        self.apply_button.setToolTip("Make this result the photo you keep editing (undoable)")
        self.settings_button = QPushButton("Use these settings")
        self.settings_button.setToolTip("Put this run's prompts, parameters and seed back in the panel")
        self.settings_button.setToolTip("Put this run's method, options, prompts, parameters and "
                                        "seed back in the panel")
        self.mask_button = QPushButton("Use its mask")
        self.mask_button.setToolTip(
            "Make the mask this result used the current mask, to refine with the brush and edit "
            "again.\nA Prompt-to-Prompt local blend gives its attention heatmap as the auto mask "
            "(the threshold is set to the blend level; move it to refine). It also lands there by "
            "itself when the photo has no mask yet.")
        self.delete_button = QPushButton("Delete")
        self.delete_button.setToolTip("Remove this result from the history")
        for index, button in enumerate((self.apply_button, self.settings_button, self.mask_button,
                                        self.delete_button)):
            buttons.addWidget(button, index // 2, index % 2)
        layout.addLayout(buttons)
        self.mask_button.clicked.connect(lambda: self._emit(self.use_mask_requested))
        self.apply_button.clicked.connect(lambda: self._emit(self.apply_requested))
        self.settings_button.clicked.connect(lambda: self._emit(self.use_settings_requested))
        self.delete_button.clicked.connect(lambda: self._emit(self.delete_requested))
        self.tree.currentItemChanged.connect(self._on_current)
        document.history_changed.connect(self.rebuild)
        document.preview_changed.connect(self._select_preview)
        document.photo_changed.connect(self._update_buttons)  # an applied extend changes the size
        document.photo_changed.connect(self._update_working)
        document.base_changed.connect(lambda _rect: self._update_working())
        self.rebuild()

    def selected_id(self) -> int | None:
        item = self.tree.currentItem()
        return item.data(0, ENTRY_ROLE) if item is not None else None

    def _emit(self, signal) -> None:
        entry_id = self.selected_id()
        if entry_id is not None:
            signal.emit(entry_id)

    def rebuild(self) -> None:
        self.tree.blockSignals(True)
        self.tree.clear()
        groups: dict[int, list[HistoryEntry]] = {}
        for entry in self.doc.history:
            groups.setdefault(entry.group, []).append(entry)
        for entries in reversed(list(groups.values())):  # newest run first
            if len(entries) == 1:
                self.tree.addTopLevelItem(self._item(entries[0]))
                continue
            first = entries[0]
            seeds = sorted(e.params.seed for e in entries)
            kind = methods.result_kind(first.method)
            order = ", ranked" if any(ranking(e) for e in entries) else ""
            seed_range = f"\nseeds {seeds[0]}\u2013{seeds[-1]}" if uses_seed(first) else ""
            parent = QTreeWidgetItem([f"{first.target}\n{method_title(first)} \u00b7 "
                                      f"{len(entries)} {kind}s{order}{seed_range}"])
            parent.setData(0, ENTRY_ROLE, first.id)
            parent.setIcon(0, self._icon(first))
            parent.setToolTip(0, details(first))
            for entry in entries:
                kind = methods.result_kind(entry.method).capitalize()
                extra = f"\n{ranking(entry)}" if ranking(entry) else ""
                parent.addChild(self._item(entry, f"{kind} {entry.variation + 1}{extra}\n"
                                                  f"{seed_text(entry)}{entry.seconds:.1f} s"))
            self.tree.addTopLevelItem(parent)
            parent.setExpanded(True)
        self.tree.blockSignals(False)
        self._select_preview()
        self._update_buttons()
        self._update_working()

    def _item(self, entry: HistoryEntry, text: str = "") -> QTreeWidgetItem:
        """The entry's row (``text``, or its description), marked when applied."""
        item = QTreeWidgetItem([text or describe(entry)])
        item.setData(0, ENTRY_ROLE, entry.id)
        item.setIcon(0, self._icon(entry))
        item.setToolTip(0, details(entry))
        if entry.id in self.doc.applied:
            item.setText(0, APPLIED + item.text(0))
            item.setToolTip(0, f"Applied: edits start from this result.\n{item.toolTip(0)}")
            font = item.font(0)
            font.setBold(True)
            item.setFont(0, font)
        return item

    def _show_working(self) -> None:
        self.tree.setCurrentItem(None)  # previews nothing: the canvas shows the working photo
        self.preview_requested.emit(None)
        self._update_working()

    def _update_working(self) -> None:
        button, doc = self.working_button, self.doc
        button.setVisible(doc.has_photo)
        if not doc.has_photo:
            return
        applied = len(doc.applied)
        button.setText("Working photo\n" + (f"{applied} result{'s' * (applied > 1)} applied"
                                             if applied else "as opened"))
        button.setToolTip("Show the photo that edits start from (hold \\ to see it as opened)")
        key = (doc.photo_key, id(doc.base))  # a restore puts a new base under the same key
        if self._working_key != key:  # a thumbnail of a 24 MP base takes a moment: once per base
            self._working_key = key
            button.setIcon(QIcon(QPixmap.fromImage(qimage_from_rgb(make_thumbnail(doc.base)))))
        button.setChecked(doc.preview_id is None)

    @staticmethod
    def _icon(entry: HistoryEntry) -> QIcon:
        return QIcon(QPixmap.fromImage(qimage_from_rgb(entry.thumbnail)))

    def _find(self, entry_id):
        iterator = [self.tree.topLevelItem(i) for i in range(self.tree.topLevelItemCount())]
        while iterator:
            item = iterator.pop(0)
            # A group header shares its first child's id; prefer the child.
            for i in range(item.childCount()):
                iterator.insert(i, item.child(i))
            if item.data(0, ENTRY_ROLE) == entry_id and item.childCount() == 0:
                return item
        return None

    def _select_preview(self) -> None:
        item = self._find(self.doc.preview_id) if self.doc.preview_id is not None else None
        self.tree.blockSignals(True)
        self.tree.setCurrentItem(item) if item is not None else self.tree.clearSelection()
        if item is None:
            self.tree.setCurrentItem(None)
        self.tree.blockSignals(False)
        self._update_buttons()
        self.working_button.setChecked(self.doc.preview_id is None)

    def _on_current(self, current, _previous) -> None:
        self._update_buttons()
        self.preview_requested.emit(current.data(0, ENTRY_ROLE) if current is not None else None)

    def _update_buttons(self) -> None:
        has = self.selected_id() is not None
        for button in (self.apply_button, self.settings_button, self.delete_button):
            button.setEnabled(has)
        entry = self.doc.entry(self.selected_id())
        self.mask_button.setEnabled(entry is not None and self.doc.has_photo
                                    and entry.image.shape == self.doc.base.shape)
