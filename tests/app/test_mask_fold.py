"""mask_layers.fold, the one place the app composes its mask: strokes survive any threshold."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from desktop_app.mask_layers import MaskLayers, Segment, fold


@st.composite
def layers(draw):
    shape = draw(st.tuples(st.integers(1, 24), st.integers(1, 24)))
    soft = arrays(np.float32, shape, elements=st.floats(0, 1, width=32))
    heatmap, added, erased = (draw(st.one_of(st.none(), soft)) for _ in range(3))
    return shape, heatmap, added, erased


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(data=layers(), level=st.floats(0, 1))
def test_strokes_are_kept_for_any_threshold(data, level):
    shape, heatmap, added, erased = data
    _, mask = fold(MaskLayers(heatmap=heatmap, segments=[Segment(added=added, erased=erased)]),
                   level, shape)
    keep = np.ones(shape, np.float32) if erased is None else 1.0 - erased
    assert mask.dtype == np.float32 and mask.shape == shape
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    if added is not None:
        # An added stroke is there whatever the threshold, minus what is erased on top of it.
        assert np.all(mask >= added * keep - 1e-6)
    if erased is not None:
        assert np.all(mask[erased == 1.0] == 0.0)
    if added is None and erased is None:
        expected = np.zeros(shape, np.float32) if heatmap is None else heatmap > level
        assert np.array_equal(mask, np.asarray(expected, np.float32))
