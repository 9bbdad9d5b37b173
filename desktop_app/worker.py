"""The engine thread: the only QThread in the app. It owns the loaded model and the edit sessions.

Requests are frozen dataclasses (data only). Cancel is a threading.Event set straight from the GUI
thread, because a queued signal would wait behind the very job it should stop. Results travel as
the engine's own records (engine.results.EditResult: it keeps no reference to their arrays).
torch is imported here, on the worker thread, the first time a model loads.
"""

from __future__ import annotations

import threading
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from PySide6.QtCore import QObject, QThread, Signal, Slot

from engine import lora
from engine.errors import Cancelled, InputError
from engine.params import EditParams
from engine.runs import RunRequest

TINY_MODEL = "tiny"  # LoadModelRequest.source for the random-weight test model
SESSIONS_KEPT = 2  # the current photo and the one before "Apply", so undo + re-edit stays cached


# ----------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class LoadModelRequest:
    source: str  # diffusers folder, hub id in the local cache, .safetensors file, or TINY_MODEL
    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    memory: str = "auto"  # GPU memory tier: auto | full | sliced | offload
    threads: int = 0  # torch CPU threads (0: the physical cores), set on the engine thread
    loras: tuple[str, ...] = ()  # PATH:WEIGHT of each LoRA to load onto the model (engine.lora)
    transformer: str = ""  # a .gguf/.safetensors transformer file in place of a flow model's own


@dataclass(frozen=True)
class MaskRequest:
    job_id: int
    photo_key: str  # names the base pixels; a new key means a new session
    photo: object  # engine photo holding a private copy of the pixels
    source: str
    target: str
    params: EditParams
    method: str = "diffedit"  # whose mask (engine.methods.MethodInfo.finds_mask)


@dataclass(frozen=True)
class EditRequest:
    job_id: int
    run: RunRequest  # the engine's request: photo, method, texts, mask, params, variations, paint


# ----------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class FamilyTraits:
    """What a loaded model's family changes on the panel."""

    defaults: dict  # the EditParams values it runs at (FLUX.2 klein: 4 steps)
    unused: frozenset  # the EditParams fields its runs ignore (a distilled model's guidance)
    # method name -> its options the family ignores (P2P's word swap on a flow transformer)
    unused_options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Progress:
    job_id: int
    stage: str  # "mask" | "encode" | "decode"
    step: int  # 0-based index of the step that just finished
    total: int
    variation: int  # 0-based
    variations: int


class EngineBackend:
    """Where the worker finds the engine. Imports happen on first use, on the worker thread."""

    def load_model(self, source, *, device="auto", dtype="auto", memory_tier="auto", threads=0,
                   loras=(), transformer=""):
        from engine.models import load_model
        from engine.runtime import set_threads

        set_threads(threads)  # here, on the engine thread: OpenMP thread counts are per thread
        return load_model(source, device=device, dtype=dtype, memory_tier=memory_tier, loras=loras,
                          transformer=transformer)

    def ensure_tiny_model(self):
        from engine.tiny_model import ensure_tiny_model

        return ensure_tiny_model()

    def methods(self, model) -> tuple[str, ...]:
        """The method names the loaded model's backbone runs."""
        from engine.backbones import for_model
        from engine.methods import METHODS

        supported = for_model(model).methods
        return tuple(name for name in METHODS if name in supported)

    def family(self, model) -> "FamilyTraits":
        """What the loaded model's family changes on the panel."""
        from engine.backbones import for_model

        backbone = for_model(model)
        return FamilyTraits(dict(backbone.defaults), frozenset(backbone.unused_params),
                            dict(backbone.unused_options))

    def EditSession(self, model, photo):  # noqa: N802 - mirrors the engine's class name
        from engine.session import EditSession

        return EditSession(model, photo)


def model_label(model, source: str) -> str:
    """The model's name (with its LoRAs), device and precision, for the status bar."""
    name = getattr(model, "name", None) or str(source)
    if getattr(model, "loras", None):
        name += " + " + ", ".join(model.loras)
    device = getattr(model, "device", "")
    dtype = str(getattr(model, "dtype", "")).replace("torch.", "")
    return f"{name} ({device}, {dtype})" if device else name


