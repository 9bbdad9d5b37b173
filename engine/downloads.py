"""Download an SD pipeline by Hugging Face repo id, only when the user asks: progress, cancel, resume.

Files go into a plain diffusers folder under the user data folder (``<data>/models/<org>--<name>``)
rather than into the hub cache: huggingface_hub >= 2 discards a partial file when a download
stops, while a 3.4 GB UNet on a slow line must survive a cancel, a crash or a lost connection.
Each file is fetched into ``<name>.part`` with HTTP Range requests from where it stopped, checked
against the size (and SHA-256 for large files) the hub lists, then renamed into place. Only
configs, tokenizer files and safetensors weights of the components we load are fetched.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from engine.config import data_dir
from engine.errors import Cancelled, ModelError

COMPONENTS = ("unet", "vae", "text_encoder")
OPTIONAL_COMPONENTS = ("text_encoder_2",)  # SDXL's second text encoder, where the repo has one
# Small files every SD pipeline folder needs besides the weights.
CONFIG_PATTERNS = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/*.json",
    "tokenizer/*.txt",
    "tokenizer_2/*.json",
    "tokenizer_2/*.txt",
    "unet/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "text_encoder_2/config.json",
)
FREE_SPACE_MARGIN = 256 * 1024**2  # room for the OS and other apps; a full disk corrupts more than us
SOURCE_FILE = ".diffedit-source.json"  # written last: marks a finished download and names its repo
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_VARIANT = re.compile(r"\.(fp16|bf16|fp32|non_ema|ema)\.", re.IGNORECASE)

ProgressCallback = Callable[[int, int, str], None]  # (bytes done, bytes total, current file)


@dataclass
class RemoteFile:
    name: str  # path inside the repo
    size: int
    sha256: str | None = None  # the hub lists it for LFS (large) files
    target: str = ""  # path inside our folder; differs for variant weights saved under the plain name

    def __post_init__(self) -> None:
        self.target = self.target or self.name


@dataclass
class DownloadPlan:
    repo_id: str
    revision: str  # commit hash, so every file comes from the same revision
    folder: Path
    files: list[RemoteFile] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def bytes_present(self) -> int:
        """Bytes already on disk from an earlier (finished or interrupted) run."""
        return sum(_present(self.folder, f) for f in self.files)


def downloads_dir() -> Path:
    """Where downloaded models live; the model catalog always looks here."""
    return data_dir() / "models"


def folder_for(repo_id: str) -> Path:
    return downloads_dir() / repo_id.replace("/", "--")


def offline_mode() -> bool:
    """HF_HUB_OFFLINE, read now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def plan_download(repo_id: str, *, revision: str = "main", endpoint: str | None = None) -> DownloadPlan:
    """Ask the hub which files the pipeline needs and how big they are. No file is downloaded."""
    repo_id = (repo_id or "").strip()
    if not _REPO_ID.match(repo_id):
        raise ModelError(
            f"{repo_id!r} is not a Hugging Face model id; use the form owner/name, "
            "e.g. stable-diffusion-v1-5/stable-diffusion-v1-5"
        )
    if offline_mode():
        raise ModelError(
            "downloads are switched off because HF_HUB_OFFLINE is set; unset it to download "
            f"{repo_id}, or copy the model's folder to this machine and add it as a folder"
        )
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=endpoint).model_info(repo_id, revision=revision, files_metadata=True)
    except Exception as exc:  # noqa: BLE001 - translated into one message the user can act on
        raise _hub_error(exc, repo_id) from exc
    siblings = {s.rfilename: s for s in info.siblings or []}
    if "model_index.json" not in siblings:
        raise ModelError(
            f"{repo_id} is not a diffusers pipeline (it has no model_index.json); for a single "
            ".safetensors checkpoint, download the file and add it with “Add file”"
        )
    files = [_remote(siblings[name]) for name in sorted(siblings)
             if any(fnmatch.fnmatch(name, pattern) for pattern in CONFIG_PATTERNS)]
    present = [c for c in OPTIONAL_COMPONENTS if f"{c}/config.json" in siblings]
    for component in COMPONENTS + tuple(present):
        files.extend(_weights_for(component, siblings, repo_id))
    return DownloadPlan(repo_id, info.sha or revision, folder_for(repo_id), files)


