"""Find the Stable Diffusion models on this machine: Hugging Face cache, configured folders, files.

Only metadata is read (JSON configs, safetensors headers, file sizes), never weights, so a
listing takes milliseconds even with many large models. Anything that looks like a model but
cannot be used is listed with the reason, instead of being hidden or crashing the listing.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from engine import model_checks as checks
from engine.config import Settings
from engine.errors import ModelError
from engine.families import folder_family, read_json

FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sd2-v": "SD 2.x (v)", "sdxl": "SDXL",
                "sd3": "SD3.5", "zimage": "Z-Image", "flux2-klein": "FLUX.2 klein",
                "qwen-image-edit": "Qwen-Image-Edit", "qwen-image-edit-plus": "Qwen-Image-Edit",
                "flux1": "FLUX.1", "flux1-kontext": "FLUX.1 Kontext"}
# What a user choosing a flow-matching model wants to know (the model cards' figures; the
# README's model table has the memory tiers).
_FLOW_EDITS = "DiffEdit, Blended, SDEdit and FlowEdit"
_DIT_ATTENTION = "Prompt-to-Prompt (local blend) and Plug-and-Play (key/value injection)"
FAMILY_NOTES = {
    "flux2-klein": "4 steps, guidance built in (base klein: 50 with CFG); klein 4B: Apache-2.0, "
                   f"about 13 GB; runs {_FLOW_EDITS}, Instruction edit, {_DIT_ATTENTION}",
    "zimage": "Z-Image-Turbo: 8 steps, no CFG (base: 50 with CFG); Apache-2.0, 6B, about 21 GB; "
              f"runs {_FLOW_EDITS}, {_DIT_ATTENTION}",
    "sd3": "Medium 40 steps, Large 28, with CFG (Large Turbo: 4, no CFG); Stability AI "
           f"Community License; runs {_FLOW_EDITS}",
    **dict.fromkeys(("qwen-image-edit", "qwen-image-edit-plus"), (
        "2509/2511: 40 steps with true CFG 4 (the first release: 50); Apache-2.0, 20B, about "
        "58 GB in bfloat16 (needs offload on 24 GB cards); runs Instruction edit only")),
    "flux1-kontext": "FLUX.1 Kontext [dev]: Instruction edit, 28 steps at guidance 2.5 (built "
                     "into the model, no CFG); FLUX.1 [dev] Non-Commercial License (personal and "
                     "research use only); 12B, about 24 GB in bfloat16; also runs " + _FLOW_EDITS,
    "flux1": "[dev]: 28 steps at guidance 3.5 (built into the model, no CFG), FLUX.1 [dev] "
             "Non-Commercial License; [schnell]: 4 steps, no guidance, Apache-2.0; 12B, about "
             f"24 GB in bfloat16; runs {_FLOW_EDITS}",
}
_COMPONENTS = {"sd": ("unet", "vae", "text_encoder"), "sdxl": ("unet", "vae", "text_encoder", "text_encoder_2")}
_SCAN_DEPTH = 2  # folder/model or folder/publisher/model; deeper trees are not model libraries


@dataclass
class ModelEntry:
    """One model found on disk. ``source`` is what load_model() and Settings.default_model take."""

    name: str
    kind: str  # "hub" (Hugging Face cache) | "folder" (diffusers layout) | "file" (.safetensors)
    source: str
    path: Path
    family: str = ""  # a FAMILY_NAMES key | "" when unknown
    size_bytes: int = 0
    problem: str = ""  # why it cannot be used; empty when usable
    is_default: bool = False

    @property
    def usable(self) -> bool:
        return not self.problem

    @property
    def family_label(self) -> str:
        return FAMILY_NAMES.get(self.family, "?")

    @property
    def family_note(self) -> str:
        """Steps, licence and methods of a flow-matching family ("" for the others)."""
        return FAMILY_NOTES.get(self.family, "")

    @property
    def size_text(self) -> str:
        return format_size(self.size_bytes)


def format_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it once
    at import, which would miss a change made later by a test or by the app's settings)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def discover_models(settings: Settings | None = None) -> list[ModelEntry]:
    """Every model in the hub cache and in ``settings.model_folders``; usable ones first."""
    settings = settings if settings is not None else Settings.load()
    entries = _scan_hub_cache(hub_cache_dir()) + _scan_downloads()
    for place in settings.model_folders:
        entries.extend(_scan_place(Path(place).expanduser()))
    default = (settings.default_model or "").strip()
    if default and default != "tiny" and not any(_same_source(e, default) for e in entries):
        # A default chosen by path outside every scanned place still belongs in the list.
        path = Path(default).expanduser()
        if path.exists():
            entries.extend(_scan_place(path))
    unique: dict[str, ModelEntry] = {}
    for entry in entries:
        key = entry.source if entry.kind == "hub" else str(_resolved(entry.path))
        unique.setdefault(key, entry)
    result = list(unique.values())
    for entry in result:
        entry.is_default = bool(default) and _same_source(entry, default)
    result.sort(key=lambda e: (not e.usable, e.name.lower(), str(e.path)))
    return result


def format_table(entries: list[ModelEntry]) -> str:
    """A plain-text table for the terminal; unusable entries follow with their reasons."""
    usable = [e for e in entries if e.usable]
    broken = [e for e in entries if not e.usable]
    lines: list[str] = []
    if usable:
        rows = [("", "NAME", "FAMILY", "SIZE", "WHERE", "PATH")]
        rows += [("*" if e.is_default else "", e.name, e.family_label, e.size_text, e.kind, str(e.path))
                 for e in usable]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
        if any(e.is_default for e in usable):
            lines.append("(* = default model)")
    else:
        lines.append(
            "No usable models found. Add a folder or .safetensors file in the app's Models dialog "
            "(or the \"model_folders\" list in settings.json), or download one there by its "
            "Hugging Face id; `--model tiny` runs the random-weight test model."
        )
    if broken:
        lines.append("")
        lines.append("Not usable:")
        for entry in broken:
            lines.append(f"  {entry.name} ({entry.path}): {entry.problem}")
    return "\n".join(lines)


# ------------------------------------------------------------------ scanning
def _scan_place(path: Path) -> list[ModelEntry]:
    """A configured place: a single .safetensors file, a diffusers folder, or a folder of them."""
    if path.is_file():
        return [_file_entry(path)]
    if not path.is_dir():
        return [ModelEntry(path.name or str(path), "folder", str(path), path,
                           problem="not found (moved or deleted?); remove it from the model folders")]
    if (path / "model_index.json").is_file():
        return [_folder_entry(path)]
    found: list[ModelEntry] = []
    _walk(path, 0, found)
    return found


def _walk(folder: Path, depth: int, found: list[ModelEntry]) -> None:
    try:
        children = sorted(folder.iterdir())
    except OSError as exc:
        found.append(ModelEntry(folder.name, "folder", str(folder), folder,
                                problem=f"cannot be read ({exc.strerror or exc})"))
        return
    for child in children:
        if child.name.startswith("."):
            continue
        if child.is_file() and child.suffix.lower() == ".safetensors":
            found.append(_file_entry(child))
        elif child.is_dir() and (child / "model_index.json").is_file():
            found.append(_folder_entry(child))
        elif child.is_dir() and depth + 1 < _SCAN_DEPTH:
            _walk(child, depth + 1, found)


def _file_entry(path: Path) -> ModelEntry:
    from engine.single_file import detect_family

    entry = ModelEntry(path.stem, "file", str(path), path)
    try:
        entry.size_bytes = path.stat().st_size
    except OSError:
        pass
    if path.suffix.lower() != ".safetensors":
        entry.problem = "only .safetensors single files are supported (pickle files can run code)"
        return entry
    try:
        entry.family = detect_family(path)
    except ModelError as exc:
        entry.problem = _without_name(str(exc), path.name)
    except Exception as exc:  # noqa: BLE001 - one hostile file must not hide the others
        entry.problem = f"cannot be read ({type(exc).__name__}: {exc})"
    return entry


def _folder_entry(folder: Path, *, name: str | None = None, kind: str = "folder",
                  source: str | None = None) -> ModelEntry:
    entry = ModelEntry(name or folder.name, kind, source or str(folder), folder)
    entry.size_bytes = _folder_size(folder)
    try:
        checks.check_folder_files(folder)
        entry.family = _folder_family(folder)
    except ModelError as exc:
        entry.problem = str(exc)
    except Exception as exc:  # noqa: BLE001 - one hostile folder must not hide the others
        entry.problem = f"cannot be read ({type(exc).__name__}: {exc})"
    return entry


def _folder_family(folder: Path) -> str:
    """Family of a diffusers folder from its configs; ModelError for what we cannot load."""
    from engine import flow_models

    index = read_json(folder / "model_index.json")
    kind = folder_family(folder)
    flow = flow_models.FAMILIES.get(kind)
    components = _COMPONENTS[kind] if flow is None else flow.components
    absent = [c for c in components if c not in index]
    if absent:
        raise ModelError(f"not a {'Stable Diffusion' if flow is None else flow.label} pipeline "
                         f"(no {', '.join(absent)})")
    for component in components:
        sub = folder / component
        if not (sub / "config.json").is_file():
            raise ModelError(f"incomplete: {component}/config.json is missing (download it again)")
        read_json(sub / "config.json")  # bounds and finite values, as the loader checks them
        weights = [p for p in sub.glob("*.safetensors") if p.is_file()]  # is_file: dangling links fail
        if not weights:
            if any(p.is_file() for p in sub.glob("*.bin")):
                raise ModelError(f"{component} weights are in pickle format (.bin) only; "
                                 "use a safetensors copy of this model")
            raise ModelError(f"incomplete: no {component} weights (download it again)")
    if flow is not None:
        return kind
    unet = read_json(folder / "unet" / "config.json")
    if unet.get("in_channels", 4) not in (4, 9):  # 9: an inpainting model
        raise ModelError(f"unsupported UNet with {unet.get('in_channels')} input channels")
    if kind == "sdxl":
        return "sdxl"
    width = unet.get("cross_attention_dim")
    scheduler = folder / "scheduler" / "scheduler_config.json"
    prediction = read_json(scheduler).get("prediction_type", "epsilon") if scheduler.is_file() else "epsilon"
    if width == 768:
        return "sd1"
    if width == 1024:
        return "sd2-v" if prediction == "v_prediction" else "sd2"
    raise ModelError(f"unknown architecture (cross-attention width {width}; SD 1.x uses 768, SD 2.x 1024)")


def _scan_hub_cache(cache: Path) -> list[ModelEntry]:
    if not cache.is_dir():
        return []
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache)
    except (CacheNotFound, OSError, ValueError):
        return []
    entries: list[ModelEntry] = []
    for repo in info.repos:
        if repo.repo_type != "model" or not repo.revisions:
            continue
        # The revision the "main" ref points at is what load_model resolves; else the newest.
        revisions = sorted(repo.revisions, key=lambda r: ("main" in r.refs, r.last_modified))
        snapshot = Path(revisions[-1].snapshot_path)
        if not (snapshot / "model_index.json").exists():
            continue  # not a diffusers pipeline (a text model, a LoRA repo, ...): not ours to list
        entry = _folder_entry(snapshot, name=repo.repo_id, kind="hub", source=repo.repo_id)
        entries.append(entry)
    for warning in info.warnings:  # a repo folder huggingface_hub could not make sense of
        match = re.search(r"models--([^/\\\s]+)", str(warning))
        if not match:
            continue  # datasets, spaces, stray files: not models
        name = match.group(1).replace("--", "/")
        entries.append(ModelEntry(name, "hub", name, cache / f"models--{match.group(1)}",
                                  problem=f"damaged cache entry ({warning}); download it again"))
    return entries


def _scan_downloads() -> list[ModelEntry]:
    """Models fetched by engine.downloads (named by their repo id); half-finished ones show why."""
    from engine.downloads import SOURCE_FILE, downloads_dir

    root = downloads_dir()
    if not root.is_dir():
        return []
    entries = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            repo_id = checks.read_json(folder / SOURCE_FILE, SOURCE_FILE)["repo_id"]
        except (ModelError, KeyError, TypeError):
            repo_id = None
        if not isinstance(repo_id, str):
            repo_id = None
        entry = _folder_entry(folder, name=repo_id or folder.name.replace("--", "/"))
        if repo_id is None:
            detail = entry.problem.removesuffix(" (download it again)")
            entry.problem = "download not finished" + (f" ({detail})" if detail else "")
            entry.problem += "; download it again to resume"
        entries.append(entry)
    return entries


# ------------------------------------------------------------------ helpers
def _folder_size(folder: Path) -> int:
    """Bytes on disk, counting each file once (the hub cache links snapshots to shared blobs)."""
    seen, total = set(), 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                real = os.path.realpath(os.path.join(root, name))
                if real not in seen:
                    seen.add(real)
                    total += os.stat(real).st_size
            except OSError:
                continue  # a dangling link; the component check reports it
    return total


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path


def _same_source(entry: ModelEntry, source: str) -> bool:
    if entry.source == source:
        return True
    if entry.kind == "hub":
        return False
    return _resolved(Path(source).expanduser()) == _resolved(entry.path)


def _without_name(message: str, name: str) -> str:
    """Errors from the loader start with the file name; the table shows it already."""
    return message.removeprefix(f"{name}: ")