def describe_exception(exc: BaseException) -> tuple[str, str]:
    """(message for the user, technical details) for an exception out of the engine."""
    if isinstance(exc, InputError):
        return str(exc), ""
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    # torch.cuda.OutOfMemoryError, or engine.memory.OutOfMemory once its lower-memory retries
    # are spent (matched by name: importing either would load torch here).
    if type(exc).__name__ in ("OutOfMemoryError", "OutOfMemory") or isinstance(exc, MemoryError):
        where = "the computer" if isinstance(exc, MemoryError) else "the graphics card"
        return (f"The run stopped: {where} ran out of memory. The photo, mask and history are "
                "unchanged. Try a smaller working resolution or fewer steps and mask samples; "
                "in Settings choose a lower GPU memory setting (the next run already starts one "
                "step lower), float16 precision or the CPU; close other programs that use the "
                "GPU."), details
    return f"Unexpected error in the engine: {type(exc).__name__}: {exc}", details


# ----------------------------------------------------------------------------- worker


class EngineWorker(QObject):
    """Lives on the engine thread; every slot runs there, one request at a time."""

    model_state = Signal(str, str)  # state ("loading" | "ready" | "failed"), message
    model_methods = Signal(object)  # tuple of the method names the loaded model runs
    model_family = Signal(object)  # FamilyTraits: its family's parameter values and unused ones
    progress = Signal(object)  # Progress
    preview = Signal(int, object)  # job_id, (h, w, 3) uint8
    mask_ready = Signal(int, object)  # job_id, heatmap (H, W) float32
    result_ready = Signal(int, object)  # job_id, engine.results.EditResult (its own arrays)
    job_failed = Signal(int, str, str)  # job_id, message, details
    job_cancelled = Signal(int)
    job_finished = Signal(int)  # always last, whatever happened

    def __init__(self, backend, cancel: threading.Event):
        super().__init__()
        self.backend = backend
        self.cancel = cancel
        self.model = None
        self.sessions: OrderedDict[str, object] = OrderedDict()

    @Slot(object)
    def run(self, request) -> None:
        if isinstance(request, LoadModelRequest):
            self._load(request)
            return
        job_id = request.job_id
        try:
            if self.model is None:
                raise InputError("No model is loaded. Choose one in Settings, or try the tiny test "
                                 "model from the Models menu.")
            if isinstance(request, MaskRequest):
                self._find_mask(request)
            else:
                self._edit(request)
        except Cancelled:
            self.job_cancelled.emit(job_id)
        except Exception as exc:  # the thread must survive anything a run throws
            message, details = describe_exception(exc)
            self.job_failed.emit(job_id, message, details)
        finally:
            self.job_finished.emit(job_id)

    def _load(self, request: LoadModelRequest) -> None:
        self.sessions.clear()
        self.model = None
        self.model_state.emit("loading", f"Loading {request.source}\u2026")
        try:
            source = request.source
            if source == TINY_MODEL:
                source = str(self.backend.ensure_tiny_model())
            loras = tuple(lora.parse(spec) for spec in request.loras)
            self.model = self.backend.load_model(source, device=request.device, dtype=request.dtype,
                                                 memory_tier=request.memory, threads=request.threads,
                                                 loras=loras, transformer=request.transformer)
        except Exception as exc:
            message, _ = describe_exception(exc)
            self.model_state.emit("failed", message)
            return
        label = model_label(self.model, request.source)
        if request.source == TINY_MODEL:
            label = "tiny test model (random weights: produces noise)"
        self.model_methods.emit(self.backend.methods(self.model))
        self.model_family.emit(self.backend.family(self.model))
        self.model_state.emit("ready", label)

    def _session(self, photo_key: str, photo):
        session = self.sessions.get(photo_key)
        if session is None:
            session = self.backend.EditSession(self.model, photo)
            self.sessions[photo_key] = session
            while len(self.sessions) > SESSIONS_KEPT:
                self.sessions.popitem(last=False)
        self.sessions.move_to_end(photo_key)
        return session

    def _on_step(self, job_id: int, variation: list[int]):
        """An engine on_step that reports Progress (at ``variation`` = [index, count]) and previews."""
        def on_step(stage, step, total, preview):  # the engine's step counts steps done, from 1
            self.progress.emit(Progress(job_id, stage, int(step) - 1, int(total), *variation))
            if preview is not None:
                self.preview.emit(job_id, np.array(preview, dtype=np.uint8, copy=True))

        return on_step

    def _find_mask(self, request: MaskRequest) -> None:
        session = self._session(request.photo_key, request.photo)
        heatmap = session.estimate_mask(request.source, request.target, request.params,
                                        method=request.method,
                                        on_step=self._on_step(request.job_id, [0, 1]),
                                        should_stop=self.cancel.is_set)
        self.mask_ready.emit(request.job_id, np.array(heatmap, dtype=np.float32, copy=True))

    def _edit(self, request: EditRequest) -> None:
        """engine.runs.execute; results go out one by one as engine.results.EditResult records."""
        from engine.runs import execute

        variation = [0, request.run.variations]

        def on_variation(index, count):
            variation[:] = [index, count]

        execute(request.run, self._session, on_step=self._on_step(request.job_id, variation),
                should_stop=self.cancel.is_set, on_variation=on_variation,
                on_result=lambda result: self.result_ready.emit(request.job_id, result))


