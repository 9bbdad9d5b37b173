"""The fake engine against the real one: the same scenarios through the app's worker, once on
tests/app/fake_engine.py and once on the tiny model, must look the same to the app (the stages and
step totals it shows, the results it files, the sentences it shows). The fake is only trusted for
the window tests because this holds."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from desktop_app.worker import EditRequest, EngineBackend, EngineWorker, LoadModelRequest, MaskRequest
from engine.imaging import Photo
from engine.params import EditParams
from engine.runs import RunRequest
from fake_engine import FakeEngine

pytestmark = pytest.mark.slow  # the real side runs the tiny model: seconds, not milliseconds

FAST = EditParams(steps=6, strength=0.5, mask_samples=2, feather=0, seed=3)
H, W = 48, 64


def photo() -> Photo:
    ys, xs = np.mgrid[0:H, 0:W]
    return Photo(rgb=np.stack([xs * 4 % 256, ys * 5 % 256, np.full_like(xs, 90)], 2).astype(np.uint8))


def box_mask() -> np.ndarray:
    mask = np.zeros((H, W), np.float32)
    mask[8:32, 16:48] = 1.0
    return mask


# (name, method, options, user mask?, source) — one per kind of run the app makes.
SCENARIOS = [
    ("diffedit finds its mask", "diffedit", {}, False, "a cat"),
    ("diffedit in the user's mask", "diffedit", {}, True, "a cat"),
    ("blended candidates", "blended", {"candidates": 2}, True, "a cat"),
    ("blended background", "blended", {"action": "background"}, True, "a cat"),
    ("blended extend", "blended", {"action": "extend", "extend_left": 16, "extend_top": 8}, False, ""),
    ("blended without a mask", "blended", {}, False, "a cat"),
    ("sdedit whole photo", "sdedit", {"masked": False}, False, ""),
    ("sdedit masked", "sdedit", {"masked": True}, True, ""),
    ("sdedit masked without a mask", "sdedit", {"masked": True}, False, ""),
    ("p2p local blend", "p2p", {"mode": "refine", "blend_words": "dog", "blend_threshold": 0.4},
     False, "a cat"),
    ("pnp", "pnp", {}, False, "a cat"),
]


class AppView:
    """What the app receives from the worker for one job: the signals, as plain values."""

    def __init__(self, worker: EngineWorker):
        self.reset()
        worker.progress.connect(self._progress)
        worker.result_ready.connect(lambda _job, r: self.results.append(r))
        worker.mask_ready.connect(lambda _job, h: self.heatmaps.append(h))
        worker.job_failed.connect(lambda _job, message, _details: self.failures.append(message))
        worker.job_finished.connect(lambda _job: setattr(self, "finished", self.finished + 1))

    def reset(self) -> None:
        self.stages: list[tuple[str, int]] = []  # (stage, total) in the order first reported
        self.steps: dict[str, int] = {}
        self.results: list = []
        self.heatmaps: list = []
        self.failures: list[str] = []
        self.finished = 0

    def _progress(self, p) -> None:
        if (p.stage, p.total) not in self.stages:
            self.stages.append((p.stage, p.total))
        # The step each stage reached (what the progress bar shows): the engine reports a batch
        # of samples as one step of several, the fake one at a time.
        self.steps[p.stage] = max(self.steps.get(p.stage, 0), p.step + 1)

    def summary(self) -> dict:
        """Everything the window and the history use, with pixels reduced to what must agree."""
        return {
            "stages": self.stages, "steps": self.steps, "failures": self.failures,
            "finished": self.finished, "heatmaps": [h.shape for h in self.heatmaps],
            "results": [{"variation": r.variation, "image": r.image.shape, "dtype": r.image.dtype,
                         "mask": r.mask.shape, "whole photo": bool(r.mask.min() == 1.0),
                         "heatmap": None if r.heatmap is None else r.heatmap.shape,
                         "method": r.method, "seed": r.params.seed, "options": sorted(r.options),
                         "ranked": "rank" in r.stats}
                        for r in self.results],
        }


def run_scenarios(backend, model_source: str) -> dict[str, dict]:
    """Every scenario, then a second edit on the same photo (the cached encoding), on a worker
    driven directly in this thread (its slots are plain methods)."""
    worker = EngineWorker(backend, threading.Event())
    worker.run(LoadModelRequest(model_source, device="cpu"))
    assert worker.model is not None, "the model did not load"
    seen, view = {}, AppView(worker)
    for index, (name, method, options, masked, source) in enumerate(SCENARIOS):
        view.reset()
        worker.run(EditRequest(index, RunRequest(photo(), f"photo-{index}", method, source, "a dog",
                                                 box_mask() if masked else None, FAST, options)))
        seen[name] = view.summary()
    view.reset()
    worker.run(MaskRequest(100, "photo-mask", photo(), "a cat", "a dog", FAST))
    seen["find mask"] = view.summary()
    for attempt in ("first", "second"):  # the same photo and mask again: nothing to encode
        view.reset()
        worker.run(EditRequest(101, RunRequest(photo(), "photo-again", "diffedit", "a cat", "a dog",
                                               box_mask(), FAST)))
        seen[f"diffedit again ({attempt})"] = view.summary()
    return seen


@pytest.fixture(scope="module")
def both(tiny_model_path):
    return (run_scenarios(FakeEngine(), "/models/fake-sd"),
            run_scenarios(EngineBackend(), str(tiny_model_path)))


NAMES = [s[0] for s in SCENARIOS] + ["find mask", "diffedit again (first)", "diffedit again (second)"]


@pytest.mark.parametrize("name", NAMES)
def test_the_fake_looks_like_the_real_engine_to_the_app(both, name):
    fake, real = both
    assert fake[name] == real[name]
