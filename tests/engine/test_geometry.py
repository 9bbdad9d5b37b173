"""Working geometry: masks reach the latent at full strength, latent maps land on the photo where
their cells lie, and the padding stays under one latent cell."""

import numpy as np
import pytest
import torch

from engine.geometry import CORE_COVERAGE, WorkingGeometry
from engine.params import EditParams
from engine.session import EditSession

# Odd sizes, portrait, 12 and 24 megapixels.
PHOTO_SIZES = [(451, 300), (300, 451), (1001, 777), (4000, 3000), (3000, 4000), (6000, 4000)]


@pytest.mark.parametrize("width", [2, 4, 8, 12])
def test_thin_strokes_are_edited_at_full_strength_and_nothing_beyond_their_cells(width):
    geometry = WorkingGeometry.fit((512, 512), 512, 8, 8)
    for offset in range(8):  # every position of the stroke across a latent cell
        left = 200 + offset
        mask = np.zeros((512, 512), np.float32)
        mask[100:300, left:left + width] = 1.0
        latent = geometry.mask_to_latent(mask)
        touched = np.zeros(latent.shape, bool)
        touched[100 // 8:299 // 8 + 1, left // 8:(left + width - 1) // 8 + 1] = True
        assert np.all(latent[touched] == 1.0), (width, offset)
        assert np.all(latent[~touched] == 0.0), (width, offset)


def test_a_faint_trace_below_the_core_coverage_stays_out():
    geometry = WorkingGeometry.fit((64, 64), 64, 8, 8)
    mask = np.zeros((64, 64), np.float32)
    mask[:, 0:2] = 0.2  # a feather's tail: 1/20 of the first column's cells
    mask[:, 16:17] = 1.0  # one hard pixel column: 1/8 of the third column's cells
    assert 0.2 * 2 / 8 < CORE_COVERAGE <= 1 / 8
    latent = geometry.mask_to_latent(mask)
    assert np.all(latent[:, 2] == 1.0)
    assert not latent[:, [0, 1, 3, 4, 5, 6, 7]].any()


@pytest.mark.slow
@pytest.mark.parametrize("size", PHOTO_SIZES)
def test_latent_cells_land_on_the_photo_where_they_lie(size):
    """A map whose cells hold their own centres' photo positions reads back the position of
    every photo pixel between the first and the last cell centre (to a hundredth of a cell),
    and within half a cell at the borders (where the map holds its edge value)."""
    width, height = size
    geometry = WorkingGeometry.fit(size, 512, 8, 8)
    (w, h), f = geometry.content_size, geometry.latent_factor
    lw, lh = geometry.latent_size
    for axis, (n, content, cells) in enumerate(((height, h, lh), (width, w, lw))):
        cell = f * n / content  # photo pixels per latent cell on this axis
        centres = (np.arange(cells) + 0.5) * cell  # photo position of each cell's centre
        ramp = np.broadcast_to(centres[:, None] if axis == 0 else centres[None, :], (lh, lw)) / n
        photo = geometry.latent_map_to_photo(np.ascontiguousarray(ramp, np.float32))
        line = photo[:, width // 2] if axis == 0 else photo[height // 2, :]
        position = np.arange(n) + 0.5
        error = np.abs(line * n - position) / cell  # in latent cells
        inside = (position >= centres[0]) & (position <= min(centres[-1], n))
        assert error[inside].max() < 0.01, (size, axis, error[inside].max())
        assert error.max() < 0.5, (size, axis, error.max())


@pytest.mark.parametrize("size", PHOTO_SIZES)
def test_working_size_is_padded_by_less_than_one_latent_cell(tiny_model, size):
    width, height = size
    session = EditSession(tiny_model, np.zeros((height, width, 3), np.uint8))
    geometry = session.geometry(EditParams(resolution=512))
    (w, h), (pw, ph) = geometry.content_size, geometry.padded_size
    assert 0 <= pw - w < 8 and 0 <= ph - h < 8
    assert pw % 8 == 0 and ph % 8 == 0
    assert pw * ph / (w * h) - 1 < 0.025  # was up to 25 % at multiples of 64 (1001x777)


@pytest.mark.slow
def test_an_sd_shaped_unet_runs_at_any_latent_size():
    """SD's four-level UNet at latent sizes that are not multiples of its 8-cell depth."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(16, 16, 32, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=16,
        attention_head_dim=8, norm_num_groups=8).eval()
    text = torch.randn(1, 7, 16)
    for rows, columns in [(9, 13), (7, 5), (17, 11)]:
        with torch.no_grad():
            out = unet(torch.randn(1, 4, rows, columns), 10, encoder_hidden_states=text).sample
        assert out.shape == (1, 4, rows, columns)
        assert torch.isfinite(out).all()


def test_an_sdxl_unet_runs_at_any_latent_size(tiny_sdxl):
    """SDXL's UNet (text-time conditioning, three levels) at latent sizes off its 4-cell depth."""
    unet, config = tiny_sdxl.unet, tiny_sdxl.unet.config
    pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
    torch.manual_seed(0)
    text = torch.randn(1, 7, config.cross_attention_dim)
    added = {"text_embeds": torch.randn(1, pooled), "time_ids": torch.tensor([[64.0] * 6])}
    for rows, columns in [(9, 13), (7, 5), (17, 11)]:
        with torch.no_grad():
            out = unet(torch.randn(1, 4, rows, columns), 10, encoder_hidden_states=text,
                       added_cond_kwargs=added).sample
        assert out.shape == (1, 4, rows, columns)
        assert torch.isfinite(out).all()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _grid_photo(width: int, height: int) -> np.ndarray:
    """Colour gradients under a grid of 2 px lines every 7-9 px: detail far finer than a
    working pixel of a big photo."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([80 + 100 * x / width, 60 + 120 * y / height, 140 - 60 * x / width], -1)
    lines = ((x % 9) < 2) | ((y % 7) < 2)
    return np.clip(base + 70 * lines[..., None], 0, 255).astype(np.uint8)


def _recolour(rgb: np.ndarray) -> np.ndarray:
    return np.clip(rgb * np.array([0.7, 0.9, 1.1]) + np.array([40, 10, -10]), 0, 255).astype(np.uint8)


@pytest.mark.slow
def test_a_global_edit_of_a_big_photo_keeps_the_photos_detail():
    photo = _grid_photo(4000, 3000)
    geometry = WorkingGeometry.fit((4000, 3000), 512, 8, 8)
    working = geometry.to_working(photo)
    # An edit that changes nothing gives the photo back, not its 6.8x blurred working copy.
    assert np.abs(geometry.from_working_with_detail(working, photo).astype(int) - photo).max() <= 1
    # An edit that keeps the structure (a recolouring): the grid PSNR against the recoloured
    # photo was 18.1 dB scaled up; the photo's own detail brings it to about 32 dB.
    truth, edit = _recolour(photo), _recolour(working)
    scaled = _psnr(geometry.from_working(edit), truth)
    detailed = _psnr(geometry.from_working_with_detail(edit, photo), truth)
    assert detailed > scaled + 10, (scaled, detailed)
    # An edit that drew something else gets (almost) none of the old detail: no ghosts.
    other = np.random.default_rng(0).integers(0, 256, working.shape, dtype=np.uint8)
    added = geometry.from_working_with_detail(other, photo).astype(np.float32) - geometry.from_working(other)
    guide = working[:geometry.content_size[1], :geometry.content_size[0]]
    detail = photo - WorkingGeometry.fit((4000, 3000), 512, 8, 8).from_working(guide).astype(np.float32)
    assert np.abs(added).mean() < 0.1 * np.abs(detail).mean()


def test_small_photos_and_masked_edits_are_scaled_as_before():
    geometry = WorkingGeometry.fit((300, 200), 512, 8, 8)  # the photo is smaller than the work
    photo = _grid_photo(300, 200)
    edit = _recolour(geometry.to_working(photo))
    assert np.array_equal(geometry.from_working_with_detail(edit, photo), geometry.from_working(edit))


class RecolouringSession(EditSession):
    """A session whose 'model' decodes every latent to the recoloured working photo."""

    def decode_latent(self, latent):
        return _recolour(self.geometry(EditParams()).to_working(self.rgb))


def test_a_global_run_pastes_back_with_the_photos_detail(tiny_model):
    photo = _grid_photo(1200, 900)
    session = RecolouringSession(tiny_model, photo)
    result = session.run("sdedit", "", "a painting", None, EditParams(steps=1))[0]
    geometry = session.geometry(EditParams())
    scaled = _psnr(geometry.from_working(session.decode_latent(None)), _recolour(photo))
    assert _psnr(result.image, _recolour(photo)) > scaled + 10


@pytest.mark.parametrize("size,side,expected", [
    ((512, 512), 512, 4), ((300, 200), 512, 4), ((4000, 3000), 512, 27), ((6000, 4000), 512, 38),
    ((4000, 3000), 1024, 14)])
def test_the_default_feather_scales_with_the_photo(size, side, expected):
    from engine.geometry import default_feather

    assert default_feather(size, side) == expected


def test_the_cli_scales_the_default_feather_and_keeps_a_given_one(tmp_path, tiny_model,
                                                                   tiny_model_path):
    import json

    from PIL import Image

    from engine import cli

    photo = tmp_path / "big.png"
    Image.fromarray(_grid_photo(1200, 900)).save(photo)
    mask = np.zeros((900, 1200), np.uint8)
    mask[300:600, 400:800] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    feathers = []
    for extra in ([], ["--feather", "0"]):
        report = tmp_path / "report.json"
        code = cli.main(["edit", str(photo), "-o", str(tmp_path / "out.png"), "--target", "a dog",
                         "--mask", str(tmp_path / "mask.png"), "--model", "tiny", "--steps", "2",
                         "--report", str(report), "--quiet", *extra])
        assert code == 0
        feathers.append(json.loads(report.read_text())["params"]["feather"])
    # 4 working px of the tiny model's 128 px side cover 32 px of a 1200x900 photo; the library
    # gives the same default.
    assert feathers == [32, 0]
    session = EditSession(tiny_model, np.zeros((900, 1200, 3), np.uint8))
    assert session.default_params("blended").feather == 32
