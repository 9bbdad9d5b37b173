"""Qwen-Image-Edit (2509/2511 and the first release) on the tiny random-weight model: built
offline, told by its pipeline class, loaded through the model loader with every part in place
and mismatched parts refused; method ``instruct`` unmasked equals QwenImageEditPlusPipeline and
QwenImageEditPipeline; the empty instruction finds no area; an empty mask keeps the photo;
outside the mask every pixel is the photo's; the same seed gives the same bytes; once in
bfloat16.

The pipelines are built and sized as tests/engine/qwen_pipeline.py says.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from engine import backbones, families, masks
from engine.backbones.flux2 import pack
from engine.backbones.qwen_image import QwenImageEdit
from engine.errors import InputError, ModelError
from engine.imaging import load_photo
from engine.models import load_model
from engine.params import EditParams
from engine.session import EditSession
from final_latents import FinalLatents
from qwen_pipeline import at_photo_size, edit_pipeline
from test_instruct import (INSTRUCTION, assert_an_empty_mask_keeps_the_photo,
                           assert_the_empty_instruction_finds_no_area)

SIDE = 78  # a 96x64 photo's working size at this resolution is its own: 12x8 latent cells
FAST = EditParams(steps=2, resolution=SIDE, mask_samples=1, seed=0)


@pytest.fixture(scope="module")
def qwen(tiny_qwen_edit_path):
    return load_model("tiny-qwen-edit", device="cpu")  # the built-in name of that folder


@pytest.fixture(scope="module")
def photo(samples_dir):
    cat = load_photo(samples_dir / "chelsea.png").rgb
    return np.asarray(Image.fromarray(cat).resize((96, 64), Image.Resampling.LANCZOS))


@pytest.fixture(scope="module")
def box(photo):
    mask = np.zeros(photo.shape[:2], np.float32)
    mask[16:48, 40:80] = 1.0
    return mask


def test_tiny_qwen_edit_loads_through_the_model_loader(tiny_qwen_edit_path):
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel
    from PIL import Image
    from transformers import Qwen2_5_VLForConditionalGeneration

    m = load_model(str(tiny_qwen_edit_path), device="cpu")
    assert (m.family, m.prediction_type, m.unet) == ("qwen-image-edit-plus", "flow", None)
    assert type(m.transformer) is QwenImageTransformer2DModel
    assert type(m.vae) is AutoencoderKLQwenImage
    assert type(m.text_encoder) is Qwen2_5_VLForConditionalGeneration
    assert m.text_encoders == (m.text_encoder,)
    modules = (m.transformer, m.vae, m.text_encoder)
    assert not any(module.training for part in modules for module in part.modules())
    # the tokenizer's vision tokens are the ones the text encoder looks for
    config = m.text_encoder.config
    assert m.tokenizer.convert_tokens_to_ids(
        ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>"]) == [
        config.vision_start_token_id, config.image_token_id, config.vision_end_token_id]
    # the photo as the vision tower sees it: 14 px patches, 2x2 of them merged into one token
    seen = m.image_processor(images=[Image.new("RGB", (56, 84))], return_tensors="pt")
    assert seen["image_grid_thw"].tolist() == [[1, 6, 4]]
    mean, std = m.vae.config.latents_mean, m.vae.config.latents_std
    assert mean != [0.0] * 4 and std != [1.0] * 4  # the normalisation is not a no-op here
    backbone = backbones.for_model(m)
    assert type(backbone) is QwenImageEdit and backbone.methods == {"instruct"}
    assert (backbone.native_side, backbone.latent_factor, backbone.size_multiple) == (1024, 8, 8)
    assert backbone.defaults == {"steps": 40, "guidance": 4.0}  # 2509/2511's model cards
    first = backbones.for_model(dataclasses.replace(m, family="qwen-image-edit"))
    assert first.defaults == {"steps": 50, "guidance": 4.0}  # the first release's


def test_qwen_edit_folders_are_told_by_their_pipeline_and_mismatched_parts_are_refused(
        tiny_qwen_edit_path, tmp_path):
    folder = tmp_path / "qwen"
    shutil.copytree(tiny_qwen_edit_path, folder)
    index = folder / "model_index.json"
    for pipeline, family in (("QwenImageEditPipeline", "qwen-image-edit"),
                             ("QwenImageEditInpaintPipeline", "qwen-image-edit"),
                             ("QwenImageEditPlusPipeline", "qwen-image-edit-plus")):
        index.write_text(json.dumps({**json.loads(index.read_text()), "_class_name": pipeline}))
        assert families.folder_family(folder) == family

    def edit(component, **changes):
        path = folder / component / "config.json"
        original = path.read_text()
        path.write_text(json.dumps({**json.loads(original), **changes}))
        return lambda: path.write_text(original)

    restore = edit("transformer", joint_attention_dim=32)
    with pytest.raises(ModelError, match="qwen: the transformer's joint_attention_dim is 32 but "
                                         "the text encoders give 16; the components do not"):
        load_model(str(folder), device="cpu")
    restore()
    restore = edit("vae", z_dim=16)  # Qwen-Image's own VAE with a tiny transformer
    with pytest.raises(ModelError, match=r"qwen: the transformer takes 16 latent channels but the "
                                         r"VAE gives 16 \(64 as 2x2 patches\); the components"):
        load_model(str(folder), device="cpu")
    restore()
    restore = edit("transformer", out_channels=16)
    with pytest.raises(ModelError, match="qwen: the transformer gives 16 latent channels but the "
                                         "VAE takes 4; the components do not"):
        load_model(str(folder), device="cpu")
    restore()
    shutil.rmtree(folder / "processor")
    with pytest.raises(ModelError, match="not a complete Qwen-Image-Edit folder: missing processor"):
        load_model(str(folder), device="cpu")


@pytest.mark.parametrize("family", ["qwen-image-edit-plus", "qwen-image-edit"])
def test_unmasked_it_is_the_familys_edit_pipeline(qwen, photo, family):
    """QwenImageEdit(Plus)Pipeline(image=photo, prompt=instruction) with true CFG against the
    empty text from the same noise: the same final latent."""
    model = dataclasses.replace(qwen, family=family)
    params = FAST.replace(guidance=4.0, seed=3)
    session = FinalLatents(model, photo)
    [ours] = session.run("instruct", "", INSTRUCTION, None, params)
    final = session.finals[0]
    assert final.shape == (1, 16, 8, 12) and ours.stats["unet_evals"] == {"decode": 2 * 2}
    noise = torch.randn(final.shape, generator=torch.Generator().manual_seed(params.seed))
    with at_photo_size(photo.shape[0] * photo.shape[1]):
        theirs = edit_pipeline(model)(
            image=Image.fromarray(photo), prompt=INSTRUCTION, negative_prompt="",
            true_cfg_scale=params.guidance, num_inference_steps=params.steps,
            latents=pack(noise)[0], output_type="latent").images
    assert torch.allclose(pack(final)[0], theirs, atol=1e-4)
    assert float(theirs.abs().max()) > 0.5


def test_the_empty_instruction_finds_no_area_and_a_real_one_does(qwen, photo):
    assert assert_the_empty_instruction_finds_no_area(qwen, photo, FAST).min() < 0.5


def test_an_empty_mask_returns_the_photo_byte_for_byte(qwen, photo):
    assert_an_empty_mask_keeps_the_photo(qwen, photo, FAST, 4.0)  # with true CFG


def test_outside_the_mask_the_photo_stays_and_the_same_seed_gives_the_same_bytes(qwen, photo, box):
    session = EditSession(qwen, photo)
    runs = [session.run("instruct", "", INSTRUCTION, box, FAST.replace(seed=seed))[0]
            for seed in (5, 5, 6)]
    kept = masks.paste_alpha(box, runs[0].params.feather) == 0
    assert kept.mean() > 0.3 and np.array_equal(runs[0].image[kept], photo[kept])
    assert np.abs(runs[0].image[box > 0].astype(int) - photo[box > 0]).mean() > 5
    assert np.array_equal(runs[0].image, runs[1].image)
    assert not np.array_equal(runs[0].image, runs[2].image)
    assert runs[0].method == "instruct" and runs[0].stats["unet_evals"] == {"decode": 2 * 2}  # true CFG


def test_it_runs_in_bfloat16_on_the_cpu(tiny_qwen_edit_path, photo, box):
    model = load_model(str(tiny_qwen_edit_path), device="cpu", dtype="bfloat16")
    assert model.transformer.dtype == model.text_encoder.dtype == model.vae.dtype == torch.bfloat16
    model.vae.float()  # its 3D convolutions take about 10 s each in bfloat16 on a CPU
    [result] = EditSession(model, photo).run("instruct", "", INSTRUCTION, box,
                                             FAST.replace(guidance=4.0))
    kept = masks.paste_alpha(result.mask, result.params.feather) == 0
    assert np.array_equal(result.image[kept], photo[kept]) and not np.array_equal(result.image, photo)
