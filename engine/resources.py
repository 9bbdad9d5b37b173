"""Find the files under resources/ from a source checkout, an installed wheel or a PyInstaller bundle."""

from __future__ import annotations

import importlib.resources
import os
import sys
from pathlib import Path

PACKAGE = "engine.assets"  # what resources/ is called inside a wheel (see pyproject.toml)
_CHECKOUT = Path(__file__).resolve().parent.parent


def resources_root() -> Path:
    """The folder that holds icons, styles, samples, model configs and the CLIP vocabulary.

    DIFFEDIT_RESOURCES_DIR overrides everything, for packagers that place data elsewhere (e.g.
    a Linux distribution's /usr/share). A frozen (PyInstaller) build unpacks data next to its
    modules in ``sys._MEIPASS``, where the spec copies resources/ under the same name. A source
    checkout uses its own resources/ folder (so a work tree never reads another tree's files);
    an installed wheel has it as the package data of ``engine.assets``.
    """
    override = os.environ.get("DIFFEDIT_RESOURCES_DIR")
    if override:
        return Path(override)
    frozen_base = getattr(sys, "_MEIPASS", None)
    if frozen_base:
        return Path(frozen_base) / "resources"
    if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "resources").is_dir():
        return _CHECKOUT / "resources"
    return Path(str(importlib.resources.files(PACKAGE)))  # a wheel installs it as plain files


def resource_path(*parts: str) -> Path:
    """Path of a resource, e.g. ``resource_path("model_configs", "sd1", "model_index.json")``.

    Does not check that it exists: callers that need it say which file is missing in their error.
    """
    return resources_root().joinpath(*parts)
