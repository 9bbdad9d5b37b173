"""The side docks' frame: a panel in a vertical-only scroll area with an optional pinned footer."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget, QFrame, QScrollArea, QVBoxLayout, QWidget


def add_dock(window, title: str, name: str, widget: QWidget, area, scroll=False,
             footer: QWidget | None = None) -> QDockWidget:
    """A movable, closable dock holding ``widget``; ``scroll`` wraps it in a vertical scroll
    area, ``footer`` stays pinned below it."""
    dock = QDockWidget(title, window)
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
    window.addDockWidget(area, dock)
    return dock
