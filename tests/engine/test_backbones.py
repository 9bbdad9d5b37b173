"""The backbone seam: the SD backbone is the raw diffusers calls, the parameterisations convert
in one place, guidance has one formula, conditioning batches like tensors."""

from pathlib import Path

import numpy as np
import pytest
import torch

from engine import backbones
from engine.backbones import Conditioning, classifier_free, to_noise, to_velocity
from engine.backbones.sd import StableDiffusion
from engine.errors import ModelError
from engine.runtime import RunContext

METHODS_DIR = Path(__file__).resolve().parents[2] / "engine" / "methods"


def test_predict_is_the_raw_unet_call_and_predict_noise_counts_it(tiny_model):
    backbone = backbones.for_model(tiny_model)
    assert isinstance(backbone, StableDiffusion) and backbone.prediction_type == "epsilon"
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn((2, 4, 8, 8), generator=generator)
    embeds = torch.randn((1, 77, tiny_model.unet.config.cross_attention_dim), generator=generator)
    with torch.no_grad():
        raw = tiny_model.unet(latents, 500, encoder_hidden_states=embeds.expand(2, -1, -1)).sample
    cond = Conditioning(embeds).expand(2)
    assert torch.equal(backbone.predict(latents, 500, cond), raw)
    ctx = RunContext(tiny_model, backbone=backbone)
    with ctx.timed("decode"):
        assert torch.equal(ctx.predict_noise(latents, 500, Conditioning(embeds), 0.5), raw)
    assert ctx.unet_evals == {"decode": 2}


def test_encode_text_is_the_text_encoder_on_the_padded_tokens(tiny_model):
    backbone = backbones.for_model(tiny_model)
    cond, note = backbone.encode_text("a photo of a cat")
    tokens = tiny_model.tokenizer("a photo of a cat", padding="max_length", truncation=True,
                                  max_length=tiny_model.tokenizer.model_max_length,
                                  return_tensors="pt").input_ids
    with torch.no_grad():
        expected = tiny_model.text_encoder(tokens)[0]
    assert note is None and torch.equal(cond.embeds, expected)
    assert torch.equal(backbone.empty().embeds, backbone.encode_text("")[0].embeds)
    _, note = backbone.encode_text(" ".join(["cat"] * 100))
    assert note and "longer than the text encoder's 77 tokens" in note


def test_latents_round_trip_through_the_vae_at_the_latent_factor(tiny_model):
    backbone = backbones.for_model(tiny_model)
    pixels = np.full((64, 96, 3), 128, np.uint8)
    latent = backbone.encode_image(pixels)
    factor = backbone.latent_factor
    assert latent.shape[-2:] == (64 // factor, 96 // factor)
    assert backbone.decode(latent).shape == (64, 96, 3)
    assert backbone.native_side ** 2 == backbone.native_area
    assert backbone.methods == {"diffedit", "blended", "sdedit", "p2p", "pnp"}


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "flow"])
def test_to_noise_and_to_velocity_invert_each_other(kind):
    generator = torch.Generator().manual_seed(1)
    x0, eps = torch.randn((2, 4, 6, 6), generator=generator).unbind(0)
    for level in (0.05, 0.3, 0.9):
        if kind == "flow":  # x_s = (1 - s) x0 + s eps, u = eps - x0
            x, native = (1 - level) * x0 + level * eps, eps - x0
        else:  # x_t = sqrt(a) x0 + sqrt(1 - a) eps ; v = sqrt(a) eps - sqrt(1 - a) x0
            x = level**0.5 * x0 + (1 - level) ** 0.5 * eps
            native = eps if kind == "epsilon" else level**0.5 * eps - (1 - level) ** 0.5 * x0
        assert torch.allclose(to_noise(native, x, kind, level), eps, atol=1e-5)
        assert torch.allclose(to_velocity(eps, x, kind, level), native, atol=1e-5)
    with pytest.raises(ValueError, match="unknown prediction type"):
        to_noise(eps, x0, "sample", 0.5)


def test_guidance_has_one_formula_and_the_methods_do_not_write_it():
    u, c = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.0])
    assert torch.equal(classifier_free(u, c, 7.5), u + 7.5 * (c - u))
    assert torch.equal(classifier_free(u, c, 1.0), c)
    for path in METHODS_DIR.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "guidance * (" not in text and ".unet" not in text, path.name


def test_conditioning_batches_like_its_tensors_and_unknown_families_are_refused(tiny_model):
    a = Conditioning(torch.zeros((1, 3, 2)), torch.zeros((1, 5)), {"ids": torch.zeros((1, 3))})
    b = Conditioning(torch.ones((1, 3, 2)), torch.ones((1, 5)), {"ids": torch.ones((1, 3))})
    both = Conditioning.cat([a.expand(2), b])
    assert both.batch == 3 and both.pooled.shape == (3, 5) and both.extra["ids"].shape == (3, 3)
    assert torch.equal(both.embeds[2], b.embeds[0])
    import dataclasses

    with pytest.raises(ModelError, match="no backbone for the model family 'flux2'"):
        backbones.for_model(dataclasses.replace(tiny_model, family="flux2"))
