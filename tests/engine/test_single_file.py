"""Single-file checkpoints: offline loading of SD 1.x/2.x, and clear refusals of everything else."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.errors import ModelError
from engine.single_file import (
    Header,
    check_weights,
    config_folder_for,
    detect_family,
    family_from_header,
    load_single_file,
    read_header,
)

WIDTH = {"sd1": 768, "sd2": 1024, "sd2-v": 1024}


# ---------------------------------------------------------------- diffusers -> original (LDM) keys
def _unet_to_ldm(state: dict, config: dict) -> dict:
    """Rename a diffusers UNet state dict to the original SD layout (the inverse of diffusers')."""
    per = config["layers_per_block"] + 1
    attn_blocks = {i for i, t in enumerate(config["up_block_types"]) if "CrossAttn" in t}
    resnet_names = [
        ("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
        ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"),
    ]
    fixed = {
        "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
        "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",  # SDXL
    }
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        head = ".".join(parts[:-1])
        if head in fixed:
            out[f"{fixed[head]}.{parts[-1]}"] = value
            continue
        kind, index, sub = parts[0], parts[1], parts[2]
        rest = ".".join(parts[4:]) if sub in ("resnets", "attentions") else ".".join(parts[3:])
        if sub == "resnets":
            for new, old in resnet_names:
                rest = rest.replace(new, old) if rest.startswith(new) else rest
        i = int(index) if index.isdigit() else 0
        j = int(parts[3]) if sub in ("resnets", "attentions") else 0
        if kind == "down_blocks":
            if sub == "downsamplers":
                name = f"input_blocks.{(i + 1) * per}.0.op.{parts[-1]}"
            else:
                name = f"input_blocks.{1 + i * per + j}.{0 if sub == 'resnets' else 1}.{rest}"
        elif kind == "mid_block":
            block = 1 if parts[1] == "attentions" else (0 if parts[2] == "0" else 2)
            rest = ".".join(parts[3:])
            if parts[1] == "resnets":
                for new, old in resnet_names:
                    rest = rest.replace(new, old) if rest.startswith(new) else rest
            name = f"middle_block.{block}.{rest}"
        elif kind == "up_blocks":
            if sub == "upsamplers":
                slot = 2 if i in attn_blocks else 1
                name = f"output_blocks.{i * per + per - 1}.{slot}.conv.{parts[-1]}"
            else:
                name = f"output_blocks.{i * per + j}.{0 if sub == 'resnets' else 1}.{rest}"
        else:
            raise AssertionError(f"unexpected UNet key {key}")
        out[name] = value
    return {"model.diffusion_model." + k: v for k, v in out.items()}


def _vae_to_ldm(state: dict, config: dict) -> dict:
    blocks = len(config["up_block_types"])
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for key, value in state.items():
        name = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        parts = name.split(".")
        if parts[1] == "down_blocks":
            name = name.replace(f"down_blocks.{parts[2]}.resnets.", f"down.{parts[2]}.block.")
            name = name.replace(f"down_blocks.{parts[2]}.downsamplers.0.", f"down.{parts[2]}.downsample.")
        elif parts[1] == "up_blocks":
            ldm = blocks - 1 - int(parts[2])
            name = name.replace(f"up_blocks.{parts[2]}.resnets.", f"up.{ldm}.block.")
            name = name.replace(f"up_blocks.{parts[2]}.upsamplers.0.", f"up.{ldm}.upsample.")
        elif parts[1] == "mid_block" and parts[2] == "resnets":
            name = name.replace(f"mid_block.resnets.{parts[3]}", f"mid.block_{int(parts[3]) + 1}")
        elif parts[1] == "mid_block":
            inner = ".".join(parts[4:-1])
            name = f"{parts[0]}.mid.attn_1.{attn[inner]}.{parts[-1]}"
            if value.ndim == 2:  # LDM stores these as 1x1 convolutions
                value = value[:, :, None, None]
        out["first_stage_model." + name] = value
    return out


def _clip_to_ldm(state: dict, pre="cond_stage_model.transformer.") -> dict:
    return {pre + "text_model." + k: v for k, v in state.items()}


def _open_clip_to_ldm(state: dict, pre="cond_stage_model.model.", projection=None) -> dict:
    """OpenCLIP's layout; ``projection`` is the diffusers text_projection weight (SDXL uses it,
    OpenCLIP stores its transpose), zeros when the model has none (SD 2.x does not read it)."""
    out = {
        pre + "token_embedding.weight": state["embeddings.token_embedding.weight"],
        pre + "positional_embedding": state["embeddings.position_embedding.weight"],
        pre + "ln_final.weight": state["final_layer_norm.weight"],
        pre + "ln_final.bias": state["final_layer_norm.bias"],
    }
    width = state["final_layer_norm.weight"].shape[0]
    out[pre + "text_projection"] = (projection.T.contiguous() if projection is not None else
                                    torch.zeros(width, width, dtype=state["final_layer_norm.weight"].dtype))
    layers = {int(k.split(".")[2]) for k in state if k.startswith("encoder.layers.")}
    for i in sorted(layers):
        src, dst = f"encoder.layers.{i}.", f"{pre}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat(
                [state[src + f"self_attn.{p}_proj.{kind}"] for p in "qkv"]
            )
            out[dst + f"attn.out_proj.{kind}"] = state[src + f"self_attn.out_proj.{kind}"]
            out[dst + f"ln_1.{kind}"] = state[src + f"layer_norm1.{kind}"]
            out[dst + f"ln_2.{kind}"] = state[src + f"layer_norm2.{kind}"]
            out[dst + f"mlp.c_fc.{kind}"] = state[src + f"mlp.fc1.{kind}"]
            out[dst + f"mlp.c_proj.{kind}"] = state[src + f"mlp.fc2.{kind}"]
    return out


def to_ldm(unet, vae, text_encoder, family: str) -> dict:
    """A whole pipeline as one original-layout state dict, as single-file checkpoints hold it."""
    text = {k: v for k, v in text_encoder.state_dict().items() if not k.endswith("position_ids")}
    ldm = {}
    ldm.update(_unet_to_ldm(unet.state_dict(), unet.config))
    ldm.update(_vae_to_ldm(vae.state_dict(), vae.config))
    ldm.update(_clip_to_ldm(text) if family == "sd1" else _open_clip_to_ldm(text))
    return ldm


def sdxl_to_ldm(unet, vae, text_encoder, text_encoder_2) -> dict:
    """An SDXL pipeline as one original-layout state dict (conditioner.embedders.0 and .1)."""
    text = {k: v for k, v in text_encoder.state_dict().items() if not k.endswith("position_ids")}
    text_2 = {k.removeprefix("text_model."): v for k, v in text_encoder_2.state_dict().items()
              if not k.endswith("position_ids") and not k.startswith("text_projection")}
    ldm = {}
    ldm.update(_unet_to_ldm(unet.state_dict(), unet.config))
    ldm.update(_vae_to_ldm(vae.state_dict(), vae.config))
    ldm.update(_clip_to_ldm({k.removeprefix("text_model."): v for k, v in text.items()},
                            "conditioner.embedders.0.transformer."))
    ldm.update(_open_clip_to_ldm(text_2, "conditioner.embedders.1.model.",
                                 text_encoder_2.text_projection.weight))
    return ldm


# ---------------------------------------------------------------- tiny random SD models
def _tiny_components(family: str, in_channels: int = 4):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    sd2 = family != "sd1"
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=32,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=WIDTH[family], attention_head_dim=(2, 4) if sd2 else 8,
        use_linear_projection=sd2,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=32,
        block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, sample_size=64,
    )
    # Real widths (the family is read from them) but a small vocabulary and two layers.
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=1000, hidden_size=WIDTH[family], intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77,
        hidden_act="gelu" if sd2 else "quick_gelu", projection_dim=32,
    ))
    return unet, vae, text_encoder


