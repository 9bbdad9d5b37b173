"""Blended Latent Diffusion on the tiny model and on a stand-in UNet: invariants for any weights."""

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from engine import cli, masks, methods
from engine.errors import Cancelled, InputError
from engine.imaging import read_metadata
from engine.inversion import Schedule
from engine.methods import blended
from engine.methods import options as method_options
from engine.params import EditParams
from engine.runtime import RunContext
from engine.session import EditSession
from engine.tiny_model import SD_SCHEDULER

FAST = EditParams(steps=6)


@pytest.fixture(scope="module")
def box(cat):
    mask = np.zeros(cat.rgb.shape[:2], np.float32)
    mask[60:200, 100:300] = 1.0
    return mask


def _outside(mask, feather):
    keep = masks.paste_alpha(mask, feather) == 0
    assert keep.sum() > 0.1 * keep.size  # the invariant below must cover real pixels
    return keep


def _changed(a, b):
    """Share of pixels whose colour differs."""
    return (a != b).any(axis=-1).mean()


def test_inpaint_keeps_outside_pixels_and_costs_two_evals_per_step_per_candidate(counted, cat, box):
    model, unet = counted
    results = EditSession(model, cat).run("blended", "a cat", "a dog", box, FAST.replace(seed=3),
                                          {"candidates": 2})
    assert len(results) == 2
    assert unet.evaluations == 2 * 6 * 2  # CFG, all 6 steps from noise, 2 candidates
    keep = _outside(box, results[0].params.feather)  # the photo's feather (FAST's is Auto)
    for result in results:
        assert result.image.shape == cat.rgb.shape and result.image.dtype == np.uint8
        assert np.array_equal(result.image[keep], cat.rgb[keep])
        assert _changed(result.image[box > 0], cat.rgb[box > 0]) > 0.5
        assert result.method == "blended" and result.options["candidates"] == 2
        assert result.stats["unet_evals"] == {"decode": 24}
        assert "rank" not in result.stats  # no CLIP model configured: unranked, in seed order
    assert [r.params.seed for r in results] == [3, 4]
    assert _changed(results[0].image[box > 0], results[1].image[box > 0]) > 0.5


def test_candidates_are_reproducible_per_seed_whatever_the_batch(tiny_model, cat, box):
    pair = EditSession(tiny_model, cat).run("blended", "", "a dog", box, FAST.replace(seed=5),
                                            {"candidates": 2})
    again = EditSession(tiny_model, cat).run("blended", "", "a dog", box, FAST.replace(seed=5),
                                             {"candidates": 2})
    # One candidate per UNet call (batch 2 = one CFG pair) must give the second candidate too.
    one_per_call = dataclasses.replace(tiny_model, max_batch=2)
    alone = EditSession(one_per_call, cat).run("blended", "", "a dog", box, FAST.replace(seed=6),
                                               {"candidates": 1})
    assert all(np.array_equal(a.image, b.image) for a, b in zip(pair, again))
    assert alone[0].params.seed == pair[1].params.seed == 6
    # Batch size changes float summation order in the UNet, so a pixel may round the other way.
    difference = np.abs(alone[0].image.astype(int) - pair[1].image)
    assert difference.max() <= 1 and (difference > 0).mean() < 0.001
    assert json.loads(pair[1].metadata()["diffedit"])["params"]["seed"] == 6


def test_candidates_beyond_one_batch_are_split_into_calls_and_progress_counts_them_all(counted, cat, box):
    model, unet = counted
    model = dataclasses.replace(model, max_batch=4)  # two CFG pairs per call
    seen = []
    results = EditSession(model, cat).run("blended", "", "a dog", box, FAST, {"candidates": 3},
                                          on_step=lambda *a: seen.append(a))
    assert len(results) == 3 and unet.evaluations == 3 * 2 * 6
    decode = [(i, n) for stage, i, n, _ in seen if stage == "decode"]
    # Two calls of 6 steps (2 candidates, then 1): counted in candidate-steps, as the plan does.
    assert decode == [(2 * i, 18) for i in range(1, 7)] + [(12 + i, 18) for i in range(1, 7)]
    assert methods.info("blended").step_plan(FAST, {"candidates": 3}, True) == {"decode": 18}


