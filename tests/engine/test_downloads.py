"""Downloads by repo id against a fake hub behind a mocked HTTP transport (no network at all).

huggingface_hub's real code runs (model_info, file metadata, http_get); only its HTTP client is
swapped for one whose transport answers from memory, so Range requests, resume and errors are
exercised end to end.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections import namedtuple

import pytest
from huggingface_hub.utils import _http

from engine import downloads
from engine.catalog import discover_models
from engine.config import Settings
from engine.downloads import download_model, folder_for, plan_download
from engine.errors import Cancelled, ModelError

ENDPOINT = "https://hub.invalid"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
# httpx2 today; taken from huggingface_hub's own client so a rename does not break the test.
httpx = sys.modules[type(_http.default_client_factory()).__module__.split(".")[0]]


def sd_repo(weight_size=300_000, *, variant=False, pickle=False) -> dict[str, bytes]:
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDIMScheduler"]}
    files = {
        "model_index.json": json.dumps(index).encode(),
        "README.md": b"# model card",
        "scheduler/scheduler_config.json": json.dumps({"prediction_type": "epsilon"}).encode(),
        "tokenizer/vocab.json": b"{}", "tokenizer/merges.txt": b"#version: 0.2\n",
        "tokenizer/tokenizer_config.json": b"{}", "tokenizer/special_tokens_map.json": b"{}",
        "unet/config.json": json.dumps({"cross_attention_dim": 768, "in_channels": 4}).encode(),
        "vae/config.json": b"{}", "text_encoder/config.json": b"{}",
        "safety_checker/config.json": b"{}", "safety_checker/model.safetensors": b"s" * 5000,
        "v1-5-pruned.safetensors": b"x" * 50_000,  # a single-file copy we must not fetch
        "unet/diffusion_pytorch_model.non_ema.safetensors": b"n" * 5000,
    }
    for index_, (component, stem) in enumerate(downloads_weights().items()):
        payload = bytes((i * 7 + index_) % 251 for i in range(weight_size))
        suffix = ".bin" if pickle and component == "unet" else ".safetensors"
        if variant:
            files[f"{component}/{stem}.fp16{suffix}"] = payload
        else:
            files[f"{component}/{stem}{suffix}"] = payload
            files[f"{component}/{stem}.fp16{suffix}"] = payload[: weight_size // 2]
    return files


def downloads_weights():
    return {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"}


Request = namedtuple("Request", "method path range")


class FakeHub:
    """Answers the hub's API and file URLs from a dict of repos; records every request."""

    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos = repos
        self.requests: list[Request] = []
        self.corrupt: set[str] = set()  # files served with wrong bytes (checksum test)
        self.down = False  # simulate no connection at all

    def handle(self, request):
        path = request.url.path
        self.requests.append(Request(request.method, path, request.headers.get("range")))
        if self.down:
            raise httpx.ConnectError("network is unreachable", request=request)
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path)
        if match:
            repo = self.repos.get(match.group(1))
            if repo is None:
                return httpx.Response(404, headers={"X-Error-Code": "RepoNotFound"},
                                      json={"error": "Repository not found"}, request=request)
            siblings = [{"rfilename": name, "size": len(data),
                         "lfs": {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                 "pointerSize": 130} if len(data) > 10_000 else None}
                        for name, data in repo.items()]
            return httpx.Response(200, json={"id": match.group(1), "sha": COMMIT, "siblings": siblings},
                                  request=request)
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if match and match.group(1) in self.repos and match.group(3) in self.repos[match.group(1)]:
            name = match.group(3)
            data = self.repos[match.group(1)][name]
            if name in self.corrupt:
                data = bytes(len(data))
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                       "Accept-Ranges": "bytes"}
            if request.method == "HEAD":
                return httpx.Response(200, headers={**headers, "Content-Length": str(len(data))},
                                      request=request)
            start = 0
            if request.headers.get("range"):
                start = int(re.match(r"bytes=(\d+)-", request.headers["range"]).group(1))
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            return httpx.Response(206 if start else 200, headers=headers,
                                  stream=httpx.ByteStream(body), request=request)
        return httpx.Response(404, json={"error": "Entry not found"}, headers={"X-Error-Code": "EntryNotFound"},
                              request=request)

    def file_gets(self):
        return [r for r in self.requests if r.method == "GET" and "/resolve/" in r.path]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFEDIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DIFFEDIT_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    fake = FakeHub({"someone/sd15": sd_repo()})
    # Small chunks so that progress and cancel happen several times per file.
    monkeypatch.setattr("huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE", 16 * 1024)
    _http.set_client_factory(lambda: httpx.Client(transport=httpx.MockTransport(fake.handle),
                                                  follow_redirects=True))
    yield fake
    _http.set_client_factory(_http.default_client_factory)


