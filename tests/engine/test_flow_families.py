"""The editing methods on every flow-matching family (FLUX.2 klein, SD3.5, Z-Image), on each
tiny random-weight model loaded through the same loader as a real one: unmasked SDEdit equals
the family's diffusers img2img pipeline (klein's parity is in test_flux2: diffusers has no klein
img2img), Blended equals SD3's inpaint pipeline's latents, identical texts give a zero heatmap,
an empty mask returns the photo, pixels outside the mask stay the original for DiffEdit,
Blended, masked SDEdit and masked FlowEdit, FlowEdit with identical texts returns the photo, the
same seed gives the same bytes, a whole auto-mask edit on a distilled family costs at most 16
transformer evaluations, and every method runs in bfloat16 on the CPU. Each run takes the
family's own defaults (steps, guidance: true CFG on SD3.5, none on the distilled klein and
Z-Image-Turbo), cut to 4 steps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from engine import masks
from engine.errors import InputError
from engine.methods.diffedit import masked_decode
from engine.models import load_model
from engine.params import EditParams
from engine.runtime import RunContext
from engine.session import EditSession
from final_latents import FinalLatents
from tests.engine.flow_parity import AUTO_MASK_SEEDS, evaluations, recorded

TINY = {"flux2-klein": "tiny_flux2", "sd3": "tiny_sd3", "zimage": "tiny_zimage"}
RUNS = [("diffedit", None), ("sdedit", {"masked": True}), ("flowedit", {"masked": True}),
        *(("blended", {"action": action, "candidates": 1}) for action in ("inpaint", "background"))]


@pytest.fixture(scope="module", params=list(TINY))
def flow(request):
    """Each family's tiny model (float32)."""
    return request.getfixturevalue(TINY[request.param])


@pytest.fixture(scope="module")
def box(cat128):
    """A mask on the 16 px grid every family's working sizes keep to."""
    mask = np.zeros(cat128.shape[:2], np.float32)
    mask[32:96, 48:112] = 1.0
    return mask


def fast(model, photo) -> EditParams:
    """The family's defaults at 4 steps (3 encoded at strength 0.8) and 2 mask samples."""
    return EditSession(model, photo).default_params().replace(steps=4, mask_samples=2)


@pytest.mark.slow
def test_every_flow_family_runs_the_flow_methods_at_its_own_defaults(flow, cat128):
    session = EditSession(flow, cat128)
    backbone = session.backbone
    # Instruction editing needs a family that edits from a reference image: klein; the
    # attention methods the attention seam (engine.dit_attention): klein's and Z-Image's
    # processors call diffusers' dispatch function, SD3's torch's attention directly.
    instruct = {"instruct"} if flow.family == "flux2-klein" else set()
    attention = {"p2p", "pnp"} if flow.family in ("flux2-klein", "zimage") else set()
    assert backbone.methods == {"diffedit", "blended", "sdedit", "flowedit", *instruct, *attention}
    expected = {"flux2-klein": (4, 1.0, True), "sd3": (28, 3.5, False), "zimage": (8, 1.0, True)}
    defaults = session.default_params("diffedit")
    assert (defaults.steps, defaults.guidance, backbone.distilled) == expected[flow.family]


@pytest.mark.slow
@pytest.mark.parametrize("family,tiny,source", [
    ("FLUX.2 klein", "tiny_flux2", None),
    ("SD3.5 Large Turbo", "tiny_sd3", "/models/stable-diffusion-3.5-large-turbo"),
    ("Z-Image-Turbo", "tiny_zimage", None)])
