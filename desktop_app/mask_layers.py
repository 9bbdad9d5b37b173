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


BLOCK = 8  # tiles per side of the windows an operation's fold is recomputed in (512 px)


def tile_runs(flags: np.ndarray, shape, size: int = TILE) -> list[Rect]:
    """Rectangles (x, y, w, h) in px covering the flagged ``size``-px tiles: one per run of
    neighbours in a tile row, clipped to ``shape`` (H, W)."""
    height, width = shape
    rects = []
    for row, line in enumerate(flags):
        edges = np.flatnonzero(np.diff(np.concatenate(([0], line.astype(np.int8), [0]))))
        y = row * size
        for start, stop in zip(edges[::2], edges[1::2]):
            x, x1 = start * size, min(width, stop * size)
            rects.append((int(x), int(y), int(x1 - x), int(min(height, y + size) - y)))
    return rects


def op_reach(op: tuple) -> int:
    """How far (px) an operation carries a change of its input into its output."""
    if op[0] in ("grow", "shrink"):
        return max(0, int(op[1]))
    if op[0] == "feather":  # Pillow's Gaussian: three box passes of at most ceil(px) + 1 px each
        return 3 * (math.ceil(float(op[1])) + 1)
    return 0  # invert: per pixel


def cropped(layers: MaskLayers, window) -> MaskLayers:
    """The layers inside ``window`` (a pair of slices), as views."""
    def part(a):
        return None if a is None else a[window]

    return MaskLayers(part(layers.heatmap),
                      [Segment(s.op, part(s.added), part(s.erased)) for s in layers.segments])


def rethreshold_patches(layers: MaskLayers, ranges: HeatmapRanges, old: float, new: float):
    """For a mask folded at ``old``: the (rect, prefix, composed) patches that make it the fold at
    ``new``, equal to fold() there. Each patch is folded on a window grown by how far the
    operations carry a change, so even after Grow or Feather only the neighbourhood of the
    heatmap values between the two levels is recomputed; every other pixel keeps its value."""
    height, width = shape = ranges.heatmap.shape
    margin = sum(op_reach(segment.op) for segment in layers.segments[1:])
    flags, size = ranges.reached(old, new), TILE
    if margin:  # the tiles the operations carry a change into, in blocks (fewer window margins)
        tiles = -(-margin // TILE)
        flags = masks.spread(masks.spread(flags, tiles, 0), tiles, 1)
        rows, cols = (np.arange(0, n, BLOCK) for n in flags.shape)
        flags = np.logical_or.reduceat(np.logical_or.reduceat(flags, rows, axis=0), cols, axis=1)
        size = TILE * BLOCK
    patches = []
    for x, y, w, h in tile_runs(flags, shape, size):
        x0, y0 = max(0, x - margin), max(0, y - margin)
        x1, y1 = min(width, x + w + margin), min(height, y + h + margin)
        prefix, composed = fold(cropped(layers, np.s_[y0:y1, x0:x1]), new, (y1 - y0, x1 - x0))
        inner = np.s_[y - y0:y - y0 + h, x - x0:x - x0 + w]
        patches.append(((x, y, w, h), prefix[inner], composed[inner]))
    return patches