def download_model(
    repo_id: str,
    *,
    on_progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    revision: str = "main",
    endpoint: str | None = None,
) -> Path:
    """Download (or finish downloading) a pipeline; return its folder, loadable with load_model.

    Raises Cancelled when ``should_stop()`` turns true (the partial files stay, and the next
    call resumes them), ModelError for offline mode, unknown repos, too little disk space and
    network failures.
    """
    plan = plan_download(repo_id, revision=revision, endpoint=endpoint)
    folder = plan.folder
    check_free_space(plan)
    folder.mkdir(parents=True, exist_ok=True)
    total = plan.total_bytes
    done = plan.bytes_present()
    report = on_progress or (lambda *_: None)
    stop = should_stop or (lambda: False)
    report(done, total, "")
    # Small files first: the folder is recognisably a (still incomplete) model at once.
    for remote in sorted(plan.files, key=lambda f: f.size):
        if stop():
            raise Cancelled(f"download of {repo_id} cancelled; start it again to resume")
        target = folder / remote.target
        if target.is_file() and target.stat().st_size == remote.size:
            continue
        before = _present(folder, remote)

        def counted(written: int, name=remote.target, base=done - before) -> None:
            report(base + written, total, name)

        _fetch(plan, remote, target, counted, stop, endpoint)
        done += remote.size - before
        report(done, total, remote.target)
    (folder / SOURCE_FILE).write_text(
        json.dumps({"repo_id": repo_id, "revision": plan.revision}, indent=1), encoding="utf-8"
    )
    return folder


def check_free_space(plan: DownloadPlan) -> None:
    """Refuse before starting when what is left to fetch does not fit on the target disk."""
    needed = plan.total_bytes - plan.bytes_present()
    probe = plan.folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed + FREE_SPACE_MARGIN > free:
        raise ModelError(
            f"not enough free disk space to download {plan.repo_id}: it needs {_gb(needed)} "
            f"(plus {_gb(FREE_SPACE_MARGIN)} to spare) and {probe} has {_gb(free)} free; "
            "free some space or point DIFFEDIT_DATA_DIR at a larger disk"
        )


# ------------------------------------------------------------------ internals
def _remote(sibling) -> RemoteFile:
    lfs = getattr(sibling, "lfs", None)
    size = sibling.size if sibling.size is not None else (lfs.size if lfs else 0)
    sha = getattr(lfs, "sha256", None) if lfs else None
    return RemoteFile(sibling.rfilename, int(size or 0), sha)


def _weights_for(component: str, siblings: dict, repo_id: str) -> list[RemoteFile]:
    """The safetensors weights of one component: the plain ones, else the fp16 variant."""
    names = [n for n in siblings if n.startswith(component + "/") and n.count("/") == 1]
    tensors = [n for n in names if n.endswith(".safetensors") or n.endswith(".safetensors.index.json")]
    plain = [n for n in tensors if not _VARIANT.search(n)]
    if plain:
        return [_remote(siblings[n]) for n in sorted(plain)]
    half = [n for n in tensors if re.search(r"\.fp16\.", n)]
    if half:
        # Saved under the plain name so that the folder loads without naming a variant; the
        # engine converts precision at load time anyway.
        return [RemoteFile(**{**_remote(siblings[n]).__dict__, "target": n.replace(".fp16.", ".")})
                for n in sorted(half)]
    if any(n.endswith((".bin", ".ckpt", ".pt", ".pth")) for n in names):
        raise ModelError(
            f"{repo_id} has its {component} weights only in pickle format (.bin), which can run "
            "code when loaded; DiffEdit Studio downloads safetensors weights only"
        )
    raise ModelError(f"{repo_id} has no {component} weights; it is not a complete SD pipeline")


