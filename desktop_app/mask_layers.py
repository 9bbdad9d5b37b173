"""The mask's layers and their algebra, numpy only (no Qt): segments of an operation followed by
strokes, folded into one mask at a threshold; brush coverage; region helpers.

Mask model: the auto heatmap with its threshold, strokes that add, strokes that erase;
composed = (heatmap > t OR added) AND NOT erased. Mask operations (invert, grow, shrink, feather)
apply to the whole mask composed so far and start a new *segment*: strokes painted after an
operation land on top of it. So moving the threshold refolds every segment and never loses a
stroke, and painting after "invert" still adds where the user paints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from engine import masks

Rect = tuple[int, int, int, int]  # x, y, width, height in image pixels


@dataclass
class Segment:
    """One mask operation (None for the first segment) followed by the strokes painted after it."""

    op: tuple | None = None  # ("invert",) | ("grow", px) | ("shrink", px) | ("feather", px)
    added: np.ndarray | None = None  # stroke coverage in [0, 1], allocated on the first stroke
    erased: np.ndarray | None = None


@dataclass
class MaskLayers:
    """Everything the composed mask is computed from; swapped whole by clear and load."""

    heatmap: np.ndarray | None = None
    segments: list[Segment] = field(default_factory=lambda: [Segment()])


def apply_op(op: tuple, mask: np.ndarray) -> np.ndarray:
    name = op[0]
    if name == "invert":
        return masks.invert(mask)
    if name == "grow":
        return masks.grow(mask, int(op[1]))
    if name == "shrink":
        return masks.shrink(mask, int(op[1]))
    if name == "feather":
        return masks.feather(mask, float(op[1]))
    raise ValueError(f"unknown mask operation {name!r}")


def apply_strokes(mask: np.ndarray, added: np.ndarray | None, erased: np.ndarray | None):
    """(mask OR added) AND NOT erased, with soft stroke edges (works on views of any region)."""
    out = mask if added is None else np.maximum(mask, added)
    if erased is not None:
        out = out * (1.0 - erased)
    return out.astype(np.float32, copy=False)


def segment_coverage(p0, p1, radius: float, hardness: float, shape) -> tuple[Rect, np.ndarray] | None:
    """Brush coverage of a capsule from p0 to p1 (image px), so fast drags leave no gaps.

    Returns ((x, y, w, h), coverage) clipped to the image, or None when it lies outside.
    """
    height, width = shape
    (x0, y0), (x1, y1) = p0, p1
    pad = radius + 1.0
    left = max(0, int(math.floor(min(x0, x1) - pad)))
    right = min(width, int(math.ceil(max(x0, x1) + pad)) + 1)
    top = max(0, int(math.floor(min(y0, y1) - pad)))
    bottom = min(height, int(math.ceil(max(y0, y1) + pad)) + 1)
    if left >= right or top >= bottom:
        return None
    ys = np.arange(top, bottom, dtype=np.float32)[:, None] + 0.5  # pixel centres
    xs = np.arange(left, right, dtype=np.float32)[None, :] + 0.5
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    if length2 > 1e-12:
        t = np.clip(((xs - x0) * dx + (ys - y0) * dy) / length2, 0.0, 1.0)
    else:
        t = np.float32(0.0)
    distance = np.hypot(xs - (x0 + t * dx), ys - (y0 + t * dy))
    # Hardness 1 keeps a one-pixel anti-aliased rim; lower hardness fades over more of the radius.
    soft = max(radius * (1.0 - hardness), 1.0)
    coverage = np.clip((radius - distance) / soft, 0.0, 1.0).astype(np.float32)
    return (left, top, right - left, bottom - top), coverage


@dataclass
class PaintLayer:
    """Blended scribble's colours, painted with the Paint tool over the photo (base-sized)."""

    rgb: np.ndarray  # (H, W, 3) uint8 colours
    coverage: np.ndarray  # (H, W) float32 in [0, 1]; 0 = unpainted


def fold(layers: MaskLayers, threshold: float, shape) -> tuple[np.ndarray, np.ndarray]:
    """(prefix, composed): the mask before the top segment's strokes, and the whole mask, (H, W)
    float32. Separate arrays, so that strokes on the top segment can recompose a region alone."""
    m = (masks.threshold(layers.heatmap, threshold) if layers.heatmap is not None
         else np.zeros(shape, np.float32))
    prefix = m
    for index, segment in enumerate(layers.segments):
        if index > 0:
            m = apply_op(segment.op, m)
        prefix = m
        m = apply_strokes(m, segment.added, segment.erased)
    return (prefix if prefix is not m else prefix.copy()), (m if m is not prefix else m.copy())


