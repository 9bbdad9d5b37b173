"""Instruction editing through the window on the real tiny random-weight FLUX.2 klein: the method
is offered for klein only, the target field asks for the instruction, Find Mask shows the area
the instruction is about, the brush refines it, the edit changes only the refined area, apply
and undo."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from desktop_app.main_window import MainWindow
from desktop_app.worker import EngineController
from edit_checks import check_only_the_mask_changed_then_apply_and_undo
from engine.params import EditParams
from mouse import drag

ROOT = Path(__file__).resolve().parents[2]


def _load(qtbot, win, engine, path) -> None:
    with qtbot.waitSignal(engine.model_state, timeout=120_000,
                          check_params_cb=lambda state, _m: state in ("ready", "failed")):
        win.load_model(str(path), device="cpu")
    assert win.model_state == "ready", win.model_message


def _offered(panel) -> set:
    return {panel.method.itemData(i) for i in range(panel.method.count())
            if panel.method.model().item(i).isEnabled()}


@pytest.mark.slow
def test_instruction_find_refine_edit_apply_undo(qtbot, settings, tiny_model_path, tmp_path,
                                                 dialogs):
    from engine.models import load_model
    from engine.session import EditSession
    from engine.tiny_model import ensure_tiny_flux2

    photo_path = tmp_path / "chelsea.png"
    shutil.copy(ROOT / "resources" / "samples" / "chelsea.png", photo_path)
    engine = EngineController()
    win = MainWindow(settings, engine)
    qtbot.addWidget(win)
    win.resize(1100, 760)
    win.show()
    try:
        _load(qtbot, win, engine, tiny_model_path)  # Stable Diffusion: no reference image
        assert "instruct" not in _offered(win.params)
        klein_path = ensure_tiny_flux2()
        _load(qtbot, win, engine, klein_path)
        assert "instruct" in _offered(win.params)
        panel = win.params
        panel.method.setCurrentIndex(panel.method.findData("instruct"))
        assert panel.prompts_form.labelForField(panel.target).text() == "Instruction"
        assert panel.target.placeholderText() == "make the car red"
        assert not panel.source.isVisibleTo(panel)
        assert win.open_path(photo_path)
        doc = win.doc
        original = doc.base.copy()
        panel.target.setText("make the cat blue")
        # Seed 0: the tiny klein reads its texts weakly; at this seed and 8 samples the
        # instruction's contrast clears the noise floor on this photo.
        params = EditParams(steps=4, mask_samples=8, seed=0)
        panel.set_params(params)
        panel.lock_seed.setChecked(True)

        with qtbot.waitSignal(engine.job_finished, timeout=120_000):
            win.actions["find_mask"].trigger()
        assert dialogs.shown == [], dialogs.texts()
        heat = doc.heatmap
        assert heat is not None and heat.shape == (300, 451) and heat.max() > 0.9
        # The instruction's own contrast (with and without it, the photo as reference), as the
        # engine finds it for these settings.
        model = load_model(str(klein_path), device="cpu")
        expected = EditSession(model, doc.current_photo()).estimate_mask(
            "", "make the cat blue", win.params.params(), method="instruct")
        np.testing.assert_allclose(heat, expected, atol=1e-5)
        found = doc.composed.copy()

        # Refine: add a stroke across the top-left corner with the brush.
        win.canvas.set_brush_size(30)
        drag(qtbot, win.canvas, [(x, 40) for x in (30, 90, 150)])
        refined = doc.composed.copy()
        assert refined[40, 30:151].min() == 1.0 and not np.array_equal(refined, found)

        with qtbot.waitSignal(engine.job_finished, timeout=120_000):
            win.actions["edit"].trigger()
        assert dialogs.shown == [], dialogs.texts()
        [entry] = doc.history
        assert entry.method == "instruct" and entry.target == "make the cat blue"
        np.testing.assert_array_equal(entry.mask > 0.5, refined > 0.5)
        check_only_the_mask_changed_then_apply_and_undo(win, entry, original)
    finally:
        win.doc.mark_exported()
        win.close()
        engine.shutdown()


def test_an_empty_instruction_is_refused_at_the_instruction_field(window, dialogs):
    """The engine's sentence for an empty instruction, naming the relabelled field, whose text
    gets the cursor."""
    window.params.set_method("instruct")
    window.params.target.setText("  ")
    window.actions["find_mask"].trigger()
    assert dialogs.shown[-1][2] == ("The instruction is empty: say what to change, e.g. "
                                    "\u201cmake the car red\u201d (the \u201cInstruction\u201d field).")
    assert window.params.target.hasFocus() and window.runs.job is None
    window.params.set_method("diffedit")  # the field asks for the target text again
    assert window.params.prompts_form.labelForField(window.params.target).text() == "Should become"
    assert window.params.source.isVisibleTo(window.params)
