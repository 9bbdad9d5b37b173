"""Prompt-to-Prompt on the tiny model (real CLIP tokenizer): invariants that hold for any weights."""

import json

import numpy as np
import pytest
import torch

from engine import cli, masks
from engine.errors import InputError
from engine.imaging import load_photo
from engine.inversion import Schedule, ddim_step
from engine.methods import options as method_options
from engine.methods import p2p
from engine.params import EditParams
from engine.runtime import RunContext
from engine.session import EditSession

FAST = EditParams(steps=6, resolution=64)  # 451x300 -> an 80x64 px working size (10x8 latent)
SOURCE = "a photo of a cat on a sofa"


@pytest.fixture(scope="module")
def cat(samples_dir):
    return load_photo(samples_dir / "chelsea.png")


def _options(**values):
    return method_options.from_dict(method_options.PromptToPromptOptions, values)


def _setup(session, params, source):
    ctx = RunContext(session.model)
    geometry = session.geometry(params)
    schedule = Schedule.from_config(session.model.scheduler_config, params.steps)
    trajectory = p2p.invert(session, ctx, geometry, schedule, params, source)
    return ctx, geometry, schedule, trajectory


def _reconstruct(ctx, schedule, trajectory, embedding):
    """Plain DDIM from the inverted latent under the source text, one row, stock attention."""
    x = trajectory[-1]
    for t in schedule.tail(len(trajectory) - 1):
        eps = ctx.predict_noise(x, t, embedding, schedule.alpha(t))
        x = ddim_step(x, eps, schedule.alpha(t), schedule.alpha(schedule.previous(t)))
    return x


@pytest.mark.parametrize("mode,params", [
    ("swap", FAST), ("refine", FAST), ("swap", FAST.replace(guidance=1.0)),
    ("refine", FAST.replace(resolution=96, steps=4)),
])
def test_identical_prompts_reproduce_the_inversions_reconstruction(tiny_model, cat, mode, params):
    session = EditSession(tiny_model, cat)
    ctx, geometry, schedule, trajectory = _setup(session, params, SOURCE)
    options = _options(mode=mode, self_fraction=0.6, cross_fraction=1.0, direct_inversion=False)
    embedding = session.embed(SOURCE)
    plan = p2p.plan_tokens(tiny_model.tokenizer, SOURCE, SOURCE, options)
    latents, _ = p2p.sample(ctx, ctx.backbone, schedule, trajectory, embedding, embedding, plan,
                            params.guidance, options)
    # The target branch is the source branch (the reconstruction) bit for bit, whatever the
    # guidance scale: negative-prompt inversion makes guidance cancel out on identical texts.
    assert torch.equal(latents[1], latents[0])
    # It is the reconstruction a plain DDIM run gives; not bit for bit, because a batch of three
    # and explicit attention probabilities sum in another order than one row through SDPA.
    alone = _reconstruct(ctx, schedule, trajectory, embedding)
    assert torch.allclose(latents[1:], alone, atol=1e-4)
    # And the method's output image is the reconstruction branch's, same bytes (pasted back as
    # a global edit: with the photo's detail finer than the working size).
    result = session.run("p2p", SOURCE, SOURCE, None, params,
                         {"mode": mode, "self_fraction": 0.6, "cross_fraction": 1.0,
                          "direct_inversion": False})[0]
    reconstruction = geometry.from_working_with_detail(session.decode_latent(latents[:1]), cat.rgb)
    assert np.array_equal(result.image, reconstruction)
    # The reconstruction is faithful to the photo's latent only up to DDIM inversion's error,
    # which is large for random weights; what matters is that it is not the photo's noise.
    assert not torch.allclose(latents[:1], trajectory[-1], atol=1e-2)


def test_direct_inversion_retraces_the_photos_latent_at_no_extra_work(tiny_model, cat):
    session = EditSession(tiny_model, cat)
    ctx, geometry, schedule, trajectory = _setup(session, FAST, SOURCE)
    embedding = session.embed(SOURCE)
    finals = {}
    for direct in (False, True):
        options = _options(direct_inversion=direct)
        plan = p2p.plan_tokens(tiny_model.tokenizer, SOURCE, SOURCE, options)
        before = dict(ctx.unet_evals)
        finals[direct], _ = p2p.sample(ctx, ctx.backbone, schedule, trajectory, embedding,
                                       embedding, plan, FAST.guidance, options)
        assert ctx.unet_evals["run"] - before.get("run", 0) == 3 * FAST.encode_steps
    photo = trajectory[0]
    # Both branches end on the photo's own latent; plain DDIM ends where its error took it.
    assert torch.allclose(finals[True], photo.expand(2, -1, -1, -1), atol=1e-5)
    assert (finals[False] - photo).abs().max() > 1e-2


