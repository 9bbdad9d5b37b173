"""Seam-aware paste-back: a Poisson correction of the edit before the feathered composite, and the
seam metric that compares blends.

A linear feather ramps the difference between the edit and the photo across its band; where the
two differ in colour there (VAE drift, a changed light) that ramp shows as a seam. The Poisson
blend first adds to the edit the smooth (harmonic) membrane that equals photo minus edit on the
border of the pasted region, so the edit keeps its own gradients inside and meets the photo's
pixels at the border: a colour offset leaves no edge. The composite after it is the usual one, so
every pixel beyond the feather band (alpha 0) stays the photo's byte for byte.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Jacobi sweeps per pyramid level: many on the small levels (cheap, they carry the shape), few
# on the big ones (the guess pulled up from below needs only smoothing there).
COARSE_SWEEPS, FINE_SWEEPS, FINE_PIXELS = 24, 6, 128 * 128
# A region bigger than this (px per side) gets its membrane at a lower resolution, scaled up:
# that carries the colour shift; the finer difference left is the feather's to blend.
MEMBRANE_SIDE = 384
SEAM_METHODS = ("feather", "poisson")


def poisson_edit(original: np.ndarray, edited: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``edited`` (uint8 HxWxC) plus the membrane that makes it meet ``original`` on the border
    of the region alpha > 0, rounded to uint8 (unchanged where alpha is 0)."""
    region = np.asarray(alpha) > 0
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    if rows.size == 0:
        return edited.copy()
    height, width = region.shape
    box = np.s_[max(rows[0] - 1, 0):min(rows[-1] + 2, height),
                max(cols[0] - 1, 0):min(cols[-1] + 2, width)]
    inside = region[box]
    border = _neighbours(inside) & ~inside  # alpha-0 pixels touching the region (4-connected)
    if not border.any():  # the region fills the photo: nothing to meet
        return edited.copy()
    # The border's differences, summed into blocks of the membrane's resolution.
    ys, xs = np.nonzero(border)
    difference = original[box][ys, xs].astype(np.float32) - edited[box][ys, xs].astype(np.float32)
    factor = 1
    while max(inside.shape) > MEMBRANE_SIDE * factor:
        factor *= 2
    shape = (-(-inside.shape[0] // factor), -(-inside.shape[1] // factor))
    cells = (ys // factor) * shape[1] + xs // factor
    weights = np.bincount(cells, minlength=shape[0] * shape[1]).reshape(shape).astype(np.float32)
    sums = np.stack([np.bincount(cells, difference[:, c], shape[0] * shape[1]) for c in
                     range(difference.shape[1])], axis=1).reshape(*shape, -1).astype(np.float32)
    known = weights > 0
    mean = np.where(known[..., None], sums / np.maximum(weights, 1)[..., None], 0).astype(np.float32)
    membrane = _upscale(_membrane(mean, known), factor, inside.shape)
    # rint(edit + membrane) is edit + rint(membrane): the edit is whole numbers already.
    corrected = edited[box].astype(np.int16) + np.rint(membrane).astype(np.int16)
    out = edited.copy()
    out[box] = np.where(inside[..., None], np.clip(corrected, 0, 255), edited[box])
    return out


def seam_score(original: np.ndarray, edited: np.ndarray, result: np.ndarray, alpha: np.ndarray) -> float:
    """The gradient jump along the paste's edge: over neighbouring pixel pairs whose alpha
    differs, the mean distance (levels per channel) between the result's step and the step the
    sources make there blended by alpha. A feathered paste scores |edit - photo| x |alpha step|;
    0 means no seam. NaN when alpha has no edge."""
    a = np.asarray(alpha, np.float32)
    jumps = []
    for axis in (0, 1):
        first = np.nonzero(np.diff(a, axis=axis))  # pairs (first, first + 1 along axis)
        if first[0].size == 0:
            continue
        second = (first[0] + 1, first[1]) if axis == 0 else (first[0], first[1] + 1)
        mean_a = ((a[first] + a[second]) / 2)[:, None]
        step = {name: image[second].astype(np.float32) - image[first].astype(np.float32)
                for name, image in (("o", original), ("e", edited), ("r", result))}
        expected = (1 - mean_a) * step["o"] + mean_a * step["e"]
        jumps.append(np.abs(step["r"] - expected).mean(axis=1))
    return float(np.concatenate(jumps).mean()) if jumps else float("nan")


def _neighbours(flags: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour in ``flags``."""
    out = np.zeros_like(flags)
    out[1:] |= flags[:-1]
    out[:-1] |= flags[1:]
    out[:, 1:] |= flags[:, :-1]
    out[:, :-1] |= flags[:, 1:]
    return out


def _membrane(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """A smooth field equal to ``values`` (HxWxC) where ``known``, close to harmonic elsewhere:
    averaged down a pyramid (push), carried back up where unknown (pull), relaxed at each level."""
    if min(known.shape) <= 2 or known.all():
        guess = np.where(known[..., None], values, values[known].mean(axis=0))
        return _relax(guess, values, known)
    weights = known.astype(np.float32)
    coarse_values, coarse_weights = _halve(values * weights[..., None], weights)
    coarse_known = coarse_weights > 0
    mean = np.where(coarse_known[..., None], coarse_values / np.maximum(coarse_weights, 1e-12)[..., None], 0)
    coarse = _membrane(mean, coarse_known)
    guess = np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)[:known.shape[0], :known.shape[1]]
    return _relax(np.where(known[..., None], values, guess), values, known)


def _upscale(field: np.ndarray, factor: int, shape) -> np.ndarray:
    """``field`` scaled up ``factor`` times (bilinear, block centres aligned), cropped to ``shape``."""
    if factor == 1:
        return field
    h, w = field.shape[:2]
    size = (w * factor, h * factor)
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(field[..., c]), mode="F")
                           .resize(size, Image.Resampling.BILINEAR)) for c in range(field.shape[2])]
    return np.stack(channels, axis=2)[:shape[0], :shape[1]]


def _halve(weighted: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sums over 2x2 blocks (odd sizes padded with zeros)."""
    h, w = weights.shape
    ph, pw = h + h % 2, w + w % 2
    wv = np.zeros((ph, pw, weighted.shape[2]), np.float32)
    wv[:h, :w] = weighted
    ww = np.zeros((ph, pw), np.float32)
    ww[:h, :w] = weights
    blocks = wv.reshape(ph // 2, 2, pw // 2, 2, -1).sum(axis=(1, 3))
    return blocks, ww.reshape(ph // 2, 2, pw // 2, 2).sum(axis=(1, 3))


def _relax(field: np.ndarray, values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Jacobi sweeps of Laplace's equation on the unknown pixels (borders mirror: no flux)."""
    for _ in range(FINE_SWEEPS if known.size > FINE_PIXELS else COARSE_SWEEPS):
        padded = np.pad(field, ((1, 1), (1, 1), (0, 0)), mode="edge")
        mean = (padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]) / 4
        field = np.where(known[..., None], values, mean)
    return field
