"""Plug-and-Play on the tiny model: invariants that hold for any weights."""

import json

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

from engine import attention, cli
from engine.imaging import load_photo
from engine.inversion import Schedule
from engine.methods import diffedit, pnp
from engine.params import EditParams
from engine.runtime import RunContext
from engine.session import EditSession

FAST = EditParams(steps=10, resolution=64)  # 8 decoding steps on a 10x8 latent


@pytest.fixture(scope="module")
def cat(samples_dir):
    return load_photo(samples_dir / "chelsea.png")


def _plain_generation(session, params, target, negative):
    """Guided DDIM from the unconditionally inverted latent under the target, no injection,
    pasted back as a global edit (with the photo's detail finer than the working size)."""
    ctx = RunContext(session.model)
    geometry = session.geometry(params)
    schedule = Schedule.from_config(session.model.scheduler_config, params.steps)
    trajectory = session.encode(ctx, geometry, schedule, params)
    everywhere = torch.ones(trajectory[0].shape[-2:])
    latent = diffedit.masked_decode(ctx, schedule, trajectory, everywhere, session.embed(negative),
                                    session.embed(target), params.guidance, params.eta, params.seed)
    return geometry.from_working_with_detail(session.decode_latent(latent), session.rgb)


@pytest.mark.parametrize("params", [FAST, FAST.replace(eta=0.5, seed=3), FAST.replace(guidance=1.0)])
def test_zero_fractions_equal_plain_generation_from_the_inverted_latent(tiny_model, cat, params):
    session = EditSession(tiny_model, cat)
    result = session.run("pnp", "a cat", "a dog", None, params,
                         {"feature_fraction": 0.0, "attention_fraction": 0.0})[0]
    expected = _plain_generation(session, params, "a dog", "a cat")
    assert np.array_equal(result.image, expected)
    assert result.heatmap is None and result.mask.min() == 1.0
    # Injection does change the result.
    for options in ({"feature_fraction": 0.5, "attention_fraction": 0.0},
                    {"feature_fraction": 0.0, "attention_fraction": 0.5}):
        injected = session.run("pnp", "a cat", "a dog", None, params, options)[0]
        assert not np.array_equal(injected.image, expected)


def test_features_are_injected_for_the_chosen_fraction_of_steps(tiny_model, cat):
    """Watch decoder layer 4's residual branch (conv2) after the injection hook: the target rows
    equal the source row in exactly the first round(0.5 * 8) = 4 steps."""
    layer, _ = pnp.injection_layers(attention.decoder_layers(tiny_model.unet))
    seen = []

    def watch(module, inputs, output):
        if output.shape[0] == 3:  # rows: source, negative, target
            seen.append(torch.equal(output[1], output[0]) and torch.equal(output[2], output[0]))
        else:
            seen.append(None)  # a step without the source row

    session = EditSession(tiny_model, cat)
    session.encode(RunContext(tiny_model), session.geometry(FAST),
                   Schedule.from_config(tiny_model.scheduler_config, FAST.steps), FAST)
    conv2 = layer.resnet.conv2
    watching = []

    def add_watch(module, args):
        # Once the method has installed its hook, add ours after it, to see what it produced.
        if len(conv2._forward_hooks) == 1 and not watching:
            watching.append(conv2.register_forward_hook(watch))

    handle = tiny_model.unet.register_forward_pre_hook(add_watch)
    try:
        session.run("pnp", "", "a dog", None, FAST, {"feature_fraction": 0.5,
                                                     "attention_fraction": 0.75})
    finally:
        handle.remove()
        for each in watching:
            each.remove()
    assert not conv2._forward_hooks
    # Steps 5-6 still carry the source row (attention injection) but not the features.
    assert seen == [True] * 4 + [False] * 2 + [None] * 2


def test_layer_choice_follows_the_paper_on_an_sd_shaped_unet():
    unet = UNet2DConditionModel(  # SD 1.x's block layout at toy width
        block_out_channels=(8, 8, 16, 16), norm_num_groups=4, cross_attention_dim=8,
        attention_head_dim=2, layers_per_block=2,
    )
    layer, names = pnp.injection_layers(attention.decoder_layers(unet))
    assert (layer.number, layer.block, layer.index) == (4, 1, 1)
    assert layer.resnet is unet.up_blocks[1].resnets[1]
    expected = [f"up_blocks.{b}.attentions.{a}.transformer_blocks.0.attn1.processor"
                for b, a in [(1, 1), (1, 2), (2, 0), (2, 1), (2, 2), (3, 0), (3, 1), (3, 2)]]
    assert names == expected  # decoder layers 4-11: eight self-attention layers


def test_layer_choice_goes_by_resolution_on_the_tiny_unet(tiny_model):
    unet = tiny_model.unet
    assert len(attention.decoder_layers(unet)) == 4
    layer, names = pnp.injection_layers(attention.decoder_layers(unet))
    assert (layer.block, layer.index) == (0, 1)  # no 1/4 level: the 1/2 one, its 2nd resnet
    assert names == ["up_blocks.0.attentions.1.transformer_blocks.0.attn1.processor"]


