"""The DiffEdit mask recovers a region known in advance, with a stand-in noise predictor."""

import dataclasses

import numpy as np
import pytest
import torch

from engine import masks
from engine.params import EditParams
from engine.session import EditSession


class OracleUNet(torch.nn.Module):
    """Predicts noise that depends on the text only inside ``region`` (latent cells).

    Outside the region the prediction depends on the noisy latent alone, so the two prompts agree
    there exactly; inside, the text's features shift the prediction.
    """

    def __init__(self, config, region: tuple[slice, slice]):
        super().__init__()
        self.config = config
        self.region = region
        self.evaluations = 0

    def forward(self, latents, timestep, encoder_hidden_states, return_dict=False, **_):
        self.evaluations += latents.shape[0]
        base = 0.5 * latents + 0.1 * torch.sin(latents * 3.0)
        text = encoder_hidden_states.float().mean(dim=(1, 2))[:, None, None, None]
        shift = torch.zeros_like(latents)
        rows, cols = self.region
        shift[:, :, rows, cols] = 10.0 * text
        return (base + shift,)


def _with_oracle(model, region):
    oracle = OracleUNet(model.unet.config, region)
    return dataclasses.replace(model, unet=oracle), oracle


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_heatmap_recovers_the_region_at_native_size(tiny_model):
    # 128x128 is the tiny model's native size: latent 16x16, 8 px per cell, no resizing.
    model, oracle = _with_oracle(tiny_model, (slice(4, 10), slice(6, 13)))
    photo = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    heatmap = EditSession(model, photo).estimate_mask("a cat", "a dog", EditParams(mask_samples=4))
    assert heatmap.shape == (128, 128)
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    expected = np.zeros((128, 128), bool)
    expected[4 * 8:10 * 8, 6 * 8:13 * 8] = True
    assert _iou(masks.threshold(heatmap, 0.5) > 0, expected) >= 0.9
    # 4 samples under two texts: 8 evaluations, nothing unconditional duplicated.
    assert oracle.evaluations == 8


@pytest.mark.parametrize("size", [(451, 300), (300, 451), (1000, 240)])
def test_heatmap_recovers_the_region_on_odd_sizes(tiny_model, size):
    width, height = size
    photo = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    session = EditSession(tiny_model, photo)
    geometry = session.geometry(EditParams())
    lw, lh = geometry.latent_content
    rows, cols = slice(lh // 4, lh // 4 + max(2, lh // 2)), slice(lw // 3, lw // 3 + max(2, lw // 3))
    model, _ = _with_oracle(tiny_model, (rows, cols))
    heatmap = EditSession(model, photo).estimate_mask("", "a dog", EditParams(mask_samples=3))
    assert heatmap.shape == (height, width)
    # The region in photo pixels: latent cells scaled by (photo size / content size) * 8.
    sx = width / geometry.content_size[0] * geometry.latent_factor
    sy = height / geometry.content_size[1] * geometry.latent_factor
    expected = np.zeros((height, width), bool)
    expected[round(rows.start * sy):round(rows.stop * sy), round(cols.start * sx):round(cols.stop * sx)] = True
    assert _iou(masks.threshold(heatmap, 0.5) > 0, expected) >= 0.9


def test_identical_texts_give_an_empty_heatmap(tiny_model):
    photo = np.full((96, 96, 3), 128, np.uint8)
    heatmap = EditSession(tiny_model, photo).estimate_mask("a cat", "a cat", EditParams(mask_samples=2))
    assert not heatmap.any()
