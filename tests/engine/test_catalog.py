"""Model discovery over a fake Hugging Face cache and model folders built in the test."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.catalog import discover_models, format_size, format_table
from engine.config import Settings

WEIGHTS = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("DIFFEDIT_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("DIFFEDIT_CACHE_DIR", str(tmp_path / "cache"))


def pipeline_files(width=768, prediction="epsilon", *, in_channels=4, weight_suffix=".safetensors",
                   xl=False, weight_bytes=1000) -> dict[str, bytes]:
    """The files of a diffusers SD pipeline; weights are placeholders (the catalog never reads them)."""
    index = {"_class_name": "StableDiffusionXLPipeline" if xl else "StableDiffusionPipeline",
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "scheduler": ["diffusers", "DDIMScheduler"]}
    if xl:
        index["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
        index["tokenizer_2"] = ["transformers", "CLIPTokenizer"]
    files = {
        "model_index.json": json.dumps(index).encode(),
        "unet/config.json": json.dumps({"cross_attention_dim": width, "in_channels": in_channels}).encode(),
        "vae/config.json": b"{}",
        "text_encoder/config.json": b"{}",
        "scheduler/scheduler_config.json": json.dumps({"prediction_type": prediction}).encode(),
        "tokenizer/vocab.json": b"{}",
    }
    if xl:
        files["text_encoder_2/config.json"] = b"{}"
        files["tokenizer_2/vocab.json"] = b"{}"
        files[f"text_encoder_2/model{weight_suffix}"] = bytes(weight_bytes)
    for component, stem in WEIGHTS.items():
        files[f"{component}/{stem}{weight_suffix}"] = bytes(weight_bytes)
    return files


def make_hub_repo(cache: Path, repo_id: str, files: dict[str, bytes], *, dangling: str | None = None) -> Path:
    """Lay out a repo the way huggingface_hub caches it: blobs, refs/main, snapshot symlinks."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data + name.encode()).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
        if name == dangling:
            blob.unlink()  # an interrupted or half-deleted download
    return snapshot


def make_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def checkpoint_file(path: Path, width=768, in_channels=4) -> Path:
    """A single-file checkpoint with the tensors the family is read from (shapes only matter)."""
    text = ("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" if width == 768
            else "cond_stage_model.model.token_embedding.weight")
    shapes = {
        "model.diffusion_model.input_blocks.0.0.weight": (8, in_channels, 3, 3),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (8, width),
        "first_stage_model.encoder.conv_in.weight": (8, 3, 3, 3),
        text: (4, width),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: torch.zeros(s, dtype=torch.float16) for k, s in shapes.items()}, str(path))
    return path


def by_name(entries):
    return {e.name: e for e in entries}


def test_hub_cache_lists_sd_pipelines_and_reports_broken_ones(tmp_path):
    cache = tmp_path / "hub"
    good = make_hub_repo(cache, "someone/sd15-photo", pipeline_files(768, weight_bytes=5000))
    make_hub_repo(cache, "stabilityai/stable-diffusion-2-1", pipeline_files(1024, "v_prediction"))
    make_hub_repo(cache, "google/bert-base", {"config.json": b"{}", "model.safetensors": b"x"})
    make_hub_repo(cache, "stabilityai/sdxl", pipeline_files(2048, xl=True))
    refiner = pipeline_files(1280, xl=True)
    refiner["model_index.json"] = json.dumps({**json.loads(refiner["model_index.json"]),
                                              "requires_aesthetics_score": True}).encode()
    make_hub_repo(cache, "stabilityai/sdxl-refiner", refiner)
    partial = pipeline_files(768)
    del partial["unet/diffusion_pytorch_model.safetensors"]
    make_hub_repo(cache, "someone/half-downloaded", partial)
    make_hub_repo(cache, "someone/dangling", pipeline_files(768), dangling="vae/diffusion_pytorch_model.safetensors")
    make_hub_repo(cache, "someone/inpaint", pipeline_files(768, in_channels=9))

    entries = by_name(discover_models(Settings()))
    assert "google/bert-base" not in entries  # not a pipeline: not listed at all
    sd15 = entries["someone/sd15-photo"]
    assert (sd15.usable, sd15.family, sd15.kind, sd15.source) == (True, "sd1", "hub", "someone/sd15-photo")
    assert sd15.path == good
    assert sd15.size_bytes == sum(len(d) for d in pipeline_files(768, weight_bytes=5000).values())
    assert entries["stabilityai/stable-diffusion-2-1"].family == "sd2-v"
    sdxl = entries["stabilityai/sdxl"]
    assert (sdxl.usable, sdxl.family, sdxl.family_label) == (True, "sdxl", "SDXL")
    assert "this is an SDXL refiner" in entries["stabilityai/sdxl-refiner"].problem
    assert "incomplete: no unet weights" in entries["someone/half-downloaded"].problem
    assert "damaged cache entry" in entries["someone/dangling"].problem
    inpaint = entries["someone/inpaint"]  # a 9-channel UNet: used by Blended and DiffEdit
    assert (inpaint.usable, inpaint.family) == (True, "sd1")
    ordered = discover_models(Settings())
    assert [e.usable for e in ordered] == sorted((e.usable for e in ordered), reverse=True)