def _config_folder(tmp: Path, family: str, unet, vae, text_encoder) -> Path:
    """Shipped model_index + scheduler for the family, tiny architecture configs."""
    folder = tmp / f"configs-{family}"
    shipped = config_folder_for(family)
    shutil.copytree(shipped, folder)
    unet.save_config(folder / "unet")
    vae.save_config(folder / "vae")
    text_encoder.config.save_pretrained(folder / "text_encoder")
    return folder


@pytest.fixture(scope="module", params=["sd1", "sd2-v"])
def tiny_checkpoint(request, tmp_path_factory):
    family = request.param
    tmp = tmp_path_factory.mktemp(f"single-{family}")
    unet, vae, text_encoder = _tiny_components(family)
    state = {k: v.to(torch.float16).contiguous() for k, v in to_ldm(unet, vae, text_encoder, family).items()}
    # The official SD 2.1 file name is what tells v-prediction apart (see _looks_v_prediction).
    path = tmp / ("tiny-v2-1_768-ema-pruned.safetensors" if family == "sd2-v" else "tiny-sd15.safetensors")
    save_file(state, str(path))
    folder = _config_folder(tmp, family, unet, vae, text_encoder)
    return family, path, folder, (unet, vae, text_encoder)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFEDIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _params_equal(a, b) -> None:
    sa, sb = dict(a.named_parameters()), dict(b.named_parameters())
    assert sa.keys() == sb.keys()
    for key, value in sa.items():
        expected = value.detach().to(torch.float16).to(torch.float32)  # the file stores fp16
        assert torch.equal(sb[key].detach(), expected), key


