"""LoRA: a tiny LoRA made here changes the output on SD and SDXL and the velocity on FLUX.2 klein,
SD3.5, Z-Image, FLUX.1 Kontext and Qwen-Image-Edit (unfused), weight 0 gives the base bytes, a
LoRA for another family or size is refused by name, a few-step LoRA (Lightning, LCM, ...) sets its
steps and guidance 1 (on Qwen-Image-Edit Lightning's fixed shift too), and the CLI's
PATH[:WEIGHT] specs."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from engine import lora
from engine.backbones import for_model
from engine.errors import InputError
from engine.models import load_model
from engine.params import EditParams
from engine.session import EditSession


def _make_lora(model, folder, name, text_encoder=False):
    """A random (non-zero) rank-4 LoRA on the UNet's attention (and the first text encoder's),
    saved as diffusers writes one."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(1)
    config = dict(r=4, lora_alpha=4, init_lora_weights=False)
    unet = copy.deepcopy(model.unet)
    unet.add_adapter(LoraConfig(**config, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = {"unet_lora_layers": get_peft_model_state_dict(unet)}
    if text_encoder:
        encoder = copy.deepcopy(model.text_encoder)
        inject_adapter_in_model(LoraConfig(**config, target_modules=["q_proj", "v_proj"]), encoder)
        layers["text_encoder_lora_layers"] = get_peft_model_state_dict(encoder)
    StableDiffusionPipeline.save_lora_weights(folder, **layers, weight_name=f"{name}.safetensors")
    return folder / f"{name}.safetensors"


def _edit(model):
    rgb = (np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3)
    mask = np.zeros((64, 64), np.float32)
    mask[16:48, 16:48] = 1
    return EditSession(model, rgb).edit("a cat", "a dog", mask,
                                        EditParams(steps=3, seed=3, resolution=64))


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_a_lora_changes_the_output_and_weight_zero_gives_the_base_bytes(
        family, tiny_model_path, tiny_sdxl_path, tmp_path):
    path = str(tiny_model_path if family == "sd" else tiny_sdxl_path)
    base_model = load_model(path, device="cpu")
    style = _make_lora(base_model, tmp_path, "tiny-style", text_encoder=True)
    base = _edit(base_model)
    styled_model = load_model(path, device="cpu", loras=[lora.parse(f"{style}:1")])
    styled = _edit(styled_model)
    off = _edit(load_model(path, device="cpu", loras=[lora.parse(f"{style}:0")]))
    assert not np.array_equal(styled.image, base.image)
    # The file's text-encoder part is loaded too: the text's features change.
    texts = [for_model(m).encode_text("a cat")[0].embeds for m in (base_model, styled_model)]
    assert not torch.allclose(*texts)
    assert np.array_equal(off.image, base.image)
    assert styled.loras == ["tiny-style:1"] and base.loras == []
    assert 'LoRA: "tiny-style:1"' in styled.metadata()["parameters"]  # quoted: it holds a colon
    assert json.loads(styled.metadata()["diffedit"])["loras"] == ["tiny-style:1"]


def test_two_loras_each_with_its_weight(tiny_model, tmp_path):
    first, second = (_make_lora(tiny_model, tmp_path, name) for name in ("first", "second"))
    model = copy.copy(tiny_model)
    model.unet = copy.deepcopy(tiny_model.unet)
    model.text_encoder = copy.deepcopy(tiny_model.text_encoder)
    lora.apply(model, [lora.LoraSpec(first, 0.5), lora.LoraSpec(second, -1)])
    assert model.loras == ["first:0.5", "second:-1"]
    layer = model.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn2.to_k
    assert layer.scaling == {"lora0": 0.5, "lora1": -1.0}


def test_a_lora_for_another_family_is_refused_by_name(tiny_model, tiny_sdxl, tmp_path):
    sdxl_lora = _make_lora(tiny_sdxl, tmp_path, "xl-style")
    with pytest.raises(InputError, match=r"xl-style\.safetensors: this LoRA is for 80-wide text "
                                         r"features models and the loaded model is 32-wide"):
        lora.apply(copy.copy(tiny_model), [lora.LoraSpec(sdxl_lora)])
    from safetensors.torch import save_file

    not_lora = tmp_path / "weights.safetensors"
    save_file({"conv.weight": torch.zeros(2, 2)}, str(not_lora))
    with pytest.raises(InputError, match="not a LoRA file"):
        lora.apply(copy.copy(tiny_model), [lora.LoraSpec(not_lora)])
    pickle = tmp_path / "style.ckpt"
    pickle.write_bytes(b"\x80\x04")
    with pytest.raises(InputError, match="only .safetensors LoRA files"):
        lora.apply(copy.copy(tiny_model), [lora.LoraSpec(pickle)])


@pytest.mark.parametrize("spec, path, weight", [
    ("style.safetensors", "style.safetensors", 1.0),
    ("style.safetensors:0.5", "style.safetensors", 0.5),
    (r"C:\loras\style.safetensors", r"C:\loras\style.safetensors", 1.0),
    (r"C:\loras\style.safetensors:-1", r"C:\loras\style.safetensors", -1.0),
])
def test_specs(spec, path, weight):
    assert lora.parse(spec) == lora.LoraSpec(lora.Path(path), weight)


def test_bad_specs_name_the_problem(tmp_path):
    with pytest.raises(InputError, match="outside -10..10"):
        lora.parse("a.safetensors:50")
    with pytest.raises(InputError, match="needs a file"):
        lora.parse("")
    with pytest.raises(InputError, match="no such file"):
        lora.apply(object(), [lora.parse(str(tmp_path / "missing.safetensors"))])


def test_the_cli_refuses_a_missing_lora_before_loading_the_model(tmp_path, capsys, samples_dir):
    from engine.cli import main

    # The model folder is missing too: the LoRA's message shows the file was checked first.
    code = main(["edit", str(samples_dir / "chelsea.png"), "-o", str(tmp_path / "out.png"),
                 "--target", "a dog", "--model", str(tmp_path / "no-model"),
                 "--lora", str(tmp_path / "gone.safetensors:0.5")])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error")]
    assert code == 2 and errors == [f"error: --lora {tmp_path / 'gone.safetensors'}: no such file"]


# ---- LoRAs on the flow transformers (FLUX.2 klein, SD3.5, Z-Image, FLUX.1 Kontext, Qwen-Image-Edit)

TINY_FLOW = {"flux2-klein": "tiny_flux2", "sd3": "tiny_sd3", "zimage": "tiny_zimage",
             "flux1-kontext": "tiny_kontext", "qwen-image-edit-plus": "tiny_qwen_edit"}
# what each family's LoRAs commonly change (klein's single-stream blocks, SD3.5's text stream,
# Qwen's image MLP, FLUX.1's feed-forward, named as SD3's is)
TARGETS = {"flux2-klein": ["to_q", "to_k", "to_v", "to_qkv_mlp_proj"],
           "sd3": ["to_q", "to_k", "to_v", "add_q_proj"], "zimage": ["to_q", "to_k", "to_v"],
           "flux1-kontext": ["to_q", "to_k", "to_v", "ff.net.0.proj"],
           "qwen-image-edit-plus": ["to_q", "to_k", "to_v", "img_mlp.net.0.proj"]}


def _make_flow_lora(model, folder, name, metadata=None):
    """A random rank-4 LoRA on the transformer, saved as diffusers' trainers write one (with
    ``metadata`` added to the file's header)."""
    import diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    from engine.families import FLOW_PIPELINES

    torch.manual_seed(1)
    transformer = copy.deepcopy(model.transformer)
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                       target_modules=TARGETS[model.family]))
    pipeline = next(p for p, f in FLOW_PIPELINES.items() if f == model.family)
    getattr(diffusers, pipeline).save_lora_weights(
        folder, transformer_lora_layers=get_peft_model_state_dict(transformer),
        weight_name=f"{name}.safetensors")
    path = folder / f"{name}.safetensors"
    if metadata:
        save_file(load_file(str(path)), str(path), metadata={"format": "pt", **metadata})
    return path


