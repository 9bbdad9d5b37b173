"""FLUX.2 klein on the tiny random-weight klein, loaded through the same loader as a real one:
family detection, text and latents equal to diffusers' pipeline, SDEdit equal to
Flux2KleinPipeline (distilled, and base with true CFG), inversion against an analytic
transformer and the CLI. The methods' invariants and bfloat16 runs, shared by every flow family,
are in test_flow_families.

Where the algorithms differ: diffusers' Flux2KleinInpaintPipeline also gives the transformer the
photo's latent as reference tokens (klein's image conditioning) beside the latent it blends; our
masked decoding blends the same way (the noised photo at the next timestep after every step, the
clean photo after the last) but without reference tokens, so masked runs are compared by their
invariants, not with that pipeline.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import cli, families
from engine.backbones import for_model
from engine.backbones.flux2 import Flux2Klein, patchify
from engine.params import EditParams
from engine.runtime import RunContext
from engine.session import EditSession
from final_latents import FinalLatents

FAST = EditParams(steps=4, mask_samples=2)  # 3 encoded steps at strength 0.8


@pytest.fixture(scope="module")
def klein_path(tiny_flux2_path) -> Path:
    return tiny_flux2_path


@pytest.fixture(scope="module")
def klein(tiny_flux2):
    return tiny_flux2


@pytest.fixture(scope="module")
def photo(cat128):
    return cat128


def _pipeline(model, distilled: bool = True):
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline

    pipe = Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(model.scheduler_config),
        vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
        transformer=model.transformer, is_distilled=distilled)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_klein_is_detected_from_its_model_index_and_loaded_in_eval_mode(klein, klein_path, photo):
    assert families.folder_family(klein_path) == "flux2-klein" == klein.family
    backbone = for_model(klein)
    assert isinstance(backbone, Flux2Klein) and backbone.prediction_type == "flow"
    assert backbone.methods == {"diffedit", "blended", "sdedit", "flowedit", "instruct", "p2p", "pnp"}
    assert backbone.distilled
    assert (backbone.native_side, backbone.latent_factor, backbone.size_multiple) == (128, 16, 16)
    parts = (klein.transformer, klein.vae, klein.text_encoder)
    assert not any(module.training for part in parts for module in part.modules())
    defaults = EditSession(klein, photo).default_params("diffedit")
    assert (defaults.steps, defaults.guidance) == (4, 1.0)


def test_a_hub_id_loads_from_the_hugging_face_cache(klein_path, hub_cache):
    from engine.models import load_model

    # The test's own cache: huggingface_hub's constants.HF_HUB_CACHE is fixed at its first
    # import, which may have happened inside another test's cache
    repo = hub_cache / "models--someone--tiny-klein"
    commit = "1" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(klein_path, repo / "snapshots" / commit)
    model = load_model("someone/tiny-klein", device="cpu")
    assert model.name == "someone/tiny-klein" and model.family == "flux2-klein"


@pytest.mark.slow
def test_text_and_image_latents_are_the_pipelines(klein, photo):
    backbone = for_model(klein)
    pipe = _pipeline(klein)
    cond, note = backbone.encode_text("a photo of a cat")
    embeds, ids = pipe.encode_prompt("a photo of a cat", device="cpu")
    assert note is None and torch.equal(cond.embeds, embeds) and torch.equal(cond.extra["text_ids"], ids)
    latent = backbone.encode_image(photo)
    pixels = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    assert torch.allclose(latent, pipe._encode_vae_image(pixels, None), atol=1e-5)
    # The batch-norm statistics are applied (the tiny VAE's are not the identity) and undone.
    raw = pipe.vae.encode(pixels).latent_dist.mode()
    assert not torch.allclose(latent, patchify(raw), atol=0.05)
    assert torch.allclose(backbone.to_vae_latents(latent), raw, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("distilled", [True, False])
def test_sdedit_without_a_mask_equals_the_klein_pipeline_from_the_noised_photo(klein, photo, distilled):
    """Flux2KleinPipeline started from our noised photo latent on the tail of the same sigmas
    (it shifts them with mu from the full step count, as our schedule does): img2img, which
    diffusers has no separate klein pipeline for. Base klein uses true CFG against the empty text."""
    model = dataclasses.replace(klein, distilled=distilled)
    params = EditParams(steps=4, strength=0.75, guidance=1.0 if distilled else 4.0, seed=3)
    session = FinalLatents(model, photo)
    ours = session.run("sdedit", "", "a dog on a sofa", None, params)[0]
    schedule = session.schedule(params.steps, session.geometry(params))
    z0 = session.image_latent(session.geometry(params))
    noise = torch.randn(z0.shape, generator=torch.Generator("cpu").manual_seed(params.seed))
    start = schedule.noised(z0, noise, schedule.tail(params.encode_steps)[0])
    sigmas = np.linspace(1.0, 1 / params.steps, params.steps)[params.steps - params.encode_steps:]
    theirs = _pipeline(model, distilled)(
        prompt="a dog on a sofa", latents=start, sigmas=list(sigmas),
        num_inference_steps=params.steps, guidance_scale=params.guidance, height=128, width=128,
        output_type="latent").images
    backbone = session.backbone
    assert torch.allclose(backbone.to_vae_latents(session.finals[0]), theirs, atol=1e-4)
    assert ours.stats["unet_evals"]["decode"] == params.encode_steps * (1 if distilled else 2)
    assert np.abs(ours.image.astype(int) - photo.astype(int)).mean() > 5  # the photo changed


class AnalyticTransformer(torch.nn.Module):
    """Stands in for klein's transformer with the exact velocity of Gaussian data
    x0 ~ N(0.2, 0.5^2) per token value, read from the packed tokens and the timestep in [0, 1]
    exactly as the real one is called."""

    def forward(self, hidden_states, timestep, **_):
        s = timestep.float().view(-1, 1, 1)
        variance = (1 - s) ** 2 * 0.25 + s**2
        x = hidden_states.float()
        return ((s - (1 - s) * 0.25) * (x - (1 - s) * 0.2) / variance - 0.2,)


@pytest.mark.slow
def test_inversion_then_decoding_reconstructs_the_latent_through_the_klein_packing(klein, photo):
    model = dataclasses.replace(klein, transformer=AnalyticTransformer())
    errors = []
    for steps in (8, 32):
        session = EditSession(model, photo)
        params = EditParams(steps=steps, strength=1.0)
        geometry = session.geometry(params)
        ctx = RunContext(model, backbone=session.backbone)
        schedule = session.schedule(steps, geometry)
        trajectory = session.encode(ctx, geometry, schedule, params)
        from engine.methods.diffedit import masked_decode

        everywhere = torch.ones(trajectory[0].shape[-2:])
        text = session.embed("")
        final = masked_decode(ctx, schedule, trajectory, everywhere, text, text, 1.0, 0.0, 0)
        errors.append(float((final - trajectory[0]).abs().max()))
    # Euler is first order: 4x the steps cut the error about 4x (0.92 -> 0.10 here).
    assert errors[1] < errors[0] / 3 and errors[1] < 0.15, errors


@pytest.mark.slow
def test_a_guidance_set_on_a_distilled_klein_is_ignored_with_a_warning(klein, photo):
    session = EditSession(klein, photo)
    [result] = session.run("sdedit", "", "a dog", None, FAST.replace(guidance=5.0))
    assert result.params.guidance == 1.0 and result.stats["unet_evals"]["decode"] == 3
    assert any("guidance 5 was ignored" in w for w in result.warnings)


@pytest.mark.slow
def test_the_cli_edits_with_the_klein_folder(klein_path, tmp_path, samples_dir):
    out, report = tmp_path / "out.png", tmp_path / "report.json"
    photo = samples_dir / "chelsea.png"
    code = cli.main(["edit", str(photo), "-o", str(out), "--source", "a cat", "--target", "a dog",
                     "--mask-samples", "8", "--model", str(klein_path), "--quiet",
                     "--report", str(report)])
    assert code == 0 and out.is_file()
    data = json.loads(report.read_text())
    assert data["params"]["steps"] == 4 and data["unet_evals"] == {"mask": 16, "encode": 3, "decode": 3}
    code = cli.main(["edit", str(photo), "-o", str(tmp_path / "p2p.png"), "--source", "a cat",
                     "--target", "a dog", "--method", "p2p", "--blend-words", "dog",
                     "--model", str(klein_path), "--quiet", "--report", str(report)])
    assert code == 0 and (tmp_path / "p2p.png").is_file()
    # the photo inverted through all 4 steps, then two rows (source and target) a step
    assert json.loads(report.read_text())["unet_evals"] == {"encode": 4, "decode": 8}
    code = cli.main(["edit", str(photo), "-o", str(tmp_path / "fe.png"), "--source", "a cat",
                     "--target", "a dog", "--method", "flowedit", "--n-avg", "2",
                     "--model", str(klein_path), "--quiet"])
    assert code == 0 and (tmp_path / "fe.png").is_file()
