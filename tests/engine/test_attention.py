"""Attention control: processors only on controlled layers, exact when idle, restored always, any size."""

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from engine import attention
from engine.errors import Cancelled
from engine.imaging import load_photo
from engine.params import EditParams
from engine.session import EditSession

FAST = EditParams(steps=5, resolution=64)


@pytest.fixture(scope="module")
def cat(samples_dir):
    return load_photo(samples_dir / "chelsea.png")  # 451x300: a non-square working latent


def _unet_inputs(tiny_model, height, width, batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn((batch, 4, height, width), generator=generator)
    texts = torch.randn((batch, 77, tiny_model.unet.config.cross_attention_dim), generator=generator)
    return latents, texts


def _unet(tiny_model, latents, texts):
    with torch.no_grad():
        return tiny_model.unet(latents, 500, encoder_hidden_states=texts, return_dict=False)[0]


@pytest.mark.parametrize("latent,tokens,expected", [
    ((16, 16), 256, (16, 16)), ((16, 16), 16, (4, 4)), ((10, 6), 15, (5, 3)),
    ((13, 9), 35, (7, 5)), ((13, 9), 4, (2, 2)), ((64, 96), 24, (4, 6)),
])
def test_spatial_size_comes_from_the_token_count_and_the_latent_shape(latent, tokens, expected):
    assert attention.spatial_size(tokens, latent) == expected


def test_spatial_size_refuses_a_token_count_of_no_level():
    with pytest.raises(ValueError, match="17 attention tokens"):
        attention.spatial_size(17, (16, 16))


def test_level_factors_follow_the_unet_layout(tiny_model):
    factors = {layer.name.split(".attentions")[0]: layer.factor
               for layer in attention.attention_layers(tiny_model.unet)}
    # The tiny UNet: a plain full-resolution block, then cross-attention at half resolution.
    assert factors == {"down_blocks.1": 2, "mid_block": 2, "up_blocks.0": 2}


def test_installed_swaps_only_named_layers_and_restores_them(tiny_model):
    unet = tiny_model.unet
    before = unet.attn_processors
    names = sorted(before)
    chosen = names[0]
    marker = attention.QueryKeyInjection(before[chosen], lambda tokens: [])
    calls = []
    module = unet.up_blocks[0].resnets[1].conv2
    with attention.installed(unet, {chosen: marker}, [(module, lambda *a: calls.append(1))]):
        during = unet.attn_processors
        assert during[chosen] is marker
        # Every other layer keeps its own (memory-efficient) processor object.
        assert all(during[n] is before[n] for n in names if n != chosen)
        assert all(isinstance(during[n], AttnProcessor2_0) for n in names if n != chosen)
        _unet(tiny_model, *_unet_inputs(tiny_model, 8, 8))
    assert calls == [1]
    assert all(unet.attn_processors[n] is before[n] for n in names)
    assert not module._forward_hooks
    _unet(tiny_model, *_unet_inputs(tiny_model, 8, 8))
    assert calls == [1]  # the hook is gone


def test_installed_restores_after_an_error(tiny_model):
    unet = tiny_model.unet
    before = unet.attn_processors
    name = sorted(before)[1]
    module = unet.up_blocks[1].resnets[0].conv2
    with pytest.raises(RuntimeError, match="boom"):
        with attention.installed(unet, {name: attention.QueryKeyInjection(before[name], lambda t: [])},
                                 [(module, lambda *a: None)]):
            raise RuntimeError("boom")
    assert all(unet.attn_processors[n] is before[n] for n in before)
    assert not module._forward_hooks
    with pytest.raises(KeyError, match="no attention layer"):
        with attention.installed(unet, {"nowhere.processor": None}):
            pass
    assert all(unet.attn_processors[n] is before[n] for n in before)


def test_idle_controlled_layers_compute_exactly_what_the_stock_processors_do(tiny_model):
    unet = tiny_model.unet
    latents, texts = _unet_inputs(tiny_model, 10, 6)
    expected = _unet(tiny_model, latents, texts)
    saved = unet.attn_processors
    idle = {}
    for layer in attention.attention_layers(unet):
        if layer.cross:
            idle[layer.name] = attention.CrossAttentionEdit(saved[layer.name], lambda: False,
                                                            lambda p: 1 / 0)
        else:
            idle[layer.name] = attention.QueryKeyInjection(saved[layer.name], lambda t: [])
    with attention.installed(unet, idle):
        assert torch.equal(_unet(tiny_model, latents, texts), expected)


def test_cross_attention_probabilities_at_a_non_square_non_native_size(tiny_model):
    """Computing the probabilities explicitly gives the stock result (to float tolerance) on a
    10x6 latent (the tiny model's native one is 16x16), and the edit sees the right shapes."""
    unet = tiny_model.unet
    latents, texts = _unet_inputs(tiny_model, 10, 6, seed=1)
    expected = _unet(tiny_model, latents, texts)
    seen = []

    def identity(probs):
        seen.append((tuple(probs.shape), attention.spatial_size(probs.shape[2], (10, 6))))
        assert torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5)
        return probs

    saved = unet.attn_processors
    cross = {layer.name: attention.CrossAttentionEdit(saved[layer.name], lambda: True, identity)
             for layer in attention.attention_layers(unet) if layer.cross}
    with attention.installed(unet, cross):
        got = _unet(tiny_model, latents, texts)
    assert len(seen) == len(cross) == 4
    heads = unet.config.attention_head_dim
    assert all(shape == (2, 64 // heads, 15, 77) and size == (5, 3) for shape, size in seen)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.equal(got, _unet(tiny_model, latents, texts * 0.5))  # the text matters


def test_query_key_injection_applies_the_source_attention_to_the_targets_values():
    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8).eval()
    hidden = torch.randn(3, 12, 16)  # rows: source, target A, target B
    injected = attention.QueryKeyInjection(AttnProcessor2_0(), lambda tokens: [(1, 0), (2, 0)])
    with torch.no_grad():
        out = injected(attn, hidden)
        stock = AttnProcessor2_0()(attn, hidden)

        def heads(x):
            return x.view(3, 12, 2, 8).transpose(1, 2)

        q, k, v = heads(attn.to_q(hidden)), heads(attn.to_k(hidden)), heads(attn.to_v(hidden))
        for row in (1, 2):
            probs = (q[0] @ k[0].transpose(-1, -2) * attn.scale).softmax(-1)  # the source's
            manual = (probs @ v[row]).transpose(0, 1).reshape(12, 16)
            assert torch.allclose(out[row], attn.to_out[0](manual), atol=1e-5)
    assert torch.equal(out[0], stock[0])  # the source row is untouched
    assert not torch.allclose(out[1], stock[1], atol=1e-3)


@pytest.mark.parametrize("method,options", [
    ("p2p", {"mode": "swap", "blend_words": "cat", "self_fraction": 1.0}),
    ("pnp", {}),
])
@pytest.mark.parametrize("stop_after", [None, 1, 7])
def test_processors_and_hooks_are_restored_after_a_run_and_a_cancelled_run(
        tiny_model, cat, method, options, stop_after):
    unet = tiny_model.unet
    before = unet.attn_processors
    polls = []

    def should_stop():
        polls.append(1)
        return stop_after is not None and len(polls) > stop_after

    session = EditSession(tiny_model, cat)
    if stop_after is None:
        session.run(method, "a photo of a cat", "a photo of a dog", None, FAST, options,
                    should_stop=should_stop)
    else:
        with pytest.raises(Cancelled):
            session.run(method, "a photo of a cat", "a photo of a dog", None, FAST, options,
                        should_stop=should_stop)
        assert len(polls) == stop_after + 1
    after = unet.attn_processors
    assert all(after[name] is before[name] for name in before)
    assert not any(m._forward_hooks for m in unet.modules())
    # The session still works after a cancel.
    result = session.run(method, "a photo of a cat", "a photo of a dog", None, FAST, options)[0]
    assert result.image.shape == cat.rgb.shape


@pytest.mark.parametrize("method,options,expected", [
    # P2P controls every cross-attention layer; self-attention only when injected (all of the
    # tiny model's self-attention layers are at half resolution).
    ("p2p", {"self_fraction": 0.0}, {"cross": 4, "self": 0}),
    ("p2p", {"self_fraction": 0.5}, {"cross": 4, "self": 4}),
    ("p2p", {"self_fraction": 0.0, "cross_fraction": 0.0}, {"cross": 0, "self": 0}),
    # PnP: only the self-attention of the decoder layers from "layer 4" on.
    ("pnp", {}, {"cross": 0, "self": 1}),
])
def test_only_controlled_layers_get_new_processors_during_a_run(tiny_model, cat, method, options,
                                                                 expected):
    unet = tiny_model.unet
    before = unet.attn_processors
    snapshots = []
    handle = unet.register_forward_pre_hook(lambda m, a: snapshots.append(unet.attn_processors))
    try:
        EditSession(tiny_model, cat).run(method, "a photo of a cat", "a photo of a dog", None,
                                         FAST, options)
    finally:
        handle.remove()
    inverting, decoding = snapshots[0], snapshots[-1]
    assert all(inverting[n] is before[n] for n in before)  # nothing is controlled while inverting
    changed = {"cross": 0, "self": 0}
    for layer in attention.attention_layers(unet):
        if decoding[layer.name] is not before[layer.name]:
            changed["cross" if layer.cross else "self"] += 1
        else:
            assert isinstance(decoding[layer.name], AttnProcessor2_0)
    assert changed == expected


def test_prompt_to_prompt_on_an_sd_shaped_unet_at_a_non_square_size(tiny_model):
    """SD 1.x's four-level layout (toy width) on a 24x40 latent: cross-attention at 1/1, 1/2,
    1/4 and 1/8; identical texts still give identical branches."""
    import dataclasses

    from diffusers import UNet2DConditionModel

    from engine.inversion import Schedule
    from engine.methods import options as method_options
    from engine.methods import p2p
    from engine.runtime import RunContext

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(8, 8, 16, 16), norm_num_groups=4,
                                cross_attention_dim=tiny_model.unet.config.cross_attention_dim,
                                attention_head_dim=2, layers_per_block=1).eval()
    model = dataclasses.replace(tiny_model, unet=unet)
    ctx = RunContext(model)
    schedule = Schedule.from_config(tiny_model.scheduler_config, 4)
    generator = torch.Generator().manual_seed(0)
    trajectory = [torch.randn((1, 4, 24, 40), generator=generator) for _ in range(4)]
    session = EditSession(tiny_model, np.zeros((16, 16, 3), np.uint8))
    text = "a photo of a cat"
    options = method_options.from_dict(method_options.PromptToPromptOptions,
                                       {"blend_words": "cat", "self_fraction": 1.0})
    plan = p2p.plan_tokens(tiny_model.tokenizer, text, text, options)
    sizes = []

    def observe(source, own, new):
        sizes.append(attention.spatial_size(source.shape[1], (24, 40)))

    latents, blend = p2p.sample(ctx, ctx.backbone, schedule, trajectory, session.embed(text),
                                session.embed(text), plan, 7.5, options, observer=observe)
    assert set(sizes) == {(24, 40), (12, 20), (6, 10), (3, 5)}
    assert blend.shape == (24, 40)
    # Equal to rounding: in a batch of three rows a CPU GEMM may sum a tail row in another order.
    assert torch.allclose(latents[0], latents[1], atol=1e-4), (latents[0] - latents[1]).abs().max()
    assert ctx.unet_evals == {"run": 3 * 3}
