"""Re-thresholding a 24 MP (6000x4000) mask while the threshold slider is dragged.

Prints, per threshold change: the time the GUI thread spends in the change itself, the time until
the canvas shows the new mask (the job on its own thread, then writing and redrawing the tiles it
changed on the GUI thread), and the longest gap between 5 ms GUI timer ticks meanwhile (what the
hand on the slider feels). Cases: a slider drag in 0.01 steps and a jump of 0.3 on a heatmap as
smooth as the engine's (latent resolution, upscaled), the same after a Grow and a Feather (the
operations carry a move further, so their windows are wider),
and a heatmap of pixel noise (every tile is reached). Run:
    .venv/bin/python tests/benchmarks/rethreshold_bench.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from desktop_app.canvas.view import Canvas  # noqa: E402
from desktop_app.document import Document  # noqa: E402
from engine import masks  # noqa: E402
from engine.imaging import Photo  # noqa: E402

W, H = 6000, 4000
TARGET_MS = 50


def smooth_heatmap(rng) -> np.ndarray:
    """Blobs on a 96x64 grid (a latent-resolution heatmap) upscaled to the photo."""
    small = np.zeros((64, 96), np.float32)
    ys, xs = np.mgrid[0:64, 0:96]
    for _ in range(12):
        cx, cy, r = rng.uniform(0, 96), rng.uniform(0, 64), rng.uniform(4, 14)
        small += np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * r * r)).astype(np.float32)
    return masks.resize(small / small.max(), (W, H))


def change(doc: Document, level: float) -> tuple[float, float, float]:
    """(GUI-thread ms in set_threshold, ms until the mask is shown, longest GUI gap in ms)."""
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(5)
    started = time.perf_counter()
    doc.set_threshold(level)
    gui = time.perf_counter() - started
    while doc._levelled != doc.threshold or doc._refolder.busy:
        QApplication.processEvents()
        time.sleep(0.001)
    shown = time.perf_counter() - started
    QApplication.processEvents()
    timer.stop()
    gaps = np.diff([started] + ticks + [time.perf_counter()])
    return gui * 1000, shown * 1000, gaps.max() * 1000


def report(label: str, figures: list[tuple[float, float, float]]) -> None:
    gui, shown, gap = zip(*figures)
    print(f"{label:<34} set_threshold {statistics.median(gui):5.2f} ms (max {max(gui):5.2f})  "
          f"shown after {statistics.median(shown):6.1f} ms (max {max(shown):6.1f})  "
          f"longest GUI gap {max(gap):6.1f} ms")


def drag(doc: Document, label: str) -> None:
    doc.set_threshold(0.5)
    doc.settle()
    report(f"{label}: drag in 0.01 steps", [change(doc, level) for level in np.arange(0.51, 0.61, 0.01)])
    report(f"{label}: jumps of 0.3", [change(doc, level) for level in (0.2, 0.5, 0.8, 0.5)])


def main() -> None:
    app = QApplication([])
    rng = np.random.default_rng(0)
    doc = Document()
    canvas = Canvas(doc)  # the overlay redraws what changes, as in the app
    canvas.resize(1280, 720)
    doc.set_photo(Photo(rgb=np.full((H, W, 3), 128, np.uint8), path=Path("big.png")), "big.png")
    doc.set_heatmap(smooth_heatmap(rng))
    for mode, y in (("add", 1200), ("erase", 2800)):
        doc.begin_stroke(mode, 150, 0.8)
        for x in range(300, 5700, 60):
            doc.stroke_to(x, y + 300 * np.sin(x / 500))
        doc.end_stroke()
    print(f"{W}x{H} photo, heatmap + brush + eraser strokes (target: shown within {TARGET_MS} ms)")
    drag(doc, "smooth heatmap")
    doc.grow_mask(30)
    drag(doc, "after Grow 30 px")
    doc.feather_mask(30)
    drag(doc, "after Grow and Feather 30 px")
    doc.undo_stack.undo()
    doc.undo_stack.undo()
    doc.set_heatmap(rng.random((H, W), dtype=np.float32))
    drag(doc, "pixel-noise heatmap (worst case)")
    expected = np.maximum(doc.heatmap > doc.threshold, doc.mask.segments[0].added)
    expected = (expected * (1 - doc.mask.segments[0].erased)).astype(np.float32)
    print("final mask equals the synchronous fold:", np.array_equal(doc.composed, expected))
    app.processEvents()


if __name__ == "__main__":
    main()
