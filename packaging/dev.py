"""Set up the project's virtual environment with the right torch, then start the app, the tests or the CLI.

    python3 packaging/dev.py app [PHOTO]     set up and start DiffEdit Studio
    python3 packaging/dev.py test [ARGS]     set up and run the tests (ARGS go to pytest)
    python3 packaging/dev.py setup           set up only
    python3 packaging/dev.py cli ARGS        set up and run `diffedit-studio ARGS`

On Windows type `py` instead of `python3`. DIFFEDIT_TORCH overrides the torch choice with any pip
arguments (e.g. "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128");
DIFFEDIT_VENV names the environment folder (default .venv, relative to the repository).
Only the standard library is used: this runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

ROOT = Path(__file__).resolve().parent.parent
TORCH_VERSION = "2.13.0"
PYTORCH_INDEX = "https://download.pytorch.org/whl"
CUDA_INDEX = f"{PYTORCH_INDEX}/cu128"  # CUDA 12.8: NVIDIA driver 570 or newer
CPU_INDEX = f"{PYTORCH_INDEX}/cpu"
COMMANDS = ("app", "test", "setup", "cli")
TORCH_STAMP = ".diffedit-torch.json"  # which pip arguments installed the venv's torch
PROJECT_STAMP = ".diffedit-project"  # hash of the requirements the project was installed with
NVIDIA_DRIVER_GPUS = Path("/proc/driver/nvidia/gpus")  # Linux: one entry per GPU the driver runs


class SetupError(Exception):
    """A set-up step that cannot go on; the message says what to do."""


@dataclass(frozen=True)
class Host:
    """What the bootstrap looked at: the OS, the CPU, an NVIDIA GPU (how it was found, or "")."""

    system: str  # platform.system(): "Linux", "Windows", "Darwin"
    machine: str  # platform.machine(): "x86_64", "AMD64", "arm64", "aarch64"
    nvidia: str = ""
    rosetta: bool = False  # an x86-64 Python translated on an Apple-silicon Mac


@dataclass(frozen=True)
class TorchChoice:
    args: tuple[str, ...]  # what follows `pip install`
    build: str  # "CUDA 12.8", "MPS", "CPU" or "DIFFEDIT_TORCH"
    reason: str
    override: bool = False

    def describe(self) -> str:
        return f"torch: {self.build} build ({self.reason}): pip install {' '.join(self.args)}"


def choose_torch(host: Host, override: str | None = None) -> TorchChoice:
    """The torch build for this machine: DIFFEDIT_TORCH if set, else CUDA with an NVIDIA GPU,
    MPS on Apple silicon, CPU otherwise. Raises SetupError where no current torch installs."""
    if override and override.strip():
        return TorchChoice(split_pip_args(override, host.system), "DIFFEDIT_TORCH",
                           "your override", override=True)
    pinned = f"torch=={TORCH_VERSION}"
    if host.system == "Darwin":
        if host.rosetta:
            raise SetupError("this Python is an Intel build running under Rosetta on an Apple-silicon "
                             "Mac; install an arm64 (universal2) Python from python.org and run again")
        if host.machine != "arm64":
            raise SetupError("Intel Macs are not supported: torch has published no Intel-Mac wheels "
                             "since 2.2 and DiffEdit Studio needs torch 2.4 or newer; use an "
                             "Apple-silicon Mac, or Linux or Windows")
        return TorchChoice((pinned,), "MPS", "Apple silicon: PyPI's macOS wheel runs on the GPU")
    if host.nvidia:
        return TorchChoice((pinned, "--index-url", CUDA_INDEX), "CUDA 12.8",
                           f"NVIDIA GPU found by {host.nvidia}")
    if host.system == "Windows":
        return TorchChoice((pinned,), "CPU", "no NVIDIA GPU found; PyPI's Windows wheel is CPU-only")
    return TorchChoice((pinned,), "CPU",
                       "no NVIDIA GPU found; on Linux PyPI's wheel also carries the CUDA libraries "
                       f"(several GB): for the CPU-only one set DIFFEDIT_TORCH=\"{pinned} "
                       f"--index-url {CPU_INDEX}\"")


def split_pip_args(value: str, system: str) -> tuple[str, ...]:
    """DIFFEDIT_TORCH split as a shell would: quotes group, and Windows paths keep their backslashes."""
    try:
        if system == "Windows":
            words = [_unquote(word) for word in shlex.split(value, posix=False)]
        else:
            words = shlex.split(value)
    except ValueError as exc:
        raise SetupError(f"DIFFEDIT_TORCH={value!r} cannot be split into pip arguments ({exc})") from None
    if not words:
        raise SetupError("DIFFEDIT_TORCH is empty; unset it or give pip arguments such as "
                         f"\"torch=={TORCH_VERSION} --index-url {CUDA_INDEX}\"")
    return tuple(words)


def _unquote(word: str) -> str:
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "\"'":
        return word[1:-1]
    return word


def plan_torch(choice: TorchChoice, installed: str | None, recorded: dict | None) -> str:
    """"install", "reinstall" or "keep", from the choice, the installed torch version (None if
    none) and the stamp of the last install by this script (None if it did not install it)."""
    if installed is None:
        return "install"
    if recorded is not None and tuple(recorded.get("args", ())) == choice.args:
        return "keep"
    if choice.override:
        return "reinstall"  # the user asked for something else than what is there
    if recorded is None or recorded.get("override"):
        return "keep"  # a torch the user put there (by hand or an earlier override) stays
    return "reinstall"  # an earlier automatic choice that this machine no longer calls for


def nvidia_gpus(smi_output: str) -> list[str]:
    """GPU names from `nvidia-smi -L` ("GPU 0: NVIDIA GeForce RTX 4090 (UUID: GPU-...)")."""
    names = []
    for line in smi_output.splitlines():
        if line.startswith("GPU ") and ":" in line:
            names.append(line.split(":", 1)[1].split("(UUID")[0].strip())
    return names


def venv_python(venv: PurePath, system: str) -> PurePath:
    return venv_script(venv, "python", system)


def venv_script(venv: PurePath, name: str, system: str) -> PurePath:
    """An executable inside a virtual environment: Scripts\\NAME.exe on Windows, bin/NAME elsewhere."""
    if system == "Windows":
        return PureWindowsPath(venv) / "Scripts" / f"{name}.exe"
    return PurePosixPath(venv) / "bin" / name


def detect_host() -> Host:
    system, machine = platform.system(), platform.machine()
    rosetta = system == "Darwin" and _run_quietly(["sysctl", "-n", "sysctl.proc_translated"]) == "1"
    return Host(system, machine, _find_nvidia(system), rosetta)


def _find_nvidia(system: str) -> str:
    """How an NVIDIA GPU was found ("nvidia-smi (NVIDIA RTX A6000)", "the NVIDIA driver"), or ""."""
    candidates = [shutil.which("nvidia-smi")]
    if system == "Windows":  # the driver installs it here, not always on PATH
        candidates.append(os.path.join(os.environ.get("SystemRoot", r"C:\Windows"), "System32",
                                       "nvidia-smi.exe"))
    for smi in filter(None, candidates):
        if os.path.isfile(smi):
            names = nvidia_gpus(_run_quietly([smi, "-L"]))
            if names:
                return f"nvidia-smi ({', '.join(names)})"
    gpus = NVIDIA_DRIVER_GPUS  # a loaded driver counts even without nvidia-smi (some containers)
    if system == "Linux" and gpus.is_dir() and any(gpus.iterdir()):
        return "the NVIDIA driver (/proc/driver/nvidia)"
    return ""


def _run_quietly(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _say(message: str) -> None:
    print(f"dev.py: {message}", file=sys.stderr, flush=True)


def _pip(python: Path, *args: str) -> None:
    command = [str(python), "-m", "pip", "--disable-pip-version-check", "-q", *args]
    if subprocess.run(command, cwd=ROOT).returncode != 0:
        raise SetupError(f"`pip {' '.join(args)}` failed (its message is above)")


def _installed_torch(python: Path) -> str | None:
    code = "import importlib.metadata as m; print(m.version('torch'))"
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def setup(venv: Path, host: Host, override: str | None) -> Path:
    """Create the venv, install the chosen torch (first: a bare `torch` requirement could pull
    a multi-GB build), then the project with its test extra; return the venv's Python."""
    if sys.version_info < (3, 10):
        raise SetupError(f"Python 3.10 or newer is needed; this is {platform.python_version()}")
    choice = choose_torch(host, override)
    python = Path(venv_python(venv, host.system))
    if not python.is_file():
        _say(f"creating {venv}")
        if subprocess.run([sys.executable, "-m", "venv", str(venv)]).returncode != 0:
            raise SetupError(f"could not create a virtual environment in {venv}")
    installed = _installed_torch(python)
    stamp = venv / TORCH_STAMP
    recorded = _read_json(stamp)
    action = plan_torch(choice, installed, recorded)
    if action == "keep":
        origin = ("from your DIFFEDIT_TORCH" if (recorded or {}).get("override") else
                  f"the {choice.build} build" if recorded else "not installed by this script")
        _say(f"torch {installed} already installed ({origin}; set DIFFEDIT_TORCH to choose another)")
    else:
        _say(choice.describe())
        if action == "reinstall":
            _say(f"replacing the installed torch {installed}")
            _pip(python, "uninstall", "-y", "torch")
        _pip(python, "install", *choice.args)
        stamp.write_text(json.dumps({"args": choice.args, "override": choice.override}), encoding="utf-8")
    wanted = hashlib.sha256(b"".join(p.read_bytes() for p in (ROOT / "pyproject.toml", Path(__file__)))
                            ).hexdigest()[:16]
    project_stamp = venv / PROJECT_STAMP
    if not project_stamp.is_file() or project_stamp.read_text(encoding="utf-8").strip() != wanted:
        _say("installing the project and its test tools (editable)")
        _pip(python, "install", "-e", ".[test]")
        project_stamp.write_text(wanted, encoding="utf-8")
    return python


