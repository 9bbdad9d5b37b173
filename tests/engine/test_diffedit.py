"""DiffEdit on the tiny model: invariants that hold for any weights."""

import numpy as np
import pytest

from engine import masks
from engine.errors import Cancelled, InputError
from engine.params import EditParams
from engine.session import EditSession

FAST = EditParams(steps=10, mask_samples=4)


def _box_mask(photo, box):
    mask = np.zeros(photo.rgb.shape[:2], np.float32)
    top, bottom, left, right = box
    mask[top:bottom, left:right] = 1.0
    return mask


def test_edit_keeps_size_and_every_pixel_outside_the_mask(tiny_model, cat):
    mask = _box_mask(cat, (60, 200, 100, 300))
    result = EditSession(tiny_model, cat).edit("a cat", "a dog", mask, FAST.replace(feather=6))
    assert result.image.shape == cat.rgb.shape and result.image.dtype == np.uint8
    outside = masks.paste_alpha(mask, 6) == 0
    assert outside.sum() > 0.5 * outside.size
    assert np.array_equal(result.image[outside], cat.rgb[outside])
    inside = mask > 0
    assert (result.image[inside] != cat.rgb[inside]).any(axis=-1).mean() > 0.5
    assert result.stats["unet_evals"] == {"encode": 8, "decode": 16}


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tiny_model, cat):
    params = FAST.replace(eta=0.5, seed=7)
    first = EditSession(tiny_model, cat).edit("a cat", "a dog", None, params)
    again = EditSession(tiny_model, cat).edit("a cat", "a dog", None, params)
    other = EditSession(tiny_model, cat).edit("a cat", "a dog", None, params.replace(seed=8))
    assert np.array_equal(first.image, again.image)
    assert np.array_equal(first.heatmap, again.heatmap)
    assert not np.array_equal(first.image, other.image)


def test_auto_mask_edit_estimates_then_thresholds(tiny_model, cat):
    result = EditSession(tiny_model, cat).edit("a cat", "a dog", None, FAST.replace(mask_threshold=0.4))
    assert result.heatmap.shape == cat.rgb.shape[:2]
    assert np.array_equal(result.mask, masks.threshold(result.heatmap, 0.4))
    assert result.stats["unet_evals"]["mask"] == 2 * 4


def test_refined_mask_reuses_mask_and_encoding(counted, cat):
    model, unet = counted
    session = EditSession(model, cat)
    first = session.edit("a cat", "a dog", None, FAST)
    assert unet.evaluations == 2 * 4 + 8 + 2 * 8  # mask + unconditional encoding + guided decoding
    refined = first.mask.copy()
    refined[:40, :40] = 1.0  # a brush stroke
    unet.evaluations = 0
    second = session.edit("a cat", "a dog", refined, FAST)
    assert unet.evaluations == 2 * 8  # decoding only
    assert second.stats["unet_evals"] == {"decode": 16}
    # A new target text needs no new encoding either (DiffEdit encodes without text).
    unet.evaluations = 0
    session.edit("a cat", "a tiger", refined, FAST)
    assert unet.evaluations == 2 * 8
    # Changing the number of steps does re-encode.
    unet.evaluations = 0
    session.edit("a cat", "a tiger", refined, FAST.replace(steps=12))
    assert unet.evaluations == round(12 * 0.8) + 2 * round(12 * 0.8)


def test_rethresholding_needs_no_model_work(counted, cat):
    model, unet = counted
    session = EditSession(model, cat)
    heat = session.estimate_mask("a cat", "a dog", FAST)
    unet.evaluations = 0
    assert np.array_equal(session.estimate_mask("a cat", "a dog", FAST.replace(mask_threshold=0.2)), heat)
    assert unet.evaluations == 0


@pytest.mark.parametrize("stop_after", [1, 5, 13])
def test_cancel_stops_within_one_step_and_the_session_still_works(counted, cat, stop_after):
    model, unet = counted
    session = EditSession(model, cat)
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > stop_after

    unet.evaluations = 0
    with pytest.raises(Cancelled):
        session.edit("a cat", "a dog", None, FAST.replace(mask_samples=8), should_stop=should_stop)
    # No UNet call after the poll that said stop: at most `stop_after` calls ran.
    assert len(calls) == stop_after + 1
    result = session.edit("a cat", "a dog", None, FAST.replace(mask_samples=8))
    assert result.image.shape == cat.rgb.shape