def test_background_keeps_the_subject_and_replaces_the_rest(tiny_model, cat, box):
    result = EditSession(tiny_model, cat).run("blended", "", "a beach", box, FAST.replace(feather=4),
                                              {"action": "background", "candidates": 1})[0]
    background = masks.invert(box)
    assert np.array_equal(result.mask, background)
    keep = _outside(background, result.params.feather)
    assert keep[box > 0].mean() > 0.8 and not keep[box == 0].any()
    assert np.array_equal(result.image[keep], cat.rgb[keep])
    assert _changed(result.image[box == 0], cat.rgb[box == 0]) > 0.5


@pytest.mark.parametrize("feather", [0, 4])
def test_extend_grows_the_canvas_with_the_original_pixels_in_place(tiny_model, cat, feather):
    options = method_options.from_dict(method_options.BlendedOptions, {
        "action": "extend", "candidates": 1, "extend_left": 24, "extend_top": 16, "extend_bottom": 9})
    ctx = RunContext(tiny_model)
    # No user mask: the new canvas alone is the area to generate.
    result = blended.run(EditSession(tiny_model, cat), ctx, "", "a garden", None,
                         FAST.replace(feather=feather), options)[0]
    height, width = cat.rgb.shape[:2]
    assert result.image.shape == (height + 25, width + 24, 3)
    original = result.image[16:16 + height, 24:24 + width]
    inset = feather  # the fade reaches `feather` px into the photo
    assert np.array_equal(original[inset:height - inset, inset:], cat.rgb[inset:height - inset, inset:])
    assert feather or np.array_equal(original, cat.rgb)
    new_area = result.mask > 0
    assert new_area.sum() == (height + 25) * (width + 24) - height * width
    # The new strip is generated, not the edge-repeated filler.
    filler = np.pad(cat.rgb, ((16, 9), (24, 0), (0, 0)), mode="edge")
    assert _changed(result.image[new_area], filler[new_area]) > 0.5
    assert result.stats["unet_evals"] == {"decode": 2 * 6}


def test_extend_unites_the_new_canvas_with_a_user_mask(tiny_model, cat, box):
    result = EditSession(tiny_model, cat).run(
        "blended", "", "a garden", box, FAST.replace(feather=0),
        {"action": "extend", "candidates": 1, "extend_right": 40})[0]
    assert result.image.shape == (300, 491, 3)
    assert result.mask[:, 451:].min() == 1 and np.array_equal(result.mask[:, :451], box)
    keep = box == 0
    assert np.array_equal(result.image[:, :451][keep], cat.rgb[keep])
    assert _changed(result.image[:, :451][box > 0], cat.rgb[box > 0]) > 0.5


def test_scribble_starts_from_the_painted_photo_at_the_strength(counted, cat, box):
    model, unet = counted
    red, blue = np.zeros_like(cat.rgb), np.zeros_like(cat.rgb)
    red[..., 0], blue[..., 2] = 255, 255
    spill = np.zeros(cat.rgb.shape[:2], np.float32)
    spill[40:220, 80:320] = 1.0  # the paint strokes go past the mask
    params = FAST.replace(steps=10, strength=0.5)
    images = []
    for paint in (red, blue):
        painted = blended.scribble_photo(cat.rgb, paint, spill, box)
        assert np.array_equal(painted[box == 0], cat.rgb[box == 0])
        assert np.array_equal(painted[box > 0], paint[box > 0])
        unet.evaluations = 0
        result = EditSession(model, painted).run("blended", "", "a red ball", box, params,
                                                 {"action": "scribble", "candidates": 1})[0]
        assert unet.evaluations == 2 * 5  # strength 0.5 of 10 steps
        keep = _outside(box, result.params.feather)
        assert np.array_equal(result.image[keep], cat.rgb[keep])
        images.append(result.image)
    assert _changed(images[0][box > 0], images[1][box > 0]) > 0.5


