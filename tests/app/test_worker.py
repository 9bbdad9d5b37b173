"""The engine thread against the fake engine: results, progress, cancel, errors, survival."""

import threading

import numpy as np
import pytest

from desktop_app.worker import EditRequest, LoadModelRequest, MaskRequest
from engine.errors import InputError
from engine.params import EditParams
from engine.results import EditResult
from engine.runs import RunRequest

FAST = EditParams(steps=10, strength=0.5, mask_samples=3)


def load(qtbot, controller):
    with qtbot.waitSignal(controller.model_state, timeout=5000,
                          check_params_cb=lambda state, msg: state != "loading") as blocker:
        controller.load_model(LoadModelRequest("/models/sd15"))
    return blocker.args


def edit_request(controller, photo, mask=None, seeds=(1,)):
    run = RunRequest(photo, "p1", "diffedit", "a cat", "a dog", mask, FAST.replace(seed=seeds[0]),
                     variations=len(seeds))
    return EditRequest(job_id=controller.next_job_id(), run=run)


def test_edit_runs_on_the_worker_thread_and_reports(qtbot, engine_controller, photo):
    assert load(qtbot, engine_controller) == ["ready", "sd15 (cpu, float32)"]
    results, stages = [], []
    engine_controller.result_ready.connect(lambda job, r: results.append(r))
    engine_controller.progress.connect(lambda p: stages.append(p.stage))
    with qtbot.waitSignal(engine_controller.job_finished, timeout=5000):
        engine_controller.submit(edit_request(engine_controller, photo, seeds=(4, 5)))
    assert [r.params.seed for r in results] == [4, 5]
    assert results[0].heatmap is not None  # no mask given: found first
    assert stages[:3] == ["mask"] * 3 and "encode" in stages and stages[-1] == "decode"
    assert results[0].metadata()["parameters"].startswith("a dog\nNegative prompt: a cat\n")
    assert not engine_controller.busy


def test_second_edit_reuses_the_session(qtbot, engine_controller, photo):
    """The second edit of the same photo reports no encoding: its session (and the encoding
    cached in it) was kept. test_fake_contract checks that the real engine reports the same."""
    load(qtbot, engine_controller)
    stages = []
    engine_controller.progress.connect(lambda p: stages[-1].add(p.stage))
    for _ in range(2):
        stages.append(set())
        with qtbot.waitSignal(engine_controller.job_finished, timeout=5000):
            engine_controller.submit(edit_request(engine_controller, photo,
                                                  mask=np.ones((96, 128), np.float32)))
    assert stages == [{"encode", "decode"}, {"decode"}]


def test_cancel_stops_within_one_step(qtbot, engine_controller, fake_engine, photo):
    load(qtbot, engine_controller)
    fake_engine.pause_at = ("decode", 2)
    steps, cancelled = [], []
    engine_controller.progress.connect(lambda p: steps.append((p.stage, p.step)))
    engine_controller.job_cancelled.connect(cancelled.append)
    job = edit_request(engine_controller, photo, mask=np.ones((96, 128), np.float32))
    engine_controller.submit(job)
    assert fake_engine.paused.wait(5)
    engine_controller.cancel()  # straight from the GUI thread while the worker is mid-run
    with qtbot.waitSignal(engine_controller.job_finished, timeout=5000):
        fake_engine.resume.set()
    assert cancelled == [job.job_id]
    # Paused before decode step 2; it may finish that step, then must stop.
    assert max(s for stage, s in steps if stage == "decode") <= 2


@pytest.mark.parametrize("error, expected", [
    (InputError("target prompt is empty; describe the result"), "target prompt is empty"),
    (RuntimeError("boom"), "Unexpected error in the engine: RuntimeError: boom"),
])
def test_engine_errors_are_reported_and_the_thread_survives(qtbot, engine_controller, fake_engine,
                                                          photo, error, expected):
    load(qtbot, engine_controller)
    fake_engine.fail_on, fake_engine.error = "edit", error
    with qtbot.waitSignal(engine_controller.job_failed, timeout=5000) as failed:
        engine_controller.submit(edit_request(engine_controller, photo,
                                              mask=np.ones((96, 128), np.float32)))
    assert expected in failed.args[1]
    qtbot.waitUntil(lambda: not engine_controller.busy, timeout=5000)
    fake_engine.fail_on = None
    with qtbot.waitSignal(engine_controller.result_ready, timeout=5000):
        engine_controller.submit(edit_request(engine_controller, photo,
                                              mask=np.ones((96, 128), np.float32)))


def test_load_failure_and_job_without_model(qtbot, engine_controller, fake_engine, photo):
    fake_engine.fail_on, fake_engine.error = "load", InputError("no model at /x; pick a folder")
    assert load(qtbot, engine_controller) == ["failed", "no model at /x; pick a folder"]
    with qtbot.waitSignal(engine_controller.job_failed, timeout=5000) as failed:
        engine_controller.submit(MaskRequest(engine_controller.next_job_id(), "p1", photo, "a", "b",
                                             FAST))
    assert "No model is loaded" in failed.args[1]


def test_shutdown_during_a_run_returns_promptly(qtbot, fake_engine, photo):
    from desktop_app.worker import EngineController

    controller = EngineController(fake_engine)
    load(qtbot, controller)
    fake_engine.step_delay = 0.05
    controller.submit(edit_request(controller, photo, mask=np.ones((96, 128), np.float32)))
    qtbot.waitSignal(controller.progress, timeout=5000).wait()
    done = threading.Event()
    controller.shutdown()  # sets the cancel flag, quits and waits
    done.set()
    assert done.is_set() and not controller._thread.isRunning()