class GaussianData(torch.nn.Module):
    """The exact noise prediction when the latents are Gaussian, N(mean, spread**2) per entry
    (the text shifts the mean): a denoiser whose DDIM inversion drifts as a real one's does."""

    def __init__(self, mean, spread, alphas):
        super().__init__()
        self.mean, self.spread, self.alphas = mean, spread, alphas
        self.down_blocks, self.up_blocks = torch.nn.ModuleList(), torch.nn.ModuleList()  # no layers

    @property
    def attn_processors(self):
        return {}

    def set_attn_processor(self, processors):
        pass

    def forward(self, x, t, encoder_hidden_states, return_dict=False, **_):
        a = float(self.alphas[int(t)])
        mean = self.mean + encoder_hidden_states.float().mean(dim=(1, 2))[:, None, None, None]
        return ((1 - a) ** 0.5 * (x - a**0.5 * mean) / (a * self.spread**2 + 1 - a),)


@pytest.mark.parametrize("steps", [5, 10, 25])
def test_direct_inversion_reconstructs_better_on_an_analytic_denoiser(steps):
    from engine.inversion import ddim_invert
    from engine.tiny_model import SD_SCHEDULER

    schedule = Schedule.from_config(SD_SCHEDULER, steps)
    photo = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    unet = GaussianData(0.3, 0.8, schedule.alphas_cumprod)
    model = type("Model", (), {"unet": unet, "device": torch.device("cpu"),
                               "dtype": torch.float32, "prediction_type": "epsilon"})()
    ctx = RunContext(model)
    source, target = torch.zeros(1, 77, 8), torch.full((1, 77, 8), 0.5)
    trajectory = ddim_invert(ctx, photo, schedule, steps, source)
    errors = {}
    for direct in (False, True):
        options = _options(direct_inversion=direct, mode="refine")
        plan = p2p.TokenPlan(torch.eye(77), torch.zeros(77, dtype=torch.bool), torch.ones(77), (), ())
        same, _ = p2p.sample(ctx, ctx.backbone, schedule, trajectory, source, source, plan, 7.5, options)
        edited, _ = p2p.sample(ctx, ctx.backbone, schedule, trajectory, source, target, plan, 7.5, options)
        errors[direct] = float((same[1] - photo[0]).abs().max())  # identical texts: the photo
        assert torch.equal(edited[:1], same[:1])  # the source branch ignores the target text
        assert (edited[1] - same[1]).abs().mean() > 0.1  # and the target text still edits
    assert errors[True] < 1e-5 < 1e-2 < errors[False]


def test_reweighting_with_c_1_equals_no_reweighting(tiny_model, cat):
    session = EditSession(tiny_model, cat)
    target = "a photo of a fluffy cat on a sofa"
    plain = session.run("p2p", SOURCE, target, None, FAST, {"mode": "refine"})[0]
    same = session.run("p2p", SOURCE, target, None, FAST,
                       {"mode": "reweight", "reweight_words": "fluffy", "reweight_scale": 1.0})[0]
    assert np.array_equal(same.image, plain.image)
    stronger = session.run("p2p", SOURCE, target, None, FAST,
                           {"mode": "reweight", "reweight_words": "fluffy", "reweight_scale": 2.0})[0]
    assert not np.array_equal(stronger.image, plain.image)
    # Re-weighting also applies on top of a word swap.
    swapped = session.run("p2p", SOURCE, "a photo of a dog on a sofa", None, FAST, {"mode": "swap"})[0]
    swapped_1 = session.run("p2p", SOURCE, "a photo of a dog on a sofa", None, FAST,
                            {"mode": "swap", "reweight_words": "dog", "reweight_scale": 1.0})[0]
    assert np.array_equal(swapped.image, swapped_1.image)