def test_scribble_photo_takes_uint8_coverage_and_refuses_mismatched_layers(cat, box):
    paint = np.full_like(cat.rgb, 200)
    half = np.full(cat.rgb.shape[:2], 128, np.uint8)
    painted = blended.scribble_photo(cat.rgb, paint, half, box)
    inside = painted[box > 0].astype(int)
    expected = np.rint(cat.rgb[box > 0] * (1 - 128 / 255) + 200 * 128 / 255)
    assert np.abs(inside - expected).max() <= 1
    with pytest.raises(InputError, match="paint layer"):
        blended.scribble_photo(cat.rgb, paint[:10], half, box)


def test_missing_or_useless_masks_are_clear_errors_before_any_model_work(counted, cat, box):
    model, unet = counted
    session = EditSession(model, cat)
    with pytest.raises(InputError, match="needs a mask"):
        session.run("blended", "", "a dog", None, FAST)
    with pytest.raises(InputError, match="needs a mask"):
        blended.run(session, RunContext(model), "", "a dog", None, FAST,
                    method_options.BlendedOptions(action="scribble"))
    with pytest.raises(InputError, match="no background is left"):
        session.run("blended", "", "a beach", np.ones_like(box), FAST, {"action": "background"})
    with pytest.raises(InputError, match="extend adds no canvas"):
        session.run("blended", "", "a garden", box, FAST, {"action": "extend"})
    with pytest.raises(InputError, match="candidates"):
        session.run("blended", "", "a dog", box, FAST, {"candidates": 0})
    assert unet.evaluations == 0


def test_an_extended_canvas_over_the_pixel_limit_is_refused(counted, cat, box, monkeypatch):
    model, unet = counted
    monkeypatch.setenv("DIFFEDIT_MAX_PIXELS", "200000")  # the photo is 135300 px
    with pytest.raises(InputError, match="pixel limit"):
        EditSession(model, cat).run("blended", "", "a garden", box, FAST,
                                    {"action": "extend", "extend_right": 300})
    assert unet.evaluations == 0


def test_extend_sides_outside_extend_are_reported_not_silently_dropped(tiny_model, cat, box):
    result = EditSession(tiny_model, cat).run("blended", "", "a dog", box, FAST,
                                              {"candidates": 1, "extend_left": 10})[0]
    assert result.image.shape == cat.rgb.shape
    assert any("only apply with action 'extend'" in w for w in result.warnings)


@pytest.mark.parametrize("stop_after", [1, 4])
def test_cancel_stops_within_one_step(counted, cat, box, stop_after):
    model, unet = counted
    polls = []

    def should_stop():
        polls.append(1)
        return len(polls) > stop_after

    with pytest.raises(Cancelled):
        EditSession(model, cat).run("blended", "", "a dog", box, FAST, {"candidates": 2},
                                    should_stop=should_stop)
    assert len(polls) == stop_after + 1
    assert unet.evaluations == stop_after * 2 * 2  # one call per step: 2 candidates x CFG


# ---- the blending loop on a stand-in UNet -----------------------------------------------------


class RecordingUNet(torch.nn.Module):
    """A stand-in UNet: predicts a fixed function of its input and records what it was shown."""

    def __init__(self):
        super().__init__()
        self.seen = []  # (latents, timestep)

    def forward(self, latents, timestep, encoder_hidden_states, return_dict=False):
        self.seen.append((latents.clone(), int(timestep)))
        text = encoder_hidden_states.mean(dim=(1, 2))[:, None, None, None]
        return (0.5 * latents + text,)


