"""Mask algebra on float32 maps in [0, 1]: threshold, invert, grow, shrink, feather.

Everything here is numpy + Pillow (no torch), fast enough to run on every slider move.
A mask is an (H, W) float32 array; 1 = edit, 0 = keep.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from engine.errors import InputError

# An all-zero heatmap (engine.methods.diffedit.estimate_heatmap found no disagreement beyond its
# sampling noise): said instead of a mask made up from noise.
TEXTS_AGREE = ("the model's predictions do not differ anywhere under the two texts (or with and "
               "without the instruction): describe the change more concretely, or paint the mask")


def threshold(heatmap: np.ndarray, level: float) -> np.ndarray:
    """Binary mask of the pixels whose heatmap value is above ``level``."""
    return (np.asarray(heatmap) > level).astype(np.float32)


def threshold_auto(heatmap: np.ndarray, level: float) -> np.ndarray:
    """An automatic mask: ``threshold`` refused when it selects nothing (the one sentence), or
    TEXTS_AGREE when the heatmap is empty."""
    if not np.asarray(heatmap).any():
        raise InputError(TEXTS_AGREE)
    mask = threshold(heatmap, level)
    if not mask.any():
        raise InputError("the automatic mask is empty: the two texts predict the same noise "
                         "at this threshold; lower the mask threshold (--mask-threshold in the "
                         "CLI) or paint a mask")
    return mask


def invert(mask: np.ndarray) -> np.ndarray:
    return (1.0 - np.asarray(mask, np.float32)).astype(np.float32)


def grow(mask: np.ndarray, px: int) -> np.ndarray:
    """Dilate the edited region by ``px`` pixels (square neighbourhood): a pixel joins it when the
    (2px+1)-square around it holds any mask pixel (exact for any px, unlike a rounding blur)."""
    if px <= 0:
        return np.asarray(mask, np.float32).copy()
    return spread(spread(np.asarray(mask) > 0, px, 0), px, 1).astype(np.float32)


def spread(flags: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Per element of a 2-D bool array: is any element within ``radius`` along ``axis`` True?

    Windows of doubling length OR two halves, so a 24 MP mask grows by any radius in a few
    passes over its bytes."""
    def span(start, stop):
        index = [slice(None)] * 2
        index[axis] = slice(start, stop)
        return tuple(index)

    pad = [(0, 0), (0, 0)]
    pad[axis] = (radius, radius)
    windows = np.pad(flags, pad)  # windows[i]: any of the `length` elements from i on
    size, length = 2 * radius + 1, 1
    while 2 * length <= size:
        end = windows.shape[axis]
        windows = windows[span(0, end - length)] | windows[span(length, end)]
        length *= 2
    n = flags.shape[axis]  # two windows of `length` overlap to cover the 2r+1 around each
    return windows[span(0, n)] | windows[span(size - length, size - length + n)]


