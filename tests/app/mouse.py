"""The user's mouse on the canvas, in photo coordinates (shared by the canvas tests)."""

from __future__ import annotations

from PySide6.QtCore import QPointF, Qt


def drag(qtbot, canvas, points, modifier=Qt.KeyboardModifier.NoModifier):
    """Press, move through and release at photo coordinates, like a user's mouse."""
    viewport = canvas.viewport()
    pos = [canvas.mapFromScene(QPointF(x, y)) for x, y in points]
    qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, modifier, pos[0])
    for p in pos[1:]:
        qtbot.mouseMove(viewport, p)
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, modifier, pos[-1])
