"""The time-left estimate on a recorded step timeline: never "about 0 s" while steps remain, no
leaps when a stage begins, close to the truth once a stage has a few steps."""

from __future__ import annotations

import pytest

from desktop_app.time_left import RELATIVE_COST, StepClock, left_text, relative_costs, steps_left

# A DiffEdit run as this CPU machine reports it: (stage, steps, set-up before its first step,
# seconds per step). The model warms up before the first mask sample; the photo is VAE-encoded
# before the first encode step; decode steps cost two UNet calls (guidance); 2 s of VAE decode
# and paste-back follow the last step.
STAGES = [("mask", 4, 3.4, 0.6), ("encode", 10, 1.5, 0.8), ("decode", 10, 0.5, 1.6)]
TAIL = 2.0
PLAN = {stage: steps for stage, steps, _, _ in STAGES}


def timeline(jitter=0.15):
    """(time, stage, step, total) of every progress report, and the time the run ends."""
    reports, now = [], 0.0
    for stage, steps, setup, pace in STAGES:
        now += setup
        for step in range(steps):
            now += pace * (1 + jitter * (-1) ** step)  # alternately slower and faster
            reports.append((now, stage, step, steps))
    return reports, now + TAIL


def estimates(reports, prior=None):
    clock = StepClock(started=0.0, prior=prior or {})
    out = []
    for now, stage, step, total in reports:
        clock.step_done(stage, now)
        left = steps_left(PLAN, stage, step, total, 0, 1)
        out.append((now, clock.seconds_left(left), left_text(clock, left)))
    return out, clock


def test_never_about_0_s_while_steps_remain_and_finishing_at_the_end():
    reports, _ = timeline()
    texts = [text for _, _, text in estimates(reports)[0]]
    # The first step carries the model's warm-up: no pace is known from it alone.
    assert texts[0] == "estimating the time left\u2026"
    assert all(t.startswith("about ") and t != "about 0 s left" for t in texts[1:-1]), texts
    assert texts[-1] == "finishing\u2026"


def test_no_leaps_from_one_step_to_the_next():
    reports, _ = timeline()
    series, _ = estimates(reports)
    for (t0, before, _), (t1, after, _) in zip(series[1:-1], series[2:-1]):  # -1: finishing
        counted_down = max(before - (t1 - t0), 0.5)
        assert 0.5 <= after / counted_down <= 2.0, (t1, before, after)


def test_close_to_the_truth_once_the_last_stage_has_a_few_steps():
    reports, end = timeline()
    checked = 0
    for (now, stage, step, _), (_, left, _) in zip(reports, estimates(reports)[0]):
        if stage == "decode" and step >= 2 and end - now > 5:
            assert left == pytest.approx(end - now - TAIL, rel=0.25), (now, left)
            checked += 1
    assert checked >= 4


def test_an_earlier_runs_paces_make_the_next_estimate_right_from_its_first_step():
    reports, end = timeline()
    _, first_run = estimates(reports)
    series, _ = estimates(reports, prior=dict(first_run.pace))
    setups = sum(setup for _, _, setup, _ in STAGES[1:]) + TAIL  # still ahead at the first step
    assert series[0][2].startswith("about ")
    assert series[0][1] == pytest.approx(end - reports[0][0] - setups, rel=0.2)
    for (now, stage, step, _), (_, left, _) in zip(reports, series):
        if stage == "encode" and step == 0:  # no drop to the previous stage's pace
            assert left == pytest.approx(end - now - 0.5 - TAIL, rel=0.2)


def test_steps_left_counts_later_stages_and_variations():
    plan = {"mask": 4, "encode": 10, "decode": 10}
    assert steps_left(plan, "mask", 1, 4, 0, 1) == {"mask": 2, "encode": 10, "decode": 10}
    assert steps_left(plan, "decode", 9, 10, 0, 3) == {"decode": 20}
    assert sum(steps_left(plan, "decode", 9, 10, 2, 3).values()) == 0


@pytest.mark.slow
def test_the_second_run_like_the_first_estimates_from_its_first_step(qtbot, window):
    from test_window import run_and_wait

    firsts = []
    for _ in range(2):
        texts = []
        window.runs.stage_text.connect(texts.append)
        run_and_wait(qtbot, window)
        window.runs.stage_text.disconnect(texts.append)
        firsts.append(next(t for t in texts if "/" in t).split(" \u00b7 ")[-1])  # first step's
    assert firsts[0] == "estimating the time left\u2026"
    assert firsts[1].startswith("about "), firsts


def test_a_run_unlike_any_before_is_not_underestimated_from_its_first_measured_step():
    """The stages cost differently (a guided decode step about twice an inversion step), so the
    first estimate carries the measured pace to the later stages by their relative costs; it
    used to take the mask samples' pace for every stage (13 s for a run 29 s from its end)."""
    reports, end = timeline()
    series, _ = estimates(reports)
    now, left, text = series[1]  # the first step measured (the first carries the warm-up)
    setups = sum(setup for _, _, setup, _ in STAGES[1:]) + TAIL
    assert text.startswith("about ")
    assert left == pytest.approx(end - now - setups, rel=0.2)


def test_the_stages_relative_costs_come_from_the_last_run_measured():
    """A distilled model decodes without guidance: once one run showed its stages' paces, a run
    unlike it (another photo size) carries a pace over by those, not by the defaults."""
    measured = {"encode": 0.5, "decode": 0.5}
    relative = relative_costs(measured)
    assert relative["mask"] == pytest.approx(0.5 * RELATIVE_COST["mask"] / RELATIVE_COST["encode"])
    clock = StepClock(started=0.0, relative=relative)
    clock.step_done("encode", 1.0)
    clock.step_done("encode", 2.0)  # 1 s a step: decode steps are expected to take 1 s too
    assert clock.seconds_left({"encode": 1, "decode": 4}) == pytest.approx(5.0)
