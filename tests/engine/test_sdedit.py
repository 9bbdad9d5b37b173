"""SDEdit on the tiny model: strength, global and masked runs, seeds, cancel, UNet work, CLI."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from engine import cli, masks
from engine.errors import Cancelled, InputError
from engine.imaging import load_photo, read_metadata
from engine.inversion import Schedule
from engine.methods.blended import add_noise
from engine.params import EditParams
from engine.session import EditSession
from final_latents import FinalLatents

FAST = EditParams(steps=10)


class RecordingUNet(torch.nn.Module):
    """Wraps the real UNet; counts sample-evaluations and keeps the latents and timesteps it saw."""

    def __init__(self, unet):
        super().__init__()
        self.inner = unet
        self.config = unet.config
        self.seen = []

    @property
    def evaluations(self):
        return sum(latents.shape[0] for latents, _ in self.seen)

    def forward(self, latents, timestep, *args, **kwargs):
        self.seen.append((latents.clone(), int(timestep)))
        return self.inner(latents, timestep, *args, **kwargs)


@pytest.fixture
def recorded(tiny_model):
    wrapper = RecordingUNet(tiny_model.unet)
    return dataclasses.replace(tiny_model, unet=wrapper), wrapper


@pytest.fixture(scope="module")
def cat(samples_dir):
    return load_photo(samples_dir / "chelsea.png")  # 451x300


@pytest.fixture(scope="module")
def box(cat):
    mask = np.zeros(cat.rgb.shape[:2], np.float32)
    mask[60:200, 100:300] = 1.0
    return mask


def test_starts_from_the_photo_noised_to_the_strength_with_the_seeded_noise(recorded, cat):
    model, unet = recorded
    params = FAST.replace(strength=0.6, seed=11)
    session = EditSession(model, cat)
    result = session.run("sdedit", "a cat", "a painting of a cat", None, params)[0]
    schedule = Schedule.from_config(model.scheduler_config, 10)
    timesteps = schedule.tail(6)
    assert [t for _, t in unet.seen] == list(timesteps)
    z0 = session.image_latent(session.geometry(params))
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(11))
    first = unet.seen[0][0]
    assert torch.equal(first[:1], add_noise(z0, noise, schedule.alpha(timesteps[0])))
    assert torch.equal(first[1:], first[:1])  # the CFG pair
    assert unet.evaluations == 2 * 6
    assert result.stats["unet_evals"] == {"decode": 12}
    assert result.image.shape == cat.rgb.shape and result.method == "sdedit"


def test_more_strength_moves_further_from_the_photo(tiny_model, cat):
    session = FinalLatents(tiny_model, cat)
    distances = []
    for strength in (0.1, 0.4, 0.7, 1.0):
        session.run("sdedit", "", "a dog", None, FAST.replace(strength=strength, guidance=1.0))
        z0 = session.image_latent(session.geometry(FAST))
        distances.append(float((session.finals[-1] - z0).abs().mean()))
    assert distances == sorted(distances) and distances[0] < 0.5 * distances[-1]


def test_global_run_changes_the_whole_photo_and_ignores_a_mask_with_a_warning(tiny_model, cat, box):
    result = EditSession(tiny_model, cat).run("sdedit", "", "a dog", box, FAST)[0]
    assert (result.mask == 1).all()
    assert (result.image != cat.rgb).any(axis=-1)[box == 0].mean() > 0.5
    assert any("ignored the mask" in w for w in result.warnings)


def test_masked_run_keeps_every_pixel_outside_the_mask(recorded, cat, box):
    model, unet = recorded
    result = EditSession(model, cat).run("sdedit", "", "a dog", box, FAST.replace(feather=5),
                                         {"masked": True})[0]
    keep = masks.paste_alpha(box, 5) == 0
    assert keep.mean() > 0.5
    assert np.array_equal(result.image[keep], cat.rgb[keep])
    assert (result.image != cat.rgb).any(axis=-1)[box > 0].mean() > 0.5
    assert np.array_equal(result.mask, box) and result.options == {"masked": True}
    assert unet.evaluations == 2 * 8 and not result.warnings


def test_masked_without_a_mask_is_a_clear_error_before_model_work(recorded, cat):
    model, unet = recorded
    with pytest.raises(InputError, match="masked SDEdit needs a mask"):
        EditSession(model, cat).run("sdedit", "", "a dog", None, FAST, {"masked": True})
    assert unet.evaluations == 0


def test_same_seed_same_bytes_other_seed_differs_and_no_guidance_halves_the_work(recorded, cat):
    model, unet = recorded
    session = EditSession(model, cat)
    first = session.run("sdedit", "", "a dog", None, FAST.replace(seed=2, eta=0.5))[0]
    again = session.run("sdedit", "", "a dog", None, FAST.replace(seed=2, eta=0.5))[0]
    other = session.run("sdedit", "", "a dog", None, FAST.replace(seed=3, eta=0.5))[0]
    assert np.array_equal(first.image, again.image)
    assert not np.array_equal(first.image, other.image)
    unguided = session.run("sdedit", "", "a dog", None, FAST.replace(guidance=1.0))[0]
    assert unguided.stats["unet_evals"] == {"decode": 8}


@pytest.mark.parametrize("stop_after", [1, 5])
def test_cancel_stops_within_one_step(recorded, cat, stop_after):
    model, unet = recorded
    polls = []

    def should_stop():
        polls.append(1)
        return len(polls) > stop_after

    session = EditSession(model, cat)
    with pytest.raises(Cancelled):
        session.run("sdedit", "", "a dog", None, FAST, should_stop=should_stop)
    assert len(polls) == stop_after + 1 and unet.evaluations == 2 * stop_after
    assert session.run("sdedit", "", "a dog", None, FAST)[0].image.shape == cat.rgb.shape


def test_cli_masked_sdedit(tmp_path, cat, box, tiny_model_path):
    photo = tmp_path / "cat.png"
    Image.fromarray(cat.rgb).save(photo)
    masks.to_image(box).save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    code = cli.main(["edit", str(photo), "-o", str(out), "--target", "a dog", "--mask",
                     str(tmp_path / "mask.png"), "--method", "sdedit", "--masked", "--steps", "6",
                     "--strength", "0.5", "--model", "tiny", "--quiet"])
    assert code == 0
    edited = np.asarray(Image.open(out).convert("RGB"))
    from engine.geometry import default_feather

    keep = masks.paste_alpha(box, default_feather(cat.size, 128)) == 0  # scaled with the photo
    assert np.array_equal(edited[keep], cat.rgb[keep])
    meta = read_metadata(out)
    assert "Edit: sdedit" in meta["parameters"] and "Denoising strength: 0.5" in meta["parameters"]