def _stand_in_context():
    unet = RecordingUNet()
    model = SimpleNamespace(unet=unet, device=torch.device("cpu"), dtype=torch.float32,
                            prediction_type="epsilon")
    return RunContext(model), unet


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_latent_outside_the_mask_is_the_photo_noised_to_each_reached_level(guidance):
    ctx, unet = _stand_in_context()
    schedule = Schedule.from_config(SD_SCHEDULER, 8)
    generator = torch.Generator().manual_seed(0)
    z0 = torch.randn((1, 4, 6, 8), generator=generator)
    noise = torch.randn((2, 4, 6, 8), generator=generator)  # two candidates, each its own noise
    latent_mask = torch.zeros((6, 8))
    latent_mask[1:4, 2:6] = 1.0
    outside = (latent_mask == 0).expand(2, 4, 6, 8)
    uncond, cond = torch.zeros((1, 3, 5)), torch.ones((1, 3, 5))
    final = blended.blended_denoise(ctx, schedule, schedule.timesteps, noise.clone(), z0, noise,
                                    latent_mask, uncond, cond, guidance)
    assert [t for _, t in unet.seen] == list(schedule.timesteps)
    levels = [schedule.alpha(t) for t in schedule.timesteps] + [schedule.final_alpha]
    shown = [latents[:2] for latents, _ in unet.seen] + [final]  # the CFG batch is [x, x]
    for latent, level in zip(shown, levels):
        expected = blended.add_noise(z0, noise, level)
        assert torch.equal(latent[outside], expected.expand(2, -1, -1, -1)[outside])
        # A blend one step out of alignment would not match.
        assert not torch.allclose(latent[outside], blended.add_noise(z0, noise, level * 0.9)
                                  .expand(2, -1, -1, -1)[outside], atol=1e-3)
    # Inside the mask the latent is the sampler's own: it started as pure noise, not the photo.
    assert torch.equal(shown[0][~outside], noise[~outside])
    assert not torch.allclose(final[~outside], blended.add_noise(z0, noise, levels[-1])
                              .expand(2, -1, -1, -1)[~outside], atol=1e-2)
    assert ctx.unet_evals["run"] == 8 * 2 * (2 if guidance != 1.0 else 1)


def test_without_a_mask_nothing_is_blended():
    ctx, unet = _stand_in_context()
    schedule = Schedule.from_config(SD_SCHEDULER, 4)
    x = torch.randn((1, 4, 4, 4), generator=torch.Generator().manual_seed(1))
    z0 = torch.zeros_like(x)
    out = blended.blended_denoise(ctx, schedule, schedule.timesteps, x, z0, x, None,
                                  torch.zeros((1, 2, 3)), torch.ones((1, 2, 3)), 1.0)
    assert torch.equal(unet.seen[0][0], x) and not torch.allclose(out, z0, atol=1e-2)


# ---- ranking ------------------------------------------------------------------------------------


def _result(brightness, mask):
    image = np.full((40, 60, 3), brightness, np.uint8)
    return SimpleNamespace(image=image, mask=mask, stats={})


def test_ranking_orders_candidates_by_score_on_the_masked_area():
    mask = np.zeros((40, 60), np.float32)
    mask[10:30, 20:40] = 1
    # (outside, inside) brightness: by whole-image brightness the order would be 1, 2, 0.
    results = [_result(outside, mask) for outside in (10, 200, 120)]
    for result, inside in zip(results, (250, 60, 130)):
        result.image[10:30, 20:40] = inside
    seen_sizes = []

    def brightness(crop, text):
        seen_sizes.append(crop.shape[:2])
        assert text == "a dog"
        return crop.mean()

    ranked = blended.rank(results, "a dog", brightness)
    assert [r.stats["rank"] for r in ranked] == [1, 2, 3]
    assert [id(r) for r in ranked] == [id(results[0]), id(results[2]), id(results[1])]
    scores = [r.stats["clip_score"] for r in ranked]
    assert scores == sorted(scores, reverse=True)
    assert all(20 <= h == w < 40 for h, w in seen_sizes)  # a square crop around the mask
    assert blended.rank(results, "a dog", None) is None


def test_masked_crop_contains_the_mask_and_stays_inside_the_image():
    mask = np.zeros((50, 80), np.float32)
    mask[2:12, 60:78] = 1
    image = np.arange(50 * 80 * 3, dtype=np.int64).reshape(50, 80, 3)
    crop = blended.masked_crop(image, mask)
    assert crop.shape[0] == crop.shape[1] >= 18
    rows, cols = np.nonzero(np.isin(image[..., 0], crop[..., 0]))
    assert rows.min() <= 2 and rows.max() >= 11 and cols.min() <= 60 and cols.max() >= 77


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A random-weight CLIP model with a real tokenizer, saved like a downloaded one."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from engine.clip_tokenizer import VOCAB_SIZE, build_clip_tokenizer

    folder = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(text_config=dict(vocab_size=VOCAB_SIZE, max_position_embeddings=77, **small),
                        vision_config=dict(image_size=32, patch_size=8, **small), projection_dim=8)
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                     crop_size={"height": 32, "width": 32}),
                  tokenizer=build_clip_tokenizer(folder / "tokenizer")).save_pretrained(folder)
    return folder


