"""Instruction editing (method ``instruct``) on the tiny random-weight FLUX.2 klein, loaded
through the real loader: unmasked it is Flux2KleinPipeline(image=photo, prompt=instruction);
the empty instruction finds no area; an empty mask keeps the photo; outside the mask every pixel
is the photo's; the same seed gives the same bytes; the CLI and batch take --instruction and the
manifest's ``instruction`` column; once in bfloat16."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine import batch, cli, masks
from engine.backbones import for_model
from engine.errors import Cancelled, InputError
from engine.methods import blended, diffedit, instruct
from engine.params import EditParams
from engine.runs import RunRequest, execute
from engine.runtime import RunContext
from engine.session import EditSession
from final_latents import FinalLatents
from test_flow_families import box  # noqa: F401 - the flow tests' mask on the 16 px grid
from test_flux2 import _pipeline, klein, klein_path, photo  # noqa: F401 - the klein fixtures

# The tiny klein reads its texts weakly: at seed 0 and 8 samples (4 at 128 px in bfloat16) the
# instruction's contrast clears the noise floor on the cat.
FAST = EditParams(steps=4, mask_samples=8, seed=0)
INSTRUCTION = "make the cat blue"


def test_the_empty_instruction_finds_no_area_and_a_real_one_does(klein, photo):
    assert_the_empty_instruction_finds_no_area(klein, photo, FAST).min() < 0.2


def assert_the_empty_instruction_finds_no_area(model, photo, params: EditParams):
    """The empty instruction's heatmap is all zero, a real one's is not flat (returned); an
    instruction of spaces is refused by name."""
    session = EditSession(model, photo)
    geometry = session.geometry(params)
    ctx = RunContext(model, backbone=session.backbone)
    schedule = session.schedule(params.steps, geometry)
    z0 = session.image_latent(geometry)
    empty = diffedit.estimate_heatmap(ctx, schedule, z0, *instruct.mask_conditions(
        session, geometry, "", ""), 1, 0.5, 0, 8)  # one draw: any is exactly zero
    assert not empty.any()
    heatmap = session.estimate_mask("", INSTRUCTION, params, method="instruct")
    assert heatmap.shape == photo.shape[:2] and heatmap.max() > 0.9
    assert session.mask_stats["unet_evals"] == {"mask": 2 * params.mask_samples}
    with pytest.raises(InputError, match="the instruction is empty: say what to change"):
        session.run("instruct", "", " ", None, params)
    return heatmap


def test_an_empty_mask_returns_the_photo_byte_for_byte(klein, photo):
    assert_an_empty_mask_keeps_the_photo(klein, photo, FAST, 1.0)


def assert_an_empty_mask_keeps_the_photo(model, photo, params: EditParams, guidance: float):
    """An empty mask is refused by name; the loop itself, with guidance ``guidance``, keeps the
    photo's latent outside the (here empty) mask at every step, and the paste-back its pixels."""
    session = EditSession(model, photo)
    empty = np.zeros(photo.shape[:2], np.float32)
    with pytest.raises(InputError, match="the mask is empty.* or clear it to have one found"):
        session.run("instruct", "", INSTRUCTION, empty, params, {"auto_mask": True})
    geometry = session.geometry(params)
    ctx = RunContext(model, backbone=session.backbone)
    schedule = session.schedule(params.steps, geometry)
    z0 = session.image_latent(geometry)
    latent = blended.generate(ctx, schedule, schedule.timesteps, z0,
                              torch.from_numpy(geometry.mask_to_latent(empty)),
                              *instruct.mask_conditions(session, geometry, "", INSTRUCTION),
                              guidance, 0.0, [0], False, 8)
    assert torch.equal(latent, z0)
    result = session.finish(ctx, geometry, latent, empty, session.resolved(params), "",
                            INSTRUCTION, "instruct")
    assert np.array_equal(result.image, photo)


