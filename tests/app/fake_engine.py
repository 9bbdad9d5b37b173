"""A scriptable stand-in for the engine (load_model, EditSession) so app tests need no torch.

``run`` takes its input check and its stages from the engine's registry (engine.methods: the
same sentences and step plan; test_fake_contract compares it with the real engine) and makes
cheap pixels: the colours inverted inside the mask the method would use (the user's, the
inverse for a background, a larger canvas for extend, none for whole-photo runs, a disc for an
auto mask or P2P's local blend). A clip_model of "fake-clip" ranks candidates by brightness.

Same method names and signatures as engine.models.load_model and engine.session.EditSession.
It calls on_step at every "UNet step", honours should_stop by raising Cancelled, and can be told
to fail, to pause at a step (so a test can act mid-run without sleeping), or to be slow.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from engine import lora, masks, methods
from engine.errors import Cancelled
from engine.fields import AUTO
from engine.geometry import default_feather
from engine.results import EditResult

PEAK_BYTES = 5_100_000_000  # the peak memory each run reports in its stats (a real one measures it)


@dataclass
class FakeModel:
    name: str
    source: str
    device: str = "cpu"
    dtype: str = "float32"
    native_size: int = 64
    loras: list = field(default_factory=list)  # "name:weight" of each LoRA, as the real model

class FakeEngine:
    """Script it through its attributes; it records the model loads it was asked for."""

    def __init__(self):
        self.step_delay = 0.0  # seconds per fake UNet step
        self.fail_on: str | None = None  # "load" | "mask" | "edit"
        self.error: Exception = RuntimeError("fake engine failure")
        self.pause_at: tuple[str, int] | None = None  # (stage, step): wait on `resume` there
        self.paused = threading.Event()  # set when the run reached pause_at
        self.resume = threading.Event()
        self.loaded_sources: list[str] = []
        self.memory_tiers: list[str] = []
        self.load_threads: list[int] = []  # the thread count each load_model call was given
        self.transformers: list[str] = []  # the GGUF transformer file each call was given
        self.supported = set(methods.METHODS)  # the methods the "loaded backbone" runs
        self.family_defaults: dict = {}
        self.family_unused: set = set()
        self.family_unused_options: dict = {}

    # --- the engine.models / engine.tiny_model surface

    def load_model(self, source, *, device="auto", dtype="auto", allow_download=False,
                   allow_pickle=False, memory_tier="auto", threads=0, loras=(), transformer=""):
        self.memory_tiers.append(memory_tier)
        self.transformers.append(transformer)
        self.load_threads.append(threads)
        if self.fail_on == "load":
            raise self.error
        self.loaded_sources.append(str(source))
        for spec in loras:  # the engine checks the files before any weight loads
            lora.check_file(spec)
        return FakeModel(name=str(source).rsplit("/", 1)[-1], source=str(source),
                         loras=[spec.label for spec in loras])

    def ensure_tiny_model(self, folder=None):
        return "/fake/tiny-model"

    def methods(self, model) -> tuple[str, ...]:
        """Every method, as the SD backbone runs them (a test may narrow ``supported``)."""
        return tuple(name for name in methods.METHODS if name in self.supported)

    def family(self, model):
        """The "loaded family's" parameter values and unused fields (SD's: none; a test may set
        ``family_defaults``, ``family_unused`` and ``family_unused_options``)."""
        from desktop_app.worker import FamilyTraits

        return FamilyTraits(dict(self.family_defaults), frozenset(self.family_unused),
                            dict(self.family_unused_options))

    def EditSession(self, model, photo):  # noqa: N802 - the engine's class name
        return FakeEditSession(self, model, photo)


class FakeEditSession:
    """Heatmap: a disc in the middle of the photo. Edit: inverts the colours inside the mask."""

    def __init__(self, engine: FakeEngine, model, photo):
        self.engine = engine
        self.model = model
        self.photo = photo
        self.encoded = False  # the "cached encoding": a second edit skips the encode stage

    @property
    def size(self):
        return self.photo.rgb.shape[1], self.photo.rgb.shape[0]

    def _steps(self, stage, total, on_step, should_stop):
        engine = self.engine
        for i in range(total):
            if should_stop is not None and should_stop():
                raise Cancelled(f"cancelled during {stage}")
            if engine.pause_at == (stage, i):
                engine.paused.set()
                engine.resume.wait(10)
            if engine.step_delay:
                time.sleep(engine.step_delay)
            preview = np.full((8, 8, 3), 40 * (i % 6), np.uint8)
            if on_step is not None:
                on_step(stage, i + 1, total, preview)  # as the engine: steps done, from 1

    def estimate_mask(self, source, target, params, *, method="diffedit", on_step=None,
                      should_stop=None):
        methods.check_inputs(method, source, target, None, params)
        if self.engine.fail_on == "mask":
            raise self.engine.error
        self._steps("mask", params.mask_samples, on_step, should_stop)
        return self._disc()

    def edit(self, source, target, mask, params, *, on_step=None, should_stop=None):
        return self.run("diffedit", source, target, mask, params, on_step=on_step,
                        should_stop=should_stop)[0]

    def run(self, method, source, target, mask, params, options=None, *, on_step=None,
            should_stop=None):
        """The engine's own input check and step plan (engine.methods); cheap stand-in pixels:
        the colours inverted inside the mask the method would use."""
        info = methods.info(method)
        # The real session is handed a painted photo for scribble (the worker lays the paint on).
        parsed = methods.check_inputs(method, source, target, mask, params, options,
                                      methods.PAINT_IN_PHOTO)
        values = dataclasses.asdict(parsed)
        if params.feather == AUTO:  # as EditSession.resolved, at the fake model's native size
            params = params.replace(feather=default_feather(self.size, params.resolution
                                                            or self.model.native_size))
        if self.engine.fail_on == "edit":
            raise self.engine.error
        plan = info.step_plan(params, options, mask is not None)
        original, heatmap, count = self.photo.rgb, None, values.get("candidates", 1)
        # Model evaluations as the real engine's stats count them: CFG decodes take two a step,
        # the unconditional inversion one, each mask sample two (source and target texts).
        evals = {"decode": 2 * plan["decode"]}
        if info.finds_mask(options) and mask is None:
            heatmap = self.estimate_mask(source, target, params, on_step=on_step,
                                         should_stop=should_stop)
            mask = masks.threshold(heatmap, params.mask_threshold)
            evals["mask"] = 2 * params.mask_samples
        if "encode" in plan and not self.encoded:  # the encoding is cached per session
            self._steps("encode", plan["encode"], on_step, should_stop)
            self.encoded = True
            evals["encode"] = plan["encode"]
        self._steps("decode", plan["decode"], on_step, should_stop)
        left, right, top, bottom = info.canvas_margins(options)
        if any((left, right, top, bottom)):  # new canvas around the photo, generated whole
            h, w = original.shape[:2]
            original = np.pad(original, ((top, bottom), (left, right), (0, 0)), mode="edge")
            area = np.ones(original.shape[:2], np.float32)
            area[top:top + h, left:left + w] = 0.0 if mask is None else mask
            mask = area
        elif values.get("action") == "background":
            mask = masks.invert(mask)
        elif info.mask == "none" or values.get("masked") is False:
            mask = None
        elif mask is None and values.get("blend_words"):  # P2P's local blend finds its own
            heatmap = self._disc()
            mask = masks.threshold(heatmap, values["blend_threshold"])
        results = []
        for i in range(count):
            edited = ((255 - original.astype(np.int32) + 16 * i) % 256).astype(np.uint8)
            if mask is None:
                image, used = edited, np.ones(original.shape[:2], np.float32)
            else:
                used = np.asarray(mask, np.float32)
                image = masks.composite(original, edited, masks.paste_alpha(used, params.feather))
            results.append(EditResult(
                image=image, mask=used, heatmap=heatmap, source=source, target=target,
                model_name=self.model.name,
                params=params.replace(seed=params.seed + i), method=method, options=dict(values),
                stats={"seconds": {"decode": 0.0}, "device": "cpu",
                       "unet_evals": evals if i == 0 else {}, "peak_memory_bytes": PEAK_BYTES}))
        if values.get("clip_model") == "fake-clip":
            scores = [float(r.image.mean()) / 255 for r in results]
            order = sorted(range(count), key=lambda i: -scores[i])
            for place, i in enumerate(order, start=1):
                results[i].stats.update(clip_score=round(scores[i], 6), rank=place)
            results = [results[i] for i in order]
        return results

    def _disc(self) -> np.ndarray:
        """1 at the photo's centre, falling to 0 at its edges (> 0.5 inside half the radius)."""
        w, h = self.size
        ys, xs = np.mgrid[0:h, 0:w]
        r = np.hypot((xs - w / 2) / (w / 2), (ys - h / 2) / (h / 2))
        return np.clip(1.0 - r, 0.0, 1.0).astype(np.float32)
