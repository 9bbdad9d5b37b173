"""Render screenshots of the app's screens: `python -m desktop_app.screenshots [OUT_DIR] [--model M]`.

Runs the real app on a sample photo (offscreen): no model, photo with mask, a run in progress,
history with results, the Settings dialog. With the default tiny test model the results are noise
(random weights); pass --model with a real model for documentation pictures.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path("resources/docs"))
    parser.add_argument("--model", default="tiny", help="model to edit with (default: tiny test model)")
    parser.add_argument("--size", default="1400x880", help="window size, e.g. 1400x880")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # Private settings: the screenshots must not depend on (or change) the user's own.
    os.environ.setdefault("DIFFEDIT_CONFIG_DIR", tempfile.mkdtemp(prefix="diffedit-shots-"))

    from PySide6.QtCore import QEventLoop, QSettings, QTimer

    from desktop_app.app import build_window, create_application
    from desktop_app.dialogs import SettingsDialog
    from desktop_app.settings import AppSettings
    from engine.params import EditParams
    from engine.resources import resource_path

    app = create_application()
    settings = AppSettings(QSettings(str(Path(os.environ["DIFFEDIT_CONFIG_DIR"]) / "app.ini"),
                                     QSettings.Format.IniFormat))
    window, engine = build_window(settings)
    width, height = (int(v) for v in args.size.split("x"))
    window.resize(width, height)
    window.show()

    def wait(signal, check=lambda *a: True, timeout_ms=300_000):
        loop = QEventLoop()
        got = []

        def hit(*values):
            if check(*values):
                got.append(values)
                loop.quit()

        signal.connect(hit)
        QTimer.singleShot(timeout_ms, loop.quit)
        loop.exec()

        signal.disconnect(hit)
        if not got:
            raise SystemExit(f"timed out waiting for {signal}")
        return got[0]

    def settle():
        for _ in range(5):
            app.processEvents()

    def shot(name, widget=None):
        settle()
        path = args.out / f"{name}.png"
        (widget or window).grab().save(str(path))
        print(path)

    window.start_engine()
    shot("01-no-model")

    state = []
    engine.model_state.connect(lambda s, m: state.append(s))
    window.load_model(args.model)
    wait(engine.model_state, lambda s, m: s in ("ready", "failed"))
    if window.model_state != "ready":
        print(f"error: the model did not load: {window.model_message}", file=sys.stderr)
        return 1
    window.open_path(resource_path("samples", "coffee.png"))
    window.params.source.setText("a cup of coffee")
    window.params.target.setText("a cup of green tea")
    window.params.set_params(EditParams(steps=20, strength=0.7, mask_samples=4, seed=7))
    window.params.lock_seed.setChecked(True)
    shot("02-photo")

    window.find_mask()
    wait(engine.job_finished)
    # Refine: add the cup's rim by hand, erase a corner; strokes sit on top of the auto mask.
    doc = window.doc
    doc.begin_stroke("add", 40, 0.8)
    for x in range(230, 390, 8):
        doc.stroke_to(x, 190)
    doc.end_stroke()
    doc.begin_stroke("erase", 60, 0.8)
    doc.stroke_to(40, 40)
    doc.stroke_to(120, 60)
    doc.end_stroke()
    shot("03-photo-with-mask")

    window.params.variations.setValue(3)
    grabbed = []

    def mid_run(progress):
        if progress.stage == "decode" and progress.step >= 2 and not grabbed:
            grabbed.append(True)
            shot("04-during-run")

    engine.progress.connect(mid_run)
    window.run_edit()
    wait(engine.job_finished)
    window.split_slider.setValue(45)
    shot("05-history-and-compare")
    window.split_slider.setValue(0)

    dialog = SettingsDialog(settings, window)
    dialog.show()
    shot("06-settings", dialog)
    dialog.close()
    window.doc.mark_exported()
    window.close()
    engine.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
