"""The cost of the next run, said before it starts (issue 17, point 17): the steps from the
method's step plan, and the time, model evaluations and peak memory once a run like it was
measured on this machine."""

from __future__ import annotations

import numpy as np
import pytest

from desktop_app.time_left import Usage, cost_text, duration, run_steps
from engine.results import EditResult


def run_and_wait(qtbot, win):
    with qtbot.waitSignal(win.engine.job_finished, timeout=10000):
        win.actions["edit"].trigger()


def test_the_steps_come_from_the_plan_and_the_time_from_measured_paces():
    steps = run_steps({"mask": 3, "encode": 5, "decode": 5}, variations=2)
    assert steps == {"mask": 3, "encode": 5, "decode": 10}  # variations share the encoding
    assert cost_text(steps, {}) == ("18 steps (mask 3, encode 5, decode 10); the time shows "
                                    "after a first run like it")
    paces = {"mask": 1.0, "encode": 2.0, "decode": 3.5}
    assert cost_text(steps, paces) == "18 steps (mask 3, encode 5, decode 10), about 48 s"
    assert cost_text(steps, paces, short=True) == "18 steps, about 48 s"
    assert cost_text(steps, {"mask": 1.0}).endswith("first run like it")  # a stage unmeasured


def test_the_edit_button_and_the_status_bar_say_the_next_runs_cost(qtbot, window):
    edit_tip = window.params.edit_button.toolTip
    # 10 steps at strength 0.5, 3 mask samples, no mask yet: a mask is found first.
    assert "This run: 13 steps (mask 3, encode 5, decode 5); the time shows" in edit_tip()
    assert window.cost_label.text() == "Next edit: 13 steps"
    window.params.steps.setValue(20)
    assert "23 steps (mask 3, encode 10, decode 10)" in edit_tip()
    window.params.variations.setValue(3)
    assert "43 steps (mask 3, encode 10, decode 30)" in edit_tip()
    window.params.variations.setValue(1)
    run_and_wait(qtbot, window)
    # The run found a mask and measured its paces: the next one (no mask stage) says its time.
    paces = window.runs._paces[("edit", "diffedit", window.doc.size)]
    extra = window.runs._usage[("edit", "diffedit", window.doc.size)].extra_seconds
    seconds = 10 * paces["encode"] + 10 * paces["decode"] + extra  # + its time beyond the steps
    # Its stats (mask 3 samples x 2, encode 10 x 1, decode 10 x 2 evaluations) give the next
    # one's evaluations, 10 x 1 + 10 x 2, and its peak memory (5.1 GB in the fake's stats).
    assert (f"20 steps (encode 10, decode 10), 30 model evaluations, about {duration(seconds)}, "
            "5.1 GB memory (the app's peak)") in edit_tip()
    assert window.cost_label.text() == f"Next edit: 20 steps, about {duration(seconds)}, 5.1 GB"
    window.params.steps.setValue(40)  # twice the steps: twice the evaluations, the same memory
    assert "40 steps (encode 20, decode 20), 60 model evaluations" in edit_tip()


def result(stats: dict) -> EditResult:
    return EditResult(image=None, mask=None, heatmap=None, source="", target="", params=None,
                      model_name="", stats=stats)


def test_evaluations_and_memory_come_from_the_runs_stats():
    """Usage reads the engine's stats of a run's results (the mask and the encoding in the first
    one only, as engine.runs adds them), per step of each stage."""
    steps = run_steps({"mask": 4, "encode": 10, "decode": 10}, variations=2)
    usage = Usage.of([result({"unet_evals": {"mask": 8, "encode": 10, "decode": 20},
                              "peak_memory_bytes": 3_000_000_000, "device": "cuda:0"}),
                      result({"unet_evals": {"decode": 20}, "peak_memory_bytes": 5_149_000_000,
                              "device": "cuda:0"})], steps)
    assert usage == Usage({"mask": 2.0, "encode": 1.0, "decode": 2.0}, 5_149_000_000, True)
    paces = {"mask": 1.0, "encode": 1.0, "decode": 1.0}
    assert cost_text({"encode": 5, "decode": 5}, paces, usage=usage) == (
        "10 steps (encode 5, decode 5), 15 model evaluations, about 10 s, 5.1 GB GPU memory")
    assert cost_text({"encode": 5, "decode": 5}, paces, True, usage) == "10 steps, about 10 s, 5.1 GB"
    # A stage the measured run did not have: no evaluation count rather than a wrong one.
    decode_only = Usage({"decode": 2.0}, 0, False)
    assert "evaluations" not in cost_text({"mask": 3, "decode": 5}, {}, usage=decode_only)


def test_a_run_that_leaves_the_mask_as_it_was_updates_the_cost_too(qtbot, window):
    """Nothing but the run's own results changes here (the mask was painted before): the cost
    still says what the run just measured."""
    window.doc.load_mask(np.ones(window.doc.shape, np.float32))
    assert "about" not in window.cost_label.text()
    run_and_wait(qtbot, window)
    assert window.cost_label.text().startswith("Next edit: 10 steps, about ")
    assert window.cost_label.text().endswith(", 5.1 GB")


def test_the_time_counts_what_a_run_spends_beyond_its_steps():
    """A variation's VAE decode and paste-back come after its last step: a run of 3 variations
    that took 30 s for 18 s of steps costs the next run 4 s a variation more than its steps."""
    steps = run_steps({"encode": 4, "decode": 4}, variations=3)  # 4 + 12 steps
    paces = {"encode": 0.5, "decode": 1.33333}
    usage = Usage.of([result({})] * 3, steps, variations=3, seconds=30.0, paces=paces)
    assert usage.extra_seconds == pytest.approx(4.0, abs=0.01)
    assert cost_text(run_steps({"encode": 4, "decode": 4}, 1), paces, True, usage, 1) == (
        "8 steps, about 11 s")  # 2 + 5.3 s of steps and 4 s after them
    assert Usage.of([result({})], steps).extra_seconds == 0.0  # no paces measured: no guess
