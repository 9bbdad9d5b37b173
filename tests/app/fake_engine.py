"""A scriptable stand-in for the engine (load_model, EditSession) so app tests need no torch.

``run`` mimics every method's contract cheaply: Blended makes ``candidates`` results (inpaint,
background = inverted mask, extend = a larger image with the photo in place), SDEdit and
Plug-and-Play change the whole photo unless masked, Prompt-to-Prompt's local blend returns its
heatmap (a disc) with the result. A clip_model of "fake-clip" ranks candidates by brightness.

Same method names and signatures as engine.models.load_model and engine.session.EditSession.
It calls on_step at every "UNet step", honours should_stop by raising Cancelled, and can be told
to fail, to pause at a step (so a test can act mid-run without sleeping), or to be slow.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from engine import masks
from engine.errors import Cancelled
from engine.params import EditParams


@dataclass
class FakeModel:
    name: str
    source: str
    device: str = "cpu"
    dtype: str = "float32"
    native_size: int = 64


@dataclass
class FakeEditResult:
    image: np.ndarray
    mask: np.ndarray
    heatmap: np.ndarray | None
    source: str
    target: str
    params: EditParams
    method: str = "diffedit"
    options: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    def metadata(self) -> dict:
        return {"parameters": f"{self.source} -> {self.target}, seed {self.params.seed}",
                "diffedit": '{"fake": true}'}


class FakeEngine:
    """Script it through its attributes; it records what it was asked to do."""

    def __init__(self):
        self.step_delay = 0.0  # seconds per fake UNet step
        self.fail_on: str | None = None  # "load" | "mask" | "edit"
        self.error: Exception = RuntimeError("fake engine failure")
        self.pause_at: tuple[str, int] | None = None  # (stage, step): wait on `resume` there
        self.paused = threading.Event()  # set when the run reached pause_at
        self.resume = threading.Event()
        self.mask_steps_run = 0
        self.encode_runs = 0
        self.calls: list[str] = []
        self.loaded_sources: list[str] = []
        self.memory_tiers: list[str] = []
        self.sessions: list[FakeEditSession] = []
        self.runs: list[tuple] = []  # (method, options, mask given, session photo rgb) per run

    # --- the engine.models / engine.tiny_model surface

    def load_model(self, source, *, device="auto", dtype="auto", allow_download=False,
                   allow_pickle=False, memory_tier="auto"):
        self.calls.append("load")
        self.memory_tiers.append(memory_tier)
        if self.fail_on == "load":
            raise self.error
        self.loaded_sources.append(str(source))
        return FakeModel(name=str(source).rsplit("/", 1)[-1], source=str(source))

    def ensure_tiny_model(self, folder=None):
        return "/fake/tiny-model"

    def EditSession(self, model, photo):  # noqa: N802 - the engine's class name
        session = FakeEditSession(self, model, photo)
        self.sessions.append(session)
        return session


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
                on_step(stage, i, total, preview)

    def estimate_mask(self, source, target, params, *, on_step=None, should_stop=None):
        self.engine.calls.append("mask")
        params.validate()
        if self.engine.fail_on == "mask":
            raise self.engine.error
        self._steps("mask", params.mask_samples, on_step, should_stop)
        self.engine.mask_steps_run += params.mask_samples
        w, h = self.size
        ys, xs = np.mgrid[0:h, 0:w]
        r = np.hypot((xs - w / 2) / (w / 2), (ys - h / 2) / (h / 2))
        return np.clip(1.0 - r, 0.0, 1.0).astype(np.float32)  # 1 at centre, > 0.5 inside r < 0.5

    def edit(self, source, target, mask, params, *, on_step=None, should_stop=None):
        self.engine.calls.append("edit")
        params.validate()
        if self.engine.fail_on == "edit":
            raise self.engine.error
        heatmap = None
        if mask is None:
            heatmap = self.estimate_mask(source, target, params, on_step=on_step,
                                         should_stop=should_stop)
            mask = masks.threshold(heatmap, params.mask_threshold)
        steps = params.encode_steps
        if not self.encoded:
            self._steps("encode", steps, on_step, should_stop)
            self.encoded = True
            self.engine.encode_runs += 1
        self._steps("decode", steps, on_step, should_stop)
        original = self.photo.rgb
        edited = (255 - original).astype(np.uint8)
        alpha = masks.paste_alpha(mask, params.feather)
        image = masks.composite(original, edited, alpha)
        return FakeEditResult(image=image, mask=np.asarray(mask, np.float32), heatmap=heatmap,
                              source=source, target=target, params=params,
                              stats={"seconds": {"decode": 0.0}, "device": "cpu"})

    def run(self, method, source, target, mask, params, options=None, *, on_step=None,
            should_stop=None):
        from engine.errors import InputError
        from engine.methods import METHODS, info
        from engine.methods.options import from_dict

        parsed = from_dict(info(method).options, options)
        values = dict(parsed.__dict__)
        self.engine.runs.append((method, values, mask is not None, self.photo.rgb.copy()))
        if method == "diffedit":
            result = self.edit(source, target, mask, params, on_step=on_step, should_stop=should_stop)
            return [result]
        self.engine.calls.append(f"run:{method}")
        params.validate()
        if self.engine.fail_on == "edit":
            raise self.engine.error
        original, heatmap, count = self.photo.rgb, None, 1
        if method == "blended":
            action, count = values["action"], values["candidates"]
            if action == "extend":
                left, right, top, bottom = (values[f"extend_{s}"] for s in ("left", "right", "top", "bottom"))
                if not any((left, right, top, bottom)):
                    raise InputError("extend adds no canvas: set extend_left ... (px of new canvas)")
                h, w = original.shape[:2]
                original = np.pad(original, ((top, bottom), (left, right), (0, 0)), mode="edge")
                area = np.ones(original.shape[:2], np.float32)
                area[top:top + h, left:left + w] = 0.0 if mask is None else mask
                mask = area
            elif mask is None:
                raise InputError(f"Blended Latent Diffusion ({action}) needs a mask: paint it")
            elif action == "background":
                mask = masks.invert(mask)
        elif method == "sdedit":
            if values["masked"] and mask is None:
                raise InputError("masked SDEdit needs a mask")
            mask = mask if values["masked"] else None
        elif method == "p2p" and mask is None and values["blend_words"]:
            w, h = self.size
            ys, xs = np.mgrid[0:h, 0:w]
            r = np.hypot((xs - w / 2) / (w / 2), (ys - h / 2) / (h / 2))
            heatmap = np.clip(1.0 - r, 0.0, 1.0).astype(np.float32)
            mask = masks.threshold(heatmap, values["blend_threshold"])
        elif method == "pnp":
            mask = None
        steps = params.encode_steps
        self._steps("decode", steps * count, on_step, should_stop)
        results = []
        for i in range(count):
            edited = ((255 - original.astype(np.int32) + 16 * i) % 256).astype(np.uint8)
            if mask is None:
                image, used = edited, np.ones(original.shape[:2], np.float32)
            else:
                used = np.asarray(mask, np.float32)
                image = masks.composite(original, edited, masks.paste_alpha(used, params.feather))
            results.append(FakeEditResult(
                image=image, mask=used, heatmap=heatmap, source=source, target=target,
                params=params.replace(seed=params.seed + i) if method == "blended" else params,
                method=method, options=dict(values), stats={"seconds": {"decode": 0.0}}))
        if method == "blended" and values["clip_model"] == "fake-clip":
            scores = [float(r.image.mean()) / 255 for r in results]
            order = sorted(range(count), key=lambda i: -scores[i])
            for place, i in enumerate(order, start=1):
                results[i].stats.update(clip_score=round(scores[i], 6), rank=place)
            results = [results[i] for i in order]
        assert METHODS[method]  # a registered method
        return results
