"""The DiffEdit mask recovers a region known in advance, with a stand-in noise predictor."""

import dataclasses

import numpy as np
import pytest
import torch

from engine import masks
from engine.errors import InputError
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


class FlatOracle(torch.nn.Module):
    """The texts change the prediction by a pointwise function of the noisy latent: the same
    statistics in every cell, so no region where they disagree more than elsewhere."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    def forward(self, latents, timestep, encoder_hidden_states, return_dict=False, **_):
        text = encoder_hidden_states.float().mean(dim=(1, 2))[:, None, None, None]
        return (0.5 * latents + text * torch.sin(40.0 * latents),)


def test_texts_that_disagree_only_by_noise_give_no_mask_and_say_so(tiny_model):
    from engine.masks import TEXTS_AGREE

    model = dataclasses.replace(tiny_model, unet=FlatOracle(tiny_model.unet.config))
    photo = np.random.default_rng(0).integers(0, 256, (300, 451, 3), dtype=np.uint8)
    session = EditSession(model, photo)
    heatmap = session.estimate_mask("a cat", "a dog", EditParams())
    assert not heatmap.any()  # it selected 42 % of the photo at threshold 0.5
    assert session.warnings == [TEXTS_AGREE]
    with pytest.raises(InputError, match="predictions do not differ anywhere"):
        session.edit("a cat", "a dog", None, EditParams(steps=2))


def test_identical_texts_give_an_empty_heatmap_with_the_warning(tiny_model):
    from engine.masks import TEXTS_AGREE

    session = EditSession(tiny_model, np.full((96, 96, 3), 128, np.uint8))
    assert not session.estimate_mask("a cat", "a cat", EditParams(mask_samples=2)).any()
    assert session.warnings == [TEXTS_AGREE]


def test_padding_cells_neither_enter_the_statistics_nor_the_map():
    from engine.inversion import Schedule
    from engine.methods.diffedit import estimate_heatmap
    from engine.runtime import RunContext
    from engine.tiny_model import SD_SCHEDULER

    rows, columns = 6, 5  # the photo's cells; the latent is 8 x 8
    region = (slice(1, 3), slice(1, 4))

    def oracle(padding_shift):
        class Padded(OracleUNet):
            def forward(self, latents, timestep, encoder_hidden_states, **kwargs):
                (out,) = super().forward(latents, timestep, encoder_hidden_states, **kwargs)
                text = encoder_hidden_states.float().mean(dim=(1, 2))[:, None, None, None]
                out = out.clone()
                out[:, :, rows:, :] += padding_shift * text  # the edge-padded rows disagree most
                return (out,)
        return Padded(None, region)

    schedule = Schedule.from_config(SD_SCHEDULER, 10)
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    source, target = torch.zeros(1, 77, 8), torch.ones(1, 77, 8)
    maps = []
    for shift in (0.0, 1000.0):
        model = type("Model", (), {"unet": oracle(shift), "device": torch.device("cpu"),
                                   "dtype": torch.float32, "prediction_type": "epsilon"})()
        maps.append(estimate_heatmap(RunContext(model), schedule, z0, source, target, 3, 0.5, 0, 8,
                                     content=(columns, rows)))
    clean, padded = maps
    assert torch.equal(clean, padded)
    assert not padded[rows:].any() and not padded[:, columns:].any()
    assert padded[region].min() == 1.0 and padded[:rows, :columns].max() == 1.0
