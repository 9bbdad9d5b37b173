"""Click-to-segment (engine.segment) on a tiny random-weight SAM laid out in a temporary hub
cache: found by the real model's lookup, and the same mask as transformers' own SAM usage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import segment
from engine.errors import InputError
from engine.tiny_sam import cache_tiny_sam


@pytest.fixture
def segmenter(hub_cache):
    cache_tiny_sam(hub_cache)
    return segment.load_segmenter(device="cpu")


def photo(seed: int, shape=(90, 150)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3)).astype(np.uint8)


def reference_mask(seg: segment.Segmenter, rgb, x, y) -> np.ndarray:
    """transformers' documented SAM usage: the processor scales the point, the model embeds the
    image and decodes, the best-scored of the three masks is upscaled to the photo."""
    inputs = seg.processor(images=rgb, input_points=[[[x, y]]], return_tensors="pt")
    with torch.inference_mode():
        out = seg.model(**inputs, multimask_output=True)
    masks = seg.processor.image_processor.post_process_masks(
        out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])[0]
    return masks[0, int(out.iou_scores[0, 0].argmax())].numpy().astype(np.float32)


def test_no_sam_in_the_cache_says_which_model_to_download_and_how(hub_cache):
    with pytest.raises(InputError) as caught:
        segment.find_sam()
    text = str(caught.value)
    assert "facebook/sam-vit-base" in text and "hf download facebook/sam-vit-base" in text
    assert str(hub_cache) in text


def test_the_cached_model_is_found_through_the_hub_lookup(hub_cache):
    snapshot = cache_tiny_sam(hub_cache)
    assert segment.find_sam() == snapshot


@pytest.mark.parametrize("point", [(10.5, 70.25), (140.0, 3.0), (75.0, 45.0)])
def test_a_click_gives_the_mask_of_transformers_own_sam_usage(segmenter, point):
    rgb = photo(1)  # not square: the point scales with the longest side, as SAM's processor does
    mask = segmenter.segment("photo-1", rgb, *point)
    assert mask.shape == rgb.shape[:2] and mask.dtype == np.float32
    np.testing.assert_array_equal(mask, reference_mask(segmenter, rgb, *point))


def test_embeddings_are_kept_per_photo(segmenter):
    first, second = photo(1), photo(2)
    segmenter.segment("photo-1", first, 20, 20)
    mask = segmenter.segment("photo-2", second, 20, 20)  # another photo: its own embeddings
    np.testing.assert_array_equal(mask, reference_mask(segmenter, second, 20, 20))
    again = segmenter.segment("photo-1", first, 100, 60)  # back to the first: still its own
    np.testing.assert_array_equal(again, reference_mask(segmenter, first, 100, 60))


def test_a_click_outside_the_photo_is_refused(segmenter):
    with pytest.raises(InputError, match="outside the 150x90 photo"):
        segmenter.segment("photo-1", photo(1), 150, 10)