def _with_own_transformer(model):
    """``model`` sharing everything but a copy of its transformer (which a LoRA changes)."""
    return dataclasses.replace(model, transformer=copy.deepcopy(model.transformer), loras=[])


@pytest.fixture(params=list(TINY_FLOW))
def flow(request):
    return request.getfixturevalue(TINY_FLOW[request.param])


def test_a_flow_lora_changes_the_velocity_unfused_and_weight_zero_gives_the_base_bytes(
        flow, tmp_path, cat128):
    """The base is the same transformer before the LoRA: a copy's weights elsewhere in memory may
    take other CPU kernels (a last-bit difference on SD3.5's), so bytes compare in place."""
    path = _make_flow_lora(flow, tmp_path, f"{flow.family}-style")
    off, on = _with_own_transformer(flow), _with_own_transformer(flow)
    base = for_model(off)
    # the LoRA has no text part; an edit model reads the photo too (at 64x64: 4x4 latent cells)
    text, photo = "a photo of a cat", np.ascontiguousarray(cat128[::2, ::2])
    cond, _ = base.encode_instruction(text, photo) if base.text_sees_photo else base.encode_text(text)
    clean = base.encode_image(photo)
    if "instruct" in base.methods:
        cond = base.with_reference(cond, clean)
    latents = 0.5 * clean + 0.5 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    expected = base.predict(latents, torch.tensor(500.0), cond)
    lora.apply(off, [lora.LoraSpec(path, 0)])
    lora.apply(on, [lora.LoraSpec(path, 1)])
    velocity_off, velocity_on = (for_model(m).predict(latents, torch.tensor(500.0), cond)
                                 for m in (off, on))
    assert torch.equal(velocity_off, expected)
    assert not torch.allclose(velocity_on, expected, atol=1e-4)
    assert on.loras == [f"{flow.family}-style:1"] and on.lora_steps == 0
    # unfused: the base weights are untouched, the adapter sits beside them
    lora_layers = [(name, m) for name, m in on.transformer.named_modules() if hasattr(m, "base_layer")]
    assert len(lora_layers) >= 3
    originals = dict(flow.transformer.named_parameters())
    for name, layer in lora_layers:
        assert torch.equal(layer.base_layer.weight, originals[f"{name}.weight"])


