"""Find files under resources/ both from a source checkout and from a PyInstaller bundle."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def resources_root() -> Path:
    """The folder that holds icons, styles, samples and model configs.

    A frozen (PyInstaller) build unpacks data next to its modules in ``sys._MEIPASS``; the spec
    copies resources/ there under the same name. DIFFEDIT_RESOURCES_DIR overrides both, for
    packagers that place data elsewhere (e.g. a Linux distribution's /usr/share).
    """
    override = os.environ.get("DIFFEDIT_RESOURCES_DIR")
    if override:
        return Path(override)
    frozen_base = getattr(sys, "_MEIPASS", None)
    if frozen_base:
        return Path(frozen_base) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


def resource_path(*parts: str) -> Path:
    """Path of a resource, e.g. ``resource_path("model_configs", "sd1", "model_index.json")``.

    Does not check that it exists: callers that need it say which file is missing in their error.
    """
    return resources_root().joinpath(*parts)
