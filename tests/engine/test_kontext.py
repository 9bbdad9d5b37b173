"""FLUX.1 Kontext [dev] on the tiny random-weight Kontext, loaded through the real loader: method
``instruct`` unmasked is FluxKontextPipeline(image=photo, prompt=instruction) at the embedded
guidance scale; the empty instruction finds no area; an empty mask keeps the photo; outside the
mask every pixel is the photo's, for the flow methods too; the same seed gives the same bytes;
once in bfloat16. The FLUX.1 text-to-image models share the backbone: [dev] (guidance embedded)
and [schnell] (step-distilled) run SDEdit as FluxImg2ImgPipeline does, and no Instruction edit.

Photos are 64x64 (4x4 latent tokens) run at resolution 64; the pipeline is given that size with
its resize to Kontext's preferred resolutions turned off (``_auto_resize=False``, ``max_area``),
so both sides see the same pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine import families, flow_models, masks
from engine.backbones import for_model
from engine.backbones.flow import FLOW_METHODS
from engine.backbones.flux1 import Flux1, pack
from engine.errors import InputError, ModelError
from engine.methods import diffedit, instruct
from engine.params import EditParams
from engine.runtime import RunContext
from engine.session import EditSession
from final_latents import FinalLatents
from kontext_pipeline import at_photo_size, edit_pipeline
from test_flow_families import RUNS
from test_instruct import INSTRUCTION, assert_an_empty_mask_keeps_the_photo

SIDE = 64
# The tiny Kontext reads its texts weakly: at seed 3 and 4 samples the instruction's contrast
# clears the noise floor on the cat (at seeds 0 and 2 it does not).
FAST = EditParams(steps=2, mask_samples=4, seed=3, resolution=SIDE)


@pytest.fixture(scope="module")
def photo(samples_dir):
    return np.asarray(Image.open(samples_dir / "chelsea.png").convert("RGB").resize((SIDE, SIDE)))


@pytest.fixture(scope="module")
def box():
    mask = np.zeros((SIDE, SIDE), np.float32)
    mask[16:48, 16:48] = 1.0
    return mask


def test_kontext_loads_from_its_model_index_with_the_model_cards_defaults(tiny_kontext,
                                                                         tiny_kontext_path, photo):
    assert families.folder_family(tiny_kontext_path) == "flux1-kontext" == tiny_kontext.family
    backbone = for_model(tiny_kontext)
    assert isinstance(backbone, Flux1) and backbone.guidance_embedded and not backbone.distilled
    assert "instruct" in backbone.methods and backbone.unused_params == {"negative_prompt"}
    assert (backbone.latent_factor, backbone.size_multiple) == (16, 16)
    defaults = EditSession(tiny_kontext, photo).default_params("instruct")
    assert (defaults.steps, defaults.guidance) == (28, 2.5)
    parts = (tiny_kontext.transformer, tiny_kontext.vae, tiny_kontext.text_encoder,
             tiny_kontext.text_encoder_2)
    assert not any(module.training for part in parts for module in part.modules())


def test_parts_that_do_not_fit_are_refused_from_their_configs():
    configs = {"transformer": {"in_channels": 64, "joint_attention_dim": 48,
                               "pooled_projection_dim": 32},
               "vae": {"latent_channels": 16}, "text_encoder": {"hidden_size": 32},
               "text_encoder_2": {"d_model": 48}}
    flow_models.check_widths("k", "flux1-kontext", configs)
    configs["text_encoder"] = {"hidden_size": 768}
    with pytest.raises(ModelError, match="pooled_projection_dim is 32 but the text encoders "
                                         "give 768"):
        flow_models.check_widths("k", "flux1-kontext", configs)


def test_unmasked_it_is_the_kontext_pipeline_with_the_photo_as_its_image(tiny_kontext, photo):
    """FluxKontextPipeline(image=photo, prompt=instruction) from the same noise, at the same
    embedded guidance: the same final latent tokens, one transformer evaluation a step."""
    params = EditParams(steps=2, guidance=2.5, seed=3, resolution=SIDE)
    session = FinalLatents(tiny_kontext, photo)
    [ours] = session.run("instruct", "", INSTRUCTION, None, params)
    assert ours.stats["unet_evals"] == {"decode": params.steps} and ours.params.guidance == 2.5
    # the noise the run drew (engine.methods.blended.seeded_noise), as the pipeline's tokens
    noise = torch.randn(session.finals[0].shape, generator=torch.Generator("cpu").manual_seed(3))

    def pipeline(guidance):
        return edit_pipeline(tiny_kontext)(
            image=Image.fromarray(photo), prompt=INSTRUCTION, num_inference_steps=params.steps,
            guidance_scale=guidance, latents=pack(noise)[0], output_type="latent",
            **at_photo_size(SIDE, SIDE)).images

    theirs = pipeline(params.guidance)
    assert torch.allclose(pack(session.finals[0])[0], theirs, atol=1e-4)
    # The scale reaches the model: another one ends elsewhere from the same noise.
    assert float((pipeline(4.0) - theirs).abs().max()) > 10 * 1e-4


def test_the_empty_instruction_finds_no_area_and_a_real_one_does(tiny_kontext, photo):
    session = EditSession(tiny_kontext, photo)
    geometry = session.geometry(FAST)
    ctx = RunContext(tiny_kontext, backbone=session.backbone)
    schedule = session.schedule(FAST.steps, geometry)
    empty = diffedit.estimate_heatmap(ctx, schedule, session.image_latent(geometry),
                                      *instruct.mask_conditions(session, geometry, "", ""), 4,
                                      0.5, 0, 8)
    assert not empty.any()
    heatmap = session.estimate_mask("", INSTRUCTION, FAST, method="instruct")
    assert heatmap.shape == photo.shape[:2] and heatmap.max() > 0.9 and heatmap.min() < 0.2
    assert session.mask_stats["unet_evals"] == {"mask": 2 * FAST.mask_samples}
    # the guidance scale is the model's input, so another one is another heatmap (not the cached)
    assert not np.array_equal(heatmap, session.estimate_mask("", INSTRUCTION, FAST.replace(
        guidance=6.0), method="instruct"))


def test_an_empty_mask_returns_the_photo_byte_for_byte(tiny_kontext, photo):
    assert_an_empty_mask_keeps_the_photo(tiny_kontext, photo, FAST, 1.0)


def test_outside_the_mask_every_pixel_is_the_original_and_seeds_repeat(tiny_kontext, photo, box):
    runs = [EditSession(tiny_kontext, photo).run("instruct", "", INSTRUCTION, box,
                                                 FAST.replace(seed=seed))[0]
            for seed in (5, 5, 6)]
    first = runs[0]
    kept = masks.paste_alpha(first.mask, first.params.feather) == 0
    assert kept.mean() > 0.3 and np.array_equal(first.image[kept], photo[kept])
    assert np.abs(first.image[box > 0].astype(int) - photo[box > 0]).mean() > 5
    assert first.stats["unet_evals"] == {"decode": FAST.steps}
    assert np.array_equal(first.image, runs[1].image)
    assert not np.array_equal(first.image, runs[2].image)


@pytest.mark.parametrize("method,options", RUNS)
def test_the_flow_methods_run_on_it_and_keep_the_photo_outside_the_mask(tiny_kontext, photo, box,
                                                                       method, options):
    params = FAST.replace(steps=3, guidance=3.0)  # DiffEdit and SDEdit encode 2 of the 3 steps
    [result] = EditSession(tiny_kontext, photo).run(method, "a cat", "a dog", box, params, options)
    kept = masks.paste_alpha(result.mask, result.params.feather) == 0
    assert kept.mean() > 0.1 and np.array_equal(result.image[kept], photo[kept])  # background: the box
    assert not np.array_equal(result.image, photo) and result.params.guidance == 3.0


def test_it_runs_in_bfloat16_on_the_cpu(tiny_kontext_path, photo, box):
    from engine.models import load_model

    model = load_model(str(tiny_kontext_path), device="cpu", dtype="bfloat16")
    assert model.transformer.dtype == torch.bfloat16
    [result] = EditSession(model, photo).run("instruct", "", INSTRUCTION, box, FAST)
    kept = masks.paste_alpha(result.mask, result.params.feather) == 0
    assert np.array_equal(result.image[kept], photo[kept]) and not np.array_equal(result.image, photo)


@pytest.fixture(scope="module")
def tiny_schnell(tmp_path_factory):
    """A tiny FLUX.1 [schnell] (a FluxPipeline folder, no guidance input), loaded as any folder."""
    from engine.models import load_model
    from engine.tiny_flow_models import build_tiny_flux1

    return load_model(str(build_tiny_flux1(tmp_path_factory.mktemp("schnell") / "m", schnell=True)),
                      device="cpu")


def test_flux1_text_to_image_models_run_the_flow_methods_but_not_instruct(tiny_schnell, photo):
    assert tiny_schnell.family == "flux1"
    backbone = for_model(tiny_schnell)
    assert backbone.methods == FLOW_METHODS and backbone.distilled
    assert not backbone.guidance_embedded and backbone.title == "FLUX.1"
    session = EditSession(tiny_schnell, photo)
    defaults = session.default_params("diffedit")
    assert (defaults.steps, defaults.guidance) == (4, 1.0)
    with pytest.raises(InputError, match="Instruction edit does not run on FLUX.1 models"):
        session.run("instruct", "", INSTRUCTION, None, FAST)


@pytest.mark.parametrize("kind,guidance", [("dev", 3.5), ("schnell", 1.0)])
def test_sdedit_without_a_mask_equals_flux_img2img(request, tiny_kontext, photo, kind, guidance):
    """FluxImg2ImgPipeline from our noised photo latent: [dev] (the tiny Kontext's transformer, as
    a FluxPipeline folder would give it) with its embedded guidance, [schnell] without."""
    import dataclasses

    model = (dataclasses.replace(tiny_kontext, family="flux1") if kind == "dev"
             else request.getfixturevalue("tiny_schnell"))
    params = EditParams(steps=4, strength=0.75, guidance=guidance, seed=3, resolution=SIDE)
    session = FinalLatents(model, photo)
    [ours] = session.run("sdedit", "", "a dog on a sofa", None, params)
    assert ours.stats["unet_evals"]["decode"] == params.encode_steps  # never CFG
    geometry = session.geometry(params)
    schedule = session.schedule(params.steps, geometry)
    z0 = session.image_latent(geometry)
    noise = torch.randn(z0.shape, generator=torch.Generator("cpu").manual_seed(params.seed))
    start = schedule.noised(z0, noise, schedule.tail(params.encode_steps)[0])
    theirs = edit_pipeline(model, "FluxImg2ImgPipeline")(
        image=Image.fromarray(photo), prompt="a dog on a sofa", height=SIDE, width=SIDE,
        strength=params.strength, num_inference_steps=params.steps, guidance_scale=guidance,
        latents=pack(start)[0], output_type="latent").images
    assert torch.allclose(pack(session.finals[0])[0], theirs, atol=1e-4)
