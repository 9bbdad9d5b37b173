"""Every editing method on the tiny SDXL: parity of SDEdit with diffusers' SDXL img2img and
inpaint pipelines, the invariants (outside the mask byte-identical, identical texts, seeds,
P2P and PnP identities), the time ids of a region, and one bfloat16 run per method."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine import masks
from engine.backbones import for_model
from engine.backbones.sdxl import SizeConditioning, StableDiffusionXL
from engine.fields import from_dict
from engine.methods import blended, diffedit, p2p
from engine.methods import options as method_options
from engine.params import EditParams
from engine.runtime import RunContext
from engine.session import EditSession
from final_latents import FinalLatents

FAST = EditParams(steps=5, mask_samples=2)  # 4 encoded steps
IDENTITY = {"mode": "swap", "self_fraction": 0.6, "cross_fraction": 1.0}
# One run of each method (and each Blended action): (method, options).
RUNS = [("diffedit", None), ("sdedit", {"masked": True}),
        *(("blended", {"action": action, "candidates": 1})
          for action in ("inpaint", "background", "scribble")),
        ("p2p", IDENTITY), ("pnp", None)]


@pytest.fixture(scope="module")
def photo(samples_dir):
    """The cat at the tiny SDXL's native 128x128: the working geometry is the photo itself."""
    rgb = Image.open(samples_dir / "chelsea.png").convert("RGB").resize((128, 128))
    return np.asarray(rgb)


@pytest.fixture(scope="module")
def box(photo):
    """A mask on the 8 px latent grid, so that every way of shrinking it to the latent agrees."""
    mask = np.zeros(photo.shape[:2], np.float32)
    mask[32:96, 40:104] = 1.0
    return mask


def _start(photo, box, options):
    """A run's input photo: for scribble, red paint over the masked area."""
    if (options or {}).get("action") != "scribble":
        return photo
    paint = np.zeros(photo.shape, np.uint8)
    paint[..., 0] = 255
    return blended.scribble_photo(photo, paint, box, box)


def _kept(result, box, options, feather):
    """Pixels a run must leave as the photo's: beyond the feathered paste-back of its mask (of the
    user's subject for background, which keeps it)."""
    if (options or {}).get("action") == "background":
        return masks.paste_alpha(masks.invert(box), feather) == 0
    return masks.paste_alpha(result.mask, feather) == 0