def _present(folder: Path, remote: RemoteFile) -> int:
    target = folder / remote.target
    if target.is_file() and target.stat().st_size == remote.size:
        return remote.size
    part = target.with_name(target.name + ".part")
    if part.is_file():
        return min(part.stat().st_size, remote.size)
    return 0


class _CountingFile:
    """The file http_get writes into: reports progress and stops between chunks when asked."""

    def __init__(self, handle, written: int, on_written, should_stop) -> None:
        self._handle, self.written = handle, written
        self._on_written, self._should_stop = on_written, should_stop

    def write(self, chunk: bytes) -> int:
        if self._should_stop():
            raise Cancelled("download cancelled; start it again to resume")
        count = self._handle.write(chunk)
        self.written += len(chunk)
        self._on_written(self.written)
        return count

    def tell(self) -> int:
        return self._handle.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        position = self._handle.seek(offset, whence)
        self.written = self._handle.tell()  # a server that ignores Range restarts the file
        return position

    def truncate(self, size=None) -> int:
        return self._handle.truncate(size)

    def flush(self) -> None:
        self._handle.flush()


def _fetch(plan: DownloadPlan, remote: RemoteFile, target: Path, on_written, should_stop, endpoint) -> None:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get

    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    resume = part.stat().st_size if part.is_file() else 0
    if resume > remote.size:  # not a prefix of this file (changed upstream?): start again
        part.unlink()
        resume = 0
    try:
        url = hf_hub_url(plan.repo_id, remote.name, revision=plan.revision, endpoint=endpoint)
        location = get_hf_file_metadata(url).location
        with part.open("ab") as handle:
            sink = _CountingFile(handle, resume, on_written, should_stop)
            http_get(location, sink, resume_size=resume, expected_size=remote.size,
                     displayed_filename=remote.name, tqdm_class=_Silent)
    except Cancelled:
        raise
    except Exception as exc:  # noqa: BLE001 - the partial file stays for the next attempt
        raise _hub_error(exc, plan.repo_id, remote.name) from exc
    if remote.sha256 and _sha256(part) != remote.sha256:
        part.unlink()
        raise ModelError(
            f"{remote.name} of {plan.repo_id} arrived damaged (checksum mismatch); it was "
            "deleted, start the download again"
        )
    os.replace(part, target)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(4 * 1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def _hub_error(exc: Exception, repo_id: str, filename: str | None = None) -> ModelError:
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    what = f"{filename} of {repo_id}" if filename else repo_id
    if isinstance(exc, ModelError):
        return exc
    if isinstance(exc, OfflineModeIsEnabled):
        return ModelError(f"cannot download {what}: huggingface_hub is in offline mode (HF_HUB_OFFLINE)")
    if isinstance(exc, GatedRepoError):
        return ModelError(
            f"{repo_id} is gated: accept its licence on huggingface.co, then log in on this "
            "machine with `hf auth login` and try again"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return ModelError(
            f"no model called {repo_id} on the Hugging Face hub: check the spelling (private models "
            "need `hf auth login`)"
        )
    if isinstance(exc, RevisionNotFoundError):
        return ModelError(f"{repo_id} has no revision by that name")
    if isinstance(exc, HfHubHTTPError):
        return ModelError(f"the Hugging Face hub refused {what}: {exc}".splitlines()[0])
    return ModelError(
        f"could not download {what}: {type(exc).__name__}: {exc}. Check the internet connection; "
        "starting the download again resumes where it stopped"
    )


def _gb(size: int) -> str:
    return f"{size / 1024**3:.2f} GB" if size >= 1024**3 else f"{size / 1024**2:.0f} MB"


class _Silent:
    """A do-nothing progress bar: progress goes to our callback, not to the terminal."""

    def __init__(self, *args, **kwargs) -> None:
        self.n = kwargs.get("initial", 0)

    def update(self, n=1) -> None:
        self.n += n

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def close(self) -> None:
        return None

    def set_description(self, *args, **kwargs) -> None:
        return None
