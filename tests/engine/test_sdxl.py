"""SDXL on the tiny random-weight model: loading, family detection, and parity of the text and
size conditioning with diffusers' own SDXL pipeline."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from engine.backbones import sdxl
from engine.errors import ModelError
from engine.geometry import WorkingGeometry
from engine.models import load_model


def _pipeline(model):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline(
        vae=model.vae, text_encoder=model.text_encoder, text_encoder_2=model.text_encoder_2,
        tokenizer=model.tokenizer, tokenizer_2=model.tokenizer_2, unet=model.unet,
        scheduler=EulerDiscreteScheduler.from_config(model.scheduler_config),
        force_zeros_for_empty_prompt=model.force_zeros_for_empty_prompt)


def test_tiny_sdxl_loads_through_the_model_loader(tiny_sdxl, tiny_sdxl_path):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    m = tiny_sdxl
    assert m.family == "sdxl" and m.force_zeros_for_empty_prompt
    assert type(m.text_encoder) is CLIPTextModel and type(m.text_encoder_2) is CLIPTextModelWithProjection
    assert m.tokenizer.pad_token == "<|endoftext|>" and m.tokenizer_2.pad_token == "!"
    assert m.unet.config.addition_embed_type == "text_time"
    assert m.unet.config.cross_attention_dim == sum(e.config.hidden_size for e in m.text_encoders)
    assert m.vae.config.scaling_factor == 0.13025
    assert m.scheduler_config["_class_name"] == "EulerDiscreteScheduler"
    assert m.scheduler_config["clip_sample"] is False and m.scheduler_config["set_alpha_to_one"] is False
    assert (m.native_size, m.vae_scale_factor, m.size_multiple) == (128, 8, 8)
    assert not any(module.training for e in (m.unet, m.vae, *m.text_encoders) for module in e.modules())
    by_name = load_model("tiny-sdxl", device="cpu")
    assert by_name.family == "sdxl" and by_name.source == str(tiny_sdxl_path)
    assert torch.equal(by_name.unet.conv_in.weight, m.unet.conv_in.weight)


def test_text_conditioning_equals_the_pipelines_encode_prompt(tiny_sdxl):
    pipe = _pipeline(tiny_sdxl)
    text = "a photo of a cat wearing a red hat"
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        text, device=torch.device("cpu"), num_images_per_prompt=1, do_classifier_free_guidance=True)
    ours, ours_pooled, note = sdxl.encode_prompt(tiny_sdxl, text)
    assert note is None
    assert ours.shape == (1, 77, 80) and ours_pooled.shape == (1, 48)
    assert torch.equal(ours, embeds.float()) and torch.equal(ours_pooled, pooled.float())
    empty, empty_pooled = sdxl.empty_prompt(tiny_sdxl)
    assert torch.equal(empty, negative) and torch.equal(empty_pooled, negative_pooled)
    assert not empty.any()  # SDXL base's force_zeros_for_empty_prompt
    # Without that flag the empty text is encoded, as the pipeline does.
    from dataclasses import replace

    plain = replace(tiny_sdxl, force_zeros_for_empty_prompt=False)
    _, negative, _, negative_pooled = _pipeline(plain).encode_prompt(
        text, device=torch.device("cpu"), do_classifier_free_guidance=True)
    empty, empty_pooled = sdxl.empty_prompt(plain)
    assert empty.any() and torch.equal(empty, negative) and torch.equal(empty_pooled, negative_pooled)


def test_long_prompts_are_cut_with_a_note(tiny_sdxl):
    text = " ".join(["cat"] * 80) + " zebra"
    _, _, note = sdxl.encode_prompt(tiny_sdxl, text)
    assert note is not None and "zebra" in note


def test_time_ids_come_from_the_photo_and_the_working_geometry(tiny_sdxl):
    pipe = _pipeline(tiny_sdxl)
    projection = tiny_sdxl.text_encoder_2.config.projection_dim
    # The whole photo at its native size: the pipeline's defaults (original = target, no crop).
    geometry = WorkingGeometry.fit((128, 128), 128, 32, 8)
    size = sdxl.SizeConditioning.of((128, 128), None, geometry)
    expected = pipe._get_add_time_ids((128, 128), (0, 0), (128, 128), dtype=torch.float32,
                                      text_encoder_projection_dim=projection)
    assert size.ids() == expected[0].tolist()
    # A 4000x3000 photo worked on at about 1024x1024: original is the photo, target the UNet's size.
    geometry = WorkingGeometry.fit((4000, 3000), 1024, 32, 8)
    size = sdxl.SizeConditioning.of((4000, 3000), None, geometry)
    assert size == sdxl.SizeConditioning((3000, 4000), (0, 0), (geometry.padded_size[1], geometry.padded_size[0]))
    assert size.target == (896, 1184)
    # A region 1200x1000 at (2000, 1500) of it, worked on at 128 px a side: the crop offset is
    # where the region starts in the working scale, as SDXL's training crops were measured.
    geometry = WorkingGeometry.fit((1200, 1000), 128, 32, 8)
    size = sdxl.SizeConditioning.of((4000, 3000), (2000, 1500, 3200, 2500), geometry)
    scale = geometry.content_size[0] / 1200
    assert size.crop == (round(1500 * scale), round(2000 * scale)) and size.original == (3000, 4000)
    expected = pipe._get_add_time_ids(size.original, size.crop, size.target, dtype=torch.float32,
                                      text_encoder_projection_dim=projection)
    added = sdxl.added_conditions(tiny_sdxl, torch.zeros(2, projection), size)
    assert torch.equal(added["time_ids"], expected.expand(2, -1))


def _copy(folder, tmp_path, name="copy"):
    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_refiner_and_other_pipelines_are_refused_by_name(tiny_sdxl_path, tmp_path):
    refiner = _copy(tiny_sdxl_path, tmp_path, "sdxl-refiner")
    _edit_json(refiner / "model_index.json", _class_name="StableDiffusionXLImg2ImgPipeline",
               requires_aesthetics_score=True, text_encoder=[None, None], tokenizer=[None, None])
    shutil.rmtree(refiner / "text_encoder")
    with pytest.raises(ModelError, match="sdxl-refiner: this is an SDXL refiner"):
        load_model(str(refiner), device="cpu")
    other = _copy(tiny_sdxl_path, tmp_path, "hunyuan")  # a pipeline of no supported family
    (other / "model_index.json").write_text(json.dumps({"_class_name": "HunyuanDiTPipeline"}))
    (other / "unet" / "config.json").unlink()
    with pytest.raises(ModelError, match="hunyuan: this is a HunyuanDiTPipeline model, which "
                                         "DiffEdit Studio"):
        load_model(str(other), device="cpu")
    # FLUX.1 is a family now: a FluxPipeline folder without its transformer says what is missing
    (other / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(ModelError, match="not a complete FLUX.1 folder: missing transformer"):
        load_model(str(other), device="cpu")


def test_sdxl_vae_is_decoded_in_float32_unless_fp16_safe(tiny_sdxl_path, tmp_path):
    model = load_model(str(tiny_sdxl_path), device="cpu", dtype="float16")
    assert model.unet.dtype == torch.float16 and model.text_encoder_2.dtype == torch.float16
    assert model.vae.dtype == torch.float32 and "VAE kept in float32" in model.notes
    fixed = _copy(tiny_sdxl_path, tmp_path)  # as with madebyollin/sdxl-vae-fp16-fix in vae/
    _edit_json(fixed / "vae" / "config.json", force_upcast=False)
    assert load_model(str(fixed), device="cpu", dtype="float16").vae.dtype == torch.float16

