"""Memory tiers and the out-of-memory fallback (simulated: this machine has no GPU)."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from engine import memory
from engine.memory import OutOfMemory
from engine.params import EditParams
from engine.session import EditSession

FAST = EditParams(steps=6, mask_samples=4)


class FlakyUNet(torch.nn.Module):
    """Raises CUDA-style out-of-memory for its first ``failures`` calls whose batch is above
    ``max_ok``; counts the batch sizes it saw."""

    def __init__(self, unet, failures: int, max_ok: int = 1_000):
        super().__init__()
        self.inner, self.config = unet, unet.config
        self.failures, self.max_ok = failures, max_ok
        self.batches = []

    def set_attention_slice(self, size):
        self.sliced = size

    def forward(self, latents, *args, **kwargs):
        self.batches.append(latents.shape[0])
        if self.failures > 0 and latents.shape[0] > self.max_ok:
            self.failures -= 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(latents, *args, **kwargs)


@pytest.fixture
def photo():
    return np.random.default_rng(0).integers(0, 256, (100, 140, 3), dtype=np.uint8)


def _model(tiny_model, unet):
    model = dataclasses.replace(tiny_model, unet=unet)
    memory.apply_tier(model, "full")
    return model


def test_out_of_memory_retries_once_at_the_next_tier(tiny_model, photo):
    unet = FlakyUNet(tiny_model.unet, failures=1, max_ok=2)
    model = _model(tiny_model, unet)
    result = EditSession(model, photo).edit("a cat", "a dog", None, FAST)
    assert result.image.shape == photo.shape
    assert model.memory_tier == "sliced" and model.max_batch == 2
    assert max(unet.batches[1:]) <= 2  # after the fallback the mask runs in small batches
    assert any("retried at 'sliced'" in w for w in result.warnings)


class CpuStarvedUNet(FlakyUNet):
    """Runs out of CPU memory for real on its first batch above ``max_ok``: it asks torch's
    allocator (or numpy's) for petabytes."""

    def __init__(self, unet, allocate):
        super().__init__(unet, failures=1, max_ok=2)
        self.allocate = allocate

    def forward(self, latents, *args, **kwargs):
        if self.failures > 0 and latents.shape[0] > self.max_ok:
            self.batches.append(latents.shape[0])
            self.failures -= 1
            self.allocate(1 << 50)
        return super().forward(latents, *args, **kwargs)


@pytest.mark.parametrize("allocate", [torch.empty, np.empty], ids=["torch", "numpy"])
def test_cpu_out_of_memory_retries_at_the_next_tier_like_cuda(tiny_model, photo, allocate):
    unet = CpuStarvedUNet(tiny_model.unet, allocate)
    model = _model(tiny_model, unet)
    result = EditSession(model, photo).edit("a cat", "a dog", None, FAST)
    assert result.image.shape == photo.shape and model.memory_tier == "sliced"
    assert any("retried at 'sliced'" in w for w in result.warnings)


def test_a_second_out_of_memory_is_a_clear_error_and_the_next_run_starts_lower(tiny_model, photo):
    unet = FlakyUNet(tiny_model.unet, failures=100, max_ok=0)
    model = _model(tiny_model, unet)
    session = EditSession(model, photo)
    with pytest.raises(OutOfMemory, match="smaller working resolution") as raised:
        session.edit("a cat", "a dog", None, FAST)
    assert len(unet.batches) == 2  # the first try and exactly one retry
    assert "'sliced' memory tier; the next run uses 'offload'" in str(raised.value)
    assert model.memory_tier == "offload"
    with pytest.raises(OutOfMemory, match="the most frugal one"):
        session.edit("a cat", "a dog", None, FAST)
    assert len(unet.batches) == 3  # already at the last tier: no retry left


def _on_cuda(monkeypatch, free_gib: float, native_size: int):
    """A model on a CUDA device with ``free_gib`` of its 24 GiB free."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free_gib * memory.GIB,
                                                                         24 * memory.GIB))
    return SimpleNamespace(device=torch.device("cuda"), native_size=native_size)


@pytest.mark.parametrize("free_gib,tier", [(10, "full"), (3, "sliced"), (1, "offload")])
def test_auto_tier_follows_free_gpu_memory(monkeypatch, free_gib, tier):
    model = _on_cuda(monkeypatch, free_gib, native_size=512)
    assert memory.choose_tier(model) == tier
    assert memory.choose_tier(model, "sliced") == "sliced"


@pytest.mark.parametrize("free_gib,tier", [(20, "full"), (10, "sliced"), (5, "offload")])
def test_sdxl_needs_four_times_the_free_memory_per_tier(monkeypatch, free_gib, tier):
    assert memory.choose_tier(_on_cuda(monkeypatch, free_gib, native_size=1024)) == tier


def test_offload_streams_both_sdxl_text_encoders(tiny_sdxl, monkeypatch):
    import copy

    import accelerate

    streamed = []
    monkeypatch.setattr(accelerate, "cpu_offload",
                        lambda module, execution_device: streamed.append(module))
    model = dataclasses.replace(copy.deepcopy(tiny_sdxl), device=torch.device("cuda"))
    memory.apply_tier(model, "offload")
    assert streamed == [model.unet, model.vae, model.text_encoder, model.text_encoder_2]


def test_auto_tier_on_the_cpu_is_full():
    class OnCpu:
        device = torch.device("cpu")

    assert memory.choose_tier(OnCpu()) == "full"


def test_find_mask_falls_back_too(tiny_model, photo):
    unet = FlakyUNet(tiny_model.unet, failures=1, max_ok=2)
    model = _model(tiny_model, unet)
    heatmap = EditSession(model, photo).estimate_mask("a cat", "a dog", FAST)
    assert heatmap.shape == photo.shape[:2] and model.memory_tier == "sliced"
    assert unet.batches[0] > 2 and max(unet.batches[1:]) <= 2


def test_other_errors_are_not_mistaken_for_memory(tiny_model, photo):
    class Broken(FlakyUNet):
        def forward(self, *a, **k):
            raise ValueError("shape mismatch")

    model = _model(tiny_model, Broken(tiny_model.unet, 0))
    with pytest.raises(ValueError, match="shape mismatch"):
        EditSession(model, photo).edit("a cat", "a dog", None, FAST)
    assert model.memory_tier == "full"


def test_tier_choice():
    assert memory.next_tier("full") == "sliced" and memory.next_tier("offload") is None
    assert memory.is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not memory.is_out_of_memory(RuntimeError("expected scalar type Float"))


def test_sliced_tier_gives_the_same_edit(tiny_model_path, photo):
    from engine.models import load_model

    full = load_model(str(tiny_model_path), device="cpu", memory_tier="full")
    sliced = load_model(str(tiny_model_path), device="cpu", memory_tier="sliced")
    assert sliced.memory_tier == "sliced" and sliced.max_batch == 2
    session_full, session_sliced = EditSession(full, photo), EditSession(sliced, photo)
    # Other batch sizes and sliced attention change float rounding only.
    heat_full = session_full.estimate_mask("a cat", "a dog", FAST)
    heat_sliced = session_sliced.estimate_mask("a cat", "a dog", FAST)
    assert np.abs(heat_full - heat_sliced).max() < 0.02
    mask = np.zeros(photo.shape[:2], np.float32)
    mask[20:80, 30:110] = 1
    a = session_full.edit("a cat", "a dog", mask, FAST)
    b = session_sliced.edit("a cat", "a dog", mask, FAST)
    assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 3


def offloaded_on_the_cpu(model):
    """``model`` (the caller's own: its modules get hooks) at the offload tier with the real
    hooks, executing on the CPU (apply_tier streams to a GPU only, which this machine lacks)."""
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    memory.apply_tier(model, "offload")  # on the CPU: sliced batches and VAE tiling only
    memory.stream_weights(model, torch.device("cpu"))
    assert model.offloaded and model.max_batch == 2 and model.vae.use_tiling
    hooked = (model.denoiser, model.vae, *model.text_encoders)
    assert all(hasattr(m, "_hf_hook") or _is_group_offload_enabled(m) for m in hooked)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("tiny", ["tiny_flux2", "tiny_sd3", "tiny_zimage"])
def test_the_offload_tier_streams_every_flow_module_and_the_edit_is_unchanged(
        request, tiny, cat128):
    """The plumbing only (what it saves on a GPU cannot be measured on this machine): the same
    bytes as the sliced tier, whose batches and VAE tiling offload keeps."""
    import copy

    model = request.getfixturevalue(tiny)
    sliced = copy.deepcopy(model)
    memory.apply_tier(sliced, "sliced")
    mask = np.zeros(cat128.shape[:2], np.float32)
    mask[32:96, 48:112] = 1.0
    params = EditSession(model, cat128).default_params().replace(steps=4, mask_samples=2)
    expected = EditSession(sliced, cat128).run("diffedit", "a cat", "a dog", mask, params)[0]
    offloaded = offloaded_on_the_cpu(copy.deepcopy(model))
    result = EditSession(offloaded, cat128).run("diffedit", "a cat", "a dog", mask, params)[0]
    assert np.array_equal(result.image, expected.image)