def test_word_swap_changes_attention_only_for_the_swapped_tokens(tiny_model, cat):
    """'cat' (1 token) -> 'armadillo' (2 tokens, real CLIP BPE): every other token's injected
    cross-attention map is the source's map of the same word, unchanged."""
    target = "a photo of a armadillo on a sofa"
    tokenizer = tiny_model.tokenizer
    src, tgt = p2p.Words.of(tokenizer, SOURCE), p2p.Words.of(tokenizer, target)
    assert len(src.positions[4]) == 1 and len(tgt.positions[4]) == 2  # the tokenizer is real
    session = EditSession(tiny_model, cat)
    ctx, geometry, schedule, trajectory = _setup(session, FAST, SOURCE)
    options = _options(mode="swap", cross_fraction=1.0, self_fraction=0.0)
    plan = p2p.plan_tokens(tokenizer, SOURCE, target, options)
    calls = []
    p2p.sample(ctx, ctx.backbone, schedule, trajectory, session.embed(SOURCE),
               session.embed(target), plan, FAST.guidance, options,
               observer=lambda s, own, new: calls.append((s, own, new)))
    count = len(trajectory) - 1
    assert len(calls) == count * 4  # every step, every cross-attention layer of the tiny UNet
    unchanged = [(s, t) for w, (sp, tp) in enumerate(zip(src.positions, tgt.positions)) if w != 4
                 for s, t in zip(sp, tp)]
    unchanged.append((0, 0))  # start of text
    unchanged += [(src.end + k, tgt.end + k) for k in range(77 - tgt.end)]  # end and padding
    swapped = tgt.positions[4]
    cat_position = src.positions[4][0]
    for source, own, new in calls:
        for s, t in unchanged:
            assert torch.equal(new[..., t], source[..., s])
        for t in swapped:  # the new word takes the replaced word's map (its layout)
            assert torch.equal(new[..., t], source[..., cat_position])
        covered = {t for _, t in unchanged} | set(swapped)
        assert covered == set(range(77))
    # The maps did change for the target (its own attention differs from the injected one).
    assert not all(torch.equal(own, new) for _, own, new in calls)


def test_refine_aligns_tokens_and_new_words_keep_their_own_attention(tiny_model):
    target = "a photo of a fluffy cat on a sofa"
    plan = p2p.plan_tokens(tiny_model.tokenizer, SOURCE, target, _options(mode="refine"))
    fluffy = 5
    assert plan.keep_own.nonzero().flatten().tolist() == [fluffy]
    # Source word k (position k + 1) feeds target position k + 1 before "fluffy", k + 2 after.
    for k in range(1, 5):
        assert plan.mapping[:, k].nonzero().flatten().tolist() == [k]
    for k in range(5, 8):
        assert plan.mapping[:, k + 1].nonzero().flatten().tolist() == [k]
    source = torch.rand(2, 6, 77).softmax(-1)
    own = torch.rand(2, 6, 77).softmax(-1)
    new = p2p.edit_cross_attention(plan, source, own)
    assert torch.equal(new[..., fluffy], own[..., fluffy])
    assert torch.equal(new[..., 6], source[..., 5])  # "cat"


def test_word_count_mismatch_for_swap_is_a_clear_error_before_any_work(tiny_model, cat):
    session = EditSession(tiny_model, cat)
    calls = []
    handle = tiny_model.unet.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(InputError, match=r"source has 8 .* target has 9") as error:
            session.run("p2p", SOURCE, "a photo of a big dog on a sofa", None, FAST, {"mode": "swap"})
    finally:
        handle.remove()
    assert "refine" in str(error.value) and calls == []


@pytest.mark.parametrize("options,message", [
    ({"mode": "reweight"}, "reweight_words"),
    ({"mode": "reweight", "reweight_words": "tiger"}, "'tiger' is not in the target"),
    ({"blend_words": "tiger"}, "'tiger' is in neither text"),
    ({"reweight_scale": 3.0}, "reweight_scale must be from -2.0 to 2.0"),
])
def test_bad_words_and_options_are_clear_errors(tiny_model, cat, options, message):
    with pytest.raises(InputError, match=message):
        EditSession(tiny_model, cat).run("p2p", SOURCE, "a photo of a dog on a sofa", None, FAST,
                                         options)


def test_empty_source_is_a_clear_error(tiny_model, cat):
    with pytest.raises(InputError, match="source text"):
        EditSession(tiny_model, cat).run("p2p", "", "a dog", None, FAST)


def test_local_blend_returns_its_mask_and_keeps_everything_outside(tiny_model, cat):
    session = EditSession(tiny_model, cat)
    result = session.run("p2p", SOURCE, "a photo of a dog on a sofa", None, FAST,
                         {"blend_words": "cat dog", "blend_threshold": 0.7})[0]
    assert result.heatmap.shape == cat.rgb.shape[:2] and result.heatmap.dtype == np.float32
    assert result.heatmap.min() >= 0 and result.heatmap.max() == pytest.approx(1.0, abs=1e-3)
    assert np.array_equal(result.mask, masks.threshold(result.heatmap, 0.7))
    assert 0.05 < result.mask.mean() < 0.95
    outside = masks.paste_alpha(result.mask, result.params.feather) == 0
    assert np.array_equal(result.image[outside], cat.rgb[outside])
    assert (result.image[result.mask > 0] != cat.rgb[result.mask > 0]).any()
    # In the latent, outside the final blend mask the target branch is the source branch exactly.
    ctx, geometry, schedule, trajectory = _setup(session, FAST, SOURCE)
    options = _options(blend_words="cat dog", blend_threshold=0.7)
    target = "a photo of a dog on a sofa"
    plan = p2p.plan_tokens(tiny_model.tokenizer, SOURCE, target, options)
    latents, blend = p2p.sample(ctx, ctx.backbone, schedule, trajectory, session.embed(SOURCE),
                                session.embed(target), plan, FAST.guidance, options)
    assert blend.shape == latents.shape[-2:]
    keep = blend <= 0.7
    assert 0 < keep.sum() < keep.numel()
    assert torch.equal(latents[1][:, keep], latents[0][:, keep])
    assert not torch.equal(latents[1][:, ~keep], latents[0][:, ~keep])
    # Without blend words there is no mask and the whole photo may change.
    whole = session.run("p2p", SOURCE, "a photo of a dog on a sofa", None, FAST)[0]
    assert whole.heatmap is None and whole.mask.min() == 1.0


