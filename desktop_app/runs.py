"""RunController: one run's life on the GUI side (check, start, progress, cancel, commit to history).

The window only listens to its signals and shows what they say; nothing of a run reaches the
document before the run finishes, and a result for pixels that changed meanwhile is dropped.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
from PySide6.QtCore import QObject, Signal

from desktop_app.dialogs import APP_TITLE, TINY_NOTE
from desktop_app.method_runs import run_inputs
from desktop_app.methods import finds_mask
from desktop_app.panels.params import LABELS
from desktop_app.time_left import (RELATIVE_COST, StepClock, Usage, cost_text, left_text,
                                   relative_costs, run_steps, steps_left)
from desktop_app.worker import EditRequest, MaskRequest
from engine import methods
from engine.errors import InputError

STAGE_NAMES = {"mask": "Finding the mask", "encode": "Encoding the photo", "decode": "Editing"}


class RunRefused(Exception):
    """A run cannot start: ``title`` and ``message`` for the dialog, ``field`` the panel widget
    (an attribute of ParamsPanel) to put the cursor in, if any."""

    def __init__(self, title: str, message: str, field: str = ""):
        super().__init__(message)
        self.title, self.message, self.field = title, message, field


def refused(exc: InputError) -> RunRefused:
    """The engine's sentence (the one the CLI prints) as a dialog; a text at fault is named by
    its field's label, as the CLI names its flag, and gets the cursor."""
    message = str(exc)
    message = message[:1].upper() + message[1:]
    field = getattr(exc, "field", None)
    widget = "target" if field == "instruction" else field  # typed in the target's field
    if widget in ("source", "target"):
        return RunRefused(APP_TITLE, f"{message} (the \u201c{LABELS[field]}\u201d field).", widget)
    return RunRefused("The mask is empty" if field == "mask" else "Check the inputs", f"{message}.")


@dataclass
class Job:
    """The run in progress, as the GUI sees it. Nothing reaches the document until it finishes."""

    kind: str  # "mask" | "edit"
    job_id: int
    generation: int  # document.generation when started: results for another photo are dropped
    photo_key: str = ""  # the base pixels it ran on: a result for pixels since replaced is dropped
    group: int = 0
    mask: np.ndarray | None = None
    variations: int = 1
    plan: dict = field(default_factory=dict)  # stage -> steps per variation, for "time left"
    started: float = field(default_factory=time.perf_counter)
    stage: str = ""
    pace_key: tuple = ()  # what makes runs alike in pace: kind, method, photo size
    clock: StepClock = field(default_factory=lambda: StepClock(time.perf_counter()))
    results: list = field(default_factory=list)
    heatmap: np.ndarray | None = None
    error: tuple[str, str] | None = None
    cancelled: bool = False