def test_a_local_clip_model_ranks_the_candidates(tiny_model, cat, box, tiny_clip):
    results = EditSession(tiny_model, cat).run("blended", "", "a dog", box, FAST,
                                               {"candidates": 3, "clip_model": str(tiny_clip)})
    assert sorted(r.params.seed for r in results) == [0, 1, 2]
    assert [r.stats["rank"] for r in results] == [1, 2, 3]
    scores = [r.stats["clip_score"] for r in results]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    scorer = blended.load_clip_scorer(str(tiny_clip))
    crop = blended.masked_crop(results[0].image, results[0].mask)
    assert abs(scorer(crop, "a dog") - scores[0]) < 1e-5
    assert not any("unranked" in w for w in results[0].warnings)


def test_a_missing_clip_model_leaves_candidates_unranked_with_a_warning(tiny_model, cat, box, tmp_path):
    assert blended.load_clip_scorer(str(tmp_path / "nowhere")) is None
    assert blended.load_clip_scorer(str(tmp_path)) is None  # a folder without a model
    results = EditSession(tiny_model, cat).run("blended", "", "a dog", box, FAST,
                                               {"candidates": 2, "clip_model": str(tmp_path)})
    assert [r.params.seed for r in results] == [0, 1]
    assert all("rank" not in r.stats for r in results)
    assert any("unranked" in w for w in results[0].warnings)


# ---- through the CLI ---------------------------------------------------------------------------


def test_cli_writes_one_file_per_candidate(tmp_path, cat, box, tiny_model_path):
    photo = tmp_path / "cat.png"
    Image.fromarray(cat.rgb).save(photo)
    masks.to_image(box).save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    code = cli.main(["edit", str(photo), "-o", str(out), "--target", "a dog", "--mask",
                     str(tmp_path / "mask.png"), "--method", "blended", "--candidates", "2",
                     "--steps", "6", "--seed", "4", "--model", "tiny", "--quiet"])
    assert code == 0  # OUT is the best (unranked: the first seed), OUT-1..N every candidate
    assert out.read_bytes() == (tmp_path / "out-1.png").read_bytes()
    first, second = (np.asarray(Image.open(tmp_path / f"out-{i}.png").convert("RGB")) for i in (1, 2))
    from engine.geometry import default_feather

    keep = _outside(box, default_feather(cat.size, 128))  # the CLI's feather scales with the photo
    assert np.array_equal(first[keep], cat.rgb[keep]) and np.array_equal(second[keep], cat.rgb[keep])
    assert _changed(first[box > 0], second[box > 0]) > 0.5
    for i, seed in ((1, 4), (2, 5)):
        meta = read_metadata(tmp_path / f"out-{i}.png")
        assert f"Seed: {seed}" in meta["parameters"] and "Edit: blended" in meta["parameters"]


def test_cli_extend_writes_the_larger_canvas(tmp_path, cat, box, tiny_model_path):
    photo = tmp_path / "cat.png"
    Image.fromarray(cat.rgb).save(photo)
    masks.to_image(box).save(tmp_path / "mask.png")
    out = tmp_path / "wide.png"
    code = cli.main(["edit", str(photo), "-o", str(out), "--target", "a garden", "--mask",
                     str(tmp_path / "mask.png"), "--method", "blended", "--action", "extend",
                     "--extend-left", "32", "--candidates", "1", "--steps", "6", "--feather", "0",
                     "--model", "tiny", "--quiet"])
    assert code == 0
    wide = np.asarray(Image.open(out).convert("RGB"))
    assert wide.shape == (300, 483, 3)
    assert np.array_equal(wide[:, 32:][box == 0], cat.rgb[box == 0])


def test_cli_refuses_an_option_of_another_method(tmp_path, cat, tiny_model_path, capsys):
    photo = tmp_path / "cat.png"
    Image.fromarray(cat.rgb).save(photo)
    code = cli.main(["edit", str(photo), "-o", str(tmp_path / "o.png"), "--target", "a dog",
                     "--method", "blended", "--masked", "--model", "tiny", "--quiet"])
    assert code == 2 and "--masked do not apply to --method blended" in capsys.readouterr().err
