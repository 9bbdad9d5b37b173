"""Grow, Shrink and Feather use the amount the user sets, and its default follows the photo's
size (8 px is invisible on a 24 MP photo)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.imaging import Photo


def _photo(w, h):
    return Photo(rgb=np.full((h, w, 3), 90, np.uint8))


def _dot(doc, x, y):
    doc.begin_stroke("add", 2, 1.0)
    doc.stroke_to(x, y)
    doc.end_stroke()


@pytest.mark.slow
def test_the_default_amount_follows_the_photo_size(window):
    amount = window.mask_panel.amount
    window.open_photo(_photo(1280, 720), "hd.png")
    assert amount.value() == 8
    window.doc.mark_exported()
    window.open_photo(_photo(4800, 3200), "big.png")
    assert amount.value() == 30


@pytest.mark.slow
def test_a_chosen_amount_is_used_and_kept_in_proportion(window):
    amount, doc = window.mask_panel.amount, window.doc
    window.open_photo(_photo(1600, 1200), "a.png")
    amount.setValue(24)
    _dot(doc, 800, 600)
    before = np.argwhere(doc.composed > 0.5)
    window.actions["grow"].trigger()
    after = np.argwhere(doc.composed > 0.5)
    grown = (after.max(0) - after.min(0)) - (before.max(0) - before.min(0))
    assert (np.abs(grown - 48) <= 2).all(), grown  # 24 px on each side
    doc.mark_exported()
    window.open_photo(_photo(800, 600), "half.png")
    assert amount.value() == 12  # half the photo, half the amount
