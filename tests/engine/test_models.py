"""Model loading: the tiny model through the real loader, and clear refusals."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from engine.errors import ModelError
from engine.models import load_model, resolve_device, resolve_dtype


def test_tiny_model_loads_through_the_folder_loader(tiny_model_path):
    model = load_model(str(tiny_model_path), device="cpu")
    assert model.family == "sd1" and model.prediction_type == "epsilon"
    assert model.native_size == 128 and model.vae_scale_factor == 8
    assert model.device.type == "cpu" and model.dtype == torch.float32
    assert len(model.tokenizer) == 49408  # the real CLIP vocabulary
    assert not any(p.requires_grad for p in model.unet.parameters())


def test_tiny_model_is_deterministic(tmp_path, tiny_model_path):
    from engine.tiny_model import build_tiny_model

    rebuilt = build_tiny_model(tmp_path / "again")
    for name in ("unet", "vae", "text_encoder"):
        a = (tiny_model_path / name / _weights(tiny_model_path / name)).read_bytes()
        b = (rebuilt / name / _weights(rebuilt / name)).read_bytes()
        assert a == b, name


def _weights(folder):
    return next(p.name for p in folder.iterdir() if p.suffix == ".safetensors")


@pytest.fixture
def model_copy(tmp_path, tiny_model_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_path, folder)
    return folder


def test_missing_component_is_named(model_copy):
    shutil.rmtree(model_copy / "vae")
    with pytest.raises(ModelError, match="missing vae"):
        load_model(str(model_copy), device="cpu")


def test_pickle_only_weights_are_refused_unless_opted_in(model_copy):
    weights = model_copy / "unet" / _weights(model_copy / "unet")
    weights.rename(model_copy / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ModelError, match="pickle"):
        load_model(str(model_copy), device="cpu")


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin", ".pth"])
def test_pickle_checkpoint_file_is_refused_with_the_risk_explained(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"not really a checkpoint")
    with pytest.raises(ModelError, match="can run arbitrary code"):
        load_model(str(path), device="cpu")


def test_a_depth_unet_is_refused(model_copy):
    config_file = model_copy / "unet" / "config.json"
    config = json.loads(config_file.read_text())
    config["in_channels"] = 5  # SD 2 depth: latent and depth map
    config_file.write_text(json.dumps(config))
    with pytest.raises(ModelError, match="5 input channels"):
        load_model(str(model_copy), device="cpu")


def test_sdxl_unet_without_the_second_text_encoder_is_refused(model_copy):
    config_file = model_copy / "unet" / "config.json"
    config = json.loads(config_file.read_text())
    config.update(addition_embed_type="text_time", addition_time_embed_dim=8,
                  projection_class_embeddings_input_dim=32 + 6 * 8)
    config_file.write_text(json.dumps(config))
    with pytest.raises(ModelError, match="not a complete SDXL folder: missing text_encoder_2, tokenizer_2"):
        load_model(str(model_copy), device="cpu")


def test_unknown_prediction_type_is_refused(model_copy):
    config_file = model_copy / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config["prediction_type"] = "sample"
    config_file.write_text(json.dumps(config))
    with pytest.raises(ModelError, match="prediction type"):
        load_model(str(model_copy), device="cpu")


def test_v_prediction_model_edits(model_copy, samples_dir):
    import numpy as np

    from engine.params import EditParams
    from engine.session import EditSession

    config_file = model_copy / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config["prediction_type"] = "v_prediction"
    config_file.write_text(json.dumps(config))
    model = load_model(str(model_copy), device="cpu")
    assert model.prediction_type == "v_prediction"
    photo = np.full((64, 96, 3), 100, np.uint8)
    result = EditSession(model, photo).edit("", "a dog", np.ones((64, 96), np.float32),
                                            EditParams(steps=5, mask_samples=2))
    assert np.isfinite(result.image.astype(float)).all() and result.image.shape == photo.shape


def test_hub_id_not_in_cache_says_how_to_get_it():
    with pytest.raises(ModelError, match="not in the local Hugging Face cache"):
        load_model("someone/not-a-cached-model", device="cpu")


def test_nonexistent_path_and_empty_source():
    with pytest.raises(ModelError, match="model not found"):
        load_model("/no/such/model.safetensors", device="cpu")
    with pytest.raises(ModelError, match="--model"):
        load_model("", device="cpu")


def test_device_and_dtype_choice():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ModelError, match="unknown device"):
        resolve_device("tpu")
    with pytest.raises(ModelError, match="unknown dtype"):
        resolve_dtype("int8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_attention_uses_scaled_dot_product(tiny_model):
    from diffusers.models.attention_processor import AttnProcessor2_0

    processors = tiny_model.unet.attn_processors.values()
    assert processors and all(isinstance(p, AttnProcessor2_0) for p in processors)


def test_pickle_checkpoint_with_opt_in_loads_only_tensors(tmp_path, tiny_model_path):
    """A pickle holding only tensors is read with weights_only=True and reaches the single-file
    loader (which then names what is missing); no code runs."""
    state = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(3, 4, 3, 3)}
    path = tmp_path / "weights.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ModelError) as info:
        load_model(str(path), device="cpu", allow_pickle=True)
    assert "refused" not in str(info.value)  # read fine; the architecture check speaks instead


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("protocol", [2, 4])  # 2 as torch.save writes; 4 is refused as unreadable
def test_crafted_pickle_does_not_run_its_code_even_with_opt_in(tmp_path, protocol):
    import pickle

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": {"w": _RunsCode(marker)}}, protocol=protocol))
    with pytest.raises(ModelError) as info:
        load_model(str(path), device="cpu", allow_pickle=True)
    assert not marker.exists()
    if protocol == 2:
        assert "evil.ckpt was refused: besides weights it holds a Python object (io.open)" in str(info.value)
    assert "weights_only" not in str(info.value)  # never torch's advice to turn the check off


@pytest.mark.parametrize("damage", ["cut short", "not a checkpoint"])
def test_a_damaged_checkpoint_is_called_damaged_not_dangerous(tmp_path, damage):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(64, 64)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "cut short" else b"<html>Not Found</html>")
    with pytest.raises(ModelError) as info:
        load_model(str(path), device="cpu", allow_pickle=True)
    message = str(info.value)
    assert message.startswith("model.ckpt is not a readable checkpoint: the file is damaged")
    assert "code" not in message and "weights_only" not in message


def test_hub_id_downloaded_by_the_app_resolves_offline(tiny_model_path):
    from engine.downloads import SOURCE_FILE, folder_for

    target = folder_for("someone/tiny-downloaded")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(tiny_model_path, target)
    try:
        with pytest.raises(ModelError, match="download of 'someone/tiny-downloaded' is not finished"):
            load_model("someone/tiny-downloaded", device="cpu")
        (target / SOURCE_FILE).write_text('{"repo_id": "someone/tiny-downloaded"}')
        model = load_model("someone/tiny-downloaded", device="cpu")
        assert model.name == "someone/tiny-downloaded"
    finally:
        shutil.rmtree(target)


def test_hub_id_with_a_dot_resolves_from_the_hugging_face_cache(tiny_model_path):
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / "models--someone--tiny-v1.5"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny_model_path, repo / "snapshots" / commit)
    try:
        model = load_model("someone/tiny-v1.5", device="cpu")
        assert model.name == "someone/tiny-v1.5"
    finally:
        shutil.rmtree(repo)


def test_allowed_download_goes_through_the_resumable_downloader(tiny_model_path, monkeypatch):
    import engine.downloads

    calls = []

    def fake_download(repo_id, *, on_progress=None, **_):
        calls.append(repo_id)
        on_progress(1, 2, "unet/diffusion_pytorch_model.safetensors")
        return tiny_model_path

    monkeypatch.setattr(engine.downloads, "download_model", fake_download)
    reports = []
    model = load_model("someone/not-cached", device="cpu", allow_download=True,
                       on_download=lambda *a: reports.append(a))
    assert calls == ["someone/not-cached"] and model.name == "someone/not-cached"
    assert reports == [(1, 2, "unet/diffusion_pytorch_model.safetensors")]
