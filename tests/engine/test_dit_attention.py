"""Attention control on a flow transformer (engine.dit_attention) and the methods built on it
(engine.methods.dit: Prompt-to-Prompt's local blend and key/value injection) on the tiny
random-weight FLUX.2 klein: an idle controlled layer computes what diffusers' processor does,
recorded probabilities are probabilities, injection changes what it should and nothing else,
identical texts give the photo (or the plain reconstruction) back, pixels outside the mask are
the original, the same seed gives the same bytes, the processors come back after a run, an
error and a cancel, and a run works in bfloat16."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine import dit_attention, masks
from engine.backbones import Conditioning
from engine.errors import Cancelled, InputError
from engine.methods import dit, p2p
from engine.methods.diffedit import masked_decode
from engine.methods.options import PromptToPromptOptions
from engine.models import load_model
from engine.runtime import RunContext
from engine.session import EditSession

CAT, DOG = "a photo of a cat", "a photo of a dog"


@pytest.fixture(scope="module")
def photo(samples_dir):
    return np.asarray(Image.open(samples_dir / "chelsea.png").convert("RGB").resize((64, 64)))


@pytest.fixture(scope="module")
def session(tiny_flux2, photo):
    """One session for the module: the texts are encoded once."""
    return EditSession(tiny_flux2, photo)


@pytest.fixture(scope="module")
def fast(session):
    return session.default_params("p2p").replace(steps=2, resolution=64)


@pytest.fixture(scope="module")
def call(session):
    """Two rows (cat, dog) of one transformer call on a random 4x4 latent, and the stock output."""
    backbone = session.backbone
    latents = torch.randn(2, 16, 4, 4, generator=torch.Generator().manual_seed(0))
    texts = Conditioning.cat([session.embed(CAT), session.embed(DOG)])
    return latents, texts, backbone.predict(latents, 500.0, texts)


def _restored(model, saved, dispatch):
    import diffusers.models.transformers.transformer_flux2 as flux2

    now = model.transformer.attn_processors
    return (now.keys() == saved.keys() and all(now[k] is saved[k] for k in saved)
            and flux2.dispatch_attention_fn is dispatch)


def test_an_idle_or_recording_layer_computes_what_diffusers_processor_does(session, call):
    import diffusers.models.transformers.transformer_flux2 as flux2

    backbone, (latents, texts, stock) = session.backbone, call
    saved, dispatch = session.model.transformer.attn_processors, flux2.dispatch_attention_fn
    layout = backbone.token_layout(latents, texts)
    assert layout == dit_attention.Layout(slice(0, 512), slice(512, 528))
    control = dit_attention.Control(layout)
    with backbone.controlled(control):
        assert flux2.dispatch_attention_fn is not dispatch
        idle = backbone.predict(latents, 500.0, texts)
        # every position of the joint sequence: each image query's probabilities sum to 1
        control.record = {0: tuple(range(528)), 1: ()}
        recording = backbone.predict(latents, 500.0, texts)
    assert torch.equal(idle, stock) and torch.equal(recording, stock)
    layers = len(saved)  # one double-stream and one single-stream block
    assert control.recorded == layers == 2
    assert torch.allclose(control.maps[0], torch.full((16,), float(layers)), atol=1e-5)
    assert torch.equal(control.maps[1], torch.zeros(16))  # no positions: zero
    assert _restored(session.model, saved, dispatch)


def test_injected_image_keys_and_values_change_the_target_row_only(session, call):
    backbone, (latents, texts, stock) = session.backbone, call
    control = dit_attention.Control(backbone.token_layout(latents, texts))
    control.inject = [(1, 0)]
    same = torch.cat([latents[:1], latents[:1]])  # the rows differ in their texts only
    with backbone.controlled(control):
        injected = backbone.predict(latents, 500.0, texts)
        # Only in the first (double-stream) block, whose image keys/values depend on the
        # latent alone: the target's own, so nothing changes (copying the text's would).
        control.layers = {next(iter(session.model.transformer.attn_processors))}
        first_only = backbone.predict(same, 500.0, texts)
    assert torch.equal(injected[0], stock[0]) and not torch.allclose(injected[1], stock[1], atol=1e-3)
    assert torch.allclose(first_only, backbone.predict(same, 500.0, texts), atol=1e-6)


def test_the_processors_come_back_after_an_error(session, call):
    import diffusers.models.transformers.transformer_flux2 as flux2

    saved, dispatch = session.model.transformer.attn_processors, flux2.dispatch_attention_fn
    latents, texts, _ = call
    with pytest.raises(RuntimeError, match="stop"):
        with session.backbone.controlled(dit_attention.Control(
                session.backbone.token_layout(latents, texts))):
            raise RuntimeError("stop")
    assert _restored(session.model, saved, dispatch)


def test_word_positions_are_the_words_tokens_in_the_chat_template(session):
    backbone = session.backbone
    tokenizer = session.model.tokenizer
    words = backbone.word_positions("user cat")  # "user" is also the template's role name
    chat_ids = tokenizer(backbone.chat("user cat")).input_ids
    spelled = ["".join(tokenizer.convert_ids_to_tokens([chat_ids[p] for p in positions]))
               for _, positions in words]
    assert [w for w, _ in words] == ["user", "cat"] and spelled == ["user", "cat"]
    newline = chat_ids.index(tokenizer("\n").input_ids[0])  # the end of "<|im_start|>user\n"
    assert words[0][1][0] == newline + 1  # the text's "user", not the role's


def test_a_blend_word_in_neither_text_is_refused_before_any_work(session, fast):
    with pytest.raises(InputError, match="'horse' is in neither text") as error:
        session.run("p2p", CAT, DOG, None, fast, {"blend_words": "horse"})
    assert error.value.field == "blend_words"


@pytest.mark.slow
def test_p2p_with_identical_texts_gives_the_photo_back(session, photo, fast):
    [same] = session.run("p2p", CAT, CAT, None, fast, {"self_fraction": 1.0, "blend_words": "cat"})
    assert np.array_equal(same.image, photo) and "moved nothing" in " ".join(same.warnings)
    assert same.stats["unet_evals"] == {"encode": 2, "decode": 4}  # two rows a step


@pytest.mark.slow
def test_injection_with_identical_texts_is_the_plain_reconstruction(session, fast):
    """Without Direct Inversion the source branch decodes on its own: the target, injected at
    every step with the source's keys/values, is the plain decoding of the inverted latent."""
    ctx, geometry = RunContext(session.model), session.geometry(fast)
    schedule = session.schedule(fast.steps, geometry)
    trajectory = p2p.invert(session, ctx, geometry, schedule, fast, CAT)
    cond = session.embed(CAT)
    latent, blend = dit.sample(ctx, session.backbone, schedule, trajectory, cond, cond, cond, 1.0,
                               inject_steps=2, retrace=False, carry=False)
    plain = masked_decode(ctx, schedule, trajectory, torch.ones(4, 4), cond, cond, 1.0, 0.0, 0)
    assert blend is None and torch.allclose(latent, plain, atol=1e-5)
    assert not torch.allclose(plain, trajectory[0], atol=1e-3)  # it is not the photo's latent