def download(repo="someone/sd15", **kwargs):
    return download_model(repo, endpoint=ENDPOINT, **kwargs)


def test_downloads_configs_tokenizer_and_safetensors_weights_only(hub):
    progress = []
    folder = download(on_progress=lambda done, total, name: progress.append((done, total, name)))
    repo = hub.repos["someone/sd15"]
    assert folder == folder_for("someone/sd15")
    fetched = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    expected = sorted([
        "model_index.json", "scheduler/scheduler_config.json", "tokenizer/merges.txt",
        "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json", "tokenizer/vocab.json",
        "unet/config.json", "vae/config.json", "text_encoder/config.json",
        "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors", ".diffedit-source.json",
    ])
    assert fetched == expected
    for name in expected:
        if name != ".diffedit-source.json":
            assert (folder / name).read_bytes() == repo[name], name
    total = sum(len(repo[n]) for n in expected if n != ".diffedit-source.json")
    dones = [d for d, _, _ in progress]
    assert dones == sorted(dones) and dones[-1] == total and {t for _, t, _ in progress} == {total}
    assert len(progress) > 20  # byte-level progress inside the big files, not just per file
    assert json.loads((folder / ".diffedit-source.json").read_text())["repo_id"] == "someone/sd15"
    # The downloaded folder is what the catalog lists (always scanned, no settings needed).
    entries = [e for e in discover_models(Settings()) if e.usable]
    assert [(e.name, e.kind, e.family, e.path) for e in entries] == [("someone/sd15", "folder", "sd1", folder)]


def test_cancel_then_resume_continues_the_partial_file(hub):
    polls = {"n": 0}

    def stop_midway():
        polls["n"] += 1
        return polls["n"] > 25

    with pytest.raises(Cancelled, match="resume"):
        download(should_stop=stop_midway)
    folder = folder_for("someone/sd15")
    parts = list(folder.rglob("*.part"))
    assert len(parts) == 1 and 0 < parts[0].stat().st_size < 300_000
    kept = parts[0].stat().st_size
    first_gets = len(hub.file_gets())

    progress = []
    download(on_progress=lambda done, total, name: progress.append(done))
    resumed = hub.file_gets()[first_gets:]
    name = str(parts[0].relative_to(folder))[: -len(".part")]
    # The interrupted file continues from where it stopped; finished files are not fetched again.
    assert [r.range for r in resumed if r.path.endswith(name)] == [f"bytes={kept}-"]
    assert all(not r.path.endswith(("config.json", "vocab.json")) for r in resumed)
    assert progress[0] >= kept  # the resumed run starts from what is on disk
    repo = hub.repos["someone/sd15"]
    assert (folder / name).read_bytes() == repo[name]
    assert not list(folder.rglob("*.part"))


@pytest.mark.slow
def test_resume_after_a_crash_left_a_partial_file(hub):
    repo = hub.repos["someone/sd15"]
    target = folder_for("someone/sd15") / "vae" / "diffusion_pytorch_model.safetensors"
    target.parent.mkdir(parents=True)
    target.with_name(target.name + ".part").write_bytes(repo["vae/diffusion_pytorch_model.safetensors"][:123_456])
    download()
    assert target.read_bytes() == repo["vae/diffusion_pytorch_model.safetensors"]
    assert any(r.range == "bytes=123456-" for r in hub.file_gets())