def test_a_whole_auto_mask_edit_on_a_distilled_family_costs_at_most_16_evaluations(
        request, cat128, family, tiny, source):
    """At the family's defaults, counted on the real transformer's forward calls: mask 2 x
    mask_samples, encoding and decoding strength x steps each (klein and SD3.5 Large Turbo:
    5 samples, 3 + 3 steps; Z-Image-Turbo: 2 samples, 6 + 6 steps)."""
    model = request.getfixturevalue(tiny)
    if source:
        model = dataclasses.replace(model, source=source)
    session = EditSession(model, cat128)
    assert session.backbone.distilled
    params = session.default_params().replace(seed=AUTO_MASK_SEEDS[model.family])
    with recorded(model.transformer) as calls:
        [result] = session.run("diffedit", "a photo of a cat", "a photo of a dog", None, params)
    assert result.mask.any() and result.params.guidance == 1.0
    assert evaluations(calls) == sum(result.stats["unet_evals"].values()) <= 16
    assert result.stats["unet_evals"]["mask"] == 2 * params.mask_samples


def _img2img(model, photo, prompt, z0, start, params):
    """The family's diffusers img2img pipeline on ``model``: SD3's from our photo latent (it
    noises it with the seeded generator's first draw, as we do), Z-Image's from our noised
    latent (its image processor would take a 16-channel latent for pixels). Z-Image's guidance
    is c + g (c - u): our true-CFG scale minus 1."""
    import diffusers

    scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_config(model.scheduler_config)
    common = {"prompt": prompt, "num_inference_steps": params.steps, "strength": params.strength,
              "output_type": "latent"}
    if model.family == "sd3":
        pipe = diffusers.StableDiffusion3Img2ImgPipeline(
            transformer=model.transformer, vae=model.vae, scheduler=scheduler,
            text_encoder=model.text_encoder, tokenizer=model.tokenizer,
            text_encoder_2=model.text_encoder_2, tokenizer_2=model.tokenizer_2,
            text_encoder_3=model.text_encoder_3, tokenizer_3=model.tokenizer_3)
        pipe.set_progress_bar_config(disable=True)
        return pipe(image=z0, guidance_scale=params.guidance,
                    generator=torch.Generator().manual_seed(params.seed), **common).images
    pipe = diffusers.ZImageImg2ImgPipeline(transformer=model.transformer, vae=model.vae,
                                           text_encoder=model.text_encoder,
                                           tokenizer=model.tokenizer, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe(image=Image.fromarray(photo), latents=start, guidance_scale=params.guidance - 1,
                **common).images


@pytest.mark.slow
@pytest.mark.parametrize("family,guidance", [("sd3", 1.0), ("sd3", 3.5), ("zimage", 1.0),
                                             ("zimage-base", 5.0)])
def test_sdedit_without_a_mask_equals_the_familys_img2img_pipeline(request, cat128, family,
                                                                   guidance):
    """Same tiny model, seed and settings; the base Z-Image is the tiny one with the base
    model's scheduler (shift 6), sampled with true CFG."""
    model = request.getfixturevalue(TINY[family.split("-")[0]])
    if family == "zimage-base":
        model = dataclasses.replace(model, scheduler_config={**model.scheduler_config, "shift": 6.0})
    params = EditParams(steps=4, strength=0.75, guidance=guidance, seed=3)
    session = FinalLatents(model, cat128)
    assert session.backbone.distilled == (family == "zimage")
    [ours] = session.run("sdedit", "", "a dog on a sofa", None, params)
    geometry = session.geometry(params)
    schedule = session.schedule(params.steps, geometry)
    z0 = session.image_latent(geometry)
    noise = torch.randn(z0.shape, generator=torch.Generator("cpu").manual_seed(params.seed))
    start = schedule.noised(z0, noise, schedule.tail(params.encode_steps)[0])
    theirs = _img2img(model, cat128, "a dog on a sofa", z0, start, params)
    assert torch.allclose(session.finals[0], theirs.float(), atol=1e-5)
    assert ours.stats["unet_evals"]["decode"] == params.encode_steps * (1 if guidance == 1 else 2)
    assert np.abs(ours.image.astype(int) - cat128.astype(int)).mean() > 5  # the photo changed


@pytest.mark.slow
def test_blended_inpaint_equals_the_sd3_inpaint_pipelines_latents(tiny_sd3, cat128, box):
    """Where the algorithms coincide: StableDiffusion3InpaintPipeline at strength 1 blends the
    photo's latent, noised to the next timestep, outside the mask after every step, as Blended
    does (the box lies on the latent grid, so its nearest-resized mask is ours). The pipeline
    draws the photo's latent from the VAE's distribution; it is handed our draw-free one, so both
    draw the same noise from the seed. Z-Image's and klein's inpaint pipelines draw it inside
    prepare_latents (and klein's adds the photo as reference tokens), so they are not compared."""
    import diffusers

    params = EditParams(steps=6, guidance=3.5, seed=3)
    session = FinalLatents(tiny_sd3, cat128)
    session.run("blended", "", "a dog", box, params, {"candidates": 1})
    z0 = session.image_latent(session.geometry(params))
    model = tiny_sd3
    pipe = diffusers.StableDiffusion3InpaintPipeline(
        transformer=model.transformer, vae=model.vae,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler.from_config(model.scheduler_config),
        text_encoder=model.text_encoder, tokenizer=model.tokenizer,
        text_encoder_2=model.text_encoder_2, tokenizer_2=model.tokenizer_2,
        text_encoder_3=model.text_encoder_3, tokenizer_3=model.tokenizer_3)
    pipe.set_progress_bar_config(disable=True)
    pipe._encode_vae_image = lambda image, generator: z0
    theirs = pipe(prompt="a dog", image=Image.fromarray(cat128),
                  mask_image=Image.fromarray((box * 255).astype(np.uint8)), height=128, width=128,
                  strength=1.0, num_inference_steps=params.steps, guidance_scale=params.guidance,
                  generator=torch.Generator().manual_seed(params.seed), output_type="latent").images
    assert torch.allclose(session.finals[0], theirs, atol=1e-5)
    outside = torch.from_numpy(session.geometry(params).mask_to_latent(box)) == 0
    assert torch.equal(theirs[0][:, outside], z0[0][:, outside])  # the photo's latent kept


@pytest.mark.slow
def test_identical_texts_give_a_zero_heatmap_and_an_empty_mask_returns_the_photo(flow, cat128):
    session, params = EditSession(flow, cat128), fast(flow, cat128)
    assert not session.estimate_mask("a cat", "a cat", params).any()
    # The tiny transformers read their texts weakly: 8 samples lift the contrast of two real
    # texts above the sampling noise (2 leave Z-Image's at the noise floor).
    assert session.estimate_mask("a cat", "a dog", params.replace(mask_samples=8)).any()
    with pytest.raises(InputError, match="predictions do not differ anywhere"):  # as on every backbone
        session.run("diffedit", "a cat", "a cat", None, params)
    # Decoding under an empty mask keeps the encoded latent exactly; the paste-back the photo.
    geometry = session.geometry(params)
    ctx = RunContext(flow, backbone=session.backbone)
    schedule = session.schedule(params.steps, geometry)
    trajectory = session.encode(ctx, geometry, schedule, params)
    empty = np.zeros(cat128.shape[:2], np.float32)
    latent = masked_decode(ctx, schedule, trajectory, torch.from_numpy(geometry.mask_to_latent(empty)),
                           session.embed(""), session.embed("a dog"), params.guidance, 0.0, 0)
    assert torch.equal(latent, trajectory[0])
    result = session.finish(ctx, geometry, latent, empty, params, "a cat", "a dog", "diffedit")
    assert np.array_equal(result.image, cat128)


@pytest.mark.slow
@pytest.mark.parametrize("method,options", RUNS)
def test_outside_the_mask_every_pixel_is_the_original(flow, cat128, box, method, options):
    [result] = EditSession(flow, cat128).run(method, "a cat", "a dog", box, fast(flow, cat128),
                                             options)
    kept = masks.paste_alpha(result.mask, result.params.feather) == 0
    if (options or {}).get("action") == "background":
        kept = masks.paste_alpha(masks.invert(box), result.params.feather) == 0
    assert kept.mean() > 0.15 and np.array_equal(result.image[kept], cat128[kept])
    assert not np.array_equal(result.image, cat128)


@pytest.mark.slow
def test_same_seed_same_bytes(flow, cat128):
    params = fast(flow, cat128).replace(seed=5, eta=0.5)
    first = EditSession(flow, cat128).run("sdedit", "", "a dog", None, params)[0]
    again = EditSession(flow, cat128).run("sdedit", "", "a dog", None, params)[0]
    other = EditSession(flow, cat128).run("sdedit", "", "a dog", None, params.replace(seed=6))[0]
    assert np.array_equal(first.image, again.image) and not np.array_equal(first.image, other.image)


@pytest.mark.slow
def test_flowedit_with_identical_texts_returns_the_photo_and_masked_finds_its_mask(flow, cat128):
    session, params = EditSession(flow, cat128), fast(flow, cat128)
    # Guided (SD3.5), the two velocities are guided alike: the paper's unequal scales would
    # differ by (g_target - g_source)(c - u) even for one text.
    [same] = session.run("flowedit", "a cat", "a cat", None, params,
                         {"source_guidance": params.guidance})
    assert np.array_equal(same.image, cat128) and "moved nothing" in " ".join(same.warnings)
    per_step = 2 if session.backbone.distilled else 4  # both texts, each with its CFG row
    assert same.stats["unet_evals"] == {"decode": per_step * params.encode_steps}
    [edited] = session.run("flowedit", "a cat", "a dog", None, params)
    assert not np.array_equal(edited.image, cat128)
    # Masked without a painted mask: DiffEdit's mask from the two texts, the photo kept outside.
    [auto] = session.run("flowedit", "a cat", "a dog", None, params.replace(mask_samples=8),
                         {"masked": True})
    assert auto.heatmap is not None and auto.mask.any() and not auto.mask.all()
    kept = masks.paste_alpha(auto.mask, auto.params.feather) == 0
    assert np.array_equal(auto.image[kept], cat128[kept])


@pytest.fixture(scope="module", params=list(TINY))
def bf16(request):
    model = load_model(str(request.getfixturevalue(TINY[request.param] + "_path")), device="cpu",
                       dtype="bfloat16")
    assert model.transformer.dtype == torch.bfloat16
    assert all(encoder.dtype == torch.bfloat16 for encoder in model.text_encoders)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("method,options", [*RUNS, ("sdedit", None), ("flowedit", None)])
def test_every_method_runs_in_bfloat16_on_the_cpu(bf16, cat128, box, method, options):
    params = fast(bf16, cat128).replace(steps=3, mask_samples=1, resolution=64)
    mask = None if method in ("sdedit", "flowedit") and not options else box
    [result] = EditSession(bf16, cat128).run(method, "a cat", "a dog", mask, params, options)
    assert result.image.shape == cat128.shape and not np.array_equal(result.image, cat128)
    if mask is not None and (options or {}).get("action") != "background":
        kept = masks.paste_alpha(result.mask, result.params.feather) == 0
        assert np.array_equal(result.image[kept], cat128[kept])


def test_klein_and_zimage_share_one_tiny_qwen_tokenizer(tiny_flux2, tiny_zimage):
    """One builder (engine.tiny_model.write_qwen_tokenizer): the same tokens and Qwen3's chat
    text, with thinking off (klein's pipeline) and on (Z-Image's)."""
    for thinking, tail in ((False, "<think>\n\n</think>\n\n"), (True, "")):
        chats = [model.tokenizer.apply_chat_template(
            [{"role": "user", "content": "a cat"}], tokenize=False, add_generation_prompt=True,
            enable_thinking=thinking) for model in (tiny_flux2, tiny_zimage)]
        assert chats[0] == chats[1] == f"<|im_start|>user\na cat<|im_end|>\n<|im_start|>assistant\n{tail}"
        ids = [model.tokenizer(chats[0]).input_ids for model in (tiny_flux2, tiny_zimage)]
        start = tiny_zimage.tokenizer.convert_tokens_to_ids("<|im_start|>")
        assert ids[0] == ids[1] and ids[0].count(start) == 2  # special tokens are one token each