# ----------------------------------------------------------------------------- GUI-side handle


class EngineController(QObject):
    """Owned by the GUI thread: starts the engine thread, submits requests, cancels, shuts down.

    It re-emits the worker's signals from the GUI thread, so views (and plain Python callables,
    which PySide would otherwise call on the emitting thread) always run on the GUI thread.
    """

    _submit = Signal(object)
    model_state = Signal(str, str)
    model_methods = Signal(object)
    model_family = Signal(object)
    progress = Signal(object)
    preview = Signal(int, object)
    mask_ready = Signal(int, object)
    result_ready = Signal(int, object)
    job_failed = Signal(int, str, str)
    job_cancelled = Signal(int)
    job_finished = Signal(int)

    def __init__(self, backend=None, parent=None):
        super().__init__(parent)
        self._cancel = threading.Event()
        self._thread = QThread()
        self._thread.setObjectName("diffedit-engine")
        self.worker = EngineWorker(backend or EngineBackend(), self._cancel)
        self.worker.moveToThread(self._thread)
        self._submit.connect(self.worker.run)
        self.worker.job_finished.connect(self._on_finished)  # first, so `busy` is fresh for views
        for name in ("model_state", "model_methods", "model_family", "progress", "preview",
                     "mask_ready", "result_ready", "job_failed", "job_cancelled", "job_finished"):
            getattr(self.worker, name).connect(getattr(self, name))  # queued: receiver is here
        self._jobs = 0
        self.running_job: int | None = None
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self.running_job is not None

    def next_job_id(self) -> int:
        self._jobs += 1
        return self._jobs

    def load_model(self, request: LoadModelRequest) -> None:
        self._submit.emit(request)

    def submit(self, request) -> int:
        """Queue a MaskRequest or EditRequest; one job at a time, so the cancel flag is fresh."""
        if self.busy:
            raise RuntimeError("a job is already running")
        self._cancel.clear()
        self.running_job = request.job_id
        self._submit.emit(request)
        return request.job_id

    def cancel(self) -> None:
        """Stop the running job at its next UNet step (safe to call from the GUI at any time)."""
        self._cancel.set()

    def _on_finished(self, job_id: int) -> None:
        if job_id == self.running_job:
            self.running_job = None

    def shutdown(self) -> None:
        """The one way down: stop the job, end the thread's loop, wait for it."""
        self._cancel.set()
        self._thread.quit()
        self._thread.wait()