def test_configured_folders_files_and_broken_entries(tmp_path):
    library = tmp_path / "models"
    make_folder(library / "my-sd2-base", pipeline_files(1024))
    make_folder(library / "publisher" / "nested-sd15", pipeline_files(768))
    make_folder(library / "pickle-only", pipeline_files(768, weight_suffix=".bin"))
    checkpoint_file(library / "dreamy-v1.safetensors", 768)
    checkpoint_file(library / "inpaint-v1.safetensors", 768, in_channels=9)
    checkpoint_file(library / "depth-v1.safetensors", 768, in_channels=5)
    (library / "truncated.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\"")
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(library / "style-lora.safetensors"))
    (library / "notes.txt").write_text("not a model")
    single = checkpoint_file(tmp_path / "elsewhere" / "v2-1_768-ema-pruned.safetensors", 1024)
    settings = Settings(model_folders=[str(library), str(single), str(tmp_path / "gone")])

    entries = by_name(discover_models(settings))
    assert set(entries) == {"my-sd2-base", "nested-sd15", "pickle-only", "dreamy-v1", "inpaint-v1",
                            "depth-v1", "truncated", "style-lora", "v2-1_768-ema-pruned", "gone"}
    assert entries["my-sd2-base"].family == "sd2" and entries["my-sd2-base"].kind == "folder"
    assert entries["nested-sd15"].family == "sd1"
    assert entries["dreamy-v1"].family == "sd1" and entries["dreamy-v1"].kind == "file"
    assert entries["dreamy-v1"].size_bytes == (library / "dreamy-v1.safetensors").stat().st_size
    assert entries["v2-1_768-ema-pruned"].family == "sd2-v"
    assert entries["v2-1_768-ema-pruned"].source == str(single)
    assert "pickle format" in entries["pickle-only"].problem
    assert (entries["inpaint-v1"].usable, entries["inpaint-v1"].family) == (True, "sd1")  # 9 channels
    assert "takes 5 input channels" in entries["depth-v1"].problem
    assert entries["truncated"].problem.startswith("not a valid safetensors file")
    assert "LoRA" in entries["style-lora"].problem
    assert "not found" in entries["gone"].problem
    usable = {e.name for e in entries.values() if e.usable}
    assert usable == {"my-sd2-base", "nested-sd15", "dreamy-v1", "inpaint-v1", "v2-1_768-ema-pruned"}


def test_default_is_marked_and_duplicates_are_merged(tmp_path):
    library = make_folder(tmp_path / "models" / "sd15", pipeline_files(768)).parent
    make_hub_repo(tmp_path / "hub", "someone/sd15-photo", pipeline_files(768))
    settings = Settings(default_model=str(library / "sd15"), model_folders=[str(library), str(library / "sd15")])
    entries = discover_models(settings)
    assert [e.name for e in entries].count("sd15") == 1
    assert [e.name for e in entries if e.is_default] == ["sd15"]
    settings.default_model = "someone/sd15-photo"
    assert [e.name for e in discover_models(settings) if e.is_default] == ["someone/sd15-photo"]


