"""EditResult: the one record of one result, from the engine to the history, autosave and export.

Plain data (numpy arrays, EditParams, dicts of plain values): no torch, no Qt, so the app can keep,
save and restore it without loading the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from engine.params import EditParams

_RUN_FIGURES = ("seconds", "peak_memory_bytes")  # stats that differ between identical runs


@dataclass
class EditResult:
    """One finished edit at the photo's full resolution."""

    image: np.ndarray  # (H, W, 3) uint8, pasted back: outside the mask it is the original
    mask: np.ndarray  # (H, W) float32 mask the edit used
    heatmap: np.ndarray | None  # (H, W) float32 auto-mask heatmap, when one was estimated
    source: str
    target: str
    params: EditParams
    model_name: str
    method: str = "diffedit"
    loras: list[str] = field(default_factory=list)  # "name:weight" of the LoRAs on the model
    options: dict = field(default_factory=dict)  # the method's own options, as plain values
    stats: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    variation: int = 0  # 0-based place among the results of one run request (engine.runs)
    seconds: float = 0.0  # this result's share of its run's time

    @property
    def size(self) -> tuple[int, int]:
        """(W, H): larger than the photo when the method grew the canvas (Blended extend)."""
        return self.image.shape[1], self.image.shape[0]

    def metadata(self) -> dict:
        """PNG text chunks: a `parameters` line other SD tools read, and the full JSON."""
        p = self.params
        negative = p.negative_prompt or self.source
        # Readers split this text into lines (prompt, "Negative prompt:", settings) and the last
        # line at commas: a newline in a prompt would forge lines, so prompts go on one line and
        # settings values are quoted as A1111 quotes them. The "diffedit" JSON keeps them exact.
        parameters = (f"{_one_line(self.target)}\nNegative prompt: {_one_line(negative)}\n"
                      f"Steps: {p.steps}, Sampler: DDIM, CFG scale: {p.guidance}, Seed: {p.seed}, "
                      f"Denoising strength: {p.strength}, Model: {_quoted(self.model_name)}, "
                      f"Edit: {self.method}, Source prompt: {_quoted(self.source)}")
        if self.loras:
            parameters += f", LoRA: {_quoted(' '.join(self.loras))}"
        record = {"method": self.method, "source": self.source, "target": self.target,
                  "model": self.model_name, "loras": list(self.loras), "params": p.to_dict(),
                  "options": self.options,
                  # What made the pixels, not how long it took: the same settings give the same
                  # file bytes (batch reruns, Ray vs local); timings and memory go to --report.
                  "stats": {k: v for k, v in self.stats.items() if k not in _RUN_FIGURES},
                  "software": "DiffEdit Studio"}
        return {"parameters": parameters, "diffedit": json.dumps(record)}


def _one_line(text: str) -> str:
    return " ".join(str(text).splitlines())


def _quoted(value: str) -> str:
    """A settings value as A1111 writes it: JSON-quoted when it holds a comma, colon or newline."""
    value = str(value)
    return json.dumps(value) if any(c in value for c in ",:\n\r") else value