@pytest.mark.slow
def test_layer_choice_on_an_sdxl_shaped_unet():
    """SDXL's decoder: 1/4 (3 attentions x 10 transformer blocks), 1/2 (3 x 2), 1/1 (none)."""
    unet = UNet2DConditionModel(  # SDXL's block layout at toy width
        block_out_channels=(8, 8, 16), norm_num_groups=4, cross_attention_dim=8,
        attention_head_dim=2, layers_per_block=2, transformer_layers_per_block=(1, 2, 10),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    )
    layer, names = pnp.injection_layers(attention.decoder_layers(unet))
    # Counting layers would give round(4 / 12 * 9) = 3: up_blocks[1], the 1/2 level.
    assert (layer.number, layer.block, layer.index, layer.factor) == (1, 0, 1, 4)
    assert layer.resnet is unet.up_blocks[0].resnets[1]
    expected = [f"up_blocks.0.attentions.{a}.transformer_blocks.{t}.attn1.processor"
                for a in (1, 2) for t in range(10)]
    expected += [f"up_blocks.1.attentions.{a}.transformer_blocks.{t}.attn1.processor"
                 for a in range(3) for t in range(2)]
    assert names == expected


def test_unet_evaluations_are_counted_and_the_encoding_is_shared_with_diffedit(tiny_model, cat):
    session = EditSession(tiny_model, cat)
    evaluations = []
    handle = tiny_model.unet.register_forward_pre_hook(
        lambda module, args: evaluations.append(args[0].shape[0]))
    try:
        first = session.run("pnp", "a cat", "a dog", None, FAST)[0]
        count = FAST.encode_steps  # 8; features in round(0.8 * 8) = 6 steps, attention in 4
        assert first.stats["unet_evals"] == {"encode": count, "decode": 6 * 3 + 2 * 2}
        assert sum(evaluations) == count + 22
        evaluations.clear()
        mask = np.ones(cat.rgb.shape[:2], np.float32)
        edit = session.edit("a cat", "a tiger", mask, FAST)  # DiffEdit reuses the encoding
        assert "encode" not in edit.stats["unet_evals"]
        again = session.run("pnp", "a cat", "a bird", None, FAST.replace(guidance=1.0))[0]
        assert again.stats["unet_evals"] == {"decode": 6 * 2 + 2 * 1}
    finally:
        handle.remove()


def test_cli_runs_plug_and_play(tmp_path, samples_dir, tiny_model_path, capsys):
    out, report = tmp_path / "out.png", tmp_path / "report.json"
    code = cli.main(["edit", str(samples_dir / "chelsea.png"), "-o", str(out), "--method", "pnp",
                     "--target", "a watercolour painting of a cat", "--feature-fraction", "0.5",
                     "--attention-fraction", "0.25", "--report", str(report), "--model", "tiny",
                     "--steps", "4", "--resolution", "64", "--quiet"])
    assert code == 0, capsys.readouterr().err
    data = json.loads(report.read_text())
    # Plug-and-Play's own encoding ratio is 1 (pnp-diffusers inverts fully): 4 encoding steps;
    # features in round(2.5) = 2 steps (3 rows), then 2 steps of 2 rows.
    assert data["method"] == "pnp" and data["unet_evals"] == {"encode": 4, "decode": 10}
    assert json.loads(report.read_text())["params"]["strength"] == 1.0
    code = cli.main(["edit", str(samples_dir / "chelsea.png"), "-o", str(out), "--method", "pnp",
                     "--target", "a dog", "--mode", "swap", "--model", "tiny", "--quiet"])
    assert code == 2
    assert "--mode do not apply to --method pnp" in capsys.readouterr().err


def test_a_run_without_params_takes_the_methods_own_defaults(tiny_model, cat, monkeypatch):
    from engine import methods

    seen = []
    monkeypatch.setattr(pnp, "run", lambda session, ctx, source, target, mask, params, options:
                        seen.append(params) or [])
    session = EditSession(tiny_model, cat)
    session.run("pnp", "", "a watercolour painting", None)
    assert seen == [session.default_params("pnp")] and seen[0].strength == 1.0
    assert methods.info("p2p").default_params().strength == 1.0
    assert methods.info("diffedit").default_params() == EditParams()


def test_moving_params_to_another_method_keeps_what_the_user_set():
    from engine.methods import carry_params

    left = EditParams(steps=30)  # the ratio left at DiffEdit's default
    assert carry_params(left, "diffedit", "pnp") == EditParams(steps=30, strength=1.0)
    assert carry_params(carry_params(left, "diffedit", "pnp"), "pnp", "diffedit") == left
    assert carry_params(left.replace(strength=0.6), "diffedit", "p2p").strength == 0.6
    assert carry_params(left.replace(strength=1.0), "pnp", "sdedit").strength == 0.8
