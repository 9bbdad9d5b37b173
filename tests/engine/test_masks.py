"""Property-based tests (hypothesis) for the mask algebra invariants the editor relies on."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engine import masks

SETTINGS = settings(max_examples=60, deadline=None)

shapes = st.tuples(st.integers(1, 24), st.integers(1, 24))


@st.composite
def binary_masks(draw, shape=None):
    shape = shape or draw(shapes)
    return draw(arrays(np.bool_, shape)).astype(np.float32)


@st.composite
def soft_masks(draw, shape=None):
    shape = shape or draw(shapes)
    values = draw(arrays(np.float32, shape, elements=st.floats(0, 1, width=32)))
    return values


def chebyshev_distance_to(mask: np.ndarray) -> np.ndarray:
    """For each pixel, the Chebyshev distance to the nearest pixel where mask > 0 (inf if none)."""
    ys, xs = np.nonzero(mask > 0)
    if len(ys) == 0:
        return np.full(mask.shape, np.inf)
    gy, gx = np.indices(mask.shape)
    d = np.maximum(np.abs(gy[..., None] - ys), np.abs(gx[..., None] - xs))
    return d.min(axis=-1).astype(float)


# Radii up to 40 px, past where a rounding blur would lose lone pixels.
SAFE_PX = st.integers(0, 40)


@SETTINGS
@given(mask=binary_masks(), px=SAFE_PX)
def test_grow_is_dilation_by_px(mask, px):
    grown = masks.grow(mask, px)
    assert grown.dtype == np.float32 and set(np.unique(grown)) <= {0.0, 1.0}
    assert np.array_equal(grown > 0, chebyshev_distance_to(mask) <= px)


@SETTINGS
@given(mask=binary_masks(), px=SAFE_PX)
def test_grow_then_shrink_contains_the_original(mask, px):
    closed = masks.shrink(masks.grow(mask, px), px)
    assert np.all(closed[mask > 0] == 1.0)


@SETTINGS
@given(mask=binary_masks(), px=SAFE_PX)
def test_shrink_stays_inside_the_original(mask, px):
    assert np.all(masks.shrink(mask, px)[mask == 0] == 0.0)


@pytest.mark.parametrize("px", [11, 16, 32])
def test_grow_keeps_a_single_pixel_at_large_radius(px):
    mask = np.zeros((80, 80), np.float32)
    mask[40, 40] = 1.0
    grown = masks.grow(mask, px)
    assert grown[40, 40] == 1.0 and grown[40 - px, 40 + px] == 1.0


@SETTINGS
@given(mask=st.one_of(binary_masks(), soft_masks()), feather_px=st.integers(0, 12))
def test_paste_alpha_is_zero_beyond_the_feather_and_one_on_the_mask(mask, feather_px):
    alpha = masks.paste_alpha(mask, feather_px)
    assert alpha.shape == mask.shape
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0
    assert np.all(alpha[chebyshev_distance_to(mask) > feather_px] == 0.0)
    assert np.all(alpha >= mask)  # never weaker than the mask itself
    assert np.all(alpha[mask == 1.0] == 1.0)


@st.composite
def images_and_alpha(draw):
    h, w = draw(shapes)
    original = draw(arrays(np.uint8, (h, w, 3)))
    edited = draw(arrays(np.uint8, (h, w, 3)))
    # Plenty of exact zeros and ones, plus soft values in between.
    alpha = draw(arrays(np.float32, (h, w), elements=st.one_of(
        st.just(0.0), st.just(1.0), st.floats(0, 1, width=32))))
    return original, edited, alpha


@pytest.mark.slow
@SETTINGS
@given(data=images_and_alpha())
def test_composite_leaves_alpha_zero_pixels_byte_identical(data):
    original, edited, alpha = data
    out = masks.composite(original, edited, alpha)
    assert out.dtype == np.uint8 and out.shape == original.shape
    assert np.array_equal(out[alpha == 0], original[alpha == 0])
    assert np.array_equal(out[alpha == 1], edited[alpha == 1])
    low = np.minimum(original, edited)
    high = np.maximum(original, edited)
    assert np.all((out >= low) & (out <= high))  # a blend never leaves the two inputs' range
