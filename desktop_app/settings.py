"""What the app remembers between sessions.

Model, device and precision live in engine.config (shared with the CLI, so `diffedit-studio edit`
uses the model chosen here); app-only things (the LoRAs on the model, parameter defaults, recent
files, window layout, mask colour, history and undo memory) live in QSettings.
"""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtGui import QColor

from desktop_app.results_store import DEFAULT_BUDGET_MB
from desktop_app.undo import DEFAULT_LIMIT_MB
from engine import config, lora
from engine.errors import InputError
from engine.params import EditParams

MAX_RECENT = 10


class AppSettings:
    def __init__(self, qsettings: QSettings | None = None):
        self.q = qsettings if qsettings is not None else QSettings("DiffEditStudio", "DiffEdit Studio")

    # ------------------------------------------------------------------ engine (shared with CLI)

    def engine(self) -> config.Settings:
        return config.Settings.load()

    def save_engine(self, model: str, device: str, dtype: str, memory: str = "auto",
                    threads: int = 0, transformer: str = "") -> None:
        current = config.Settings.load()
        current.default_model = model
        current.transformer = transformer
        current.device = device
        current.dtype = dtype
        current.memory = memory
        current.threads = threads
        current.save()

    def loras(self) -> list[str]:
        """The LoRA specs (``PATH:WEIGHT``) the app loads onto the model; a saved value that is
        not a list of readable specs is left out."""
        try:
            value = json.loads(self.q.value("model/loras", "[]"))
        except (TypeError, ValueError, RecursionError):
            return []
        if not isinstance(value, list):
            return []
        specs = []
        for spec in value:
            try:
                specs.append(lora.parse(spec).spec)
            except (InputError, AttributeError, TypeError):
                continue
        return specs

    def set_loras(self, specs: list[str]) -> None:
        self.q.setValue("model/loras", json.dumps(list(specs)))

    def remember_model(self, source: str) -> None:
        """The model that loaded last is the one the next start (and the CLI) loads."""
        current = config.Settings.load()
        if source and current.default_model != source:
            current.default_model = source
            current.transformer = ""  # the saved transformer file went with the other model
            current.save()

    # ------------------------------------------------------------------ parameter defaults

    def default_params(self) -> EditParams:
        raw = self.q.value("defaults/params", "")
        try:
            return EditParams.from_dict(json.loads(raw)).validate() if raw else EditParams()
        except (ValueError, TypeError):
            return EditParams()  # an unreadable or out-of-range saved value: factory defaults

    def set_default_params(self, params: EditParams) -> None:
        self.q.setValue("defaults/params", json.dumps(params.validate().to_dict()))

    # ------------------------------------------------------------------ history and undo memory

    def _megabytes(self, key: str, default: int) -> int:
        try:
            return max(64, int(self.q.value(key, default)))
        except (TypeError, ValueError):
            return default

    def history_memory_mb(self) -> int:
        """Memory for history results before older ones move to disk (results_store)."""
        return self._megabytes("history/memory_mb", DEFAULT_BUDGET_MB)

    def set_history_memory_mb(self, megabytes: int) -> None:
        self.q.setValue("history/memory_mb", int(megabytes))

    def undo_memory_mb(self) -> int:
        """The undo stack's memory cap: beyond it the oldest steps are dropped."""
        return self._megabytes("undo/memory_mb", DEFAULT_LIMIT_MB)

    def set_undo_memory_mb(self, megabytes: int) -> None:
        self.q.setValue("undo/memory_mb", int(megabytes))

    # ------------------------------------------------------------------ recent files

    def recent_files(self) -> list[str]:
        value = self.q.value("recent/files", [])
        if isinstance(value, str):  # QSettings returns a lone entry as a plain string
            value = [value]
        return [v for v in (value or []) if isinstance(v, str) and v]

    def add_recent(self, path) -> None:
        path = str(Path(path).resolve())
        files = [path] + [f for f in self.recent_files() if f != path]
        self.q.setValue("recent/files", files[:MAX_RECENT])

    def clear_recent(self) -> None:
        self.q.setValue("recent/files", [])

    # ------------------------------------------------------------------ export

    def export_folder(self) -> Path | None:
        """The folder of the last export, while it still exists."""
        folder = str(self.q.value("export/folder", "") or "")
        return Path(folder) if folder and Path(folder).is_dir() else None

    def set_export_folder(self, folder) -> None:
        self.q.setValue("export/folder", str(folder))

    def export_quality(self) -> int:
        """JPEG and WebP quality, 1-100 (95 keeps fine detail and colour edges)."""
        try:
            return min(max(int(self.q.value("export/quality", 95)), 1), 100)
        except (TypeError, ValueError):
            return 95

    def set_export_quality(self, quality: int) -> None:
        self.q.setValue("export/quality", int(quality))

    # ------------------------------------------------------------------ view

    def mask_colour(self) -> QColor:
        colour = QColor(str(self.q.value("view/mask_colour", "#ff285a")))
        return colour if colour.isValid() else QColor("#ff285a")

    def set_mask_colour(self, colour: QColor) -> None:
        self.q.setValue("view/mask_colour", colour.name())

    def window_state(self) -> tuple[object, object]:
        return self.q.value("window/geometry"), self.q.value("window/state")

    def set_window_state(self, geometry, state) -> None:
        self.q.setValue("window/geometry", geometry)
        self.q.setValue("window/state", state)

    def sync(self) -> None:
        self.q.sync()
