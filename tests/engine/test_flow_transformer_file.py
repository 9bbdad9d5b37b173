"""A transformer file in place of a flow model folder's transformer, for each tiny flow model
(FLUX.2 klein, SD3.5, Z-Image), written in its family's original key layout: a city96-style GGUF
(2-D weights in Q8_0), loaded through the model loader, checked against a quantize-dequantize
oracle and run in masked edits; a bf16 .safetensors (klein's and Z-Image's transformer-only, as
their model pages ship them; SD3.5's inside an all-in-one ComfyUI checkpoint) and an fp8 one,
loaded with exactly the stored values; files that do not fit, pickle files and ComfyUI's scaled
fp8 refused by name; the offload tier, a LoRA and the CLI on Z-Image's GGUF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine import cli, masks
from engine.errors import ModelError
from engine.models import load_model
from engine.session import EditSession
from tests.engine.original_layouts import GGUF_ARCH, original_layout
from tests.engine.test_memory import offloaded_on_the_cpu

gguf = pytest.importorskip("gguf")
Q8_0 = gguf.GGMLQuantizationType.Q8_0
TINY = {"flux2-klein": "tiny_flux2", "sd3": "tiny_sd3", "zimage": "tiny_zimage"}
# a tensor each family's text projection reads (original name, diffusers' name): made wider, it no
# longer fits the folder's config
TEXT_PROJECTION = {"flux2-klein": ("txt_in.weight", "context_embedder.weight"),
                   "sd3": ("context_embedder.weight", "context_embedder.weight"),
                   "zimage": ("cap_embedder.1.weight", "cap_embedder.1.weight")}


def quantizable(array: np.ndarray) -> bool:
    """Q8_0 takes rows in blocks of 32; city96's converter keeps 1-D and small tensors (under
    1024 values: norms, biases, pad tokens, which run outside a Linear) in float."""
    return array.ndim == 2 and array.shape[1] % 32 == 0 and array.size >= 1024


def write_gguf(path, state: dict, family: str) -> None:
    """``state`` (original layout) as a GGUF file: Q8_0 where it can be, float32 elsewhere."""
    writer = gguf.GGUFWriter(str(path), GGUF_ARCH[family])
    for name, tensor in state.items():
        array = tensor.float().numpy()
        if quantizable(array):
            writer.add_tensor(name, gguf.quants.quantize(array, Q8_0), raw_dtype=Q8_0)
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_safetensors(path, state: dict, family: str, dtype=torch.bfloat16) -> None:
    """``state`` (original layout) as a .safetensors: ``dtype`` for 2-D weights (the fp8 files
    store those so), bf16 elsewhere; SD3.5's inside an all-in-one checkpoint."""
    from safetensors.torch import save_file

    tensors = {key: value.to(dtype if value.ndim == 2 else torch.bfloat16).contiguous()
               for key, value in state.items()}
    if family == "sd3":
        tensors = {f"model.diffusion_model.{key}": value for key, value in tensors.items()}
        tensors["first_stage_model.decoder.conv_in.weight"] = torch.zeros(4, 4)
    save_file(tensors, str(path))


WRITERS = {"gguf": write_gguf, "safetensors": write_safetensors}


def q8_roundtrip(tensor: torch.Tensor) -> torch.Tensor:
    """gguf's own quantize-dequantize, rounded to float16 as diffusers' CPU kernel multiplies
    each block's float16 scale by its int8 values (in float16: the exact product, rounded)."""
    array = tensor.float().numpy()
    if not quantizable(array):
        return tensor.float()
    exact = gguf.quants.dequantize(gguf.quants.quantize(array, Q8_0), Q8_0)
    return torch.from_numpy(exact).half().float()


@pytest.fixture(scope="module", params=list(TINY))
def family(request):
    return request.param


@pytest.fixture(scope="module")
def tiny(request, family):
    """The family's tiny model (float32, from its folder) and that folder."""
    return request.getfixturevalue(TINY[family]), request.getfixturevalue(TINY[family] + "_path")


def gguf_of(family: str, model, folder) -> Path:
    """The tiny model's transformer as a city96-style GGUF file (original layout, Q8_0)."""
    path = folder / f"{family}-Q8_0.gguf"
    write_gguf(path, original_layout(family, model.transformer.state_dict()), family)
    return path


@pytest.fixture(scope="module")
def family_gguf(family, tiny, tmp_path_factory):
    return gguf_of(family, tiny[0], tmp_path_factory.mktemp("gguf"))


@pytest.fixture(scope="module")
def quantized(family_gguf, tiny):
    return load_model(str(tiny[1]), device="cpu", transformer=str(family_gguf))


@pytest.fixture(scope="module")
def zimage_gguf(tiny_zimage, tmp_path_factory):
    return gguf_of("zimage", tiny_zimage, tmp_path_factory.mktemp("gguf"))


def dequantized(module) -> dict:
    from diffusers.quantizers.gguf.utils import GGUFParameter, dequantize_gguf_tensor

    return {k: dequantize_gguf_tensor(v).float() if isinstance(v, GGUFParameter) else v.float()
            for k, v in module.state_dict().items()}