@pytest.mark.slow
def test_loads_tiny_checkpoint_offline_with_identical_weights(tiny_checkpoint):
    family, path, folder, (unet, vae, text_encoder) = tiny_checkpoint
    assert detect_family(path) == family
    pipe = load_single_file(path, dtype=torch.float32, config_folder=folder)
    _params_equal(unet, pipe.unet)
    _params_equal(vae, pipe.vae)
    _params_equal(text_encoder, pipe.text_encoder)
    assert pipe.unet.dtype == torch.float32
    expected_prediction = "v_prediction" if family == "sd2-v" else "epsilon"
    assert pipe.scheduler.config.prediction_type == expected_prediction
    # The tokenizer is the real CLIP vocabulary; SD 2.x pads with "!".
    assert pipe.tokenizer.pad_token == ("!" if family == "sd2-v" else "<|endoftext|>")
    assert pipe.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert pipe.safety_checker is None


@pytest.mark.slow
def test_dtype_is_applied(tiny_checkpoint):
    _, path, folder, _ = tiny_checkpoint
    pipe = load_single_file(path, dtype=torch.float16, config_folder=folder)
    assert pipe.unet.dtype == torch.float16 and pipe.text_encoder.dtype == torch.float16


def test_family_hint_sets_prediction_type_and_cannot_contradict(tiny_checkpoint):
    family, path, folder, _ = tiny_checkpoint
    if family == "sd1":
        with pytest.raises(ModelError, match=r"tiny-sd15\.safetensors.*SD 1\.x model, not SD 2\.x"):
            load_single_file(path, dtype=torch.float32, family="sd2")
    else:
        # The caller's hint wins over the file name for the prediction type.
        header = read_header(path)
        assert family_from_header(header, "model.safetensors") == "sd2-v"
        assert family_from_header(header, "v2-1_512-ema-pruned.safetensors") == "sd2"
        with pytest.raises(ModelError, match="SD 2.x model, not SD 1.x"):
            load_single_file(path, dtype=torch.float32, family="sd1")


def test_missing_tensor_is_an_error_not_random_weights(tiny_checkpoint, tmp_path):
    from safetensors.torch import load_file

    family, path, folder, _ = tiny_checkpoint
    state = load_file(str(path))
    dropped = next(k for k in state if "attn2.to_v" in k)
    del state[dropped]
    broken = tmp_path / "pruned.safetensors"
    save_file(state, str(broken))
    with pytest.raises(ModelError, match=r"pruned\.safetensors: the UNet weights .* 1 weights missing"):
        load_single_file(broken, dtype=torch.float32, config_folder=folder)