def test_a_flow_lora_of_another_family_or_size_is_refused_by_name(
        tiny_flux2, tiny_sd3, tiny_zimage, tiny_kontext, tiny_qwen_edit, tiny_model, tmp_path):
    from safetensors.torch import save_file

    files = {m.family: _make_flow_lora(m, tmp_path, m.family)
             for m in (tiny_flux2, tiny_sd3, tiny_zimage, tiny_qwen_edit)}
    files["sd"] = _make_lora(tiny_model, tmp_path, "sd-style")
    for name, model, message in [
            ("zimage", tiny_flux2, "for Z-Image models and the loaded model is FLUX.2 klein"),
            ("flux2-klein", tiny_sd3, "for FLUX.2 klein models and the loaded model is SD3.5"),
            ("sd3", tiny_zimage, "for SD3.5 models and the loaded model is Z-Image"),
            ("sd", tiny_zimage, "for SD 1.x/2.x or SDXL models and the loaded model is Z-Image"),
            ("flux2-klein", tiny_model, "for FLUX.2 klein models and the loaded model is 32-wide"),
            ("flux2-klein", tiny_kontext, "for FLUX.2 klein models and the loaded model is FLUX.1 Kontext"),
            ("sd3", tiny_kontext, "for SD3.5 models and the loaded model is FLUX.1 Kontext"),
            ("flux2-klein", tiny_qwen_edit, "for FLUX.2 klein models and the loaded model is Qwen-Image-Edit"),
            ("sd3", tiny_qwen_edit, "for SD3.5 models and the loaded model is Qwen-Image-Edit"),
            ("qwen-image-edit-plus", tiny_flux2, "for Qwen-Image models and the loaded model is FLUX.2 klein")]:
        with pytest.raises(InputError, match=rf"{files[name].name}: this LoRA is {message}"):
            lora.apply(_with_own_transformer(model), [lora.LoraSpec(files[name])])
    # names alike (a double block's attention), sizes or blocks not: another size of the family
    layer = "transformer.transformer_blocks.{}.attn.to_q.lora_{}.weight"
    save_file({layer.format(0, "A"): torch.zeros(4, 64), layer.format(0, "B"): torch.zeros(32, 4)},
              str(tmp_path / "wide.safetensors"))
    save_file({layer.format(7, "A"): torch.zeros(4, 32), layer.format(7, "B"): torch.zeros(32, 4)},
              str(tmp_path / "deep.safetensors"))
    save_file({"transformer.single_transformer_blocks.0.proj_mlp.lora_A.weight": torch.zeros(4, 32)},
              str(tmp_path / "flux1.safetensors"))  # FLUX.1's single blocks, by their diffusers names
    for name, message in [("wide", r"another size \(its transformer_blocks.0.attn.to_q has 64 "
                                   r"features where the loaded FLUX.2 klein has 32\)"),
                          ("deep", "changes the layer transformer_blocks.7.attn.to_q, which the "
                                   "loaded FLUX.2 klein model does not have"),
                          ("flux1", "for FLUX.1 models and the loaded model is FLUX.2 klein")]:
        with pytest.raises(InputError, match=message):
            lora.apply(_with_own_transformer(tiny_flux2), [lora.LoraSpec(tmp_path / f"{name}.safetensors")])


