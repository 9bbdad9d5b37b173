"""Hostile and damaged model folders, files and hub-cache entries: each is refused by name with a
sentence (ModelError, CLI exit 2), none hangs or aborts, and one bad folder never hides the others."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_catalog import checkpoint_file

from engine import cli
from engine.errors import ModelError
from engine.models import load_model

FAST = ["--steps", "2", "--mask-samples", "1", "--quiet", "--target", "a dog", "--source", "a cat"]


def _edit_json(relative, **values):
    def mutate(folder: Path) -> None:
        path = folder / relative
        path.write_text(json.dumps({**json.loads(path.read_text()), **values}))
    return mutate


def _edit_weights(component, change):
    """Rewrite one component's safetensors file through ``change(tensors) -> tensors``."""
    def mutate(folder: Path) -> None:
        path = next((folder / component).glob("*.safetensors"))
        save_file(change(load_file(path)), str(path))
    return mutate


def _first(tensors, change):
    key = sorted(tensors)[0]
    return {**tensors, key: change(tensors[key])}


def _fifo(relative):
    def mutate(folder: Path) -> None:
        (folder / relative).unlink()
        os.mkfifo(folder / relative)
    return mutate


def _nested(relative):
    def mutate(folder: Path) -> None:
        (folder / relative).write_text("[" * 100_000 + "]" * 100_000)
    return mutate


def _with_nan(tensor):
    tensor = tensor.clone()
    tensor.view(-1)[tensor.numel() // 2] = float("nan")
    return tensor


# name -> (how the tiny model's folder is damaged, what the refusal must say)
HOSTILE = {
    "tokenizer-length-1e9": (_edit_json("tokenizer/tokenizer_config.json", model_max_length=10**9),
                             "model_max_length"),
    "fifo-config": (_fifo("unet/config.json"), "FIFO"),
    "fifo-tokenizer-vocab": (_fifo("tokenizer/vocab.json"), "FIFO"),
    "layers-per-block-100000": (_edit_json("unet/config.json", layers_per_block=100_000),
                                "layers_per_block"),
    "nested-unet-config": (_nested("unet/config.json"), "nested too deeply"),
    "nested-scheduler-config": (_nested("scheduler/scheduler_config.json"), "nested too deeply"),
    "absurd-train-timesteps": (_edit_json("scheduler/scheduler_config.json",
                                          num_train_timesteps=10**12), "num_train_timesteps"),
    "nan-beta": (_edit_json("scheduler/scheduler_config.json", beta_start=float("nan")),
                 "not a finite number"),
    "negative-vae-scale": (_edit_json("vae/config.json", scaling_factor=-0.18215), "scaling_factor"),
    "int8-weights": (_edit_weights("unet", lambda t: {k: (v * 100).to(torch.int8) for k, v in t.items()}),
                     "I8"),
    "bool-tensor": (_edit_weights("vae", lambda t: _first(t, lambda v: v > 0)), "BOOL"),
    "float8-tensor": (_edit_weights("text_encoder", lambda t: _first(t, lambda v: v.to(torch.float8_e4m3fn))),
                      "F8_E4M3"),
    "nan-weights": (_edit_weights("unet", lambda t: _first(t, _with_nan)), "NaN"),
    "missing-unet-tensor": (_edit_weights("unet", lambda t: {k: v for k, v in t.items()
                                                              if k != "conv_in.weight"}),
                            "conv_in.weight"),
    "missing-text-tensor": (_edit_weights("text_encoder", lambda t: dict(sorted(t.items())[1:])),
                            "weights are missing"),
}
# Seen by the catalog, which reads only JSON (no weights): listed as unusable with the reason.
LISTED_UNUSABLE = {"fifo-config", "layers-per-block-100000", "nested-unet-config",
                   "nested-scheduler-config", "absurd-train-timesteps", "nan-beta",
                   "negative-vae-scale"}


def _build(root: Path, name: str, tiny: Path) -> Path:
    folder = root / name
    shutil.copytree(tiny, folder)
    HOSTILE[name][0](folder)
    return folder


def _finishes(work, seconds=120):
    """Run ``work`` in a thread; fail (instead of hanging the suite) when it blocks."""
    outcome = {}

    def target():
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s (it hangs)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_folder_is_refused_by_name(tmp_path, tiny_model_path, name):
    folder = _build(tmp_path, name, tiny_model_path)
    with pytest.raises(ModelError, match=HOSTILE[name][1]):
        _finishes(lambda: load_model(str(folder), device="cpu"))


@pytest.mark.parametrize("name", ["fifo-config", "layers-per-block-100000", "nan-weights",
                                  "missing-unet-tensor"])
def test_hostile_folder_in_the_cli_exits_2(tmp_path, tiny_model_path, capsys, samples_dir, name):
    folder = _build(tmp_path, name, tiny_model_path)
    out = tmp_path / "out.png"
    code = _finishes(lambda: cli.main(["edit", str(samples_dir / "chelsea.png"), "-o", str(out),
                                       "--model", str(folder), *FAST]))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and HOSTILE[name][1] in err and "Traceback" not in err
    assert not out.exists()


def test_one_hostile_folder_does_not_hide_the_others(tmp_path, tiny_model_path, capsys, monkeypatch):
    place = tmp_path / "models"
    for name in HOSTILE:
        _build(place, name, tiny_model_path)
    checkpoint_file(place / "good.safetensors")  # a usable SD 1.x entry as the catalog sees it
    monkeypatch.setenv("DIFFEDIT_CONFIG_DIR", str(tmp_path / "config"))
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "settings.json").write_text(json.dumps({"model_folders": [str(place)]}))
    code = _finishes(lambda: cli.main(["models"]))
    out = capsys.readouterr().out
    assert code == 0
    listed, broken = out.split("Not usable:")
    assert " good " in listed and "SD 1.x" in listed
    for name in LISTED_UNUSABLE:
        line = next(line for line in broken.splitlines() if line.strip().startswith(name + " "))
        assert HOSTILE[name][1] in line, line


