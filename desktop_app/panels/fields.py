"""Spin boxes for EditParams fields: range, default and number type come from the engine's field
table (engine.params), so a widget never allows what validation refuses; the typing step, the
decimals and the unit shown are the app's."""

from __future__ import annotations

from PySide6.QtWidgets import QDoubleSpinBox, QSpinBox

from engine.fields import AUTO, kind
from engine.params import field_table

STEPS = {"strength": (0.05, 2), "guidance": (0.5, 1), "mask_threshold": (0.01, 2), "eta": (0.1, 2)}
SUFFIXES = {"feather": " px"}


def param_box(name: str, value=None) -> QSpinBox | QDoubleSpinBox:
    """A spin box for the EditParams field ``name`` showing ``value`` (default: the field's)."""
    f = field_table()[name]
    low, high = f.metadata["range"]
    if kind(f) is int:
        box = QSpinBox()
        box.setAccelerated(True)
    else:
        box = QDoubleSpinBox()
        step, decimals = STEPS[name]
        box.setDecimals(decimals)
        box.setSingleStep(step)
    box.setRange(AUTO if f.metadata.get("auto") else low, high)
    if f.metadata.get("auto"):  # "Auto" stands for AUTO: the engine picks the value per photo
        box.setSpecialValueText("Auto")
    box.setSuffix(SUFFIXES.get(name, ""))
    box.setValue(f.default if value is None else value)
    return box