def test_outside_the_mask_every_pixel_is_the_original(klein, photo, box):
    [result] = EditSession(klein, photo).run("instruct", "", INSTRUCTION, box, FAST)
    kept = masks.paste_alpha(result.mask, result.params.feather) == 0
    assert kept.mean() > 0.3 and np.array_equal(result.image[kept], photo[kept])
    assert np.abs(result.image[box > 0].astype(int) - photo[box > 0]).mean() > 5
    assert result.method == "instruct" and result.target == INSTRUCTION
    assert result.stats["unet_evals"] == {"decode": FAST.steps}


def test_each_step_shows_a_preview_and_cancel_stops_within_one_step(klein, photo, box):
    steps = []

    def on_step(stage, index, total, preview):
        steps.append((stage, index, total, None if preview is None else preview.shape))

    session = EditSession(klein, photo)
    with pytest.raises(Cancelled):
        session.run("instruct", "", INSTRUCTION, box, FAST, on_step=on_step,
                    should_stop=lambda: len(steps) >= 1)
    assert steps == [("decode", 1, FAST.steps, (8, 8, 3))]  # the 8x8 latent grid, mapped to RGB


@pytest.mark.slow
def test_same_seed_same_bytes(klein, photo, box):
    runs = [EditSession(klein, photo).run("instruct", "", INSTRUCTION, box, FAST.replace(seed=seed))[0]
            for seed in (5, 5, 6)]
    assert np.array_equal(runs[0].image, runs[1].image)
    assert not np.array_equal(runs[0].image, runs[2].image)


@pytest.mark.slow
@pytest.mark.parametrize("distilled", [True, False])
def test_unmasked_it_is_the_klein_pipeline_with_the_photo_as_reference(klein, photo, distilled):
    """Flux2KleinPipeline(image=photo, prompt=instruction) from the same seed's noise: the same
    final latent (a base klein with true CFG against the empty text, the reference in both)."""
    import dataclasses

    model = dataclasses.replace(klein, distilled=distilled)
    params = EditParams(steps=4, guidance=1.0 if distilled else 4.0, seed=3)
    session = FinalLatents(model, photo)
    [ours] = session.run("instruct", "", INSTRUCTION, None, params)
    theirs = _pipeline(model, distilled)(
        image=Image.fromarray(photo), prompt=INSTRUCTION, num_inference_steps=params.steps,
        guidance_scale=params.guidance, generator=torch.Generator("cpu").manual_seed(params.seed),
        output_type="latent").images
    assert torch.allclose(session.backbone.to_vae_latents(session.finals[0]), theirs, atol=1e-4)
    assert ours.stats["unet_evals"] == {"decode": params.steps * (1 if distilled else 2)}
    # The reference tokens matter: without them the same noise and text end elsewhere.
    plain = _pipeline(model, distilled)(
        prompt=INSTRUCTION, num_inference_steps=params.steps, guidance_scale=params.guidance,
        height=128, width=128, generator=torch.Generator("cpu").manual_seed(params.seed),
        output_type="latent").images
    assert float((plain - theirs).abs().max()) > 10 * 1e-4


@pytest.mark.slow
def test_auto_mask_is_found_once_for_every_variation_and_kept_outside(klein, photo):
    request = RunRequest(photo, "cat", "instruct", "", INSTRUCTION, None, FAST,
                         {"auto_mask": True}, variations=2)
    session = EditSession(klein, photo)
    results = execute(request, lambda key, pixels: session)
    first, second = results
    assert first.heatmap is not None and first.heatmap is second.heatmap
    assert first.stats["unet_evals"] == {"mask": 16, "decode": 4}
    assert second.stats["unet_evals"] == {"decode": 4}
    assert 0 < first.mask.mean() < 1 and np.array_equal(first.mask, second.mask)
    kept = masks.paste_alpha(first.mask, first.params.feather) == 0
    assert np.array_equal(first.image[kept], photo[kept])
    assert not np.array_equal(first.image, second.image)


def test_only_backbones_that_take_a_reference_image_run_it(klein, tiny_model, photo):
    assert "instruct" in for_model(klein).methods
    with pytest.raises(InputError, match="Instruction edit does not run on"):
        EditSession(tiny_model, photo).run("instruct", "", INSTRUCTION, None, FAST)