def test_user_mask_replaces_the_attention_mask_and_is_pasted_back_through(tiny_model, cat):
    mask = np.zeros(cat.rgb.shape[:2], np.float32)
    mask[50:250, 100:350] = 1.0
    result = EditSession(tiny_model, cat).run("p2p", SOURCE, "a photo of a dog on a sofa", mask,
                                              FAST, {"blend_words": "cat dog"})[0]
    assert result.heatmap is None and np.array_equal(result.mask, mask)
    outside = masks.paste_alpha(mask, result.params.feather) == 0
    assert np.array_equal(result.image[outside], cat.rgb[outside])
    assert (result.image[mask > 0] != cat.rgb[mask > 0]).any(axis=-1).mean() > 0.5


def test_unet_evaluations_are_counted_and_the_inversion_is_reused(tiny_model, cat):
    session = EditSession(tiny_model, cat)
    evaluations = []
    handle = tiny_model.unet.register_forward_pre_hook(
        lambda module, args: evaluations.append(args[0].shape[0]))
    try:
        first = session.run("p2p", SOURCE, "a photo of a dog on a sofa", None, FAST)[0]
        count = FAST.encode_steps
        # Conditional inversion (1 per step), then source + negative + target rows per step.
        assert first.stats["unet_evals"] == {"encode": count, "decode": 3 * count}
        assert sum(evaluations) == 4 * count
        evaluations.clear()
        second = session.run("p2p", SOURCE, "a photo of a tiger on a sofa", None,
                             FAST.replace(guidance=1.0))[0]
        assert second.stats["unet_evals"] == {"decode": 2 * count}  # no negative row at guidance 1
        assert sum(evaluations) == 2 * count
        evaluations.clear()
        third = session.run("p2p", "a photo of a dog on a sofa", "a photo of a cat on a sofa",
                            None, FAST)[0]
        assert third.stats["unet_evals"]["encode"] == count  # another source, another inversion
    finally:
        handle.remove()


def test_ignored_parameters_are_reported(tiny_model, cat):
    result = EditSession(tiny_model, cat).run(
        "p2p", SOURCE, "a photo of a dog on a sofa", None,
        FAST.replace(negative_prompt="blurry", eta=0.5))[0]
    assert any("negative prompt" in w for w in result.warnings)
    assert any("eta" in w for w in result.warnings)


def test_cli_runs_prompt_to_prompt(tmp_path, samples_dir, tiny_model_path, capsys):
    out, heat, report = tmp_path / "out.png", tmp_path / "heat.png", tmp_path / "report.json"
    code = cli.main(["edit", str(samples_dir / "chelsea.png"), "-o", str(out), "--method", "p2p",
                     "--source", "a cat", "--target", "a dog", "--mode", "swap",
                     "--blend-words", "cat dog", "--cross-fraction", "0.5", "--save-heatmap",
                     str(heat), "--report", str(report), "--model", "tiny", "--steps", "4",
                     "--resolution", "64", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert heat.is_file() and out.is_file()
    data = json.loads(report.read_text())
    # Prompt-to-Prompt's own encoding ratio is 1 (its code inverts every step): 4 encoding steps.
    assert data["method"] == "p2p" and data["unet_evals"] == {"encode": 4, "decode": 12}
    assert data["params"]["strength"] == 1.0
    code = cli.main(["edit", str(samples_dir / "chelsea.png"), "-o", str(out), "--method", "p2p",
                     "--source", "a cat", "--target", "a dog", "--strength", "0.5", "--report",
                     str(report), "--model", "tiny", "--steps", "4", "--resolution", "64", "--quiet"])
    assert code == 0, capsys.readouterr().err
    data = json.loads(report.read_text())  # the user's ratio wins
    assert data["params"]["strength"] == 0.5 and data["unet_evals"]["encode"] == 2
    code = cli.main(["edit", str(samples_dir / "chelsea.png"), "-o", str(out), "--method", "p2p",
                     "--source", "a cat", "--target", "a big dog", "--model", "tiny", "--quiet",
                     "--steps", "4", "--resolution", "64"])
    assert code == 2
    assert "source has 2" in capsys.readouterr().err