def test_hostile_single_file_header_is_refused(tmp_path):
    path = tmp_path / "nested.safetensors"
    header = ("[" * 50_000 + "]" * 50_000).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(ModelError, match="header cannot be read"):
        load_model(str(path), device="cpu")
    infinite = tmp_path / "infinite.safetensors"
    header = b'{"w": {"dtype": "F32", "shape": [1e999], "data_offsets": [0, 4]}}'
    infinite.write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
    with pytest.raises(ModelError, match="header cannot be read"):
        load_model(str(infinite), device="cpu")


# ------------------------------------------------------------------ the Hugging Face cache
def _cache_repo(cache: Path, repo_id: str, ref: str) -> Path:
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(ref)
    (repo / "snapshots").mkdir()
    return repo


@pytest.mark.parametrize("ref", ["../../../elsewhere", "ABSOLUTE"])
def test_hub_ref_that_leaves_the_cache_loads_nothing(tmp_path, tiny_model_path, monkeypatch, ref):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(tiny_model_path, elsewhere)  # a loadable model anywhere on disk
    ref = str(elsewhere) if ref == "ABSOLUTE" else ref
    repo = _cache_repo(tmp_path / "hub", "evil/repo", ref)
    assert (repo / "snapshots" / ref).resolve() == elsewhere.resolve()  # what the hub would load
    with pytest.raises(ModelError, match="not a commit hash"):
        load_model("evil/repo", device="cpu")


def test_hub_snapshot_linked_outside_the_cache_loads_nothing(tmp_path, tiny_model_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    commit = "1" * 40
    repo = _cache_repo(tmp_path / "hub", "evil/linked", commit)
    (repo / "snapshots" / commit).symlink_to(tiny_model_path, target_is_directory=True)
    with pytest.raises(ModelError, match="points outside"):
        load_model("evil/linked", device="cpu")
    (repo / "snapshots" / commit).unlink()
    shutil.copytree(tiny_model_path, repo / "snapshots" / commit, ignore=shutil.ignore_patterns("unet"))
    (repo / "snapshots" / commit / "unet").symlink_to(tiny_model_path / "unet")
    with pytest.raises(ModelError, match="unet points outside"):
        load_model("evil/linked", device="cpu")
