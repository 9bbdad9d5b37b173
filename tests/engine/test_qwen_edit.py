"""Qwen-Image-Edit on the tiny random-weight model: built offline, told by its pipeline class,
loaded through the model loader with every part in place, and mismatched parts refused."""

from __future__ import annotations

import json
import shutil

import pytest

from engine import backbones, families
from engine.errors import ModelError
from engine.models import load_model


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
    with pytest.raises(ModelError, match="no backbone for the model family 'qwen-image-edit-plus'"):
        backbones.for_model(m)


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
