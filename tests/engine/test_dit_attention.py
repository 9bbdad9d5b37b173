"""Attention control on a flow transformer (engine.dit_attention) and the methods built on it
(engine.methods.dit: Prompt-to-Prompt's local blend and key/value injection) on the tiny
random-weight FLUX.2 klein: an idle controlled layer computes what diffusers' processor does,
recorded probabilities are probabilities, injection changes what it should and nothing else,
identical texts give the photo (or the plain reconstruction) back, pixels outside the mask are
the original, the same seed gives the same bytes, the processors come back after a run, an
error and a cancel, and a run works in bfloat16."""

from __future__ import annotations

import dataclasses

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
from engine.params import EditParams
from engine.runtime import RunContext
from engine.session import EditSession

CAT, DOG = "a photo of a cat", "a photo of a dog"
LONG = "a photo of a cat sitting on a wooden table beside a window"


@pytest.fixture(scope="module")
def photo(samples_dir):
    return np.asarray(Image.open(samples_dir / "chelsea.png").convert("RGB").resize((64, 64)))


@pytest.fixture(scope="module")
def session(tiny_flux2, photo):
    """One klein session for the module: the texts are encoded once."""
    return EditSession(tiny_flux2, photo)


@pytest.fixture(scope="module", params=["tiny_flux2", "tiny_zimage"])
def family(request, session, photo):
    """A session on each family with the attention seam (klein's is ``session``)."""
    if request.param == "tiny_flux2":
        return session
    return EditSession(request.getfixturevalue(request.param), photo)


@pytest.fixture(scope="module")
def fast(session):
    return session.default_params("p2p").replace(steps=2, resolution=64)


def _call(family):
    """Two rows (the cat; on Z-Image a text long enough that it pads it to another length, so
    its image tokens sit at other rotary positions) of one transformer call on a random latent
    of the 64 px photo's size, and the stock output."""
    latent = family.image_latent(family.geometry(EditParams(resolution=64)))
    latents = torch.randn((2, *latent.shape[1:]), generator=torch.Generator().manual_seed(0))
    other = LONG if family.model.family == "zimage" else DOG
    texts = Conditioning.cat([family.embed(CAT), family.embed(other)])
    return latents, texts, family.backbone.predict(latents, 500.0, texts)


def _modules(family):
    """The diffusers module the family's processors come from."""
    import diffusers.models.transformers.transformer_flux2 as flux2
    import diffusers.models.transformers.transformer_z_image as zimage

    return flux2 if family.model.family == "flux2-klein" else zimage


def _restored(family, saved, dispatch):
    now = dit_attention.attention_layers(family.model.transformer)
    return ({name: layer.processor for name, layer in now.items()} == saved
            and _modules(family).dispatch_attention_fn is dispatch)


def _processors(family):
    return {name: layer.processor
            for name, layer in dit_attention.attention_layers(family.model.transformer).items()}


def test_an_idle_or_recording_layer_computes_what_diffusers_processor_does(family):
    backbone, (latents, texts, stock) = family.backbone, _call(family)
    saved, dispatch = _processors(family), _modules(family).dispatch_attention_fn
    layouts = backbone.token_layout(latents, texts)
    control = dit_attention.Control(layouts)
    with backbone.controlled(control):
        assert _modules(family).dispatch_attention_fn is not dispatch
        idle = backbone.predict(latents, 500.0, texts)
        control.record = {0: tuple(range(5)), 1: ()}
        recording = backbone.predict(latents, 500.0, texts)
    assert torch.equal(idle, stock) and torch.equal(recording, stock)
    with_text = [name for name, layout in layouts.items() if layout.text is not None]
    assert control.recorded == len(with_text) >= 1
    assert (control.maps[0] > 0).all() and (control.maps[0] < len(with_text)).all()
    assert torch.equal(control.maps[1], torch.zeros_like(control.maps[1]))  # no positions: zero
    assert _restored(family, saved, dispatch)


def test_an_image_querys_probabilities_over_the_whole_sequence_sum_to_one(session):
    """On klein the text comes first, then the image: positions from the text's first token
    cover the joint sequence."""
    backbone, (latents, texts, _) = session.backbone, _call(session)
    layouts = backbone.token_layout(latents, texts)
    names = ["transformer_blocks.0.attn", "single_transformer_blocks.0.attn"]  # every layer
    assert layouts == dict.fromkeys(names, dit_attention.Layout(slice(0, 512), slice(512, 528)))
    control = dit_attention.Control(layouts)
    control.record = {0: tuple(range(528)), 1: tuple(range(512))}
    with backbone.controlled(control):
        backbone.predict(latents, 500.0, texts)
    assert torch.allclose(control.maps[0], torch.full((16,), 2.0), atol=1e-5)
    assert (control.maps[1] < 2.0).all()  # the text's share only