def test_truncated_file(tiny_checkpoint, tmp_path):
    _, path, folder, _ = tiny_checkpoint
    data = path.read_bytes()
    cut = tmp_path / "half.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"half\.safetensors: the file is truncated.*download it again"):
        detect_family(cut)
    with pytest.raises(ModelError, match="truncated"):
        load_single_file(cut, dtype=torch.float32, config_folder=folder)
    header_only = tmp_path / "header-cut.safetensors"
    header_only.write_bytes(data[:100])
    with pytest.raises(ModelError, match=r"header-cut\.safetensors: not a valid safetensors file"):
        detect_family(header_only)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty or too short"),
        (b"\x00" * 3, "empty or too short"),
        (bytes(range(256)) * 64, "not a valid safetensors file"),
        ((19).to_bytes(8, "little") + b"{not json at all!!}", "header cannot be read"),
        ((2).to_bytes(8, "little") + b"{}", "holds no tensors"),
        # JSON nested past Python's recursion limit: refused by name, not a RecursionError.
        ((200_006).to_bytes(8, "little") + b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}" + b"\0" * 8,
         "header cannot be read"),
    ],
)
def test_corrupt_files(tmp_path, content, message):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=r"broken\.safetensors: .*" + message):
        detect_family(path)


def _save_keys(path: Path, shapes: dict) -> Path:
    save_file({k: torch.zeros(s, dtype=torch.float16) for k, s in shapes.items()}, str(path))
    return path


def _base_keys(width=768, in_channels=4):
    return {
        "model.diffusion_model.input_blocks.0.0.weight": (8, in_channels, 3, 3),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (8, width),
        "first_stage_model.encoder.conv_in.weight": (8, 3, 3, 3),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (10, width),
        "cond_stage_model.model.token_embedding.weight": (10, width),
    }


def test_sdxl_refiners_and_partial_sdxl_checkpoints_are_refused(tmp_path):
    keys = _base_keys(2048)
    keys["conditioner.embedders.1.model.positional_embedding"] = (77, 16)
    keys["model.diffusion_model.label_emb.0.0.weight"] = (8, 16)
    path = _save_keys(tmp_path / "sd_xl_base_1.0.safetensors", keys)
    with pytest.raises(ModelError, match=r"sd_xl_base_1\.0\.safetensors: an SDXL checkpoint without "
                                         "the CLIP ViT-L text encoder"):
        detect_family(path)
    keys["conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"] = (10, 768)
    assert detect_family(_save_keys(tmp_path / "base.safetensors", keys)) == "sdxl"
    refiner = {k.replace("embedders.1.", "embedders.0."): v for k, v in keys.items()
               if not k.startswith("conditioner.embedders.0.")}
    path = _save_keys(tmp_path / "sd_xl_refiner_1.0.safetensors", refiner)
    with pytest.raises(ModelError, match=r"sd_xl_refiner_1\.0\.safetensors: this is an SDXL refiner"):
        load_single_file(path, dtype=torch.float32)


def test_inpainting_checkpoints_are_recognised_and_other_unets_refused(tmp_path):
    path = _save_keys(tmp_path / "inpaint.safetensors", _base_keys(768, in_channels=9))
    assert detect_family(path) == "sd1"
    path = _save_keys(tmp_path / "depth.safetensors", _base_keys(1024, in_channels=5))
    with pytest.raises(ModelError, match="takes 5 input channels"):
        detect_family(path)


def test_unknown_width_and_missing_parts(tmp_path):
    path = _save_keys(tmp_path / "odd.safetensors", _base_keys(512))
    with pytest.raises(ModelError, match=r"odd\.safetensors: unknown architecture .*width 512"):
        detect_family(path)
    keys = _base_keys(768)
    del keys["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"]
    path = _save_keys(tmp_path / "unet-vae.safetensors", keys)
    with pytest.raises(ModelError, match="no CLIP text encoder"):
        detect_family(path)
    keys = _base_keys(1024)
    del keys["first_stage_model.encoder.conv_in.weight"]
    path = _save_keys(tmp_path / "novae.safetensors", keys)
    with pytest.raises(ModelError, match="no VAE weights"):
        detect_family(path)


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"lora_unet_down_blocks_0.lora_down.weight": (4, 4)}, "LoRA"),
        ({"encoder.conv_in.weight": (4, 3, 3, 3), "decoder.conv_in.weight": (4, 4, 3, 3)}, "VAE on its own"),
        ({"down_blocks.0.resnets.0.conv1.weight": (4, 4, 3, 3)}, "diffusers-format UNet"),
    ],
)
def test_parts_of_models_are_named(tmp_path, keys, message):
    path = _save_keys(tmp_path / "part.safetensors", keys)
    with pytest.raises(ModelError, match=message):
        detect_family(path)