@pytest.mark.parametrize("name, metadata, steps", [
    ("Z-Image-Lightning-4steps", None, 4), ("sdxl_lightning_8step_lora", None, 8),
    ("lcm-lora-sdxl", None, 8), ("hyper-fast", {"num_inference_steps": "6"}, 6),
    ("detail-style", None, 0), ("style-1000steps", None, 0),
    ("detail-style", {"num_inference_steps": "30"}, 0),
    ("detail-style", {"num_inference_steps": "\u00b2"}, 0),
    ("detail-style", {"sampling_steps": "9" * 5000}, 0),
    ("Qwen-Image-Edit-2509-Lightning-8steps-V1.0-bf16", None, 8)])
def test_a_few_step_lora_is_known_by_its_name_or_metadata(tiny_zimage, tmp_path, name, metadata, steps):
    path = _make_flow_lora(tiny_zimage, tmp_path, name, metadata)
    assert lora.few_steps(lora.LoraSpec(path)) == steps


def test_a_few_step_lora_sets_its_steps_and_guidance_1(tiny_zimage, tiny_zimage_path, tiny_model,
                                                        tiny_model_path, cat128, tmp_path):
    from engine.backbones.base import distilled_defaults

    flow_file = _make_flow_lora(tiny_zimage, tmp_path, "Z-Image-Lightning-4steps")
    unet_file = _make_lora(tiny_model, tmp_path, "sd_lightning_4step_lora")
    for folder, path in [(tiny_zimage_path, flow_file), (tiny_model_path, unet_file)]:
        fast = load_model(str(folder), device="cpu", loras=[lora.parse(f"{path}:1")])
        session = EditSession(fast, cat128)
        defaults = session.default_params()
        assert fast.lora_steps == 4 and session.backbone.distilled
        assert (defaults.steps, defaults.guidance) == (4, 1.0)
        assert defaults.mask_samples == distilled_defaults(4)["mask_samples"]
        assert "guidance" in session.backbone.unused_params
        # switched off, it leaves the model's own defaults (Z-Image-Turbo's 8 steps, SD's 50)
        off = load_model(str(folder), device="cpu", loras=[lora.parse(f"{path}:0")])
        assert off.lora_steps == 0
        assert EditSession(off, cat128).default_params().steps in (8, 50)
    # on a UNet, as a few-step model's own scheduler config says: trailing timesteps
    assert fast.scheduler_config["timestep_spacing"] == "trailing"
    assert off.scheduler_config.get("timestep_spacing") != "trailing"


def test_a_qwen_lightning_lora_samples_4_steps_at_its_fixed_shift(tiny_qwen_edit, cat128, tmp_path):
    """lightx2v's Lightning LoRAs (in their layout: no prefix, lora_down/lora_up and alphas) are
    distilled at mu = log 3 at every size: sigma s becomes 3s / (1 + 2s), where the model's own
    schedule shifts by the token count."""
    from safetensors.torch import load_file, save_file

    fast_file = _make_flow_lora(tiny_qwen_edit, tmp_path, "Qwen-Image-Edit-2509-Lightning-4steps-V1.0-bf16")
    layers = {}
    for key, tensor in load_file(str(fast_file)).items():
        name = key.removeprefix("transformer.").replace("lora_A", "lora_down").replace("lora_B", "lora_up")
        layers[name] = tensor
        if "lora_down" in name:
            layers[name.replace("lora_down.weight", "alpha")] = torch.tensor(4.0)
    save_file(layers, str(fast_file))
    plain_file = _make_flow_lora(tiny_qwen_edit, tmp_path, "qwen-style")
    base = EditSession(tiny_qwen_edit, cat128)
    fast, plain = _with_own_transformer(tiny_qwen_edit), _with_own_transformer(tiny_qwen_edit)
    lora.apply(fast, [lora.LoraSpec(fast_file)])
    lora.apply(plain, [lora.LoraSpec(plain_file)])
    assert any(hasattr(layer, "base_layer") for layer in fast.transformer.modules())
    fast, plain = EditSession(fast, cat128), EditSession(plain, cat128)
    defaults = fast.default_params()
    assert (defaults.steps, defaults.guidance) == (4, 1.0) and "guidance" in fast.backbone.unused_params
    s = np.linspace(1, 1 / 4, 4)
    for size in [(8, 8), (64, 64)]:
        assert np.allclose(fast.backbone.schedule(4, size).sigmas, 3 * s / (1 + 2 * s))
        assert plain.backbone.schedule(4, size) == base.backbone.schedule(4, size)
    assert not np.allclose(base.backbone.schedule(4, (8, 8)).sigmas, 3 * s / (1 + 2 * s))
    assert plain.default_params() == base.default_params()
    assert (base.default_params().steps, base.default_params().guidance) == (40, 4.0)
    assert tiny_qwen_edit.scheduler_config["shift_terminal"] == 0.02  # the loaded model's, kept