class RunController(QObject):
    """Starts runs from the panel's settings on the engine thread and commits what they return."""

    running_changed = Signal(bool)
    stage_text = Signal(str)  # what the run is doing, for the status bar
    step_changed = Signal(int, int)  # done, total of the current stage (total 0: busy)
    preview_ready = Signal(object, object)  # small RGB, and the mask to clip it to (or None)
    preview_cleared = Signal()
    message = Signal(str, int)  # a status bar message and its milliseconds
    failed = Signal(str, str, str)  # title, message, details: the run did not produce anything
    mask_found = Signal()  # a heatmap became the document's mask: show it
    results_added = Signal()  # results are in the history; the first is previewed

    def __init__(self, doc, engine, params, model_state, parent=None):
        """``params`` is the ParamsPanel the run's settings are read from; ``model_state()``
        says whether a model is "ready", "loading", "failed" or "none"."""
        super().__init__(parent)
        self.doc, self.engine, self.params, self.model_state = doc, engine, params, model_state
        self.job: Job | None = None
        self._paces: dict[tuple, dict[str, float]] = {}  # pace_key -> the last such run's paces
        self._usage: dict[tuple, Usage] = {}  # pace_key -> the last such run's evaluations, memory
        self._relative = dict(RELATIVE_COST)  # the stages' costs in the last run measured
        engine.progress.connect(self._on_progress)
        engine.preview.connect(self._on_preview)
        engine.mask_ready.connect(self._on_mask_ready)
        engine.result_ready.connect(self._on_result)
        engine.job_failed.connect(self._on_failed)
        engine.job_cancelled.connect(self._on_cancelled)
        engine.job_finished.connect(self._on_finished)

    @property
    def running(self) -> bool:
        return self.job is not None

    # ------------------------------------------------------------------ starting

    def check_ready(self) -> tuple[str, str]:
        """(source, target) when there is a photo and a model; raises RunRefused saying what is
        missing. The texts, parameters and mask are the engine's to check (methods.check_inputs)."""
        if not self.doc.has_photo:
            raise RunRefused(APP_TITLE, "Open a photo first (File \u25b8 Open, or File \u25b8 Open "
                             "Sample).")
        if self.model_state() not in ("ready", "loading"):
            raise RunRefused("No model", "No model is loaded. Choose one in Settings, or use the "
                             f"tiny test model from the Models menu ({TINY_NOTE}).")
        return self.params.prompts()

    def cost(self, short: bool = False) -> str:
        """The next Edit's steps and, once a run like it was measured here, its time ("" with no
        photo or with options the run would refuse); see time_left.cost_text."""
        if not self.doc.has_photo:
            return ""
        info = methods.info(self.params.method_key())
        has_mask = info.mask != "none" and self.doc.has_mask()
        try:
            plan = info.step_plan(self.params.run_params(), self.params.options(), has_mask)
        except InputError:
            return ""
        variations = self.params.variations.value() if info.variations else 1
        key = ("edit", info.name, self.doc.size)
        return cost_text(run_steps(plan, variations), self._paces.get(key, {}), short,
                         self._usage.get(key), variations)

    def find_mask(self) -> None:
        """Estimate the auto mask (methods that find their own); raises RunRefused."""
        if self.job is not None or not finds_mask(self.params.method_key()):
            return
        source, target = self.check_ready()
        params = self.params.params()
        try:  # as the run that follows will check them (no mask yet: it is being found)
            methods.check_inputs(self.params.method_key(), source, target, None, params,
                                 self.params.options(), methods.PAINT_IN_PHOTO)
        except InputError as exc:
            raise refused(exc) from None
        job_id = self.engine.next_job_id()
        self._start(Job("mask", job_id, self.doc.generation, self.doc.photo_key,
                        plan={"mask": params.mask_samples},
                        pace_key=("mask", self.params.method_key(), self.doc.size)),
                    MaskRequest(job_id, self.doc.photo_key, self.doc.current_photo(), source,
                                target, params, self.params.method_key()))

    def edit(self, use_mask: bool = True) -> None:
        """Run the chosen method with the panel's settings (``use_mask`` False: without the
        document's mask, e.g. an extend of the border only); raises RunRefused."""
        if self.job is not None:
            return
        source, target = self.check_ready()
        seeds = self.params.run_seeds()
        params = self.params.run_params().replace(seed=seeds[0])
        try:  # the method's own needs (a mask, paint, valid options) are checked before the run
            inputs = run_inputs(self.params.method_key(), self.params.options(), params, self.doc,
                                source, target, variations=len(seeds), use_mask=use_mask)
        except InputError as exc:
            raise refused(exc) from None
        request = inputs.request
        job_id = self.engine.next_job_id()
        self._start(Job("edit", job_id, self.doc.generation, self.doc.photo_key,
                        group=self.doc.new_group(), mask=request.mask,
                        variations=request.variations, plan=inputs.plan,
                        pace_key=("edit", request.method, self.doc.size)),
                    EditRequest(job_id, request))

    def _start(self, job: Job, request) -> None:
        job.clock = StepClock(time.perf_counter(), dict(self._paces.get(job.pace_key, {})),
                              dict(self._relative))
        self.job = job
        self.engine.submit(request)
        self.running_changed.emit(True)
        self.step_changed.emit(0, 0)  # busy until the first step reports
        self.stage_text.emit("Starting\u2026" if self.model_state() == "ready"
                             else "Waiting for the model\u2026")

    def cancel(self) -> None:
        if self.job is not None:
            self.engine.cancel()
            self.stage_text.emit("Cancelling\u2026")

    # ------------------------------------------------------------------ reports from the engine

    def _current(self, job_id: int) -> Job | None:
        return self.job if self.job is not None and self.job.job_id == job_id else None

    def _on_progress(self, p) -> None:
        job = self._current(p.job_id)
        if job is None:
            return
        job.stage = p.stage
        job.clock.step_done(p.stage, time.perf_counter())
        done = p.step + 1
        self.step_changed.emit(done, p.total)
        left = steps_left(job.plan, p.stage, p.step, p.total, p.variation, p.variations)
        variation = f" \u00b7 variation {p.variation + 1}/{p.variations}" if p.variations > 1 else ""
        self.stage_text.emit(f"{STAGE_NAMES.get(p.stage, p.stage)} {done}/{p.total}{variation}"
                             f" \u00b7 {left_text(job.clock, left)}")

    def _on_preview(self, job_id: int, preview) -> None:
        job = self._current(job_id)
        if job is None or job.generation != self.doc.generation:
            return
        if job.stage in ("encode", "decode"):
            self.preview_ready.emit(preview, job.mask if job.stage == "decode" else None)

    def _on_mask_ready(self, job_id: int, heatmap) -> None:
        job = self._current(job_id)
        if job is not None:
            job.heatmap = heatmap

    def _on_result(self, job_id: int, result) -> None:
        job = self._current(job_id)
        if job is not None:
            job.results.append(result)
            if job.mask is None and result.mask is not None:
                job.mask = result.mask  # the decode preview can now be clipped to it

    def _on_failed(self, job_id: int, message: str, details: str) -> None:
        job = self._current(job_id)
        if job is not None:
            job.error = (message, details)

    def _on_cancelled(self, job_id: int) -> None:
        job = self._current(job_id)
        if job is not None:
            job.cancelled = True

    def _on_finished(self, job_id: int) -> None:
        job = self._current(job_id)
        if job is None:
            return
        self.job = None
        self.running_changed.emit(False)
        self.preview_cleared.emit()
        if job.cancelled:
            self.message.emit("Cancelled. The photo and mask are as they were.", 8000)
        elif job.error is not None:
            self.failed.emit("The run failed", *job.error)
        elif job.generation != self.doc.generation:
            self.message.emit("A different photo is open now; the run's result was not kept.", 8000)
        elif job.photo_key != self.doc.photo_key:
            self.failed.emit("The photo changed during the run",
                             "A result was applied (or undone) while the run was working on the "
                             "photo as it was before, so its result was not kept. Run it again.", "")
        else:
            if job.clock.measured:  # the next run like this one knows its stages' pace at once
                self._paces[job.pace_key] = dict(job.clock.pace)
                self._relative = relative_costs(job.clock.pace)  # for runs unlike any yet
            if job.results:
                steps = run_steps(job.plan, job.variations)
                paces = job.clock.pace if job.clock.measured else None
                self._usage[job.pace_key] = Usage.of(job.results, steps, job.variations,
                                                     time.perf_counter() - job.started, paces)
            self._commit(job)

    # ------------------------------------------------------------------ committing

    def _commit(self, job: Job) -> None:
        elapsed = time.perf_counter() - job.started
        if job.kind == "mask":
            if job.heatmap is not None:
                self.doc.set_heatmap(job.heatmap)
                self.mask_found.emit()
                self.message.emit(f"Mask found in {elapsed:.1f} s. Refine it with the threshold "
                                  "and the brush, then Edit.", 10000)
            return
        first = None
        for result in job.results:
            if result.heatmap is not None and self.doc.heatmap is None and \
                    result.image.shape == self.doc.base.shape:
                # The mask the run found (DiffEdit, or a P2P local blend), kept for refining.
                self.doc.set_heatmap(result.heatmap)
                if "blend_threshold" in result.options:
                    self.doc.set_threshold(result.options["blend_threshold"])
            if finds_mask(result.method):  # its auto mask is the document's, not the entry's
                result = dataclasses.replace(result, heatmap=None)
            entry = self.doc.add_result(job.group, result)
            first = first or entry
            for warning in result.warnings:
                self.message.emit(warning, 10000)
        if first is not None:
            self.doc.set_preview(first.id)
            self.results_added.emit()
            count = len(job.results)
            self.message.emit(f"{count} result{'s' if count > 1 else ''} in {elapsed:.1f} s. "
                              "Apply one to keep editing from it, or export it.", 10000)
