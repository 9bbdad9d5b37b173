"""The cost of the next run, said before it starts (issue 17, point 17): the steps from the
method's step plan, and the time once a run like it was measured on this machine."""

from __future__ import annotations

from desktop_app.time_left import cost_text, duration, run_steps


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
    seconds = 10 * paces["encode"] + 10 * paces["decode"]
    assert f"20 steps (encode 10, decode 10), about {duration(seconds)}" in edit_tip()
    assert window.cost_label.text() == f"Next edit: 20 steps, about {duration(seconds)}"
