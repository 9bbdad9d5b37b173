"""LoRA: a tiny LoRA made here changes the output on SD and SDXL, weight 0 gives the base bytes,
a LoRA for another family is refused by name, and the CLI's PATH[:WEIGHT] specs."""

from __future__ import annotations

import copy
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
