"""The Settings dialog's LoRA list: files with a weight each, applied to the model when it loads
(engine.lora; the same ``PATH:WEIGHT`` specs as the CLI's ``--lora``)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QAbstractItemView, QDoubleSpinBox, QFileDialog, QHBoxLayout,
                               QHeaderView, QPushButton, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from engine.lora import WEIGHT_RANGE, LoraSpec, parse

PATH_ROLE = Qt.ItemDataRole.UserRole


class LoraList(QWidget):
    """A table of LoRA files and weights, with Add... and Remove."""

    def __init__(self, specs: list[str], parent=None):
        super().__init__(parent)
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["LoRA file", "Weight"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setFixedHeight(self.table.fontMetrics().lineSpacing() * 5)
        self.table.setToolTip("LoRA files (.safetensors) applied to the model when it loads, each "
                              "with its weight (0 turns one off; negative weights invert it). "
                              "A LoRA must be made for the model's family (SD 1.x, SD 2.x, "
                              "SDXL, FLUX.2 klein, SD3.5 or Z-Image); a few-step one "
                              "(Lightning, Turbo, LCM, ...) brings its steps as the defaults.")
        add = QPushButton("Add\u2026")
        add.setToolTip("Choose a LoRA .safetensors file")
        add.clicked.connect(self._choose)
        self.remove = QPushButton("Remove")
        self.remove.setToolTip("Remove the selected LoRA")
        self.remove.clicked.connect(self._remove_selected)
        buttons = QHBoxLayout()
        buttons.addWidget(add)
        buttons.addWidget(self.remove)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        for spec in specs:
            item = parse(spec)
            self.add(item.path, item.weight)
        self.table.itemSelectionChanged.connect(self._update_remove)
        self._update_remove()

    def add(self, path, weight: float = 1.0) -> None:
        row = self.table.rowCount()
        self.table.insertRow(row)
        cell = QTableWidgetItem(Path(path).name)
        cell.setToolTip(str(path))
        cell.setData(PATH_ROLE, str(path))  # the full path behind the shown name
        self.table.setItem(row, 0, cell)
        box = QDoubleSpinBox()
        box.setRange(*WEIGHT_RANGE)
        box.setDecimals(2)
        box.setSingleStep(0.05)
        box.setValue(weight)
        box.setToolTip("How strongly this LoRA applies (1: as trained, 0: off)")
        self.table.setCellWidget(row, 1, box)

    def specs(self) -> list[str]:
        """``PATH:WEIGHT`` of each row, in order (what Settings saves and the engine parses)."""
        return [LoraSpec(Path(path), self.table.cellWidget(row, 1).value()).spec
                for row, path in enumerate(self._paths())]

    def missing(self) -> list[str]:
        """Files in the list that do not exist (any more)."""
        return [path for path in self._paths() if not Path(path).is_file()]

    def _paths(self) -> list[str]:
        return [self.table.item(row, 0).data(PATH_ROLE) for row in range(self.table.rowCount())]

    def _choose(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a LoRA", str(Path.home()),
                                              "LoRA files (*.safetensors)")
        if path:
            self.add(path)

    def _remove_selected(self) -> None:
        for row in sorted({index.row() for index in self.table.selectedIndexes()}, reverse=True):
            self.table.removeRow(row)

    def _update_remove(self) -> None:
        self.remove.setEnabled(bool(self.table.selectedIndexes()))