def test_default_outside_the_scanned_places_is_listed(tmp_path):
    single = checkpoint_file(tmp_path / "loose" / "mine.safetensors", 1024)
    entries = discover_models(Settings(default_model=str(single)))
    assert [(e.name, e.is_default, e.family) for e in entries] == [("mine", True, "sd2-v")]


def test_settings_are_read_from_the_config_dir(tmp_path):
    checkpoint_file(tmp_path / "lib" / "a.safetensors", 768)
    Settings(model_folders=[str(tmp_path / "lib")]).save()
    assert [e.name for e in discover_models()] == ["a"]


def test_format_table(tmp_path):
    make_folder(tmp_path / "lib" / "portrait-sd15", pipeline_files(768, weight_bytes=3 * 1024 * 1024))
    checkpoint_file(tmp_path / "lib" / "depth.safetensors", 768, in_channels=5)
    settings = Settings(default_model=str(tmp_path / "lib" / "portrait-sd15"), model_folders=[str(tmp_path / "lib")])
    table = format_table(discover_models(settings))
    lines = table.splitlines()
    assert lines[0].split() == ["NAME", "FAMILY", "SIZE", "WHERE", "PATH"]
    assert lines[1].startswith("*") and "portrait-sd15" in lines[1] and "SD 1.x" in lines[1]
    assert "9.0 MB" in lines[1] and str(tmp_path / "lib" / "portrait-sd15") in lines[1]
    assert "(* = default model)" in table
    assert "Not usable:" in table and "depth" in table and "5 input channels" in table
    empty = format_table([])
    assert "No usable models found" in empty and "--model tiny" in empty


def test_empty_or_missing_cache_is_not_an_error(tmp_path):
    assert discover_models(Settings()) == []
    (tmp_path / "hub").write_text("a file where the cache folder should be")
    assert discover_models(Settings()) == []


def test_format_size():
    assert format_size(512) == "512 B"
    assert format_size(2048) == "2 KB"
    assert format_size(int(2.5 * 1024**3)) == "2.5 GB"


def test_downloads_folder_is_always_scanned(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFEDIT_DATA_DIR", str(tmp_path / "data"))
    models = tmp_path / "data" / "models"
    done = make_folder(models / "someone--finished", pipeline_files(1024, "v_prediction"))
    (done / ".diffedit-source.json").write_text(json.dumps({"repo_id": "someone/finished"}))
    unfinished = pipeline_files(768)
    del unfinished["unet/diffusion_pytorch_model.safetensors"]
    make_folder(models / "someone--halfway", unfinished)
    entries = by_name(discover_models(Settings()))
    assert entries["someone/finished"].usable and entries["someone/finished"].family == "sd2-v"
    assert entries["someone/halfway"].problem == (
        "download not finished (incomplete: no unet weights); download it again to resume")


def test_flow_transformer_folders_are_listed_with_their_family(tmp_path, tiny_sd3_path, tiny_zimage_path,
                                                               tiny_qwen_edit_path):
    import shutil

    library = tmp_path / "models"
    shutil.copytree(tiny_sd3_path, library / "sd3.5-medium")
    shutil.copytree(tiny_zimage_path, library / "z-image-turbo")
    shutil.copytree(tiny_qwen_edit_path, library / "qwen-image-edit-2511")
    broken = shutil.copytree(tiny_zimage_path, library / "z-image-broken")
    for weights in (broken / "transformer").glob("*.safetensors"):
        weights.unlink()
    entries = by_name(discover_models(Settings(model_folders=[str(library)])))
    assert entries["sd3.5-medium"].usable and entries["sd3.5-medium"].family_label == "SD3.5"
    assert entries["z-image-turbo"].usable and entries["z-image-turbo"].family_label == "Z-Image"
    assert "Stability AI Community License" in entries["sd3.5-medium"].family_note
    assert entries["z-image-turbo"].family_note.startswith("Z-Image-Turbo: 8 steps, no CFG")
    qwen = entries["qwen-image-edit-2511"]
    assert qwen.usable and qwen.family == "qwen-image-edit-plus"
    assert qwen.family_label == "Qwen-Image-Edit" and "Apache-2.0, 20B" in qwen.family_note
    assert entries["z-image-broken"].problem == "incomplete: no transformer weights (download it again)"