def test_progress_reports_every_step_with_previews(tiny_model, cat):
    seen = []
    EditSession(tiny_model, cat).edit("a cat", "a dog", None, FAST,
                                      on_step=lambda *a: seen.append(a))
    stages = [s for s, *_ in seen]
    assert stages.index("mask") < stages.index("encode") < stages.index("decode")
    decode = [(i, n, p) for s, i, n, p in seen if s == "decode"]
    assert [i for i, _, _ in decode] == list(range(1, 9)) and all(n == 8 for _, n, _ in decode)
    preview = decode[-1][2]
    assert preview.dtype == np.uint8 and preview.shape[2] == 3
    # The preview has the photo's aspect ratio (padding cropped away).
    assert abs(preview.shape[1] / preview.shape[0] - 451 / 300) < 0.25


@pytest.mark.slow
def test_large_photo_works_at_the_native_area_and_keeps_full_size(tiny_model):
    rng = np.random.default_rng(3)
    big = rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    small = big[::8, ::8].copy()
    mask = np.zeros(big.shape[:2], np.float32)
    mask[1000:2000, 1500:2500] = 1
    big_result = EditSession(tiny_model, big).edit("", "a dog", mask, FAST)
    small_result = EditSession(tiny_model, small).edit("", "a dog", mask[::8, ::8].copy(), FAST)
    assert big_result.stats["working_size"] == small_result.stats["working_size"]
    assert big_result.image.shape == big.shape
    outside = masks.paste_alpha(mask, big_result.params.feather) == 0
    assert np.array_equal(big_result.image[outside], big[outside])


def test_empty_and_wrong_size_masks_and_empty_target_are_clear_errors(tiny_model, cat):
    session = EditSession(tiny_model, cat)
    with pytest.raises(InputError, match="mask is empty"):
        session.edit("a cat", "a dog", np.zeros(cat.rgb.shape[:2], np.float32), FAST)
    with pytest.raises(InputError, match="451x300"):
        session.edit("a cat", "a dog", np.ones((10, 10), np.float32), FAST)
    with pytest.raises(InputError, match="target text is empty"):
        session.edit("a cat", "  ", None, FAST)


def test_full_mask_edits_everything(tiny_model, cat):
    result = EditSession(tiny_model, cat).edit("", "a dog", np.ones(cat.rgb.shape[:2], np.float32), FAST)
    assert (result.image != cat.rgb).any(axis=-1).mean() > 0.9


def test_long_prompt_is_truncated_with_a_warning_naming_the_dropped_words(tiny_model, cat):
    prompt = "a dog " * 40 + "wearing sunglasses"
    session, full = EditSession(tiny_model, cat), np.ones(cat.rgb.shape[:2], np.float32)
    result = session.edit("", prompt, full, FAST)
    assert any("sunglasses" in w for w in result.warnings)
    # A later run with a short prompt has nothing to warn about; the long one, from the text
    # cache, warns again.
    assert not any("sunglasses" in w for w in session.edit("", "a cat", full, FAST).warnings)
    assert any("sunglasses" in w for w in session.edit("", prompt, full, FAST).warnings)


@pytest.mark.parametrize("field,value", [
    ("steps", 0), ("strength", 1.5), ("guidance", -1.0), ("mask_threshold", 2.0),
    ("mask_samples", 0), ("mask_noise", 0.0), ("feather", -2), ("seed", -5), ("eta", 3.0),
    ("resolution", 10), ("steps", 2.5),
])
def test_bad_parameters_are_refused_before_any_model_work(counted, cat, field, value):
    model, unet = counted
    with pytest.raises(InputError, match=field):
        EditSession(model, cat).edit("a cat", "a dog", None, FAST.replace(**{field: value}))
    assert unet.evaluations == 0