@pytest.mark.slow
def test_fp16_only_weights_are_saved_under_the_plain_names(hub):
    hub.repos["someone/half"] = sd_repo(variant=True)
    folder = download("someone/half")
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == \
        hub.repos["someone/half"]["unet/diffusion_pytorch_model.fp16.safetensors"]
    assert not list(folder.rglob("*.fp16.*"))


def test_refuses_offline_mode_before_any_request(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE is set; unset it to download someone/sd15"):
        download()
    assert hub.requests == []


def test_refuses_when_the_disk_is_too_small(hub, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(downloads.shutil, "disk_usage", lambda path: usage(10**9, 10**9, 50 * 1024**2))
    with pytest.raises(ModelError, match=r"not enough free disk space to download someone/sd15: .* 50 MB free"):
        download()
    assert hub.file_gets() == []  # refused before fetching anything


def test_free_space_check_counts_only_what_is_left(hub, monkeypatch):
    plan = plan_download("someone/sd15", endpoint=ENDPOINT)
    usage = namedtuple("usage", "total used free")
    free = downloads.FREE_SPACE_MARGIN + plan.total_bytes - 1
    monkeypatch.setattr(downloads.shutil, "disk_usage", lambda path: usage(0, 0, free))
    with pytest.raises(ModelError, match="not enough free disk space"):
        downloads.check_free_space(plan)
    part = plan.folder / "unet" / "diffusion_pytorch_model.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 10)  # ten bytes already here: now it fits
    downloads.check_free_space(plan)


@pytest.mark.slow
@pytest.mark.parametrize(
    "repo, files, message",
    [
        ("nobody/missing", None, "no model called nobody/missing on the Hugging Face hub"),
        ("someone/lora", {"pytorch_lora_weights.safetensors": b"x"}, "not a diffusers pipeline"),
        ("someone/old", "pickle", "unet weights only in pickle format"),
        ("not a repo id", None, "not a Hugging Face model id"),
    ],
)
def test_unusable_repos_are_explained(hub, repo, files, message):
    if files == "pickle":
        files = sd_repo(pickle=True)
    if files is not None:
        hub.repos[repo] = files
    with pytest.raises(ModelError, match=message):
        download(repo)
    assert hub.file_gets() == []


def test_network_failure_is_a_clear_error(hub):
    hub.down = True
    with pytest.raises(ModelError, match="someone/sd15"):
        download()


@pytest.mark.slow
def test_damaged_transfer_is_detected_and_removed(hub):
    hub.corrupt.add("text_encoder/model.safetensors")
    with pytest.raises(ModelError, match="text_encoder/model.safetensors of someone/sd15 arrived damaged"):
        download()
    folder = folder_for("someone/sd15")
    assert not (folder / "text_encoder" / "model.safetensors").exists()
    assert not (folder / "text_encoder" / "model.safetensors.part").exists()
    assert not (folder / ".diffedit-source.json").exists()


def test_an_sdxl_repo_brings_its_second_text_encoder_and_tokenizer(hub):
    repo = sd_repo(1000)
    repo["model_index.json"] = json.dumps({"_class_name": "StableDiffusionXLPipeline"}).encode()
    repo.update({"text_encoder_2/config.json": b"{}", "text_encoder_2/model.safetensors": b"t" * 1000,
                 "text_encoder_2/model.fp16.safetensors": b"h" * 500,
                 "tokenizer_2/vocab.json": b"{}", "tokenizer_2/merges.txt": b"#version: 0.2\n",
                 "sd_xl_base_1.0.safetensors": b"x" * 5000})  # the single-file copy stays behind
    hub.repos["stabilityai/sdxl"] = repo
    names = {f.target for f in plan_download("stabilityai/sdxl", endpoint=ENDPOINT).files}
    assert {"text_encoder_2/config.json", "text_encoder_2/model.safetensors",
            "tokenizer_2/vocab.json", "tokenizer_2/merges.txt"} <= names
    assert "sd_xl_base_1.0.safetensors" not in names and "text_encoder_2/model.fp16.safetensors" not in names
    names_sd15 = {f.target for f in plan_download("someone/sd15", endpoint=ENDPOINT).files}
    assert not any(n.startswith(("text_encoder_2/", "tokenizer_2/")) for n in names_sd15)
