"""Inpainting models (a 9-channel UNet: latent, mask, masked photo's latent) on SD and SDXL: they
load, Blended and DiffEdit's decoding give them the run's mask and the photo around it, every
other call the whole picture over grey (parity with diffusers' inpaint pipeline), and pixels
outside the mask stay the photo's."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from engine import masks
from engine.models import load_model
from engine.params import EditParams
from engine.session import EditSession
from final_latents import FinalLatents

FAST = EditParams(steps=4, mask_samples=1, resolution=64)


def _inpainting_copy(source, folder):
    """The tiny model with its UNet rebuilt (seeded) to take 9 input channels, as the inpainting
    releases of SD 1.5 and SDXL do."""
    from diffusers import UNet2DConditionModel

    shutil.copytree(source, folder)
    config = json.loads((folder / "unet" / "config.json").read_text())
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**{**config, "in_channels": 9})
    shutil.rmtree(folder / "unet")
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    return folder


@pytest.fixture(scope="module", params=["sd", "sdxl"])
def inpainting_model(request, tiny_model_path, tiny_sdxl_path, tmp_path_factory):
    source = tiny_model_path if request.param == "sd" else tiny_sdxl_path
    folder = _inpainting_copy(source, tmp_path_factory.mktemp("inpaint") / request.param)
    return load_model(str(folder), device="cpu")


@pytest.fixture(scope="module")
def photo(samples_dir):
    return np.asarray(Image.open(samples_dir / "chelsea.png").convert("RGB").resize((64, 64)))


@pytest.fixture(scope="module")
def box():
    mask = np.zeros((64, 64), np.float32)
    mask[16:48, 24:56] = 1.0  # on the 8 px latent grid
    return mask


def _inputs(model, work):
    """Every UNet input (B, C, h, w) while ``work()`` runs."""
    seen = []
    handle = model.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0].float()))
    try:
        work()
    finally:
        handle.remove()
    return seen


def test_an_inpainting_model_loads_and_says_so(inpainting_model, tiny_model):
    assert inpainting_model.unet.config.in_channels == 9
    assert EditSession(inpainting_model, np.zeros((64, 64, 3), np.uint8)).backbone.inpainting
    assert not EditSession(tiny_model, np.zeros((64, 64, 3), np.uint8)).backbone.inpainting


@pytest.mark.parametrize("method", ["blended", "diffedit"])
def test_the_decoding_sees_the_mask_and_the_photo_around_it(inpainting_model, photo, box, method):
    session = EditSession(inpainting_model, photo)
    options = {"candidates": 1} if method == "blended" else None
    results = []
    seen = _inputs(inpainting_model, lambda: results.extend(
        session.run(method, "a cat", "a dog", box, FAST, options)))
    latent_mask = torch.from_numpy(session.geometry(FAST).mask_to_latent(box))
    decoding = seen[-(FAST.steps if method == "blended" else FAST.encode_steps):]
    for inputs in decoding:
        assert inputs.shape[1] == 9 and torch.equal(inputs[:, 4], latent_mask.expand_as(inputs[:, 4]))
    masked = decoding[0][0, 5:]
    # The masked photo's latent does not depend on the pixels inside the mask.
    painted = photo.copy()
    painted[box > 0] = 255
    seen = _inputs(inpainting_model, lambda: EditSession(inpainting_model, painted).run(
        method, "a cat", "a dog", box, FAST, options))
    assert torch.allclose(seen[-1][0, 5:], masked, atol=1e-5)
    if method == "diffedit":  # the encoding before it saw the whole picture over grey
        assert all(bool((inputs[:, 4] == 1).all()) for inputs in seen[:FAST.encode_steps])
    kept = masks.paste_alpha(results[0].mask, results[0].params.feather) == 0
    assert kept.any() and np.array_equal(results[0].image[kept], photo[kept])
    assert not np.array_equal(results[0].image, photo)


def test_the_auto_mask_and_other_methods_see_the_whole_picture_over_grey(inpainting_model, photo):
    session = EditSession(inpainting_model, photo)
    seen = _inputs(inpainting_model, lambda: session.estimate_mask("a cat", "a dog", FAST))
    seen += _inputs(inpainting_model, lambda: session.run("sdedit", "", "a dog", None, FAST))
    grey = seen[0][0, 5:]
    for inputs in seen:
        assert bool((inputs[:, 4] == 1).all()) and torch.equal(inputs[0, 5:], grey)


def test_sdedit_on_an_inpainting_model_equals_diffusers_inpaint_pipeline_with_a_full_mask(
        inpainting_model, photo):
    """With the whole picture to generate over grey (their masked photo with a full mask), the
    inpaint pipeline's 9-channel path is SDEdit: the channels are laid out as diffusers does."""
    from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline

    m = inpainting_model
    params = EditParams(steps=5, strength=0.8, guidance=5.0, seed=1, resolution=64)
    session = FinalLatents(m, photo)
    seen = _inputs(m, lambda: session.run("sdedit", "", "a dog", None, params))
    z0 = session.image_latent(session.geometry(params))
    components = dict(vae=m.vae, text_encoder=m.text_encoder, tokenizer=m.tokenizer, unet=m.unet,
                      scheduler=DDIMScheduler.from_config(m.scheduler_config))
    if m.family == "sdxl":
        pipe = StableDiffusionXLInpaintPipeline(**components, text_encoder_2=m.text_encoder_2,
                                                tokenizer_2=m.tokenizer_2)
    else:
        pipe = StableDiffusionInpaintPipeline(**components, safety_checker=None,
                                              feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(prompt="a dog", image=z0, mask_image=Image.new("L", (64, 64), 255),
                  masked_image_latents=seen[0][:1, 5:], strength=params.strength,
                  num_inference_steps=params.steps, guidance_scale=params.guidance, height=64,
                  width=64, output_type="latent",
                  generator=torch.Generator("cpu").manual_seed(params.seed)).images
    assert torch.allclose(session.finals[0], theirs, atol=1e-4), (session.finals[0] - theirs).abs().max()