def test_big_photo_edits_the_masks_region_at_full_detail_and_caches_it(counted):
    model, unet = counted
    rng = np.random.default_rng(5)
    photo = rng.integers(0, 256, (900, 1200, 3), dtype=np.uint8)
    mask = np.zeros(photo.shape[:2], np.float32)
    mask[400:460, 700:780] = 1
    session = EditSession(model, photo)
    result = session.edit("", "a dog", mask, FAST)
    left, top, right, bottom = result.stats["region"]
    assert left <= 700 and top <= 400 and right >= 780 and bottom >= 460
    assert (right - left) * (bottom - top) < 0.5 * 1200 * 900
    assert result.image.shape == photo.shape
    outside = masks.paste_alpha(mask, result.params.feather) == 0
    assert np.array_equal(result.image[outside], photo[outside])
    assert (result.image[mask > 0] != photo[mask > 0]).any(axis=-1).mean() > 0.5
    # A small refinement stays in the same box: only decoding runs again.
    mask[455:470, 700:720] = 1
    unet.evaluations = 0
    again = session.edit("", "a dog", mask, FAST)
    assert again.stats["region"] == result.stats["region"] and unet.evaluations == 2 * 8
    # Turning the crop off edits the whole photo at the working size.
    whole = session.edit("", "a dog", mask, FAST.replace(crop_to_mask=False))
    assert "region" not in whole.stats


class _RecordingContext:
    """Stands in for RunContext: constant noise predictions; records the latent after each step."""

    def __init__(self):
        self.latents = []

    def predict_noise(self, latents, t, texts, alpha_t, **_):
        import torch

        return torch.full_like(latents, 0.1)

    def step_with_preview(self, step, total, latent, content):
        self.latents.append(latent.clone())

    def guide(self, unconditional, conditional, scale):
        from engine.backbones import classifier_free

        return classifier_free(unconditional, conditional, scale)


def test_masked_decode_follows_the_encoding_at_the_matching_level_outside_the_mask(tiny_model):
    import torch

    from engine.inversion import Schedule
    from engine.methods.diffedit import masked_decode

    schedule = Schedule.from_config(tiny_model.scheduler_config, 10)
    generator = torch.Generator().manual_seed(0)
    trajectory = [torch.randn(1, 4, 4, 6, generator=generator) for _ in range(9)]  # 8 steps
    mask = torch.zeros(4, 6)
    mask[:, :3] = 1.0  # left half edits, right half keeps
    ctx, texts = _RecordingContext(), torch.zeros(1, 77, 32)
    final = masked_decode(ctx, schedule, trajectory, mask, texts, texts, 7.5, 0.0, seed=0)
    count = len(trajectory) - 1
    assert len(ctx.latents) == count
    for index, latent in enumerate(ctx.latents):  # after step i: the encoding's level count-i-1
        assert torch.equal(latent[..., 3:], trajectory[count - index - 1][..., 3:])
    assert torch.equal(final[..., 3:], trajectory[0][..., 3:])
    assert not torch.allclose(final[..., :3], trajectory[0][..., :3])


def test_the_masks_coverage_of_latent_cells_is_by_area_not_nearest():
    from engine.geometry import WorkingGeometry

    geometry = WorkingGeometry.fit((64, 64), 64, 8, 8)
    mask = np.zeros((64, 64), np.float32)
    mask[:, :4] = 1.0  # half of the first latent column's 8-px cells
    mask[:, 16:24] = 1.0  # all of the third
    coverage = geometry.mask_coverage(mask)
    assert coverage.shape == (8, 8)
    np.testing.assert_allclose(coverage[:, 0], 0.5, atol=1e-3)
    np.testing.assert_allclose(coverage[:, 2], 1.0, atol=1e-3)
    np.testing.assert_allclose(coverage[:, [1, 3, 4, 5, 6, 7]], 0.0, atol=1e-3)
    # The sampler edits both covered columns at full strength (the paste-back keeps the rest).
    latent = geometry.mask_to_latent(mask)
    assert np.all(latent[:, [0, 2]] == 1.0) and not latent[:, [1, 3, 4, 5, 6, 7]].any()
