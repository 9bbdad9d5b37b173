"""The mask panel: brush, eraser, selection and paint tools, size and hardness, overlay display,
mask operations."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QFormLayout, QGridLayout, QHBoxLayout, QPushButton,
                               QSlider, QSpinBox, QToolButton, QVBoxLayout, QWidget)

AMOUNT_SHARE = 1 / 160  # Grow/Shrink/Feather's default: of the photo's long side (8 px at 1280)


class MaskPanel(QWidget):
    """Binds to the canvas's brush; the operation buttons are the main window's actions."""

    operation_px_changed = Signal(int)

    def __init__(self, canvas, actions: dict, parent=None):
        super().__init__(parent)
        self.canvas = canvas
        outer = QVBoxLayout(self)

        # Brush, eraser and paint (colours for Blended scribble); the selections below them.
        for keys in (("brush", "eraser", "paint"), ("rect_select", "lasso", "segment")):
            tools = QHBoxLayout()
            for key in keys:
                button = QToolButton()
                button.setDefaultAction(actions[key])
                button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
                tools.addWidget(button)
            tools.addStretch(1)
            outer.addLayout(tools)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        self.size = QSpinBox()
        self.size.setRange(1, 2000)
        self.size.setSuffix(" px")
        self.size.setToolTip("Brush diameter in photo pixels ([ smaller, ] larger)")
        self.hardness = QSlider(Qt.Orientation.Horizontal)
        self.hardness.setRange(0, 100)
        self.hardness.setToolTip("Hardness: 100 % gives a crisp edge, lower fades it out")
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(5, 100)
        self.opacity.setValue(50)
        self.opacity.setToolTip("How strongly the mask colour covers the photo")
        form.addRow("Size", self.size)
        form.addRow("Hardness", self.hardness)
        form.addRow("Overlay", self.opacity)
        outer.addLayout(form)

        toggles = QHBoxLayout()
        self.show_mask = QCheckBox()
        self.show_heatmap = QCheckBox()
        for box, key in ((self.show_mask, "show_mask"), (self.show_heatmap, "show_heatmap")):
            box.setText(actions[key].text().replace("&", ""))
            box.setToolTip(actions[key].toolTip())
            box.setChecked(actions[key].isChecked())
            box.toggled.connect(actions[key].setChecked)
            actions[key].toggled.connect(box.setChecked)
            toggles.addWidget(box)
        toggles.addStretch(1)
        outer.addLayout(toggles)

        ops = QGridLayout()
        self.amount = QSpinBox()
        self.amount.setRange(1, 1000)
        self.amount.setValue(8)
        self.amount.setSuffix(" px")
        self.amount.setToolTip("How many pixels Grow, Shrink and Feather use. It follows the "
                               "photo's size: what you set here is kept in proportion for the "
                               "next photo.")
        # The amount as a share of the photo's long side: a big photo gets a visible amount.
        self.amount_share = AMOUNT_SHARE
        self.amount.valueChanged.connect(self.operation_px_changed)
        self.amount.valueChanged.connect(self._remember_share)
        canvas.doc.photo_changed.connect(self._scale_amount)
        names = ("grow", "shrink", "feather", "invert", "clear_mask", "load_mask", "save_mask")
        cells = [(0, 0), (0, 1), (1, 0), (2, 0), (2, 1), (3, 0), (3, 1)]
        for name, (r, c) in zip(names, cells):
            button = QPushButton(actions[name].text().replace("&", ""))
            button.setToolTip(actions[name].toolTip())
            button.clicked.connect(actions[name].trigger)
            actions[name].changed.connect(
                lambda b=button, a=actions[name]: b.setEnabled(a.isEnabled()))
            ops.addWidget(button, r, c)
        ops.addWidget(self.amount, 1, 1)
        outer.addLayout(ops)
        outer.addStretch(1)

        self.size.valueChanged.connect(lambda v: canvas.set_brush_size(v))
        self.hardness.valueChanged.connect(lambda v: canvas.set_hardness(v / 100))
        self.opacity.valueChanged.connect(lambda v: canvas.set_mask_opacity(v / 100))
        canvas.brush_changed.connect(self._sync)
        self._sync()

    def _long_side(self) -> int:
        return max(self.canvas.doc.size)

    def _remember_share(self, value: int) -> None:
        if self._long_side():
            self.amount_share = value / self._long_side()

    def _scale_amount(self) -> None:
        if self._long_side():
            self.amount.blockSignals(True)  # a new photo: the share stays what the user chose
            self.amount.setValue(max(2, round(self.amount_share * self._long_side())))
            self.amount.blockSignals(False)
            self.operation_px_changed.emit(self.amount.value())

    def _sync(self) -> None:
        for widget, value in ((self.size, round(self.canvas.brush_size)),
                              (self.hardness, round(self.canvas.hardness * 100))):
            widget.blockSignals(True)
            widget.setValue(value)
            widget.blockSignals(False)
