"""SD3.5 on the tiny random-weight model: loading, family detection, and parity of the text
conditioning, the latents and the velocity with diffusers' own SD3 pipeline, in float32 and
bfloat16."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from engine import backbones, families
from engine.backbones.sd3 import StableDiffusion3
from engine.errors import ModelError
from engine.models import load_model
from tests.engine.flow_parity import in_precision, random_picture, recorded

TEXT = "a photo of a cat wearing a red hat"


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def sd3(request, tiny_sd3, tiny_sd3_path):
    """The tiny SD3.5 loaded in each precision."""
    return in_precision(request.param, tiny_sd3, tiny_sd3_path)


def _pipeline(model, cls_name="StableDiffusion3Pipeline"):
    import diffusers

    return getattr(diffusers, cls_name)(
        transformer=model.transformer, vae=model.vae,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler.from_config(model.scheduler_config),
        text_encoder=model.text_encoder, tokenizer=model.tokenizer,
        text_encoder_2=model.text_encoder_2, tokenizer_2=model.tokenizer_2,
        text_encoder_3=model.text_encoder_3, tokenizer_3=model.tokenizer_3)


def test_tiny_sd3_loads_through_the_model_loader(tiny_sd3, tiny_sd3_path):
    from diffusers import SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, T5EncoderModel

    m = tiny_sd3
    assert (m.family, m.prediction_type, m.unet) == ("sd3", "flow", None)
    assert type(m.transformer) is SD3Transformer2DModel and m.denoiser is m.transformer
    assert [type(e) for e in m.text_encoders] == [CLIPTextModelWithProjection] * 2 + [T5EncoderModel]
    assert m.tokenizer.pad_token == "<|endoftext|>" and m.tokenizer_2.pad_token == "!"
    assert m.tokenizer_3("a cat").input_ids[-1] == m.tokenizer_3.eos_token_id == 1  # T5's </s>
    assert (m.vae.config.latent_channels, m.vae.config.shift_factor, m.vae.config.scaling_factor) == (
        16, 0.0609, 1.5305)
    assert m.scheduler_config["_class_name"] == "FlowMatchEulerDiscreteScheduler"
    modules = (m.transformer, m.vae, *m.text_encoders)
    assert not any(module.training for part in modules for module in part.modules())
    backbone = backbones.for_model(m)
    assert isinstance(backbone, StableDiffusion3) and backbone.prediction_type == "flow"
    assert (backbone.latent_factor, backbone.size_multiple, backbone.native_side) == (8, 16, 128)
    # Large's model-card defaults; a Medium or a Large Turbo is told apart by its name
    assert backbone.defaults == {"steps": 28, "guidance": 3.5} and not backbone.distilled
    by_name = load_model("tiny-sd3", device="cpu")
    assert by_name.family == "sd3" and by_name.source == str(tiny_sd3_path)
    assert torch.equal(by_name.transformer.pos_embed.proj.weight, m.transformer.pos_embed.proj.weight)


def _copy(folder, tmp_path, name):
    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


def _edit_json(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_sd3_folders_are_told_by_their_pipeline_and_mismatched_parts_are_refused(tiny_sd3_path, tmp_path):
    folder = _copy(tiny_sd3_path, tmp_path, "sd3")
    for pipeline in ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline",
                     "StableDiffusion3InpaintPipeline"):
        _edit_json(folder / "model_index.json", _class_name=pipeline)
        assert families.folder_family(folder) == "sd3"  # not SDXL, though it has a text_encoder_2
    _edit_json(folder / "transformer" / "config.json", joint_attention_dim=64)
    with pytest.raises(ModelError, match="sd3: the transformer's joint_attention_dim is 64 but "
                                         "the text encoders give 96; the components do not"):
        load_model(str(folder), device="cpu")
    shutil.rmtree(folder / "text_encoder_3")
    with pytest.raises(ModelError, match="not a complete SD3.5 folder: missing text_encoder_3"):
        load_model(str(folder), device="cpu")


def test_text_conditioning_equals_the_pipelines_encode_prompt(sd3):
    embeds, negative, pooled, negative_pooled = _pipeline(sd3).encode_prompt(
        TEXT, None, None, device=torch.device("cpu"), do_classifier_free_guidance=True)
    backbone = backbones.for_model(sd3)
    ours, note = backbone.encode_text(TEXT)
    assert note is None
    assert ours.embeds.shape == (1, 77 + 256, 96) and ours.pooled.shape == (1, 80)
    assert torch.equal(ours.embeds, embeds.float()) and torch.equal(ours.pooled, pooled.float())
    empty = backbone.empty()  # the pipeline's unconditional branch: the empty text, encoded
    assert torch.equal(empty.embeds, negative.float()) and torch.equal(empty.pooled, negative_pooled.float())
    assert not torch.equal(empty.embeds, ours.embeds)


def test_long_prompts_are_cut_with_a_note_per_encoder(tiny_sd3):
    backbone = backbones.for_model(tiny_sd3)
    _, note = backbone.encode_text(" ".join(["cat"] * 30) + " zebra")  # 95 T5 tokens, 33 CLIP
    assert note is None
    _, note = backbone.encode_text(" ".join(["cat"] * 80) + " zebra")
    assert "the CLIP text encoders' 77 tokens" in note and "zebra" in note and "T5" not in note
    _, note = backbone.encode_text(" ".join(["cat"] * 90) + " zebra")  # 270 T5 tokens
    assert note.count("zebra") == 2 and "the T5 text encoder's 256 tokens" in note


def test_latents_are_the_pipelines_vae_latents_shifted_and_scaled(tiny_sd3):
    from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3_img2img import retrieve_latents
    from PIL import Image

    pipe, backbone = _pipeline(tiny_sd3, "StableDiffusion3Img2ImgPipeline"), backbones.for_model(tiny_sd3)
    pixels = random_picture()
    vae = tiny_sd3.vae
    with torch.no_grad():
        image = pipe.image_processor.preprocess(Image.fromarray(pixels))
        # the pipeline draws from the encoder's distribution; its mode is the draw-free latent
        expected = retrieve_latents(vae.encode(image), sample_mode="argmax")
        expected = (expected - vae.config.shift_factor) * vae.config.scaling_factor
    latent = backbone.encode_image(pixels)
    assert latent.shape == (1, 16, 16, 12)
    assert torch.allclose(latent, expected, atol=1e-5)
    with torch.no_grad():  # the pipeline's decoding of a latent
        decoded = vae.decode(latent / vae.config.scaling_factor + vae.config.shift_factor).sample
        expected = pipe.image_processor.postprocess(decoded, output_type="np")[0]
    ours = backbone.decode(latent)
    assert ours.shape == (128, 96, 3) and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - np.round(expected * 255)).max() <= 1


def test_predict_is_the_velocity_the_pipeline_steps_with(sd3):
    """Two steps of the text-to-image pipeline without guidance: at each, our prediction is the
    transformer's output at the latents and scheduler timestep the pipeline used, and the
    pipeline's Euler step x + (s' - s) u with our u lands on its result (u = eps - x0: at the
    last step, s' = 0 and x - s u is the clean latent)."""
    pipe, backbone = _pipeline(sd3), backbones.for_model(sd3)
    start = torch.randn((1, 16, 16, 12), generator=torch.Generator().manual_seed(0))
    with recorded(sd3.transformer) as calls:
        final = pipe(TEXT, height=128, width=96, num_inference_steps=2, guidance_scale=1.0,
                     latents=start.to(sd3.dtype), output_type="latent").images
    cond, _ = backbone.encode_text(TEXT)
    timesteps, sigmas = pipe.scheduler.timesteps, pipe.scheduler.sigmas
    assert len(calls) == 2 and 0 < sigmas[1] < 1
    for (_args, kwargs, output), t in zip(calls, timesteps):
        ours = backbone.predict(kwargs["hidden_states"], t, cond)
        assert ours.dtype == torch.float32 and torch.equal(ours, output[0].float())
    last = calls[1][1]["hidden_states"].float()
    stepped = last + (sigmas[2] - sigmas[1]) * backbone.predict(last, timesteps[1], cond)
    tolerance = 1e-5 if sd3.dtype == torch.float32 else 2e-2
    assert torch.allclose(stepped, final.float(), atol=tolerance)


def test_memory_tiers_reach_the_transformer_and_loras_are_refused_by_family(tiny_sd3, tmp_path, monkeypatch):
    import copy

    import accelerate
    from safetensors.torch import save_file

    from engine import lora, memory
    from engine.errors import InputError

    streamed = []
    monkeypatch.setattr(accelerate, "cpu_offload",
                        lambda module, execution_device: streamed.append(module))
    model = dataclasses.replace(copy.deepcopy(tiny_sd3), device=torch.device("cuda"))
    memory.apply_tier(model, "offload")  # a transformer has no attention slicing to switch on
    assert model.max_batch == 2
    assert streamed == [model.transformer, model.vae, *model.text_encoders]
    file = tmp_path / "style.safetensors"
    save_file({"lora_unet_block.lora_down.weight": torch.zeros(2, 2)}, str(file))
    with pytest.raises(InputError, match="style.safetensors: this LoRA changes no layer of the "
                                         "loaded SD3.5 model"):
        lora.apply(tiny_sd3, [lora.LoraSpec(file)])

