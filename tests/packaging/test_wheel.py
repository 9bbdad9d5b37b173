"""The wheel: built from the source tree, installed into a fresh venv outside the repository, it
runs `--version` and an edit on the tiny model from another folder, with no help from the tree."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import engine

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
_spec = importlib.util.spec_from_file_location("dev_for_wheel", ROOT / "packaging" / "dev.py")
dev = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = dev
_spec.loader.exec_module(dev)


def test_every_source_package_is_in_the_wheel_list():
    """pyproject lists the packages by hand (resources/ is mapped in as engine.assets)."""
    found = {".".join(init.parent.relative_to(ROOT).parts)
             for top in ("engine", "desktop_app") for init in (ROOT / top).rglob("__init__.py")}
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert listed - {"engine.assets"} == found, "add the new package to [tool.setuptools] packages"


# Without the test run's PYTHONPATH: a source tree on it would count as an installed project.
CLEAN_ENV = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def _pip(python: Path, *args: str, cwd: Path) -> str:
    result = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args],
                            capture_output=True, text=True, cwd=cwd, env=CLEAN_ENV, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _installed(python: Path, cwd: Path) -> dict[str, str]:
    listing = _pip(python, "list", "--format=freeze", cwd=cwd)
    return dict(line.lower().split("==", 1) for line in listing.splitlines() if "==" in line)


@pytest.mark.slow
def test_wheel_installs_and_edits_outside_the_repository(tmp_path, samples_dir):
    source = tmp_path / "src"  # a copy, so the build leaves no build/ or egg-info in the repo
    for name in ("engine", "desktop_app", "resources", "packaging"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "docs"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    _pip(Path(sys.executable), "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(source),
         cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("diffedit_studio-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assets = "engine/assets/"
    for needed in ("icons/app.png", "icons/brush.svg", "style/app.qss", "samples/astronaut.png",
                   "model_configs/sd1/model_index.json", "model_configs/sd2-v/unet/config.json",
                   "clip/bpe_simple_vocab_16e6.txt.gz", "clip/LICENSE"):
        assert assets + needed in names
    assert not any(name.startswith(assets + "docs/") for name in names)  # screenshots stay out
    info = f"diffedit_studio-{engine.__version__}.dist-info/"
    assert {info + "licenses/packaging/LICENSE", info + "licenses/resources/clip/LICENSE"} <= names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=CLEAN_ENV, timeout=300)
    python = Path(dev.venv_python(venv, dev.platform.system()))
    host = dev.detect_host()
    _pip(python, "install", "-q", *dev.choose_torch(host, os.environ.get("DIFFEDIT_TORCH")).args,
         cwd=tmp_path)
    torch_before = _installed(python, tmp_path)["torch"]
    _pip(python, "install", "-q", str(wheel), cwd=tmp_path)
    after = _installed(python, tmp_path)
    # The wheel's requirements must not swap the chosen torch or pull torchvision / CUDA libraries.
    assert after["torch"] == torch_before
    assert "torchvision" not in after and "open-clip-torch" not in after
    if not host.nvidia:
        assert not [name for name in after if name.startswith("nvidia-")]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(samples_dir / "coffee.png", elsewhere)
    env = dict(CLEAN_ENV)
    env.update(HF_HUB_OFFLINE="1", **{f"DIFFEDIT_{name}_DIR": str(tmp_path / name.lower())
                                      for name in ("CONFIG", "CACHE", "DATA")})
    script = str(dev.venv_script(venv, "diffedit-studio", dev.platform.system()))
    run = subprocess.run([script, "--version"], capture_output=True, text=True, cwd=elsewhere,
                         env=env, timeout=120)
    assert (run.returncode, run.stdout.strip()) == (0, f"diffedit-studio {engine.__version__}")
    where = subprocess.run([str(python), "-c", "import engine.resources as r; print(r.resources_root())"],
                           capture_output=True, text=True, cwd=elsewhere, env=env, timeout=120)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr
    run = subprocess.run([script, "edit", "coffee.png", "-o", "tea.png", "--model", "tiny",
                          "--source", "a cup of coffee", "--target", "a cup of tea", "--steps", "4",
                          "--mask-samples", "2", "--quiet"],
                         capture_output=True, text=True, cwd=elsewhere, env=env, timeout=600)
    assert run.returncode == 0, run.stderr
    assert (elsewhere / "tea.png").stat().st_size > 0