def test_pickle_and_missing_files_are_refused(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"PK")
    with pytest.raises(ModelError, match="only .safetensors .* can run code"):
        load_single_file(ckpt, dtype=torch.float32)
    with pytest.raises(ModelError, match="no such file"):
        load_single_file(tmp_path / "nope.safetensors", dtype=torch.float32)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sd1", "sd2", "sd2-v"])
def test_shipped_configs_match_the_real_architectures(family):
    """The shipped configs accept a full-size SD checkpoint's key layout (meta tensors, no data)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = config_folder_for(family)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["safety_checker"] == [None, None]
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder, subfolder="unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder"))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # Published parameter counts of SD 1.5 / SD 2.1 (UNet, VAE, text encoder).
    expected = {"sd1": (859_520_964, 83_653_863, 123_060_480)}
    expected["sd2"] = expected["sd2-v"] = (865_910_724, 83_653_863, 340_387_840)
    assert (count(unet), count(vae), count(text)) == expected[family]
    ldm = to_ldm(unet, vae, text, family)
    header = Header({k: tuple(v.shape) for k, v in ldm.items()}, {k: "F16" for k in ldm})
    name = "v2-1_768-ema-pruned.safetensors" if family == "sd2-v" else f"{family}-512-base.safetensors"
    assert family_from_header(header, name) == family
    check_weights(header, folder, name)  # raises if any tensor were missing or mis-shaped
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == ("v_prediction" if family == "sd2-v" else "epsilon")


def test_sdxl_checkpoint_loads_offline_with_identical_weights(tiny_sdxl, tiny_sdxl_path, tmp_path,
                                                              monkeypatch):
    m = tiny_sdxl
    state = {k: v.to(torch.float16).contiguous()
             for k, v in sdxl_to_ldm(m.unet, m.vae, m.text_encoder, m.text_encoder_2).items()}
    path = tmp_path / "tiny-sdxl.safetensors"
    save_file(state, str(path))
    assert detect_family(path) == "sdxl"
    pipe = load_single_file(path, dtype=torch.float32, config_folder=tiny_sdxl_path)
    for ours, theirs in ((m.unet, pipe.unet), (m.vae, pipe.vae), (m.text_encoder, pipe.text_encoder),
                         (m.text_encoder_2, pipe.text_encoder_2)):
        _params_equal(ours, theirs)
    assert (pipe.tokenizer.pad_token, pipe.tokenizer_2.pad_token) == ("<|endoftext|>", "!")
    assert pipe.tokenizer_2("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    # Through the model loader, as `--model file.safetensors` takes it (tiny configs for the shipped).
    import engine.single_file
    from engine.backbones import sdxl
    from engine.models import load_model

    monkeypatch.setattr(engine.single_file, "config_folder_for", lambda family: tiny_sdxl_path)
    loaded = load_model(str(path), device="cpu")
    assert loaded.family == "sdxl" and loaded.force_zeros_for_empty_prompt
    ours, pooled, _ = sdxl.encode_prompt(loaded, "a cat")
    theirs, theirs_pooled, _ = sdxl.encode_prompt(m, "a cat")
    assert torch.allclose(ours, theirs, atol=2e-2) and torch.allclose(pooled, theirs_pooled, atol=2e-2)
    state.pop(next(k for k in state if k.startswith("conditioner.embedders.1.model.transformer.resblocks.1.")))
    save_file(state, str(tmp_path / "pruned-sdxl.safetensors"))
    with pytest.raises(ModelError, match=r"pruned-sdxl\.safetensors: the second text encoder weights"):
        load_single_file(tmp_path / "pruned-sdxl.safetensors", dtype=torch.float32,
                         config_folder=tiny_sdxl_path)


@pytest.mark.slow
def test_shipped_sdxl_configs_match_the_real_architecture():
    """The shipped SDXL configs build SDXL base 1.0's published parameter counts and accept its
    single-file key layout (meta tensors, no data)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = config_folder_for("sdxl")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline" and index["force_zeros_for_empty_prompt"]
    # A DDIM scheduler built from it must not clip x0 to [-1, 1] (DDIM's default): latents are
    # not pixels. SDXL base's Euler config carries clip_sample and set_alpha_to_one for this.
    from diffusers import DDIMScheduler

    ddim = DDIMScheduler.from_config(DDIMScheduler.load_config(folder, subfolder="scheduler"))
    assert not ddim.config.clip_sample and float(ddim.final_alpha_cumprod) == float(ddim.alphas_cumprod[0])
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder, subfolder="unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder"))
        text_2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder_2"))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(unet), count(vae), count(text), count(text_2)) == (
        2_567_463_684, 83_653_863, 123_060_480, 694_659_840)
    ldm = sdxl_to_ldm(unet, vae, text, text_2)
    header = Header({k: tuple(v.shape) for k, v in ldm.items()}, {k: "F16" for k in ldm})
    assert family_from_header(header, "sd_xl_base_1.0.safetensors") == "sdxl"
    check_weights(header, folder, "sd_xl_base_1.0.safetensors")