def _usable_cpus() -> int:
    """The CPUs this process may run on (a container's or taskset's share, not the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


MAX_TEST_WORKERS = 4  # each worker builds its own tiny models and imports torch, diffusers and Qt


def test_workers(argv: list[str], cpus: int) -> list[str]:
    """pytest-xdist's options for a run over every test: one worker per CPU (up to
    MAX_TEST_WORKERS), each taking whole files, so a file's shared model loads once. Most tests are
    single-threaded Python and tiny models, so a second core halves the wall time. None when the
    caller chose (``-n``, ``-p no:xdist``), names tests, or has one CPU."""
    workers = min(cpus, MAX_TEST_WORKERS)
    chose = any(arg.startswith(("-n", "--numprocesses", "--dist")) or arg == "no:xdist"
                for arg in argv)
    names_tests = any((ROOT / arg.split("::")[0]).exists() for arg in argv
                      if not arg.startswith("-"))
    return [] if workers < 2 or chose or names_tests else ["-n", str(workers), "--dist", "loadfile"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv else "app"
    if command not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    venv = ROOT / os.environ.get("DIFFEDIT_VENV", ".venv")
    host = detect_host()
    try:
        python = setup(venv, host, os.environ.get("DIFFEDIT_TORCH"))
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if command == "setup":
        _say(f"ready: {python}")
        return 0
    if command == "app":
        run = [str(python), "-m", "desktop_app", *argv]
    elif command == "cli":
        run = [str(venv_script(venv, "diffedit-studio", host.system)), *argv]
    else:  # the tests run from the repository, offscreen unless told otherwise
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
        run = [str(python), "-m", "pytest", *test_workers(argv, _usable_cpus()), *argv]
    try:  # a child process, not exec: Windows has no real exec
        return subprocess.run(run, env=env, cwd=ROOT if command == "test" else None).returncode
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
