"""A history entry: the engine's EditResult of one run plus the history's id, group, time and
thumbnail (desktop_app.document keeps a list of them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from engine.results import EditResult


@dataclass(kw_only=True)
class HistoryEntry(EditResult):
    """One result of one run: the engine's record itself (image, mask, texts, params, metadata(),
    ...), plus what the history adds. A run with variations makes several entries sharing
    ``group``; ``heatmap`` is kept only when the method made it itself (P2P's local blend), for
    "Use its mask"."""

    id: int
    group: int
    created: float  # time.time()
    thumbnail: np.ndarray | None = None  # small RGB for the history list

    @classmethod
    def of(cls, result: EditResult, **history) -> "HistoryEntry":
        """``result`` (its fields, not copies of its arrays) with the history's own fields."""
        return cls(**{f.name: getattr(result, f.name) for f in dataclasses.fields(EditResult)},
                   **history)


def make_thumbnail(rgb: np.ndarray, side: int = 96) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(rgb)
    image.thumbnail((side, side), Image.Resampling.BILINEAR)
    return np.asarray(image).copy()