def window_sum(values: np.ndarray, radius: int) -> np.ndarray:
    """The sum over the (2r+1)-square around each pixel, clipped at the borders, in time
    independent of r (a summed-area table)."""
    table = np.pad(values.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    height, width = values.shape
    top = np.clip(np.arange(height) - radius, 0, height)
    bottom = np.clip(np.arange(height) + radius + 1, 0, height)
    left = np.clip(np.arange(width) - radius, 0, width)
    right = np.clip(np.arange(width) + radius + 1, 0, width)
    return (table[bottom][:, right] - table[top][:, right]
            - table[bottom][:, left] + table[top][:, left])


def shrink(mask: np.ndarray, px: int) -> np.ndarray:
    """Erode the edited region by ``px`` pixels (the dual of grow)."""
    if px <= 0:
        return np.asarray(mask, np.float32).copy()
    return invert(grow(invert(threshold(mask, 0.5)), px))


def feather(mask: np.ndarray, px: float) -> np.ndarray:
    """Soften the edges with a Gaussian of radius ``px``; the interior stays 1."""
    if px <= 0:
        return np.asarray(mask, np.float32).copy()
    soft = _to_image(mask).filter(ImageFilter.GaussianBlur(px))
    return np.asarray(soft, np.float32) / 255.0


def paste_alpha(mask: np.ndarray, feather_px: int) -> np.ndarray:
    """Blend weights for paste-back: 1 on the mask, a linear fade over ``feather_px`` outside it,
    and exactly 0 beyond, so those pixels stay byte-identical to the original."""
    mask = np.clip(np.asarray(mask, np.float32), 0.0, 1.0)
    if feather_px <= 0:
        return mask
    alpha = np.zeros_like(mask)
    box = _bounding_box(mask > 0, feather_px + 1)
    if box is None:
        return alpha
    region = mask[box]
    inner = feather_px // 2
    outer = feather_px - inner
    # Grey dilation by `inner` then a box blur of `outer`: the fade ends exactly feather_px out.
    grown = _dilate(np.rint(region * 255.0).astype(np.uint8), inner)
    faded = Image.fromarray(grown, mode="L").filter(ImageFilter.BoxBlur(outer))
    alpha[box] = np.maximum(np.asarray(faded, np.float32) / 255.0, region)
    return alpha


def composite(original: np.ndarray, edited: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """original where alpha is 0, edited where it is 1, a rounded blend between (uint8 HxWxC)."""
    if original.shape != edited.shape:
        raise InputError(f"paste-back sizes differ: original {original.shape}, edit {edited.shape}")
    alpha = np.asarray(alpha, np.float32)
    result = original.copy()
    box = _bounding_box(alpha > 0, 0)
    if box is None:
        return result
    a = alpha[box]
    out, new = result[box], edited[box]
    whole = a >= 1.0
    out[whole] = new[whole]
    partial = (a > 0) & ~whole  # only the feather band needs arithmetic
    w = a[partial][:, None]
    out[partial] = np.clip(np.rint(out[partial] * (1.0 - w) + new[partial] * w), 0, 255)
    return result


def _bounding_box(flags: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    """Slices around the True pixels, grown by ``margin`` (clipped); None when there are none."""
    rows = np.flatnonzero(flags.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(flags.any(axis=0))
    height, width = flags.shape
    return (slice(max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, height)),
            slice(max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, width)))


def _dilate(values: np.ndarray, radius: int) -> np.ndarray:
    """Grey dilation with a (2r+1)-square window, as two separable running maxima."""
    for axis in (0, 1):
        source, out = values, values.copy()
        length = values.shape[axis]
        for shift in range(1, min(radius, length - 1) + 1):
            ahead = [slice(None)] * 2
            behind = [slice(None)] * 2
            ahead[axis], behind[axis] = slice(shift, None), slice(None, -shift)
            np.maximum(out[tuple(behind)], source[tuple(ahead)], out=out[tuple(behind)])
            np.maximum(out[tuple(ahead)], source[tuple(behind)], out=out[tuple(ahead)])
        values = out
    return values


def resize(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a soft map to (width, height): area averaging when shrinking, bilinear when growing."""
    width, height = size
    mask = np.asarray(mask, np.float32)
    if mask.shape == (height, width):
        return mask.copy()
    shrinking = width <= mask.shape[1] and height <= mask.shape[0]
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    out = Image.fromarray(mask, mode="F").resize((width, height), method)
    return np.clip(np.asarray(out, np.float32), 0.0, 1.0)


def from_image(image: Image.Image, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask from a greyscale (or any) picture: white = edit, black = keep."""
    if expected_size is not None and image.size != tuple(expected_size):
        w, h = image.size
        ew, eh = expected_size
        raise InputError(f"the mask is {w}x{h} but the photo is {ew}x{eh}; they must match")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        grey = image.convert("RGBA")
        rgb = np.asarray(grey.convert("L"), np.float32) / 255.0
        a = np.asarray(grey.getchannel("A"), np.float32) / 255.0
        return (rgb * a).astype(np.float32)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, np.float32)
        peak = 65535.0 if values.max(initial=0) > 255 else 255.0
        return np.clip(values / peak, 0.0, 1.0)
    return np.asarray(image.convert("L"), np.float32) / 255.0


def to_image(mask: np.ndarray) -> Image.Image:
    """An 8-bit greyscale picture of a mask (white = edit)."""
    return _to_image(mask)


def _to_image(mask: np.ndarray) -> Image.Image:
    values = np.clip(np.asarray(mask, np.float32), 0.0, 1.0)
    return Image.fromarray(np.rint(values * 255.0).astype(np.uint8), mode="L")
