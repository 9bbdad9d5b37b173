"""User settings shared by the CLI and the app: default model, model folders, device, precision.

Stored as JSON in the platform's config folder (override with DIFFEDIT_CONFIG_DIR); the cache
folder (tiny test model, offline tokenizer files) likewise honours DIFFEDIT_CACHE_DIR.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import platformdirs

APP_NAME = "DiffEditStudio"


def config_dir() -> Path:
    return Path(os.environ.get("DIFFEDIT_CONFIG_DIR") or platformdirs.user_config_dir(APP_NAME))


def cache_dir() -> Path:
    return Path(os.environ.get("DIFFEDIT_CACHE_DIR") or platformdirs.user_cache_dir(APP_NAME))


def data_dir() -> Path:
    return Path(os.environ.get("DIFFEDIT_DATA_DIR") or platformdirs.user_data_dir(APP_NAME))


MAX_THREADS = 1024


def physical_cores() -> int:
    """CPU cores this process may use, counting each physical core once (SMT siblings share
    one core's arithmetic units, so more threads than cores only add contention)."""
    import psutil

    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(psutil.cpu_count(logical=False) or logical or 1, logical or 1))


@dataclass
class Settings:
    default_model: str = ""  # folder, hub repo id (from the local cache) or .safetensors file
    transformer: str = ""  # a .gguf/.safetensors transformer file completing the default (flow) model
    model_folders: list[str] = field(default_factory=list)  # extra places to look for models
    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    memory: str = "auto"  # GPU memory tier: auto | full | sliced | offload (engine.memory)
    allow_download: bool = False  # offline unless the user says otherwise
    threads: int = 0  # torch CPU threads; 0 = the physical cores (fewer steadies a busy machine)
    # What was wrong with the file when it was loaded (not saved): each bad value kept its default.
    problems: list[str] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def load(cls) -> "Settings":
        """The saved settings. A damaged file never stops a start: a value of the wrong type keeps
        its default, an unreadable file gives all defaults, and ``problems`` says which and why."""
        path = config_dir() / "settings.json"
        settings = cls()
        if not path.exists():
            return settings
        try:
            if not path.is_file():  # a FIFO would block the read forever
                raise ValueError("it is not a regular file")
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("it does not hold a JSON object")
        except (OSError, ValueError, RecursionError) as exc:
            reason = "it is nested too deeply" if isinstance(exc, RecursionError) else exc
            settings.problems.append(f"{path} cannot be read ({reason}); every setting has its "
                                     "default: fix or delete the file (the app's Settings rewrites it)")
            return settings
        for f in fields(cls):
            if f.name not in data or f.name == "problems":
                continue
            value, kind = data[f.name], _KINDS.get(f.name, "text")
            if _has_kind(value, kind):
                setattr(settings, f.name, value)
            else:
                settings.problems.append(f"{path}: {f.name} must be {kind}, not {_describe(value)}; "
                                         f"the default ({getattr(settings, f.name)!r}) is used "
                                         "until you fix it (the app's Settings rewrites it)")
        return settings

    def save(self) -> Path:
        folder = config_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "settings.json"
        temporary = path.with_suffix(".json.tmp")
        values = {k: v for k, v in asdict(self).items() if k != "problems"}
        temporary.write_text(json.dumps(values, indent=2), encoding="utf-8")
        os.replace(temporary, path)
        return path


_KINDS = {"model_folders": "a list of folder names", "allow_download": "true or false",
          "threads": f"a whole number from 0 to {MAX_THREADS}"}


def _has_kind(value, kind: str) -> bool:
    if kind == "true or false":
        return isinstance(value, bool)
    if kind == "a list of folder names":
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if kind.startswith("a whole number"):
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_THREADS
    return isinstance(value, str)


def _describe(value) -> str:
    names = {bool: "true/false", int: "a number", float: "a number", str: "text", list: "a list",
             dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)
