"""Entry point of the packaged app: `--self-test`, the CLI subcommands, or the editor window.

`--self-test` is handled before anything imports the GUI, so a bundle can be checked on a
build machine without a display: it runs a full DiffEdit edit on the tiny random model
offscreen and exits 0 on success, 1 with a message otherwise.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--self-test"]:
        return self_test(keep="--keep" in argv)
    from desktop_app.launch import main as launch  # the CLI, or the editor with no subcommand

    return launch(argv)


def self_test(*, keep: bool = False) -> int:
    """Check the install end to end; every step prints one line so a failure is easy to place."""
    started = time.perf_counter()
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    os.environ["HF_HUB_OFFLINE"] = "1"  # a self-test that needs the network proves nothing
    scratch = Path(tempfile.mkdtemp(prefix="diffedit-self-test-"))
    for name in ("CONFIG", "CACHE", "DATA"):  # never touch the user's settings or caches
        os.environ[f"DIFFEDIT_{name}_DIR"] = str(scratch / name.lower())
    step = "start"
    try:
        step = "resources"
        _check_resources()
        step = "engine"
        output = _edit(scratch)
        step = "interface"
        _check_interface(scratch)
    except Exception as exc:  # noqa: BLE001 - the point is to report any failure
        print(f"self-test FAILED at {step}: {type(exc).__name__}: {exc}", file=sys.stderr)
        if os.environ.get("DIFFEDIT_DEBUG"):
            traceback.print_exc()
        return 1
    finally:
        if not keep:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
    print(f"self-test passed in {time.perf_counter() - started:.1f} s"
          + (f" (files kept in {scratch}; edited photo {output.name})" if keep else ""))
    return 0


def _check_resources() -> None:
    from engine.clip_tokenizer import BPE_NAME
    from engine.resources import resource_path, resources_root

    needed = [
        resource_path("samples", "astronaut.png"),
        *(resource_path("model_configs", family, "model_index.json") for family in ("sd1", "sd2", "sd2-v")),
        resource_path("clip", BPE_NAME),
    ]
    missing = [str(p) for p in needed if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError("missing resources: " + ", ".join(missing))
    print(f"  resources found in {resources_root()}")


def _edit(scratch: Path) -> Path:
    import numpy as np

    from engine import masks
    from engine.imaging import load_photo, read_metadata, save_image
    from engine.models import load_model
    from engine.params import EditParams
    from engine.resources import resource_path
    from engine.session import EditSession

    model = load_model("tiny", device="cpu", dtype="float32")
    photo = load_photo(resource_path("samples", "astronaut.png"))
    session = EditSession(model, photo)
    params = EditParams(steps=10, mask_samples=2, seed=1)
    steps = []
    result = session.edit("an astronaut", "a robot", None, params,
                          on_step=lambda stage, i, total, preview: steps.append(stage))
    if result.image.shape != photo.rgb.shape:
        raise AssertionError(f"edited photo is {result.image.shape}, the input {photo.rgb.shape}")
    if not {"mask", "encode", "decode"} <= set(steps):
        raise AssertionError(f"progress reported only the stages {sorted(set(steps))}")
    keep = masks.paste_alpha(result.mask, result.params.feather) <= 0  # beyond the mask and its feather
    if not keep.any() or keep.all():
        raise AssertionError(f"the mask covers {result.mask.mean():.0%} of the photo; expected a part of it")
    if not np.array_equal(result.image[keep], photo.rgb[keep]):
        raise AssertionError("pixels outside the mask changed")
    output = save_image(scratch / "edited.png", result.image, metadata=result.metadata())
    if "diffedit" not in read_metadata(output):
        raise AssertionError("the saved photo lacks its edit metadata")
    print(f"  edited {photo.size[0]}x{photo.size[1]} photo with the tiny model "
          f"({sum(result.stats['unet_evals'].values())} UNet evaluations), saved {output.name}")
    return output


def _check_interface(scratch: Path) -> None:
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(["diffedit-studio", "-platform", "offscreen"])
    from desktop_app.models_dialog import ModelsDialog

    dialog = ModelsDialog()
    shot = scratch / "models-dialog.png"
    if not dialog.grab().save(str(shot)) or shot.stat().st_size == 0:
        raise AssertionError("Qt could not render and save a window (image format plugins missing?)")
    dialog.deleteLater()
    app.processEvents()
    print(f"  Qt {__import__('PySide6').__version__} offscreen window rendered")


if __name__ == "__main__":
    sys.exit(main())
