"""The history panel: every run's results with thumbnail, prompts, parameters, seed and time."""

from __future__ import annotations

import time

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QPushButton, QTreeWidget,
                               QTreeWidgetItem, QVBoxLayout, QWidget)

from desktop_app.qt_compat import emit
from desktop_app.canvas.items import qimage_from_rgb
from desktop_app.document import Document, HistoryEntry

ENTRY_ROLE = Qt.ItemDataRole.UserRole
THUMB = 64


def describe(entry: HistoryEntry) -> str:
    p = entry.params
    return (f"{entry.target}\n\u201c{entry.source}\u201d \u2192 \u201c{entry.target}\u201d\n"
            f"seed {p.seed} \u00b7 {p.steps} steps \u00b7 {entry.seconds:.1f} s")


def details(entry: HistoryEntry) -> str:
    p = entry.params
    lines = [
        f"Reference: {entry.source}", f"Target: {entry.target}",
        f"Negative: {p.negative_prompt or '(reference text)'}", f"Method: {entry.method}",
        f"Steps {p.steps}, encoding ratio {p.strength:g}, guidance {p.guidance:g}",
        f"Mask threshold {p.mask_threshold:g}, mask samples {p.mask_samples}, "
        f"feather {p.feather} px, variety {p.eta:g}",
        f"Seed {p.seed}", f"Time {entry.seconds:.1f} s, made {time.strftime('%H:%M:%S', time.localtime(entry.created))}",
    ]
    lines += [f"Warning: {w}" for w in entry.warnings]
    return "\n".join(lines)


class HistoryPanel(QWidget):
    preview_requested = Signal(object)  # entry id or None
    apply_requested = Signal(int)
    use_settings_requested = Signal(int)
    delete_requested = Signal(int)

    def __init__(self, document: Document, parent=None):
        super().__init__(parent)
        self.doc = document
        layout = QVBoxLayout(self)
        self.tree = QTreeWidget()
        self.tree.setHeaderHidden(True)
        self.tree.setIconSize(QSize(THUMB, THUMB))
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setUniformRowHeights(False)
        self.tree.setWordWrap(True)
        self.tree.setRootIsDecorated(True)
        layout.addWidget(self.tree, 1)
        buttons = QHBoxLayout()
        self.apply_button = QPushButton("Apply")
        self.apply_button.setToolTip("Make this result the photo you keep editing (undoable)")
        self.settings_button = QPushButton("Use these settings")
        self.settings_button.setToolTip("Put this run's prompts, parameters and seed back in the panel")
        self.delete_button = QPushButton("Delete")
        self.delete_button.setToolTip("Remove this result from the history")
        for button in (self.apply_button, self.settings_button, self.delete_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self.apply_button.clicked.connect(lambda: self._emit(self.apply_requested))
        self.settings_button.clicked.connect(lambda: self._emit(self.use_settings_requested))
        self.delete_button.clicked.connect(lambda: self._emit(self.delete_requested))
        self.tree.currentItemChanged.connect(self._on_current)
        document.history_changed.connect(self.rebuild)
        document.preview_changed.connect(self._select_preview)
        self.rebuild()

    def selected_id(self) -> int | None:
        item = self.tree.currentItem()
        return item.data(0, ENTRY_ROLE) if item is not None else None

    def _emit(self, signal) -> None:
        entry_id = self.selected_id()
        if entry_id is not None:
            emit(signal, entry_id)

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
            parent = QTreeWidgetItem([f"{first.target}\n{len(entries)} variations \u00b7 "
                                      f"seeds {entries[0].params.seed}\u2013{entries[-1].params.seed}"])
            parent.setData(0, ENTRY_ROLE, first.id)
            parent.setIcon(0, self._icon(first))
            parent.setToolTip(0, details(first))
            for entry in entries:
                child = self._item(entry)
                child.setText(0, f"Variation {entry.variation + 1}\nseed {entry.params.seed} "
                                 f"\u00b7 {entry.seconds:.1f} s")
                parent.addChild(child)
            self.tree.addTopLevelItem(parent)
            parent.setExpanded(True)
        self.tree.blockSignals(False)
        self._select_preview()
        self._update_buttons()

    def _item(self, entry: HistoryEntry) -> QTreeWidgetItem:
        item = QTreeWidgetItem([describe(entry)])
        item.setData(0, ENTRY_ROLE, entry.id)
        item.setIcon(0, self._icon(entry))
        item.setToolTip(0, details(entry))
        return item

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

    def _on_current(self, current, _previous) -> None:
        self._update_buttons()
        emit(self.preview_requested, current.data(0, ENTRY_ROLE) if current is not None else None)

    def _update_buttons(self) -> None:
        has = self.selected_id() is not None
        for button in (self.apply_button, self.settings_button, self.delete_button):
            button.setEnabled(has)
