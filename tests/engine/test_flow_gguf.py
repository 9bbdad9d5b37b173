"""A GGUF-quantized transformer in place of a flow model folder's: the tiny Z-Image's transformer
written as a city96-style GGUF (the original key layout, 2-D weights in Q8_0), loaded through
the model loader, checked against a quantize-dequantize oracle, run in whole edits, and files
that do not fit refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import cli, masks
from engine.errors import ModelError
from engine.models import load_model
from engine.session import EditSession
from tests.engine.flow_parity import AUTO_MASK_SEEDS
from tests.engine.test_memory import offloaded_on_the_cpu

gguf = pytest.importorskip("gguf")
Q8_0 = gguf.GGMLQuantizationType.Q8_0
# diffusers' names -> the original Z-Image checkpoint's (the inverse of diffusers' conversion)
ORIGINAL_NAMES = {"all_final_layer.2-1.": "final_layer.", "all_x_embedder.2-1.": "x_embedder.",
                  ".attention.to_out.0.": ".attention.out.", ".attention.norm_k.": ".attention.k_norm.",
                  ".attention.norm_q.": ".attention.q_norm."}


def original_layout(state: dict) -> dict:
    """The Z-Image state dict as the released checkpoint names it: renamed, q/k/v fused."""
    out = {}
    for key, value in state.items():
        for ours, theirs in ORIGINAL_NAMES.items():
            key = key.replace(ours, theirs)
        out[key] = value
    for key in [k for k in out if k.endswith(".attention.to_q.weight")]:
        stem = key[: -len("to_q.weight")]
        out[stem + "qkv.weight"] = torch.cat([out.pop(stem + f"to_{p}.weight") for p in "qkv"])
    return out


def quantizable(array: np.ndarray) -> bool:
    """Q8_0 takes rows in blocks of 32; city96's converter keeps 1-D and small tensors (under
    1024 values: norms, biases, pad tokens, which run outside a Linear) in float."""
    return array.ndim == 2 and array.shape[1] % 32 == 0 and array.size >= 1024


def write_gguf(path, state: dict, arch: str = "lumina2") -> None:
    """``state`` (original layout) as a GGUF file: Q8_0 where it can be, float32 elsewhere."""
    writer = gguf.GGUFWriter(str(path), arch)
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


def q8_roundtrip(tensor: torch.Tensor) -> torch.Tensor:
    """gguf's own quantize-dequantize, rounded to float16 as diffusers' CPU kernel multiplies
    each block's float16 scale by its int8 values (in float16: the exact product, rounded)."""
    array = tensor.float().numpy()
    if not quantizable(array):
        return tensor.float()
    exact = gguf.quants.dequantize(gguf.quants.quantize(array, Q8_0), Q8_0)
    return torch.from_numpy(exact).half().float()


@pytest.fixture(scope="module")
def zimage_gguf(tiny_zimage, tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "z-image-turbo-Q8_0.gguf"
    write_gguf(path, original_layout(tiny_zimage.transformer.state_dict()))
    return path


@pytest.fixture(scope="module")
def quantized(zimage_gguf, tiny_zimage_path):
    return load_model(str(tiny_zimage_path), device="cpu", transformer=str(zimage_gguf))


def dequantized(module) -> dict:
    from diffusers.quantizers.gguf.utils import GGUFParameter, dequantize_gguf_tensor

    return {k: dequantize_gguf_tensor(v).float() if isinstance(v, GGUFParameter) else v.float()
            for k, v in module.state_dict().items()}


@pytest.mark.slow
def test_the_loaded_weights_are_the_quantize_dequantize_of_the_originals(quantized, tiny_zimage):
    ours = dequantized(quantized.transformer)
    originals = tiny_zimage.transformer.state_dict()
    assert set(ours) == set(originals)
    quantized_count = 0
    for key, original in originals.items():
        assert torch.equal(ours[key], q8_roundtrip(original)), key
        quantized_count += quantizable(original.numpy())
    assert quantized_count >= 20  # the attention and feed-forward weights really are Q8_0
    assert type(quantized.transformer.layers[0].attention.to_q).__name__ == "GGUFLinear"


@pytest.mark.slow
def test_the_velocity_is_the_unquantized_models_to_q8_tolerance(quantized, tiny_zimage):
    latents = torch.randn((1, 16, 16, 16), generator=torch.Generator().manual_seed(0))
    velocities = []
    for model in (tiny_zimage, quantized):
        backbone = EditSession(model, np.zeros((128, 128, 3), np.uint8)).backbone
        cond, _ = backbone.encode_text("a photo of a cat")
        velocities.append(backbone.predict(latents, torch.tensor(500.0), cond))
    exact, q8 = velocities
    assert not torch.equal(exact, q8)  # quantized weights do change the numbers a little
    assert (q8 - exact).norm() / exact.norm() < 0.02


@pytest.mark.slow
def test_a_diffedit_edit_keeps_outside_the_mask_and_the_same_seed_the_same_bytes(quantized, cat128):
    """The auto mask, the inversion and the masked decoding all run on the quantized weights."""
    params = EditSession(quantized, cat128).default_params().replace(seed=AUTO_MASK_SEEDS["zimage"])
    texts = "a photo of a cat", "a photo of a dog"
    first = EditSession(quantized, cat128).run("diffedit", *texts, None, params)[0]
    again = EditSession(quantized, cat128).run("diffedit", *texts, None, params)[0]
    kept = masks.paste_alpha(first.mask, first.params.feather) == 0
    assert 0.05 < kept.mean() < 1 and np.array_equal(first.image[kept], cat128[kept])
    assert not np.array_equal(first.image, cat128)
    assert np.array_equal(first.image, again.image)
    # the result's record names the quantized file that made it
    assert first.model_name.endswith(" + z-image-turbo-Q8_0.gguf")
    assert "z-image-turbo-Q8_0.gguf" in first.metadata()["parameters"]


@pytest.mark.slow
def test_a_gguf_of_another_width_or_family_is_refused_by_name(tiny_zimage, tiny_zimage_path,
                                                              tiny_flux2_path, tmp_path):
    state = original_layout(tiny_zimage.transformer.state_dict())
    wider = dict(state, **{"cap_embedder.1.weight": torch.zeros(32, 64)})
    write_gguf(tmp_path / "wider.gguf", wider)
    with pytest.raises(ModelError, match=r"does not fit .* 1 of another shape .*cap_embedder"):
        load_model(str(tiny_zimage_path), device="cpu", transformer=str(tmp_path / "wider.gguf"))
    with pytest.raises(ModelError, match=r"zimage.gguf does not fit .* holds no Flux2Transformer"):
        write_gguf(tmp_path / "zimage.gguf", state)
        load_model(str(tiny_flux2_path), device="cpu", transformer=str(tmp_path / "zimage.gguf"))
    (tmp_path / "junk.gguf").write_bytes(b"GGUF not really")
    with pytest.raises(ModelError, match="not a readable GGUF file"):
        load_model(str(tiny_zimage_path), device="cpu", transformer=str(tmp_path / "junk.gguf"))
    with pytest.raises(ModelError, match="cannot replace"):
        load_model("tiny", device="cpu", transformer=str(tmp_path / "zimage.gguf"))


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
    for model, message in [(tiny_flux2_path, "z-image-turbo-Q8_0.gguf does not fit"),
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
