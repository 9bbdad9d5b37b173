"""Seam-aware paste-back (issue 17, point 16): the Poisson correction removes the colour seam a
feather leaves, keeps the edit's own detail inside, and never touches a pixel beyond the band."""

from __future__ import annotations

import numpy as np
import pytest

from engine import masks, seams
from engine.params import EditParams
from engine.session import EditSession


def constructed(size=(160, 200), drift=True):
    """(photo, edit, mask): a textured photo; an edit with a colour shift that varies across it
    (as VAE drift does) and new content in the middle of the mask."""
    h, w = size
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:h, 0:w]
    photo = np.stack([xs * 0.6 + 40, ys * 0.7 + 30, 120 + 25 * np.sin(xs / 9)], axis=2)
    photo = np.clip(photo + rng.normal(0, 4, photo.shape), 0, 255)
    shift = np.stack([25 + 0.15 * xs, -20 + 0.1 * ys, np.full(xs.shape, 12.0)], axis=2)
    edit = photo + (shift if drift else 18.0)
    mask = np.zeros((h, w), np.float32)
    mask[h // 4:3 * h // 4, w // 4:3 * w // 4] = 1.0
    core = np.s_[3 * h // 8:5 * h // 8, 3 * w // 8:5 * w // 8]
    edit[core] += rng.integers(-50, 50, edit[core].shape)
    return photo.astype(np.uint8), np.clip(edit, 0, 255).astype(np.uint8), mask


def pasted(photo, edit, alpha, seam):
    if seam == "poisson":
        edit = seams.poisson_edit(photo, edit, alpha)
    return masks.composite(photo, edit, alpha)


@pytest.mark.parametrize("feather", [0, 6])
@pytest.mark.parametrize("membrane_side", [seams.MEMBRANE_SIDE, 24])  # exact, and scaled up
def test_poisson_lowers_the_seam_and_keeps_every_pixel_beyond_the_band(monkeypatch, feather,
                                                                      membrane_side):
    monkeypatch.setattr(seams, "MEMBRANE_SIDE", membrane_side)
    photo, edit, mask = constructed()
    alpha = masks.paste_alpha(mask, feather)
    plain, poisson = (pasted(photo, edit, alpha, seam) for seam in ("feather", "poisson"))
    before, after = (seams.seam_score(photo, edit, r, alpha) for r in (plain, poisson))
    assert after < 0.3 * before, (before, after)
    outside = alpha == 0
    assert np.array_equal(poisson[outside], photo[outside])
    # The new content keeps its own detail: its gradients are the edit's, give or take rounding.
    core = np.s_[65:95, 80:120]
    detail = np.abs(np.diff(poisson[core].astype(float), axis=1) - np.diff(edit[core].astype(float), axis=1))
    assert detail.mean() < 1.5


def test_a_uniform_colour_shift_disappears_entirely():
    photo, edit, mask = constructed(drift=False)
    edit[60:100, 75:125] = np.clip(photo[60:100, 75:125].astype(int) + 18, 0, 255)  # no new content
    alpha = masks.paste_alpha(mask, 4)
    result = pasted(photo, edit, alpha, "poisson")
    assert seams.seam_score(photo, edit, result, alpha) == pytest.approx(0.0, abs=1e-6)
    unclipped = (photo.astype(int) + 18 <= 255).all(axis=2)
    assert np.array_equal(result[unclipped], photo[unclipped])


def test_a_mask_over_the_whole_photo_has_no_border_to_meet():
    photo, edit, _ = constructed()
    alpha = np.ones(photo.shape[:2], np.float32)
    assert np.array_equal(seams.poisson_edit(photo, edit, alpha), edit)


def test_the_seam_score_is_the_feathers_step_for_a_plain_paste():
    photo = np.full((4, 6, 3), 100, np.uint8)
    edit = np.full((4, 6, 3), 140, np.uint8)
    alpha = np.zeros((4, 6), np.float32)
    alpha[:, 3:] = 1.0
    result = masks.composite(photo, edit, alpha)
    assert seams.seam_score(photo, edit, result, alpha) == pytest.approx(40.0)  # the colour jump
    assert seams.seam_score(photo, edit, photo, alpha) == 0.0  # the photo alone has no seam
    assert np.isnan(seams.seam_score(photo, edit, result, np.ones((4, 6), np.float32)))


def test_an_edit_with_seam_poisson_changes_only_the_pasted_region(tiny_model, cat):
    mask = np.zeros(cat.rgb.shape[:2], np.float32)
    mask[60:200, 100:300] = 1.0
    params = EditParams(steps=10, mask_samples=4, feather=6, seed=3)
    session = EditSession(tiny_model, cat)
    plain = session.edit("a cat", "a dog", mask, params)
    poisson = session.edit("a cat", "a dog", mask, params.replace(seam="poisson"))
    outside = masks.paste_alpha(mask, 6) == 0
    assert np.array_equal(poisson.image[outside], cat.rgb[outside])
    assert not np.array_equal(poisson.image, plain.image)
    alpha = masks.paste_alpha(mask, 6)
    assert (seams.seam_score(cat.rgb, plain.image, poisson.image, alpha)
            < seams.seam_score(cat.rgb, plain.image, plain.image, alpha))
