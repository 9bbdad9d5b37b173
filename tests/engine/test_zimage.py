"""Z-Image on the tiny random-weight model: loading, family detection, Turbo told from base, and
parity of the text conditioning, the latents and the velocity (minus the transformer's output,
at the reversed time) with diffusers' own Z-Image pipeline, in float32 and bfloat16."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from engine import backbones, families
from engine.backbones import Conditioning
from engine.backbones.zimage import ZImage
from engine.errors import ModelError
from engine.models import load_model
from tests.engine.flow_parity import in_precision, random_picture, recorded

TEXT = "a photo of a cat wearing a red hat"


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def zimage(request, tiny_zimage, tiny_zimage_path):
    """The tiny Z-Image loaded in each precision."""
    return in_precision(request.param, tiny_zimage, tiny_zimage_path)


def _pipeline(model, cls_name="ZImagePipeline"):
    import diffusers

    return getattr(diffusers, cls_name)(
        transformer=model.transformer, vae=model.vae, text_encoder=model.text_encoder,
        tokenizer=model.tokenizer,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler.from_config(model.scheduler_config))


def test_tiny_zimage_loads_through_the_model_loader(tiny_zimage, tiny_zimage_path):
    from diffusers import ZImageTransformer2DModel
    from transformers import Qwen3Model

    m = tiny_zimage
    assert (m.family, m.prediction_type, m.unet) == ("zimage", "flow", None)
    assert type(m.transformer) is ZImageTransformer2DModel and type(m.text_encoder) is Qwen3Model
    assert m.text_encoders == (m.text_encoder,)
    chat = m.tokenizer.apply_chat_template([{"role": "user", "content": "a cat"}], tokenize=False,
                                           add_generation_prompt=True, enable_thinking=True)
    assert chat == "<|im_start|>user\na cat<|im_end|>\n<|im_start|>assistant\n"  # Qwen3's
    assert (m.vae.config.latent_channels, m.vae.config.shift_factor, m.vae.config.scaling_factor) == (
        16, 0.1159, 0.3611)
    modules = (m.transformer, m.vae, m.text_encoder)
    assert not any(module.training for part in modules for module in part.modules())
    backbone = backbones.for_model(m)
    assert isinstance(backbone, ZImage) and backbone.prediction_type == "flow"
    assert (backbone.latent_factor, backbone.size_multiple, backbone.native_side) == (8, 16, 128)
    by_name = load_model("tiny-zimage", device="cpu")
    assert by_name.family == "zimage" and by_name.source == str(tiny_zimage_path)


def test_turbo_and_base_are_told_apart_and_take_their_defaults(tiny_zimage):
    turbo = backbones.for_model(tiny_zimage)  # Turbo's scheduler: shift 3
    assert turbo.distilled and turbo.defaults == {"steps": 8, "guidance": 1.0, "mask_samples": 2}
    base_config = {**tiny_zimage.scheduler_config, "shift": 6.0}
    base = backbones.for_model(dataclasses.replace(tiny_zimage, scheduler_config=base_config))
    # the model card's guidance 4 is c + 4 (c - u) = u + 5 (c - u)
    assert not base.distilled and base.defaults == {"steps": 50, "guidance": 5.0}
    named = dataclasses.replace(tiny_zimage, scheduler_config=base_config,
                                source="/models/Z-Image-Turbo-finetune")
    assert backbones.for_model(named).distilled


def test_zimage_folders_are_told_by_their_pipeline_and_mismatched_parts_are_refused(
        tiny_zimage_path, tmp_path):
    folder = tmp_path / "zimage"
    shutil.copytree(tiny_zimage_path, folder)
    index = folder / "model_index.json"
    for pipeline in ("ZImagePipeline", "ZImageImg2ImgPipeline", "ZImageInpaintPipeline"):
        index.write_text(json.dumps({**json.loads(index.read_text()), "_class_name": pipeline}))
        assert families.folder_family(folder) == "zimage"
    config = folder / "transformer" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "cap_feat_dim": 64}))
    with pytest.raises(ModelError, match="zimage: the transformer's cap_feat_dim is 64 but the "
                                         "text encoders give 32; the components do not"):
        load_model(str(folder), device="cpu")
    scheduler = folder / "scheduler" / "scheduler_config.json"
    scheduler.write_text(json.dumps({**json.loads(scheduler.read_text()), "_class_name": "DDIMScheduler"}))
    with pytest.raises(ModelError, match="zimage: its scheduler is DDIMScheduler; a Z-Image model "
                                         "samples with FlowMatchEulerDiscreteScheduler"):
        load_model(str(folder), device="cpu")


def test_text_conditioning_equals_the_pipelines_encode_prompt(zimage):
    positive, negative = _pipeline(zimage).encode_prompt(TEXT, device=torch.device("cpu"),
                                                         do_classifier_free_guidance=True)
    backbone = backbones.for_model(zimage)
    ours, note = backbone.encode_text(TEXT)
    assert note is None
    mask = ours.extra["mask"]
    assert ours.embeds.shape == (1, 512, 32) and mask.shape == (1, 512) and ours.pooled is None
    # the pipeline keeps each text's real tokens only; ours carry their mask
    assert torch.equal(ours.embeds[0][mask[0]], positive[0].float())
    empty = backbone.empty()
    assert torch.equal(empty.embeds[0][empty.extra["mask"][0]], negative[0].float())
    assert empty.extra["mask"].sum() < mask.sum()


def test_long_prompts_are_cut_with_a_note(tiny_zimage):
    backbone = backbones.for_model(tiny_zimage)
    _, note = backbone.encode_text("cat " * 110 + "zebra")  # 465 tokens with the template
    assert note is None
    _, note = backbone.encode_text("cat " * 130 + "zebra")
    assert "the text encoder's 512 tokens" in note and note.endswith('cat zebra"')


def test_latents_are_the_pipelines_vae_latents_shifted_and_scaled(tiny_zimage):
    from diffusers.pipelines.z_image.pipeline_z_image_img2img import retrieve_latents
    from PIL import Image

    pipe = _pipeline(tiny_zimage, "ZImageImg2ImgPipeline")
    backbone, vae = backbones.for_model(tiny_zimage), tiny_zimage.vae
    pixels = random_picture()
    with torch.no_grad():
        image = pipe.image_processor.preprocess(Image.fromarray(pixels))
        expected = retrieve_latents(vae.encode(image), sample_mode="argmax")
        expected = (expected - vae.config.shift_factor) * vae.config.scaling_factor
    latent = backbone.encode_image(pixels)
    assert latent.shape == (1, 16, 16, 12) and torch.allclose(latent, expected, atol=1e-5)
    with torch.no_grad():
        decoded = vae.decode(latent / vae.config.scaling_factor + vae.config.shift_factor).sample
        expected = pipe.image_processor.postprocess(decoded, output_type="np")[0]
    ours = backbone.decode(latent)
    assert ours.shape == (128, 96, 3) and np.abs(ours.astype(int) - np.round(expected * 255)).max() <= 1


def test_predict_is_the_velocity_the_pipeline_steps_with(zimage):
    """Two unguided steps of the pipeline (Turbo's way): our prediction is minus the
    transformer's output, which the pipeline read at (1000 - t) / 1000 for the scheduler's
    timestep t; the Euler step x + (s' - s) u with our u lands on the pipeline's result."""
    pipe, backbone = _pipeline(zimage), backbones.for_model(zimage)
    start = torch.randn((1, 16, 16, 12), generator=torch.Generator().manual_seed(0))
    with recorded(zimage.transformer) as calls:
        final = pipe(TEXT, height=128, width=96, num_inference_steps=2, guidance_scale=0.0,
                     latents=start, output_type="latent").images
    cond, _ = backbone.encode_text(TEXT)
    timesteps, sigmas = pipe.scheduler.timesteps, pipe.scheduler.sigmas
    assert len(calls) == 2 and 0 < sigmas[1] < 1
    for (args, _kwargs, output), t in zip(calls, timesteps):
        assert torch.allclose(args[1], (1000 - t) / 1000)  # the model's own time
        latents = torch.stack(args[0]).squeeze(2)
        ours = backbone.predict(latents, t, cond)
        assert ours.dtype == torch.float32
        assert torch.equal(ours, -torch.stack([frame.float() for frame in output[0]]).squeeze(2))
    last = torch.stack(calls[1][0][0]).squeeze(2).float()
    stepped = last + (sigmas[2] - sigmas[1]) * backbone.predict(last, timesteps[1], cond)
    tolerance = 1e-5 if zimage.dtype == torch.float32 else 2e-2
    assert torch.allclose(stepped, final.float(), atol=tolerance)


def test_texts_of_different_lengths_share_one_transformer_call(tiny_zimage):
    """Conditionings stack (the methods batch the source, target and empty texts); each row
    still gives the transformer only its own tokens."""
    backbone = backbones.for_model(tiny_zimage)
    short, long = backbone.encode_text("a cat")[0], backbone.encode_text(TEXT)[0]
    latents = torch.randn((1, 16, 16, 12), generator=torch.Generator().manual_seed(1)).expand(2, -1, -1, -1)
    both = backbone.predict(latents, 700.0, Conditioning.cat([short, long]))
    alone = [backbone.predict(latents[:1], 700.0, c) for c in (short, long)]
    assert torch.allclose(both, torch.cat(alone), atol=1e-5)
    assert not torch.allclose(both[0], both[1], atol=1e-3)  # the texts differ, the latents not
