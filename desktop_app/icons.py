"""Icons from resources/icons/*.svg, tinted with the palette's text colour (light and dark themes)."""

from __future__ import annotations

from functools import lru_cache

from PySide6.QtCore import QByteArray, QRectF, Qt
from PySide6.QtGui import QColor, QGuiApplication, QIcon, QPainter, QPalette, QPixmap
from PySide6.QtSvg import QSvgRenderer

from engine.resources import resource_path

SIZES = (16, 24, 32, 48, 64)  # rendered up front so toolbars stay crisp at any scale factor


def icon(name: str) -> QIcon:
    palette = QGuiApplication.palette()
    return _icon(name, palette.color(QPalette.ColorRole.WindowText).name(),
                 palette.color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.WindowText).name())


@lru_cache(maxsize=None)
def _icon(name: str, colour: str, disabled: str) -> QIcon:
    path = resource_path("icons", f"{name}.svg")
    try:
        svg = path.read_text(encoding="utf-8")
    except OSError:
        return QIcon()  # a missing icon must not stop the app; the action keeps its text
    result = QIcon()
    for mode, tint in ((QIcon.Mode.Normal, colour), (QIcon.Mode.Disabled, disabled)):
        renderer = QSvgRenderer(QByteArray(svg.replace("currentColor", tint).encode()))
        for size in SIZES:
            pixmap = QPixmap(size, size)
            pixmap.fill(QColor(Qt.GlobalColor.transparent))
            painter = QPainter(pixmap)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            renderer.render(painter, QRectF(0, 0, size, size))
            painter.end()
            result.addPixmap(pixmap, mode)
    return result
