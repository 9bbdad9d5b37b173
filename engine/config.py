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


@dataclass
class Settings:
    default_model: str = ""  # folder, hub repo id (from the local cache) or .safetensors file
    model_folders: list[str] = field(default_factory=list)  # extra places to look for models
    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    memory: str = "auto"  # GPU memory tier: auto | full | sliced | offload (engine.memory)
    allow_download: bool = False  # offline unless the user says otherwise

    @classmethod
    def load(cls) -> "Settings":
        path = config_dir() / "settings.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known}) if isinstance(data, dict) else cls()

    def save(self) -> Path:
        folder = config_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "settings.json"
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        os.replace(temporary, path)
        return path