def _as_shipped(folder: Path) -> Path:
    """Configs as the shipped ones are: for the text-to-image UNet of 4 input channels."""
    config = folder / "unet" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "in_channels": 4}))
    return folder


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_inpainting_checkpoints_load_as_single_files_and_edit_inside_the_mask(
        family, tiny_sdxl, tiny_sdxl_path, tmp_path, monkeypatch):
    """SD 1.5- and SDXL-inpainting single files (a 9-channel UNet) load with the family's own
    configs, weights intact, and Blended's decoding then reads the mask and the photo."""
    import shutil

    import numpy as np
    from diffusers import UNet2DConditionModel

    import engine.single_file
    from engine.models import load_model
    from engine.params import EditParams
    from engine.session import EditSession

    if family == "sd1":
        unet, vae, text = _tiny_components("sd1", in_channels=9)
        ldm = to_ldm(unet, vae, text, "sd1")
        folder = _as_shipped(_config_folder(tmp_path, "sd1", unet, vae, text))
        originals = (unet, vae, text)
    else:
        torch.manual_seed(0)
        m = tiny_sdxl
        unet = UNet2DConditionModel(**{**m.unet.config, "in_channels": 9}).eval()
        ldm = sdxl_to_ldm(unet, m.vae, m.text_encoder, m.text_encoder_2)
        folder = tmp_path / "configs-sdxl"
        shutil.copytree(tiny_sdxl_path, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
        originals = (unet, m.vae, m.text_encoder)
    path = tmp_path / f"tiny-{family}-inpainting.safetensors"
    save_file({k: v.to(torch.float16).contiguous() for k, v in ldm.items()}, str(path))
    assert detect_family(path) == family
    pipe = load_single_file(path, dtype=torch.float32, config_folder=folder)
    assert type(pipe).__name__.endswith("InpaintPipeline") and pipe.unet.config.in_channels == 9
    for ours, theirs in zip(originals, (pipe.unet, pipe.vae, pipe.text_encoder)):
        _params_equal(ours, theirs)
    assert json.loads((folder / "unet" / "config.json").read_text())["in_channels"] == 4  # untouched

    if family == "sd1":
        return  # its tiny text encoder has real widths but not the CLIP vocabulary: no prompts
    monkeypatch.setattr(engine.single_file, "config_folder_for", lambda family: folder)
    model = load_model(str(path), device="cpu")
    rgb = (np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3)
    mask = np.zeros((64, 64), np.float32)
    mask[16:48, 16:48] = 1
    session = EditSession(model, rgb)
    assert session.backbone.inpainting
    [result] = session.run("blended", "", "a dog", mask,
                           EditParams(steps=3, seed=2, resolution=64, feather=0), {"candidates": 1})
    np.testing.assert_array_equal(result.image[mask == 0], rgb[mask == 0])
    assert np.any(result.image[mask == 1] != rgb[mask == 1])
