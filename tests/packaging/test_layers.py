"""The import contracts in pyproject.toml (import-linter): the engine never imports the app or
Qt, and the engine's modules import each other without circles."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).parent / ("lint-imports.exe" if os.name == "nt" else "lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess:
    # --no-cache: grimp's cache folder would otherwise appear next to pyproject.toml.
    return subprocess.run([str(LINT), "--no-cache"], cwd=tree, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tree)}, timeout=300)


def test_the_contracts_hold():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_the_contracts_catch_an_app_import_inside_a_function_and_a_circle(tmp_path):
    for name in ("engine", "desktop_app"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / "engine" / "masks.py", "a", encoding="utf-8") as masks:
        masks.write("\n\ndef _late():\n    from desktop_app import icons  # noqa\n")
    with open(tmp_path / "engine" / "errors.py", "a", encoding="utf-8") as errors:
        errors.write("\n\ndef _circle():\n    from engine import masks  # noqa\n")  # masks -> errors
    result = _lint(tmp_path)
    assert result.returncode == 1
    assert "Contracts: 0 kept, 2 broken." in result.stdout
    assert "engine.masks -> desktop_app.icons" in result.stdout
