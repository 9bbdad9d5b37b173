"""Faults during a run: an engine exception, a cancel at any step, running out of memory.

Each leaves the document exactly as it was (every array compared byte for byte), shows what
happened and what to try, and the next run works.
"""

from __future__ import annotations

import pytest

from desktop_app.worker import describe_exception
from doc_fingerprint import fingerprint
from fake_engine import FakeEditSession

MASK, STEPS = 3, 5  # the window fixture's mask samples and encode/decode steps (steps 10, strength 0.5)


def run(qtbot, win, action="edit"):
    with qtbot.waitSignal(win.engine.job_finished, timeout=10000):
        win.actions[action].trigger()


def with_history(qtbot, win):
    """A document with state to lose: a found mask, a stroke, a result applied, one shown."""
    run(qtbot, win, "find_mask")
    doc = win.doc
    doc.begin_stroke("add", 5, 1.0)
    doc.stroke_to(10, 10)
    doc.end_stroke()
    run(qtbot, win)
    win.apply_entry(doc.history[0].id)
    run(qtbot, win)
    assert len(doc.history) == 2 and doc.applied and doc.preview_id == doc.history[1].id
    return doc


def forget_encodings(win):
    """The fake caches its encoding per photo; forgetting it makes the next Edit pass every stage."""
    for session in win.engine.worker.sessions.values():
        session.encoded = False


def state(win):
    return fingerprint(win.doc), win.doc.undo_stack.count(), win.doc.undo_stack.index()


def step_hook(monkeypatch, action):
    """Call ``action(stage, step, count)`` on the engine thread after every fake UNet step."""
    original = FakeEditSession._steps
    count = [0]

    def steps(self, stage, total, on_step, should_stop):
        def hooked(stage_, i, total_, preview):
            if on_step is not None:
                on_step(stage_, i, total_, preview)
            count[0] += 1
            action(stage_, i - 1, count[0])  # 0-based, as Progress.step
        return original(self, stage, total, hooked, should_stop)

    monkeypatch.setattr(FakeEditSession, "_steps", steps)
    return count


@pytest.mark.slow
@pytest.mark.parametrize("stage,step", [("mask", 0), ("mask", MASK - 1), ("encode", 0),
                                        ("encode", STEPS - 1), ("decode", 0), ("decode", 3)])
def test_engine_exception_mid_run_leaves_everything_as_it_was(qtbot, window, dialogs, monkeypatch,
                                                              stage, step):
    doc = with_history(qtbot, window)
    doc.clear_mask()  # so Edit finds a mask first and passes every stage
    window.params.variations.setValue(2)
    before = state(window)

    armed = [True]

    def fail(stage_, i, _count):
        if armed[0] and (stage_, i) == (stage, step):
            raise RuntimeError(f"the GPU driver reset during {stage_} step {i}")

    step_hook(monkeypatch, fail)
    forget_encodings(window)
    run(qtbot, window)
    assert dialogs.kinds() == ["box"] and dialogs.shown[0][1] == "The run failed"
    assert state(window) == before, "the document changed after a failed run"
    assert f"the GPU driver reset during {stage} step {step}" in dialogs.texts()
    assert window.runs.job is None and window.actions["edit"].isEnabled()
    armed[0] = False
    run(qtbot, window)  # the worker thread survived: the next run works
    assert len(doc.history) == 4


def test_exception_when_finding_the_mask_keeps_the_document(qtbot, window, dialogs, fake_engine):
    with_history(qtbot, window)
    before = state(window)
    fake_engine.fail_on = "mask"
    fake_engine.error = ValueError("heatmap went NaN")
    run(qtbot, window, "find_mask")
    assert state(window) == before and "heatmap went NaN" in dialogs.texts()
    fake_engine.fail_on = None
    run(qtbot, window, "find_mask")
    assert len(window.doc.history) == 2 and window.doc.undo_stack.count() == before[1] + 1


@pytest.mark.slow
def test_cancel_at_every_step_leaves_everything_as_it_was(qtbot, window, monkeypatch):
    doc = with_history(qtbot, window)
    doc.clear_mask()
    window.params.variations.setValue(2)
    window.params.lock_seed.setChecked(True)
    before = state(window)
    total = MASK + STEPS + 2 * STEPS  # mask, encode, then decode once per variation
    cancel_at = [0]
    step_hook(monkeypatch, lambda _s, _i, count: count == cancel_at[0] and window.engine.cancel())
    for k in range(1, total):  # after step k the next step sees the flag
        cancel_at[0] = k
        forget_encodings(window)
        with qtbot.waitSignal(window.engine.job_cancelled, timeout=10000):
            with qtbot.waitSignal(window.engine.job_finished, timeout=10000):
                window.actions["edit"].trigger()
        assert state(window) == before, f"cancel after step {k} of {total} changed the document"
        assert "Cancelled" in window.statusBar().currentMessage()
    cancel_at[0] = 0
    run(qtbot, window)
    assert len(doc.history) == 4


class OutOfMemoryError(RuntimeError):
    """What torch.cuda raises (same class name; torch itself is not imported by app tests)."""


@pytest.mark.slow
@pytest.mark.parametrize("error", [
    OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total)"),
    MemoryError(),
    "engine",
])
def test_out_of_memory_says_what_happened_and_what_to_try(qtbot, window, dialogs, fake_engine,
                                                          error):
    if error == "engine":  # what EditSession raises once its lower-memory retries are exhausted
        from engine.memory import OutOfMemory

        error = OutOfMemory("out of CUDA memory even with weights offloaded; use a smaller working "
                            "resolution, close other programs using the GPU, or run on the CPU "
                            "(--device cpu)")
    with_history(qtbot, window)
    before = state(window)
    fake_engine.fail_on = "edit"
    fake_engine.error = error
    run(qtbot, window)
    assert state(window) == before
    text = dialogs.shown[-1][2].lower()
    assert "out of memory" in text
    assert "unchanged" in text, "say the work is safe"
    for advice in ("resolution", "steps", "settings", "close other programs"):
        assert advice in text, f"the message should suggest {advice!r}: {text}"
    assert "--device" not in text, "command-line flags mean nothing in the app"
    message, details = describe_exception(error)
    assert "Unexpected error" not in message and details  # the traceback stays in the details
    fake_engine.fail_on = None
    run(qtbot, window)
    assert len(window.doc.history) == 3