@pytest.mark.slow
def test_the_local_blend_mask_comes_from_the_words_attention_and_outside_it_is_the_photo(
        session, photo, fast):
    options = {"blend_words": "cat dog", "blend_threshold": 0.5}
    [result] = session.run("p2p", CAT, DOG, None, fast, options)
    heat = result.heatmap
    assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)  # each branch rescaled
    assert np.array_equal(result.mask, masks.threshold(heat, 0.5)) and 0 < result.mask.mean() < 1
    kept = masks.paste_alpha(result.mask, result.params.feather) == 0
    assert kept.any() and np.array_equal(result.image[kept], photo[kept])
    assert not np.array_equal(result.image, photo)
    [again] = session.run("p2p", CAT, DOG, None, fast, options)
    assert np.array_equal(again.image, result.image)  # same inputs, same bytes


@pytest.mark.slow
def test_pnp_injects_the_photos_keys_and_values_and_a_seed_gives_the_same_bytes(session, fast):
    params = session.default_params("pnp").replace(steps=2, resolution=64, eta=0.5, seed=3)
    [injected] = session.run("pnp", CAT, DOG, None, params)
    [again] = session.run("pnp", CAT, DOG, None, params)
    [plain] = session.run("pnp", CAT, DOG, None, params, {"attention_fraction": 0.0})
    assert np.array_equal(injected.image, again.image)
    assert not np.array_equal(injected.image, plain.image)
    # Half of the 2 steps injected: that step also runs the source row; the other does not.
    assert injected.stats["unet_evals"]["decode"] == 3 and plain.stats["unet_evals"]["decode"] == 2
    [ignored] = session.run("pnp", CAT, DOG, None, params, {"feature_fraction": 0.3})
    assert "feature_fraction has no counterpart" in " ".join(ignored.warnings)


@pytest.mark.slow
def test_a_cancelled_run_restores_the_processors_and_a_user_mask_keeps_the_photo(
        session, photo, fast):
    import diffusers.models.transformers.transformer_flux2 as flux2

    saved, dispatch = session.model.transformer.attn_processors, flux2.dispatch_attention_fn
    stages = []
    with pytest.raises(Cancelled):  # stopped at the second decoding step, inside the control
        session.run("p2p", CAT, DOG, None, fast, on_step=lambda stage, *_: stages.append(stage),
                    should_stop=lambda: stages.count("decode") == 1)
    assert _restored(session.model, saved, dispatch)
    box = np.zeros(photo.shape[:2], np.float32)
    box[16:48, 16:48] = 1.0
    [result] = session.run("p2p", CAT, DOG, box, fast, {"blend_words": "dog"})
    kept = masks.paste_alpha(box, result.params.feather) == 0
    assert result.heatmap is None and kept.any()
    assert np.array_equal(result.image[kept], photo[kept]) and not np.array_equal(result.image, photo)


@pytest.mark.slow
def test_p2p_runs_in_bfloat16(tiny_flux2_path, photo):
    model = load_model(str(tiny_flux2_path), device="cpu", dtype="bfloat16")
    assert model.transformer.dtype == torch.bfloat16
    session = EditSession(model, photo)
    params = session.default_params("p2p").replace(steps=2, resolution=64)
    [result] = session.run("p2p", CAT, DOG, None, params, {"blend_words": "dog"})
    kept = masks.paste_alpha(result.mask, result.params.feather) == 0
    assert 0 < result.mask.mean() < 1 and np.array_equal(result.image[kept], photo[kept])


def test_options_joint_attention_has_no_counterpart_for_are_named_when_set(session):
    options = PromptToPromptOptions(mode="refine", cross_fraction=0.5)
    assert dit.unused_warnings(session.backbone, "p2p", options) == [
        f"{name} has no counterpart in FLUX.2 klein's joint attention and was not used"
        for name in ("mode", "cross_fraction")]
    assert dit.unused_warnings(session.backbone, "p2p", PromptToPromptOptions()) == []
