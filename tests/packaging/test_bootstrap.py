"""packaging/dev.py: the torch choice, the reinstall rule, venv paths and GPU detection."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("dev_bootstrap", ROOT / "packaging" / "dev.py")
dev = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = dev  # dataclasses look their module up there
_spec.loader.exec_module(dev)

PINNED = f"torch=={dev.TORCH_VERSION}"
CUDA = (PINNED, "--index-url", "https://download.pytorch.org/whl/cu128")


@pytest.mark.parametrize("system", ["Linux", "Windows"])
def test_an_nvidia_gpu_gets_the_cuda_build(system):
    choice = dev.choose_torch(dev.Host(system, "x86_64", nvidia="nvidia-smi (NVIDIA RTX A6000)"))
    assert choice.args == CUDA and choice.build == "CUDA 12.8"
    assert "NVIDIA RTX A6000" in choice.describe() and " ".join(CUDA) in choice.describe()


def test_linux_without_nvidia_gets_the_pinned_pypi_wheel_and_is_told_the_cpu_index():
    choice = dev.choose_torch(dev.Host("Linux", "x86_64"))
    assert choice.args == (PINNED,) and choice.build == "CPU"  # what this CI machine installs
    assert "https://download.pytorch.org/whl/cpu" in choice.reason


def test_windows_without_nvidia_gets_the_cpu_wheel():
    choice = dev.choose_torch(dev.Host("Windows", "AMD64"))
    assert choice.args == (PINNED,) and "CPU-only" in choice.reason


def test_apple_silicon_gets_the_mps_wheel_and_intel_macs_are_refused():
    assert dev.choose_torch(dev.Host("Darwin", "arm64")) == dev.TorchChoice(
        (PINNED,), "MPS", "Apple silicon: PyPI's macOS wheel runs on the GPU")
    with pytest.raises(dev.SetupError, match="Intel Macs are not supported"):
        dev.choose_torch(dev.Host("Darwin", "x86_64"))
    with pytest.raises(dev.SetupError, match="Rosetta"):
        dev.choose_torch(dev.Host("Darwin", "x86_64", rosetta=True))


def test_the_override_is_split_into_pip_arguments_and_beats_detection():
    value = 'torch==2.13.0 --index-url "https://download.pytorch.org/whl/cu126"'
    choice = dev.choose_torch(dev.Host("Linux", "x86_64", nvidia="nvidia-smi (X)"), value)
    assert choice.args == ("torch==2.13.0", "--index-url", "https://download.pytorch.org/whl/cu126")
    assert choice.override and choice.build == "DIFFEDIT_TORCH"
    # An Intel Mac may still try a build of its own choosing.
    assert dev.choose_torch(dev.Host("Darwin", "x86_64"), "torch==2.2.2").args == ("torch==2.2.2",)


def test_windows_override_keeps_backslashes_and_drops_quotes():
    value = r'torch==2.13.0 --find-links "C:\wheels\torch cu128" --no-index'
    assert dev.split_pip_args(value, "Windows") == (
        "torch==2.13.0", "--find-links", r"C:\wheels\torch cu128", "--no-index")


@pytest.mark.parametrize("value, message", [("torch 'unclosed", "cannot be split"), ("   ", "empty")])
def test_a_bad_override_is_an_error_naming_the_variable(value, message):
    with pytest.raises(dev.SetupError, match=message):
        dev.split_pip_args(value, "Linux")


def test_plan_installs_keeps_and_reinstalls():
    auto = dev.choose_torch(dev.Host("Linux", "x86_64"))
    cuda = dev.choose_torch(dev.Host("Linux", "x86_64", nvidia="nvidia-smi (X)"))
    override = dev.choose_torch(dev.Host("Linux", "x86_64"), "torch==2.13.0 --index-url URL")
    assert dev.plan_torch(auto, None, None) == "install"
    assert dev.plan_torch(auto, "2.13.0+cpu", {"args": list(auto.args), "override": False}) == "keep"
    # The bug this replaces: an override was ignored once a torch was there.
    assert dev.plan_torch(override, "2.13.0+cpu", None) == "reinstall"
    assert dev.plan_torch(override, "2.13.0+cpu", {"args": list(auto.args)}) == "reinstall"
    assert dev.plan_torch(override, "2.13.0+cu128", {"args": list(override.args), "override": True}) == "keep"
    # Without an override: a torch put there by hand or by an earlier override stays...
    assert dev.plan_torch(auto, "2.13.0+cu128", None) == "keep"
    assert dev.plan_torch(auto, "2.13.0+cu128", {"args": list(override.args), "override": True}) == "keep"
    # ...but an earlier automatic choice follows the machine (an NVIDIA GPU was added).
    assert dev.plan_torch(cuda, "2.13.0", {"args": list(auto.args), "override": False}) == "reinstall"


def test_venv_paths_on_windows_and_posix():
    assert dev.venv_python(PureWindowsPath(r"C:\src\diffedit\.venv"), "Windows") == \
        PureWindowsPath(r"C:\src\diffedit\.venv\Scripts\python.exe")
    assert str(dev.venv_script(PureWindowsPath(r"C:\src\.venv"), "diffedit-studio", "Windows")) == \
        r"C:\src\.venv\Scripts\diffedit-studio.exe"
    assert dev.venv_python(PurePosixPath("/src/.venv"), "Linux") == PurePosixPath("/src/.venv/bin/python")
    assert dev.venv_script(PurePosixPath("/src/.venv"), "diffedit-studio", "Darwin") == \
        PurePosixPath("/src/.venv/bin/diffedit-studio")


def test_nvidia_smi_listing_is_parsed():
    listing = ("GPU 0: NVIDIA GeForce RTX 4090 (UUID: GPU-1234)\n"
               "GPU 1: NVIDIA RTX A6000 (UUID: GPU-5678)\n")
    assert dev.nvidia_gpus(listing) == ["NVIDIA GeForce RTX 4090", "NVIDIA RTX A6000"]
    assert dev.nvidia_gpus("NVIDIA-SMI has failed because it couldn't communicate with the driver") == []


@pytest.mark.skipif(sys.platform == "win32", reason="the fake nvidia-smi is a shell script")
def test_detection_runs_nvidia_smi_from_path(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA L4 (UUID: GPU-abc)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert dev._find_nvidia("Linux") == "nvidia-smi (NVIDIA L4)"
    smi.write_text("#!/bin/sh\necho 'No devices were found'\nexit 6\n")
    monkeypatch.setattr(dev, "NVIDIA_DRIVER_GPUS", tmp_path / "no-driver")
    assert dev._find_nvidia("Linux") == ""
    (tmp_path / "driver" / "0000:01:00.0").mkdir(parents=True)
    monkeypatch.setattr(dev, "NVIDIA_DRIVER_GPUS", tmp_path / "driver")
    assert dev._find_nvidia("Linux") == "the NVIDIA driver (/proc/driver/nvidia)"


def test_unknown_command_prints_usage_and_exits_2():
    result = subprocess.run([sys.executable, str(ROOT / "packaging" / "dev.py"), "frobnicate"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "python3 packaging/dev.py test" in result.stderr


def test_readme_and_ci_use_the_bootstrap():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = readme.split("```")[1]
    assert "python3 packaging/dev.py app" in first_block and "python3 packaging/dev.py test" in first_block
    assert "python3 packaging/dev.py test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("argv, cpus, workers", [
    ([], 2, ["-n", "2", "--dist", "loadfile"]),  # the whole suite, as CI runs it
    (["-q", "-m", "not slow"], 16, ["-n", str(dev.MAX_TEST_WORKERS), "--dist", "loadfile"]),
    ([], 1, []),  # one CPU: workers would only add their start-up
    (["-n", "0"], 8, []),  # the caller chose
    (["-p", "no:xdist"], 8, []),
    (["tests/packaging/test_bootstrap.py"], 8, []),  # named tests run in this process
    (["tests/engine/test_cli.py::test_version"], 8, []),
])
def test_the_suite_runs_on_one_worker_per_cpu_unless_the_caller_chose(argv, cpus, workers):
    assert dev.test_workers(argv, cpus) == workers