@pytest.mark.slow
def test_the_cli_edits_with_an_instruction_and_writes_its_mask(klein_path, tmp_path, samples_dir,
                                                               capsys):
    photo = samples_dir / "chelsea.png"
    out, heat, report = tmp_path / "out.png", tmp_path / "heat.png", tmp_path / "r.json"
    model = ["--model", str(klein_path), "--quiet"]
    code = cli.main(["edit", str(photo), "-o", str(out), "--method", "instruct", "--instruction",
                     INSTRUCTION, "--mask", "auto", "--mask-samples", "8", "--save-heatmap",
                     str(heat), "--report", str(report), *model])
    assert code == 0 and out.is_file() and heat.is_file()
    assert json.loads(report.read_text())["unet_evals"] == {"mask": 16, "decode": 4}
    before, after = np.asarray(Image.open(photo).convert("RGB")), np.asarray(Image.open(out))
    assert before.shape == after.shape and (before == after).all(axis=2).mean() > 0.2
    code = cli.main(["mask", str(photo), "-o", str(tmp_path / "m.png"), "--method", "instruct",
                     "--instruction", INSTRUCTION, "--mask-samples", "8", *model])
    assert code == 0 and (tmp_path / "m.png").is_file()
    capsys.readouterr()


@pytest.mark.parametrize("args,message", [
    (["--method", "instruct"], "error: --instruction is missing: say what to change"),
    (["--method", "instruct", "--target", "a dog"],
     "error: --target does not apply to --method instruct: give --instruction TEXT"),
    (["--instruction", "make it red"],
     "error: --instruction does not apply to --method diffedit: give --target TEXT"),
    (["--method", "blended", "--target", "a dog", "--mask", "auto"],
     "error: --mask auto: Blended Latent Diffusion finds no mask of its own"),
])
def test_cli_mistakes_exit_2_with_one_error_line(tmp_path, samples_dir, capsys, args, message):
    code = cli.main(["edit", str(samples_dir / "chelsea.png"), "-o", str(tmp_path / "o.png"),
                     "--model", "tiny", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(message), err
    assert not (tmp_path / "o.png").exists()


def test_a_manifest_gives_instruct_items_their_instruction(tmp_path, samples_dir):
    photo = samples_dir / "chelsea.png"
    lines = [{"image": str(photo), "method": "instruct", "instruction": INSTRUCTION,
              "output": "a.png"},
             {"image": str(photo), "target": "a dog", "output": "b.png"}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(line) for line in lines))
    items = batch.read_manifest(manifest, tmp_path / "out", batch.Defaults(), "tiny")
    assert [(i.method, i.target) for i in items] == [("instruct", INSTRUCTION), ("diffedit", "a dog")]
    for line, field, message in (
            ({"method": "instruct", "target": "a dog"}, "target", "method instruct takes no target"),
            ({"target": "a dog", "instruction": "make it red"}, "instruction",
             "method diffedit takes no instruction"),
            ({"method": "instruct"}, "instruction", "empty: say what to change")):
        manifest.write_text(json.dumps({"image": str(photo), **line}))
        with pytest.raises(InputError, match=f"m.jsonl line 1, field '{field}': {message}"):
            batch.read_manifest(manifest, tmp_path / "out", batch.Defaults(), "tiny")
    command = batch.command_line("tiny", "instruct", "", INSTRUCTION, EditParams(), {})
    assert f"--method instruct --instruction '{INSTRUCTION}'" in command


@pytest.mark.slow
def test_it_runs_in_bfloat16_on_the_cpu(klein_path, photo, box):
    from engine.models import load_model

    model = load_model(str(klein_path), device="cpu", dtype="bfloat16")
    assert model.transformer.dtype == torch.bfloat16
    [result] = EditSession(model, photo).run("instruct", "", INSTRUCTION, box,
                                             EditParams(steps=3, resolution=64))
    kept = masks.paste_alpha(result.mask, result.params.feather) == 0
    assert np.array_equal(result.image[kept], photo[kept]) and not np.array_equal(result.image, photo)
    heatmap = EditSession(model, photo).estimate_mask("", INSTRUCTION, EditParams(
        steps=3, mask_samples=4, seed=0), method="instruct")
    assert np.isfinite(heatmap).all() and heatmap.max() > 0.9 and heatmap.min() < 0.5
