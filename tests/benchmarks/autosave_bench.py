"""Autosave cost for a 4000x3000 photo with a painted mask, a heatmap and 4 history entries.

Prints the GUI-thread time of each save (the snapshot), the writer thread's time, the bytes
written, the autosave folder's size on disk and the restore time (the read off the GUI thread,
with the longest gap between GUI timer ticks meanwhile, and the install on it). Run:
    .venv/bin/python tests/benchmarks/autosave_bench.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["DIFFEDIT_DATA_DIR"] = tempfile.mkdtemp(prefix="autosave-bench-")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication, QProgressDialog  # noqa: E402

from desktop_app import autosave  # noqa: E402
from desktop_app.autosave import restore_dialog  # noqa: E402
from desktop_app.document import Document  # noqa: E402
from engine.imaging import Photo  # noqa: E402
from engine.params import EditParams  # noqa: E402
from engine.results import EditResult  # noqa: E402

W, H = 4000, 3000


def timed_save(saver: autosave.Autosaver, label: str) -> None:
    """One save: the snapshot's time on the GUI thread, and the longest gap between 10 ms timer
    ticks of the GUI event loop while the writer thread works (what a user would feel)."""
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    started = time.perf_counter()
    saver.save_now()  # returns after the snapshot; the writer thread does the rest
    gui = time.perf_counter() - started
    timer.start(10)
    while saver._future is not None:
        QApplication.processEvents()
        time.sleep(0.002)
    timer.stop()
    gaps = np.diff([started] + ticks) if ticks else np.array([0.0])
    size = sum(p.stat().st_size for p in saver.folder.iterdir())
    print(f"{label:<26} snapshot {gui * 1000:5.1f} ms  max GUI gap {gaps.max() * 1000:5.1f} ms  "
          f"writer {saver.last_seconds:4.2f} s  written {saver.last_bytes / 1e6:5.1f} MB  "
          f"folder {size / 1e6:5.1f} MB")


def main() -> None:
    QApplication([])
    rng = np.random.default_rng(0)
    sample = Image.open(ROOT / "resources" / "samples" / "coffee.png").convert("RGB")
    rgb = np.asarray(sample.resize((W, H), Image.Resampling.BICUBIC), np.int16)
    rgb = np.clip(rgb + rng.normal(0, 2, rgb.shape), 0, 255).astype(np.uint8)  # sensor-like noise
    doc = Document()
    doc.set_photo(Photo(rgb=rgb, path=Path("coffee-12mp.png")), "coffee-12mp.png")
    saver = autosave.Autosaver(doc)
    saver._timer.stop()

    small = rng.random((H // 8, W // 8)).astype(np.float32)
    doc.set_heatmap(np.asarray(Image.fromarray(small).resize((W, H), Image.Resampling.BILINEAR)))
    doc.begin_stroke("add", 120, 0.7)
    for x in range(600, 3400, 40):
        doc.stroke_to(x, 1500 + 400 * np.sin(x / 300))
    doc.end_stroke()
    timed_save(saver, "photo + heatmap + stroke")
    for i in range(4):
        image = doc.base.copy()
        region = np.s_[800:2200, 1000 + i * 200:3000 + i * 200]
        image[region] = np.clip(image[region].astype(np.int16) + rng.integers(-40, 40, image[region].shape),
                                0, 255).astype(np.uint8)
        mask = np.zeros((H, W), np.float32)
        mask[region] = 1.0
        doc.add_result(1, EditResult(image=image, mask=mask, heatmap=None, source="a cup of coffee",
                                     target="a cup of tea", params=EditParams(seed=i),
                                     model_name="sd15", variation=i, seconds=30.0))
        doc.set_preview(doc.history[-1].id)
        timed_save(saver, f"+ history entry {i + 1}")
    doc.begin_stroke("erase", 60, 1.0)
    doc.stroke_to(2000, 1500)
    doc.end_stroke()
    timed_save(saver, "+ one eraser dab")
    doc.set_threshold(0.3)
    timed_save(saver, "+ threshold moved")

    saver._lock.unlock()  # as after a crash
    sessions, _ = autosave.find_orphans()
    # The restore as the window does it: read and verify on a thread while the GUI ticks.
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    started = time.perf_counter()
    timer.start(10)
    state = restore_dialog._load_with_progress(sessions[0], QProgressDialog())
    timer.stop()
    read = time.perf_counter() - started
    gaps = np.diff([started] + ticks + [started + read])
    started = time.perf_counter()
    restored = Document()
    autosave.install(restored, state)
    print(f"restore: read and verify {read:.2f} s off the GUI thread (max GUI gap "
          f"{gaps.max() * 1000:.0f} ms), install {time.perf_counter() - started:.2f} s on it; "
          f"identical composed mask: {np.array_equal(restored.composed, doc.composed)}; "
          f"history images identical: "
          f"{all(np.array_equal(a.image, b.image) for a, b in zip(restored.history, doc.history))}")
    sessions[0].discard()


if __name__ == "__main__":
    main()