@pytest.mark.slow
def test_the_loaded_weights_are_the_quantize_dequantize_of_the_originals(quantized, tiny):
    ours = dequantized(quantized.transformer)
    originals = tiny[0].transformer.state_dict()
    assert set(ours) == set(originals)
    in_q8 = [key for key, original in originals.items() if quantizable(original.numpy())]
    for key, original in originals.items():
        assert torch.equal(ours[key], q8_roundtrip(original)), key
    assert len(in_q8) >= 15  # the attention and feed-forward weights really are Q8_0 ...
    for key in in_q8:  # ... and run as such
        layer = quantized.transformer.get_submodule(key.rsplit(".", 1)[0])
        assert type(layer).__name__ == "GGUFLinear", key


@pytest.mark.slow
def test_the_velocity_is_the_unquantized_models_to_q8_tolerance(quantized, tiny, cat128):
    velocities = []
    for model in (tiny[0], quantized):
        backbone = EditSession(model, cat128).backbone
        clean = backbone.encode_image(cat128)
        noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
        cond, _ = backbone.encode_text("a photo of a cat")
        velocities.append(backbone.predict(0.5 * clean + 0.5 * noise, torch.tensor(500.0), cond))
    exact, q8 = velocities
    assert not torch.equal(exact, q8)  # quantized weights do change the numbers a little
    assert (q8 - exact).norm() / exact.norm() < 0.02


@pytest.mark.slow
def test_a_masked_edit_keeps_outside_the_mask_and_the_same_seed_the_same_bytes(
        quantized, family_gguf, cat128):
    """The inversion and the masked decoding run on the quantized weights (one session: the
    texts are encoded once, which on the tiny klein's 27-layer text encoder is most of the time)."""
    mask = np.zeros(cat128.shape[:2], np.float32)
    mask[32:96, 48:112] = 1.0
    session = EditSession(quantized, cat128)
    params = session.default_params().replace(steps=2, seed=3)
    first, again = (session.run("diffedit", "a photo of a cat", "a photo of a dog", mask, params)[0]
                    for _ in range(2))
    kept = masks.paste_alpha(first.mask, first.params.feather) == 0
    assert 0.05 < kept.mean() < 1 and np.array_equal(first.image[kept], cat128[kept])
    assert not np.array_equal(first.image, cat128)
    assert np.array_equal(first.image, again.image)
    # the result's record names the quantized file that made it
    assert first.model_name.endswith(f" + {family_gguf.name}")
    assert family_gguf.name in first.metadata()["parameters"]


@pytest.mark.slow
def test_a_lora_loads_on_the_quantized_transformer(zimage_gguf, tiny_zimage, tiny_zimage_path,
                                                   tmp_path, cat128):
    """peft wraps the GGUF layers, whose weights stay quantized, and the LoRA changes the
    velocity."""
    from engine import lora
    from tests.engine.test_lora import _make_flow_lora

    path = _make_flow_lora(tiny_zimage, tmp_path, "style")
    off, on = (load_model(str(tiny_zimage_path), device="cpu", transformer=str(zimage_gguf),
                          loras=[lora.LoraSpec(path, weight)]) for weight in (0, 1))
    layer = on.transformer.layers[0].attention.to_q
    assert type(layer.base_layer).__name__ == "GGUFLinear"
    assert type(layer.base_layer.weight).__name__ == "GGUFParameter"
    backbone = EditSession(off, cat128).backbone
    cond, _ = backbone.encode_text("a photo of a cat")
    latents = torch.randn(backbone.encode_image(cat128).shape, generator=torch.Generator().manual_seed(0))
    velocities = [EditSession(m, cat128).backbone.predict(latents, torch.tensor(500.0), cond)
                  for m in (off, on)]
    assert not torch.allclose(*velocities, atol=1e-4)


@pytest.mark.slow
def test_a_safetensors_file_loads_exactly_its_bf16_weights(tiny, family, tmp_path):
    model, folder = tiny
    path = tmp_path / f"{family}-bf16.safetensors"
    write_safetensors(path, original_layout(family, model.transformer.state_dict()), family)
    loaded = load_model(str(folder), device="cpu", transformer=str(path))
    ours, originals = loaded.transformer.state_dict(), model.transformer.state_dict()
    assert set(ours) == set(originals)
    for key, original in originals.items():
        assert ours[key].dtype == torch.float32  # the run's dtype
        assert torch.equal(ours[key], original.to(torch.bfloat16).float()), key
    assert loaded.name.endswith(f" + {path.name}")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_fp8_file_is_up_cast_to_the_run_dtype(tiny_zimage, tiny_zimage_path, tmp_path, dtype):
    path = tmp_path / "z_image_turbo_fp8_e4m3fn.safetensors"
    state = original_layout("zimage", tiny_zimage.transformer.state_dict())
    write_safetensors(path, state, "zimage", torch.float8_e4m3fn)
    loaded = load_model(str(tiny_zimage_path), device="cpu", dtype=str(dtype).split(".")[1],
                        transformer=str(path))
    fp8 = 0
    for key, original in tiny_zimage.transformer.state_dict().items():
        stored = torch.float8_e4m3fn if original.ndim == 2 else torch.bfloat16
        fp8 += stored == torch.float8_e4m3fn
        assert torch.equal(loaded.transformer.state_dict()[key], original.to(stored).to(dtype)), key
    assert fp8 >= 15


