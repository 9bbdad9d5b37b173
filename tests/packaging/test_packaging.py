"""The packaging inputs: resource lookup, the frozen entry point and the PyInstaller spec.

The bundle itself is built by `bash packaging/build.sh --check` (minutes), not here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from engine import resources
from engine.resources import resource_path

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ROOT / "packaging" / "entry.py"
SPEC = ROOT / "packaging" / "diffedit_studio.spec"


def _run(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def test_resource_path_in_source_frozen_and_overridden(monkeypatch, tmp_path):
    monkeypatch.delenv("DIFFEDIT_RESOURCES_DIR", raising=False)
    assert resource_path("samples", "astronaut.png") == ROOT / "resources" / "samples" / "astronaut.png"
    assert resource_path("model_configs", "sd1", "model_index.json").is_file()
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path / "bundle"), raising=False)
    assert resource_path("style") == tmp_path / "bundle" / "resources" / "style"
    monkeypatch.setenv("DIFFEDIT_RESOURCES_DIR", str(tmp_path / "share"))
    assert resources.resources_root() == tmp_path / "share"


def test_entry_point_imports_nothing_heavy():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('entry', {str(ENTRY)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "heavy = sorted(m for m in ('torch', 'PySide6', 'diffusers', 'desktop_app') if m in sys.modules)\n"
        "print(heavy, callable(module.main), callable(module.self_test))\n"
    )
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] True True"


def test_self_test_reports_missing_resources(tmp_path):
    result = _run(ENTRY, "--self-test", env={"DIFFEDIT_RESOURCES_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert "self-test FAILED at resources: FileNotFoundError: missing resources:" in result.stderr
    assert str(tmp_path / "samples" / "astronaut.png") in result.stderr


@pytest.mark.slow
def test_self_test_passes_from_source():
    result = _run(ENTRY, "--self-test")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("  resources found in ")
    assert "edited 512x512 photo with the tiny model" in lines[1]
    assert "offscreen window rendered" in lines[2]
    assert lines[-1].startswith("self-test passed in ")


@pytest.mark.slow
def test_other_arguments_go_to_the_cli():
    result = _run(ENTRY, "edit", "--help")
    assert result.returncode == 0 and "--target" in result.stdout
    result = _run(ENTRY, "edit", "missing.png", "-o", "out.png")
    assert result.returncode == 2 and result.stderr.startswith("error:")


class _Recorder:
    def __init__(self, kind, calls):
        self.kind, self.calls = kind, calls

    def __call__(self, *args, **kwargs):
        self.calls.append((self.kind, args, kwargs))
        return types.SimpleNamespace(kind=self.kind, args=args, kwargs=kwargs, pure=[], scripts=[],
                                     binaries=[], datas=[])


def test_spec_declares_the_bundle(monkeypatch):
    """Run the spec with PyInstaller's build objects replaced by recorders."""
    filters = {}

    def collect_submodules(package, filter=None):
        filters[package] = filter
        return [f"{package}.stub"]

    hooks = types.ModuleType("PyInstaller.utils.hooks")
    hooks.collect_submodules = collect_submodules
    hooks.copy_metadata = lambda dist: [(f"{dist}.dist-info", dist)]
    for name in ("PyInstaller", "PyInstaller.utils"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "PyInstaller.utils.hooks", hooks)
    calls = []
    spec_globals = {"SPECPATH": str(SPEC.parent), "__file__": str(SPEC)}
    for kind in ("Analysis", "PYZ", "EXE", "COLLECT", "BUNDLE"):
        spec_globals[kind] = _Recorder(kind, calls)
    exec(compile(SPEC.read_text(), str(SPEC), "exec"), spec_globals)

    analysis = next(kw for kind, _, kw in calls if kind == "Analysis")
    scripts = next(args for kind, args, _ in calls if kind == "Analysis")[0]
    assert scripts == [str(ENTRY)]
    datas = dict((Path(src), dest) for src, dest in analysis["datas"] if not src.endswith("dist-info"))
    assert datas == {ROOT / "resources": "resources"}  # the CLIP vocabulary is in there too
    assert {"engine.stub", "desktop_app.stub", "diffusers.stub", "transformers.stub"} <= set(analysis["hiddenimports"])
    assert "pytest" in analysis["excludes"] and "torch" not in analysis["excludes"]
    exes = {kw["name"]: kw["console"] for kind, _, kw in calls if kind == "EXE"}
    assert exes == {"diffedit-studio": True, "DiffEditStudio": False}
    assert any(kind == "COLLECT" for kind, _, _ in calls)

    keep_diffusers, keep_transformers = filters["diffusers"], filters["transformers"]
    assert keep_diffusers("diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion")
    assert keep_diffusers("diffusers.pipelines.pipeline_utils")
    assert keep_diffusers("diffusers.loaders.single_file_utils")
    assert not keep_diffusers("diffusers.pipelines.flux")
    assert keep_transformers("transformers.models.clip.modeling_clip")
    assert not keep_transformers("transformers.models.llama")


def test_build_script_and_installer_recipes_exist():
    build = (ROOT / "packaging" / "build.sh").read_text()
    assert "--self-test" in build and "--check" in build and "diffedit_studio.spec" in build
    assert os.access(ROOT / "packaging" / "build.sh", os.X_OK)
    result = subprocess.run(["bash", "-n", str(ROOT / "packaging" / "build.sh")], capture_output=True)
    assert result.returncode == 0, result.stderr
    iss = (ROOT / "packaging" / "windows" / "DiffEditStudio.iss").read_text()
    assert "DiffEditStudio.exe" in iss and "--self-test" in iss
    readme = (ROOT / "packaging" / "README.md").read_text()
    assert "CUDA" in readme and "CPU" in readme and "macOS" in readme
