"""Few-step models (SDXL-Turbo, Lightning, LCM, TCD): trailing timesteps picked from the model's
scheduler config or --scheduler, parity with diffusers' few-step schedulers on the tiny SDXL,
and a whole auto-mask DiffEdit edit in 12 UNet evaluations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from engine import masks, schedulers
from engine.errors import InputError
from engine.inversion import Schedule
from engine.params import EditParams
from engine.session import EditSession
from final_latents import FinalLatents

# A few-step edit: 4 steps all the way from pure noise, 2 mask samples, no guidance (the
# distilled models have it built in): mask 2 x 2 + encoding 4 + decoding 4 = 12 evaluations.
FEW = EditParams(steps=4, strength=1.0, guidance=1.0, mask_samples=2)


@pytest.fixture(scope="module")
def few_step_sdxl(tiny_sdxl):
    """The tiny SDXL as a Lightning-style model: its scheduler config says "trailing"."""
    config = {**tiny_sdxl.scheduler_config, "timestep_spacing": "trailing"}
    return dataclasses.replace(tiny_sdxl, scheduler_config=schedulers.configure(config))


@pytest.fixture(scope="module")
def photo(samples_dir):
    return np.asarray(Image.open(samples_dir / "chelsea.png").convert("RGB").resize((128, 128)))


@pytest.mark.parametrize("config, few", [
    ({"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "leading"}, False),  # SDXL base
    ({"_class_name": "EulerAncestralDiscreteScheduler", "timestep_spacing": "trailing"}, True),  # Turbo
    ({"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "trailing"}, True),  # Lightning
    ({"_class_name": "LCMScheduler", "timestep_spacing": "leading"}, True),
    ({"_class_name": "TCDScheduler"}, True),
])
def test_the_models_own_scheduler_config_decides(config, few):
    chosen = schedulers.configure(config)
    assert (chosen.get("timestep_spacing") == "trailing") is few
    assert chosen.get("set_alpha_to_one", False) is few  # few-step runs end at the clean image
    # --scheduler overrides the config either way.
    assert schedulers.configure(config, "trailing")["timestep_spacing"] == "trailing"
    assert schedulers.configure(config, "ddim").get("timestep_spacing") != "trailing"


def test_trailing_timesteps_start_at_pure_noise_and_end_clean(tiny_sdxl):
    base = Schedule.from_config(tiny_sdxl.scheduler_config, 4)
    assert base.timesteps == (751, 501, 251, 1)  # SDXL base's leading spacing: short of noise
    for steps, expected in [(4, (999, 749, 499, 249)), (3, (999, 666, 332))]:
        few = Schedule.from_config(schedulers.configure(tiny_sdxl.scheduler_config, "trailing"), steps)
        assert few.timesteps == expected
        # Each step goes to the schedule's own next timestep (3 steps are not evenly spaced).
        assert [few.previous(t) for t in expected] == [*expected[1:], -1]
        assert few.alpha(few.previous(expected[-1])) == 1.0


def test_an_unknown_scheduler_is_refused_by_name(tiny_sdxl_path):
    from engine.models import load_model

    with pytest.raises(InputError, match="unknown scheduler 'euler': use auto, ddim, trailing"):
        load_model(str(tiny_sdxl_path), device="cpu", scheduler="euler")


def test_few_step_sdedit_equals_diffusers_img2img_with_lightnings_euler_trailing(few_step_sdxl, photo):
    """Deterministic Euler on trailing timesteps (SDXL-Lightning's scheduler) is our DDIM step."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline

    m = few_step_sdxl
    session = FinalLatents(m, photo)
    session.run("sdedit", "", "a dog", None, FEW.replace(seed=2))
    euler = EulerDiscreteScheduler.from_config(m.scheduler_config, timestep_spacing="trailing")
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=m.vae, text_encoder=m.text_encoder, text_encoder_2=m.text_encoder_2,
        tokenizer=m.tokenizer, tokenizer_2=m.tokenizer_2, unet=m.unet, scheduler=euler)
    pipe.set_progress_bar_config(disable=True)
    z0 = session.image_latent(session.geometry(FEW))
    theirs = pipe(prompt="a dog", image=z0, strength=1.0, num_inference_steps=4, guidance_scale=1.0,
                  generator=torch.Generator("cpu").manual_seed(2), output_type="latent").images
    assert list(pipe.scheduler.timesteps.long()) == [999, 749, 499, 249]
    assert torch.allclose(session.finals[0], theirs, atol=1e-3), (session.finals[0] - theirs).abs().max()
    assert not torch.allclose(session.finals[0], z0, atol=0.1)


def test_a_few_step_auto_mask_edit_costs_12_unet_evaluations(few_step_sdxl, photo):
    calls = []
    handle = few_step_sdxl.unet.register_forward_pre_hook(
        lambda module, args: calls.append(args[0].shape[0]))
    try:
        result = EditSession(few_step_sdxl, photo).edit("a cat", "a dog", None,
                                                        FEW.replace(mask_threshold=0.3))
    finally:
        handle.remove()
    assert sum(calls) == 12 == result.stats["unet_evals_total"]
    assert result.stats["unet_evals"] == {"mask": 4, "encode": 4, "decode": 4}
    kept = masks.paste_alpha(result.mask, result.params.feather) == 0
    assert kept.any() and np.array_equal(result.image[kept], photo[kept])
    assert not np.array_equal(result.image, photo)