def test_injected_image_keys_and_values_change_the_target_row_only(family):
    backbone, (latents, texts, stock) = family.backbone, _call(family)
    control = dit_attention.Control(backbone.token_layout(latents, texts))
    control.inject = [(1, 0)]
    same = torch.cat([latents[:1], latents[:1]])  # the rows differ in their texts only
    with backbone.controlled(control):
        injected = backbone.predict(latents, 500.0, texts)
        # Only in the first layer, whose image keys/values depend on the latent (and their
        # position) alone: the target's own, so nothing changes (copying the text's would).
        first = next(iter(control.layouts))
        control.layouts = {first: control.layouts[first]}
        first_only = backbone.predict(same, 500.0, texts)
        # Z-Image numbers the image after the caption: the source's keys must be turned to the
        # target's positions, or the target attends to them as if moved.
        control.layouts = {first: dataclasses.replace(control.layouts[first], rotary=None)}
        unturned = backbone.predict(same, 500.0, texts)
    plain = backbone.predict(same, 500.0, texts)
    assert torch.equal(injected[0], stock[0]) and not torch.allclose(injected[1], stock[1], atol=1e-3)
    assert torch.allclose(first_only, plain, atol=1e-5)
    assert torch.allclose(unturned, plain, atol=1e-5) == (family.model.family == "flux2-klein")


def test_the_processors_come_back_after_an_error(session):
    saved, dispatch = _processors(session), _modules(session).dispatch_attention_fn
    latents, texts, _ = _call(session)
    with pytest.raises(RuntimeError, match="stop"):
        with session.backbone.controlled(dit_attention.Control(
                session.backbone.token_layout(latents, texts))):
            raise RuntimeError("stop")
    assert _restored(session, saved, dispatch)


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
def test_p2p_with_identical_texts_gives_the_photo_back(family, photo):
    fast = family.default_params("p2p").replace(steps=2, resolution=64)
    [same] = family.run("p2p", CAT, CAT, None, fast, {"self_fraction": 1.0, "blend_words": "cat"})
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
        family, photo):
    fast = family.default_params("p2p").replace(steps=2, resolution=64)
    options = {"blend_words": "cat dog", "blend_threshold": 0.5}
    [result] = family.run("p2p", CAT, DOG, None, fast, options)
    heat = result.heatmap
    assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)  # each branch rescaled
    assert np.array_equal(result.mask, masks.threshold(heat, 0.5)) and 0 < result.mask.mean() < 1
    kept = masks.paste_alpha(result.mask, result.params.feather) == 0
    assert kept.any() and np.array_equal(result.image[kept], photo[kept])
    assert not np.array_equal(result.image, photo)
    [again] = family.run("p2p", CAT, DOG, None, fast, options)
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


@pytest.mark.slow
def test_a_cancelled_run_restores_the_processors_and_a_user_mask_keeps_the_photo(
        session, photo, fast):
    saved, dispatch = _processors(session), _modules(session).dispatch_attention_fn
    stages = []
    with pytest.raises(Cancelled):  # stopped at the second decoding step, inside the control
        session.run("p2p", CAT, DOG, None, fast, on_step=lambda stage, *_: stages.append(stage),
                    should_stop=lambda: stages.count("decode") == 1)
    assert _restored(session, saved, dispatch)
    box = np.zeros(photo.shape[:2], np.float32)
    box[16:48, 16:48] = 1.0
    [result] = session.run("p2p", CAT, DOG, box, fast, {"blend_words": "dog"})
    kept = masks.paste_alpha(box, result.params.feather) == 0
    assert result.heatmap is None and kept.any()
    assert np.array_equal(result.image[kept], photo[kept]) and not np.array_equal(result.image, photo)


@pytest.mark.slow
def test_p2p_runs_in_bfloat16(tiny_zimage_path, photo):
    """On Z-Image, whose tiny text encoder is the cheaper one to load and run again."""
    model = load_model(str(tiny_zimage_path), device="cpu", dtype="bfloat16")
    assert model.transformer.dtype == torch.bfloat16
    session = EditSession(model, photo)
    params = session.default_params("p2p").replace(steps=2, resolution=64)
    [result] = session.run("p2p", CAT, DOG, None, params,
                           {"blend_words": "dog", "blend_threshold": 0.5})
    kept = masks.paste_alpha(result.mask, result.params.feather) == 0
    assert 0 < result.mask.mean() < 1 and np.array_equal(result.image[kept], photo[kept])


def test_options_joint_attention_has_no_counterpart_for_are_named_when_set(session):
    options = PromptToPromptOptions(mode="refine", cross_fraction=0.5)
    assert dit.unused_warnings(session.backbone, "p2p", options) == [
        f"{name} has no counterpart in FLUX.2 klein's joint attention and was not used"
        for name in ("mode", "cross_fraction")]
    assert dit.unused_warnings(session.backbone, "p2p", PromptToPromptOptions()) == []
