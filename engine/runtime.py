"""One run's plumbing: model calls that count, poll for cancel and report progress; stage timing.

Every method calls the model through ``RunContext.predict_noise`` (or, on flow-matching models,
``predict_velocity``; the schedule's ``predict`` picks) so that sample-evaluations are counted
per stage, ``should_stop()`` is polled before every call, and the backbone's native prediction
is turned into noise in one place; guidance goes through ``RunContext.guide``, the backbone's
one formula.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from engine.backbones.base import as_conditioning
from engine.config import MAX_THREADS, physical_cores
from engine.errors import Cancelled, InputError

OnStep = Callable[[str, int, int, Optional[np.ndarray]], None]
ShouldStop = Callable[[], bool]


class RunContext:
    """Counts, times and reports one run on one model."""

    def __init__(self, model, on_step: OnStep | None = None, should_stop: ShouldStop | None = None,
                 backbone=None):
        from engine.backbones import for_model

        self.model = model
        self.backbone = backbone or for_model(model)
        self.on_step = on_step
        self.should_stop = should_stop
        self.unet_evals: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.stage = "run"
        if model.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(model.device)

    def check(self) -> None:
        """Raise Cancelled if the caller asked to stop."""
        if self.should_stop is not None and self.should_stop():
            raise Cancelled(f"cancelled during {self.stage}")

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Attribute the time and UNet work inside the block to ``stage``."""
        previous, self.stage = self.stage, stage
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
            self.stage = previous

    def step(self, index: int, total: int, preview: np.ndarray | None = None) -> None:
        if self.on_step is not None:
            self.on_step(self.stage, index, total, preview)

    def step_with_preview(self, index: int, total: int, latents: torch.Tensor,
                          content: tuple[int, int] | None) -> None:
        """Report a step with a cheap RGB preview of ``latents`` (made only if someone listens)."""
        if self.on_step is not None:
            self.on_step(self.stage, index, total, self.backbone.preview(latents, content))

    @torch.no_grad()
    def predict_noise(self, latents: torch.Tensor, timestep: int, cond, level: float,
                      **kwargs) -> torch.Tensor:
        """The backbone's prediction for a batch as noise (epsilon), in float32.

        ``cond`` is an engine.backbones.Conditioning (or a bare embeddings tensor) with the batch
        of ``latents``, or batch 1 (broadcast); ``level`` is the noise level the latents are at
        (the cumulative alpha at ``timestep`` for DDPM models).
        """
        return self.backbone.to_noise(self._predict(latents, timestep, cond, **kwargs), latents, level)

    @torch.no_grad()
    def predict_velocity(self, latents: torch.Tensor, timestep, cond, **kwargs) -> torch.Tensor:
        """A flow-matching backbone's velocity for a batch, in float32 (as predict_noise)."""
        if self.backbone.prediction_type != "flow":
            raise ValueError(f"a {self.backbone.prediction_type} model predicts no velocity")
        return self._predict(latents, timestep, cond, **kwargs)

    def _predict(self, latents: torch.Tensor, timestep, cond, **kwargs) -> torch.Tensor:
        """The backbone's native output: counted per stage, after polling for cancel."""
        self.check()
        batch = latents.shape[0]
        cond = as_conditioning(cond)
        if cond.batch == 1 and batch > 1:
            cond = cond.expand(batch)
        out = self.backbone.predict(latents, timestep, cond, **kwargs)
        self.unet_evals[self.stage] = self.unet_evals.get(self.stage, 0) + batch
        return out

    def guide(self, unconditional: torch.Tensor, conditional: torch.Tensor,
              scale: float) -> torch.Tensor:
        """The backbone's guidance of two predictions (true CFG for SD)."""
        return self.backbone.guide(unconditional, conditional, scale)

    def stats(self) -> dict:
        model = self.model
        if model.device.type == "cuda":
            peak = int(torch.cuda.max_memory_allocated(model.device))
        else:
            peak = peak_rss_bytes()
        return {
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "unet_evals": dict(self.unet_evals),
            "unet_evals_total": sum(self.unet_evals.values()),
            "device": str(model.device),
            "dtype": str(model.dtype).replace("torch.", ""),
            "peak_memory_bytes": peak,
        }


def set_threads(threads: int = 0) -> int:
    """Use ``threads`` CPU threads for torch's operators (0: the physical cores); returns the
    count in force. Call it on the thread that runs the model (OpenMP keeps the count per
    thread): the CLI and the benchmark do at start."""
    if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= MAX_THREADS:
        raise InputError(f"threads must be a whole number from 0 (the physical cores) to "
                         f"{MAX_THREADS}, got {threads!r}", field="threads")
    count = threads or physical_cores()
    torch.set_num_threads(count)
    return count


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (what a CPU run costs the machine)."""
    try:
        import resource  # POSIX only
    except ImportError:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
