"""Shared test set-up: offscreen Qt, private config/cache folders, the tiny model built once."""

import os
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Tests never touch the user's own settings, caches or the network.
_SANDBOX = Path(tempfile.mkdtemp(prefix="diffedit-tests-"))
for _name in ("CONFIG", "CACHE", "DATA"):
    os.environ[f"DIFFEDIT_{_name}_DIR"] = str(_SANDBOX / _name.lower())
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_CACHE", str(_SANDBOX / "hf-cache"))

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "resources" / "samples"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# A test that runs a real tiny model (any family) takes seconds, not milliseconds: it belongs to the
# full run (CI), not to the quick loop `-m "not slow"`, which keeps the logic tests. Every fixture
# named tiny_* builds or loads one.


def pytest_collection_modifyitems(items):
    for item in items:
        if any(name.startswith("tiny_") for name in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def threads_restored():
    """torch's CPU thread count as it was before the test (the CLI sets it for the process)."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    """The tiny random-weight SD model in diffusers layout, built once per test session."""
    from engine.tiny_model import ensure_tiny_model

    return ensure_tiny_model()


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path):
    """The tiny model loaded on the CPU through the same loader a real checkpoint uses."""
    from engine.models import load_model

    return load_model(str(tiny_model_path), device="cpu")


@pytest.fixture(scope="session")
def tiny_sdxl_path() -> Path:
    """The tiny random-weight SDXL model in diffusers layout, built once per test session."""
    from engine.tiny_model import ensure_tiny_sdxl

    return ensure_tiny_sdxl()


@pytest.fixture(scope="session")
def tiny_sdxl(tiny_sdxl_path):
    """The tiny SDXL loaded on the CPU through the same loader a real checkpoint uses."""
    from engine.models import load_model

    return load_model(str(tiny_sdxl_path), device="cpu")


@pytest.fixture(scope="session")
def tiny_flux2_path() -> Path:
    """The tiny random-weight FLUX.2 klein (distilled) in diffusers layout, built once."""
    from engine.tiny_model import ensure_tiny_flux2

    return ensure_tiny_flux2()


@pytest.fixture(scope="session")
def tiny_flux2(tiny_flux2_path):
    from engine.models import load_model

    return load_model(str(tiny_flux2_path), device="cpu")


@pytest.fixture(scope="session")
def tiny_sd3_path() -> Path:
    """The tiny random-weight SD3.5 in diffusers layout, built once per test session."""
    from engine.tiny_flow_models import ensure_tiny_sd3

    return ensure_tiny_sd3()


@pytest.fixture(scope="session")
def tiny_sd3(tiny_sd3_path):
    from engine.models import load_model

    return load_model(str(tiny_sd3_path), device="cpu")


@pytest.fixture(scope="session")
def tiny_zimage_path() -> Path:
    """The tiny random-weight Z-Image-Turbo in diffusers layout, built once per test session."""
    from engine.tiny_flow_models import ensure_tiny_zimage

    return ensure_tiny_zimage()


@pytest.fixture(scope="session")
def tiny_zimage(tiny_zimage_path):
    from engine.models import load_model

    return load_model(str(tiny_zimage_path), device="cpu")


@pytest.fixture(scope="session")
def tiny_qwen_edit_path() -> Path:
    """The tiny random-weight Qwen-Image-Edit-2509 in diffusers layout, built once per session."""
    from engine.tiny_qwen_edit import ensure_tiny_qwen_edit

    return ensure_tiny_qwen_edit()


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A Hugging Face hub cache of this test's own, empty at first (engine.catalog.hub_cache_dir
    reads the variable at each lookup)."""
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache
