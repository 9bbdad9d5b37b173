"""Renders resources/icons/app_logo.svg into the platform icon files the installers use.

Run once after changing the logo: ``python packaging/make_icons.py``. It writes app.ico
(Windows), app.icns (macOS) and app.png (Linux desktop entries) next to the SVG; they are
committed, so building a bundle needs no SVG renderer.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PIL import Image  # noqa: E402
from PySide6.QtCore import QRectF, Qt  # noqa: E402
from PySide6.QtGui import QColor, QGuiApplication, QImage, QPainter  # noqa: E402
from PySide6.QtSvg import QSvgRenderer  # noqa: E402

ICONS = Path(__file__).resolve().parent.parent / "resources" / "icons"
LARGEST = 1024  # macOS wants up to 512@2x; the smaller sizes are downscaled by Pillow's writers


def render(svg: Path, side: int) -> Image.Image:
    image = QImage(side, side, QImage.Format.Format_RGBA8888)
    image.fill(QColor(Qt.GlobalColor.transparent))
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    QSvgRenderer(str(svg)).render(painter, QRectF(0, 0, side, side))
    painter.end()
    return Image.frombuffer("RGBA", (side, side), bytes(image.constBits()), "raw", "RGBA", 0, 1)


def main() -> int:
    QGuiApplication(sys.argv[:1])
    big = render(ICONS / "app_logo.svg", LARGEST)
    big.save(ICONS / "app.icns")
    big.resize((256, 256), Image.Resampling.LANCZOS).save(
        ICONS / "app.ico", sizes=[(s, s) for s in (16, 24, 32, 48, 64, 128, 256)])
    big.resize((256, 256), Image.Resampling.LANCZOS).save(ICONS / "app.png")
    for name in ("app.ico", "app.icns", "app.png"):
        print(f"{ICONS / name}: {(ICONS / name).stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