@pytest.mark.slow
@pytest.mark.parametrize("file_format", list(WRITERS))
def test_a_file_that_does_not_fit_is_refused_by_name(request, family, tiny, tmp_path, file_format):
    model, folder = tiny
    write, suffix = WRITERS[file_format], f".{file_format}"
    state = original_layout(family, model.transformer.state_dict())
    ours, theirs = TEXT_PROJECTION[family]
    rows, columns = state[ours].shape

    def refused(name, tensors, message, folder=folder):
        write(tmp_path / f"{name}{suffix}", tensors, family)
        with pytest.raises(ModelError, match=rf"{name}{suffix} does not fit .*{message}"):
            load_model(str(folder), device="cpu", transformer=str(tmp_path / f"{name}{suffix}"))

    refused("wider", dict(state, **{ours: torch.zeros(rows, columns + 32)}),
            rf"1 of another shape .*{theirs}")
    refused("short", {k: v for k, v in state.items() if k != ours}, theirs)  # a tensor missing
    refused("longer", dict(state, **{"extra.weight": torch.zeros(32, 32)}), r"1 unknown .*extra\.weight")
    for other in set(TINY) - {family}:  # this family's file on each other family's folder
        refused(family, state, "", folder=request.getfixturevalue(TINY[other] + "_path"))
    with pytest.raises(ModelError, match="cannot replace"):
        load_model("tiny", device="cpu", transformer=str(tmp_path / f"{family}{suffix}"))


def test_unreadable_pickle_and_scaled_fp8_files_are_refused_before_anything_loads(
        tiny_zimage_path, tmp_path):
    from safetensors.torch import save_file

    cases = {"junk.gguf": "not a readable GGUF file", "junk.safetensors": "not a valid safetensors",
             "transformer.ckpt": r"a pickle file \(\.ckpt\) can run code",
             "model.pt": r"a pickle file \(\.pt\) can run code",
             "scaled.safetensors": "ComfyUI \"fp8_scaled\" file", "model.onnx": "must be a .gguf"}
    for name in cases:
        (tmp_path / name).write_bytes(b"GGUF not really")
    save_file({"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn),
               "x_embedder.weight": torch.zeros(2, 2, dtype=torch.float8_e4m3fn),
               "x_embedder.scale_weight": torch.ones(1)}, str(tmp_path / "scaled.safetensors"))
    for name, message in cases.items():
        with pytest.raises(ModelError, match=message):
            load_model(str(tiny_zimage_path), device="cpu", transformer=str(tmp_path / name))


@pytest.mark.slow
def test_the_offload_tier_streams_the_quantized_weights_and_the_edit_is_unchanged(
        zimage_gguf, tiny_zimage_path, cat128):
    """The transformer is group-offloaded, its blocks staying quantized (accelerate's hooks
    would raise KeyError: diffusers issue 14691); on the CPU here, not measured on a GPU. Each
    model is loaded afresh: diffusers' GGUFParameter cannot be deep-copied."""
    sliced, offloaded = (load_model(str(tiny_zimage_path), device="cpu", memory_tier="sliced",
                                    transformer=str(zimage_gguf)) for _ in range(2))
    offloaded = offloaded_on_the_cpu(offloaded)
    mask = np.zeros(cat128.shape[:2], np.float32)
    mask[32:96, 48:112] = 1.0
    params = EditSession(sliced, cat128).default_params().replace(steps=4, mask_samples=2)
    expected, result = (EditSession(m, cat128).run("diffedit", "a cat", "a dog", mask, params)[0]
                        for m in (sliced, offloaded))
    assert type(offloaded.transformer.layers[0].attention.to_q.weight).__name__ == "GGUFParameter"
    assert np.array_equal(result.image, expected.image)


@pytest.mark.slow
def test_the_cli_edits_with_a_gguf_and_refuses_one_of_another_family(
        zimage_gguf, tiny_zimage_path, tiny_flux2_path, samples_dir, tmp_path, capsys):
    photo, out = samples_dir / "chelsea.png", tmp_path / "out.png"
    common = ["edit", str(photo), "-o", str(out), "--target", "a dog", "--quiet", "--steps", "2",
              "--mask-samples", "2", "--resolution", "128", "--transformer", str(zimage_gguf)]
    assert cli.main([*common, "--model", str(tiny_zimage_path), "--mask", str(_box(tmp_path))]) == 0
    assert out.is_file()
    capsys.readouterr()
    for model, message in [(tiny_flux2_path, "zimage-Q8_0.gguf does not fit"),
                           ("tiny", "cannot replace")]:
        assert cli.main([*common, "--model", str(model)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def _box(folder):
    from PIL import Image

    mask = np.zeros((300, 451), np.uint8)
    mask[80:220, 120:330] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    return folder / "mask.png"