def _pipeline(cls, model):
    from diffusers import DDIMScheduler

    pipe = cls(vae=model.vae, text_encoder=model.text_encoder,
               text_encoder_2=model.text_encoder_2, tokenizer=model.tokenizer,
               tokenizer_2=model.tokenizer_2, unet=model.unet,
               scheduler=DDIMScheduler.from_config(model.scheduler_config),
               requires_aesthetics_score=False, force_zeros_for_empty_prompt=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_the_sdxl_backbone_serves_every_method(tiny_sdxl):
    backbone = for_model(tiny_sdxl)
    assert isinstance(backbone, StableDiffusionXL)
    assert backbone.methods == {"diffedit", "blended", "sdedit", "p2p", "pnp"}
    assert (backbone.native_side, backbone.latent_factor) == (128, 8)


def test_sdedit_without_a_mask_equals_the_sdxl_img2img_pipeline_with_ddim(tiny_sdxl, photo):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    params = EditParams(steps=5, strength=0.8, guidance=5.0, seed=3)  # 4 steps here and there
    session = FinalLatents(tiny_sdxl, photo)
    ours = session.run("sdedit", "", "a dog on a sofa", None, params)[0]
    pipe = _pipeline(StableDiffusionXLImg2ImgPipeline, tiny_sdxl)
    # The photo's latent as the pipeline's image (4 channels: used as is, not sampled from the
    # VAE's distribution), the same seeded noise, strength, steps and guidance.
    z0 = session.image_latent(session.geometry(params))
    common = dict(prompt="a dog on a sofa", image=z0, strength=params.strength,
                  num_inference_steps=params.steps, guidance_scale=params.guidance)
    theirs = pipe(**common, generator=torch.Generator("cpu").manual_seed(params.seed),
                  output_type="latent").images
    assert torch.allclose(session.finals[0], theirs, atol=1e-4), (session.finals[0] - theirs).abs().max()
    pixels = pipe.vae.decode(theirs / pipe.vae.config.scaling_factor).sample
    pixels = ((pixels[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0)
    assert np.abs(ours.image.astype(int) - pixels.numpy().astype(int)).max() <= 1
    # The photo is changed (the comparison is not of two unchanged copies).
    assert np.abs(ours.image.astype(int) - photo.astype(int)).mean() > 5


def test_masked_sdedit_equals_the_sdxl_inpaint_pipeline_inside_the_mask(tiny_sdxl, photo, box):
    """A plain (4-channel) UNet in diffusers' inpaint pipeline blends the noised photo latent
    outside the mask after every step, as masked SDEdit does. The one difference is the last
    step: the pipeline puts the clean latent outside the mask, we the latent at the level DDIM's
    last step reaches (the original pixels are pasted back there anyway)."""
    from diffusers import StableDiffusionXLInpaintPipeline

    params = EditParams(steps=5, strength=0.8, guidance=5.0, seed=4)
    session = FinalLatents(tiny_sdxl, photo)
    session.run("sdedit", "", "a dog", box, params, {"masked": True})
    geometry = session.geometry(params)
    z0 = session.image_latent(geometry)
    pipe = _pipeline(StableDiffusionXLInpaintPipeline, tiny_sdxl)
    theirs = pipe(prompt="a dog", image=z0, mask_image=Image.fromarray((box * 255).astype(np.uint8)),
                  strength=params.strength, num_inference_steps=params.steps,
                  guidance_scale=params.guidance, height=128, width=128, output_type="latent",
                  generator=torch.Generator("cpu").manual_seed(params.seed)).images
    inside = torch.from_numpy(geometry.mask_to_latent(box)).bool().expand_as(z0)
    ours = session.finals[0]
    assert torch.allclose(ours[inside], theirs[inside], atol=1e-4), (ours - theirs)[inside].abs().max()
    assert torch.allclose(theirs[~inside], z0[~inside])
    assert not torch.allclose(ours[inside], z0[inside], atol=0.1)  # the masked area changed


def test_identical_texts_give_an_all_zero_heatmap(tiny_sdxl, photo):
    heatmap = EditSession(tiny_sdxl, photo).estimate_mask("a cat", "a cat", FAST)
    assert heatmap.shape == photo.shape[:2] and not heatmap.any()
    assert EditSession(tiny_sdxl, photo).estimate_mask("a cat", "a dog", FAST).any()


@pytest.mark.parametrize("method,options", RUNS[:5])
def test_outside_the_mask_every_pixel_is_the_original(tiny_sdxl, photo, box, method, options):
    [result] = EditSession(tiny_sdxl, _start(photo, box, options)).run(
        method, "a cat", "a dog", box, FAST, options)
    kept = _kept(result, box, options, result.params.feather)
    assert kept.mean() > 0.15 and np.array_equal(result.image[kept], photo[kept])
    assert not np.array_equal(result.image, photo)


def test_same_seed_same_bytes(tiny_sdxl, photo, box):
    params = FAST.replace(seed=5, eta=0.5)
    first = EditSession(tiny_sdxl, photo).edit("a cat", "a dog", box, params)
    again = EditSession(tiny_sdxl, photo).edit("a cat", "a dog", box, params)
    other = EditSession(tiny_sdxl, photo).edit("a cat", "a dog", box, params.replace(seed=6))
    assert np.array_equal(first.image, again.image) and not np.array_equal(first.image, other.image)


def test_p2p_identical_texts_reproduce_the_reconstruction(tiny_sdxl, photo):
    source = "a photo of a cat on a sofa"
    params = FAST.replace(guidance=5.0)
    session = EditSession(tiny_sdxl, photo)
    ctx = RunContext(tiny_sdxl, backbone=session.backbone)
    geometry = session.geometry(params)
    schedule = session.schedule(params.steps)
    trajectory = p2p.invert(session, ctx, geometry, schedule, params, source)
    options = from_dict(method_options.PromptToPromptOptions, IDENTITY)
    embedding = session.embed(source)
    plan = p2p.plan_tokens(session.backbone.tokenizer, source, source, options)
    latents, _ = p2p.sample(ctx, ctx.backbone, schedule, trajectory, embedding, embedding, plan,
                            params.guidance, options)
    assert torch.equal(latents[1], latents[0])
    result = session.run("p2p", source, source, None, params, IDENTITY)[0]
    assert np.array_equal(result.image, geometry.from_working(session.decode_latent(latents[:1])))
    assert not np.array_equal(result.image, photo)  # a reconstruction through the VAE, not a copy


def test_pnp_zero_injection_equals_plain_decoding(tiny_sdxl, photo):
    session = EditSession(tiny_sdxl, photo)
    result = session.run("pnp", "a cat", "a dog", None, FAST,
                         {"feature_fraction": 0.0, "attention_fraction": 0.0})[0]
    ctx = RunContext(tiny_sdxl, backbone=session.backbone)
    geometry = session.geometry(FAST)
    schedule = session.schedule(FAST.steps)
    trajectory = session.encode(ctx, geometry, schedule, FAST)
    everywhere = torch.ones(trajectory[0].shape[-2:])
    latent = diffedit.masked_decode(ctx, schedule, trajectory, everywhere, session.embed("a cat"),
                                    session.embed("a dog"), FAST.guidance, FAST.eta, FAST.seed)
    assert np.array_equal(result.image, geometry.from_working(session.decode_latent(latent)))
    injected = session.run("pnp", "a cat", "a dog", None, FAST,
                           {"feature_fraction": 0.5, "attention_fraction": 0.5})[0]
    assert not np.array_equal(injected.image, result.image)


def test_the_time_ids_reach_the_unet_and_change_its_prediction(tiny_sdxl, photo):
    session = EditSession(tiny_sdxl, photo)
    seen = []
    handle = tiny_sdxl.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["added_cond_kwargs"]["time_ids"]),
        with_kwargs=True)
    try:
        session.estimate_mask("a cat", "a dog", FAST)
    finally:
        handle.remove()
    assert seen and all(ids.tolist() == [[128, 128, 0, 0, 128, 128]] * ids.shape[0] for ids in seen)
    backbone = session.backbone
    latent = session.image_latent(session.geometry(FAST))
    cond = session.embed("a cat")
    here = backbone.predict(latent, 500, cond)
    backbone.size = SizeConditioning((1024, 1024), (64, 0), (128, 128))
    assert not torch.allclose(backbone.predict(latent, 500, cond), here)


def test_a_region_of_a_big_photo_is_conditioned_on_its_place_in_the_photo(tiny_sdxl):
    rgb = np.zeros((600, 800, 3), np.uint8)
    session = EditSession(tiny_sdxl, rgb)
    geometry = session.geometry(FAST)
    padded_w, padded_h = geometry.padded_size
    assert session.backbone.size == SizeConditioning((600, 800), (0, 0), (padded_h, padded_w))
    region = session.sub_session((320, 192, 576, 448))
    geometry = region.geometry(FAST)
    scale = geometry.content_size[0] / 256
    assert region.backbone.size.original == (600, 800)
    assert region.backbone.size.crop == (round(192 * scale), round(320 * scale)) != (0, 0)
    # A region of a region is placed in the whole photo.
    inner = region.sub_session((64, 32, 192, 160))
    scale = inner.geometry(FAST).content_size[0] / 128
    assert inner.backbone.size.crop == (round((192 + 32) * scale), round((320 + 64) * scale))


@pytest.fixture(scope="module")
def bf16_sdxl(tiny_sdxl_path):
    from engine.models import load_model

    model = load_model(str(tiny_sdxl_path), device="cpu", dtype="bfloat16")
    assert model.unet.dtype == torch.bfloat16 and model.text_encoder_2.dtype == torch.bfloat16
    return model


@pytest.mark.parametrize("method,options", RUNS)
def test_every_method_runs_in_bfloat16_on_the_cpu(bf16_sdxl, photo, box, method, options):
    params = EditParams(steps=3, mask_samples=1, resolution=64)
    mask = None if method == "pnp" else box
    source = "a photo of a cat" if method == "p2p" else "a cat"
    [result] = EditSession(bf16_sdxl, _start(photo, box, options)).run(
        method, source, "a photo of a dog" if method == "p2p" else "a dog", mask, params, options)
    assert result.image.shape == photo.shape and not np.array_equal(result.image, photo)
    if mask is not None:
        kept = _kept(result, box, options, result.params.feather)
        assert np.array_equal(result.image[kept], photo[kept])