def place(array: np.ndarray, offset: tuple[int, int], shape) -> np.ndarray:
    """``array`` on a zero canvas of ``shape`` (H, W) with its top-left at ``offset`` (x, y);
    cropped where it does not fit."""
    x, y = offset
    out = np.zeros((*shape, *array.shape[2:]), array.dtype)
    h, w = array.shape[:2]
    top, left = max(0, y), max(0, x)
    bottom, right = min(shape[0], y + h), min(shape[1], x + w)
    if top < bottom and left < right:
        out[top:bottom, left:right] = array[top - y:bottom - y, left - x:right - x]
    return out


def bbox(flags: np.ndarray) -> Rect | None:
    rows = np.flatnonzero(flags.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(flags.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def union(a: Rect | None, b: Rect) -> Rect:
    if a is None:
        return b
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    x1, y1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
    return x0, y0, x1 - x0, y1 - y0


# ----------------------------------------------------------------------------- re-threshold by tiles

TILE = 64  # re-threshold granularity in px: a slider step recomputes (and redraws) only tiles it reaches


@dataclass(frozen=True)
class HeatmapRanges:
    """Each tile's lowest and highest heatmap value, so that a threshold move from ``a`` to ``b``
    visits only the tiles holding a value in (min(a, b), max(a, b)]: a thin band of a smooth map."""

    heatmap: np.ndarray  # the map these ranges are of (compared by identity)
    low: np.ndarray  # (tile rows, tile columns)
    high: np.ndarray

    @classmethod
    def of(cls, heatmap: np.ndarray) -> "HeatmapRanges":
        rows, cols = (np.arange(0, n, TILE) for n in heatmap.shape)
        low = np.minimum.reduceat(np.minimum.reduceat(heatmap, rows, axis=0), cols, axis=1)
        high = np.maximum.reduceat(np.maximum.reduceat(heatmap, rows, axis=0), cols, axis=1)
        return cls(heatmap, low, high)

    def reached(self, a: float, b: float) -> np.ndarray:
        """Per tile: may ``heatmap > level`` differ between the levels a and b there?"""
        lo, hi = min(a, b), max(a, b)
        return (self.high > lo) & (self.low <= hi)


def tile_runs(flags: np.ndarray, shape) -> list[Rect]:
    """Rectangles (x, y, w, h) in px covering the flagged tiles: one per run of neighbours in a
    tile row, clipped to ``shape`` (H, W)."""
    height, width = shape
    rects = []
    for row, line in enumerate(flags):
        edges = np.flatnonzero(np.diff(np.concatenate(([0], line.astype(np.int8), [0]))))
        y = row * TILE
        for start, stop in zip(edges[::2], edges[1::2]):
            x, x1 = start * TILE, min(width, stop * TILE)
            rects.append((int(x), int(y), int(x1 - x), int(min(height, y + TILE) - y)))
    return rects


def changed_tiles(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Per tile: does any pixel differ between two masks of one shape?"""
    rows, cols = (np.arange(0, n, TILE) for n in old.shape)
    differ = old != new
    return np.logical_or.reduceat(np.logical_or.reduceat(differ, rows, axis=0), cols, axis=1)


def rethreshold_patches(layers: MaskLayers, ranges: HeatmapRanges, old: float, new: float):
    """For a mask with no operation (one segment) folded at ``old``: the (rect, prefix, composed)
    patches that make it the fold at ``new``, equal to fold() there; every other pixel keeps its
    value, because no heatmap value there lies between the two levels."""
    seg = layers.segments[0]
    patches = []
    for rect in tile_runs(ranges.reached(old, new), ranges.heatmap.shape):
        x, y, w, h = rect
        sl = np.s_[y:y + h, x:x + w]
        prefix = masks.threshold(layers.heatmap[sl], new)
        composed = apply_strokes(prefix, None if seg.added is None else seg.added[sl],
                                 None if seg.erased is None else seg.erased[sl])
        patches.append((rect, prefix, composed if composed is not prefix else composed.copy()))
    return patches
