"""Soak: 50 consecutive edits in one session must not leak memory, file handles or threads."""

import gc
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from engine.params import EditParams
from engine.session import EditSession


def _rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
def test_fifty_edits_keep_memory_handles_and_threads_flat(tiny_model, samples_dir):
    from engine.imaging import load_photo

    photo = load_photo(samples_dir / "coffee.png")
    session = EditSession(tiny_model, photo)
    rng = np.random.default_rng(0)
    params = EditParams(steps=4, mask_samples=2)
    targets = ["a cup of tea", "a glass of milk", "a bowl of soup", "a cup of cocoa"]

    def one_edit(index: int) -> None:
        mask = np.zeros(photo.rgb.shape[:2], np.float32)
        top, left = rng.integers(0, 300), rng.integers(0, 500)
        mask[top:top + 100, left:left + 100] = 1.0  # a new refinement each time
        result = session.edit("a cup of coffee", targets[index % 4], mask,
                              params.replace(seed=index, mask_threshold=0.3 + 0.01 * (index % 20)))
        assert result.image.shape == photo.rgb.shape

    for index in range(5):  # warm-up: caches, allocator pools, lazy imports
        one_edit(index)
    gc.collect()
    rss, files, threads = _rss_bytes(), _open_files(), threading.active_count()
    for index in range(5, 50):
        one_edit(index)
    gc.collect()
    growth = _rss_bytes() - rss
    print(f"soak: resident memory growth over 45 edits: {growth / 2**20:.1f} MB")
    assert growth < 100 * 2**20
    assert _open_files() <= files
    assert threading.active_count() <= threads
