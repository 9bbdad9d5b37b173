"""The seam at the paste-back: feather against Poisson, on a constructed edit with a colour drift.

Prints, for feathers of 0, 4 and 16 px, the seam score (engine.seams.seam_score: the mean
gradient jump along the paste's edge, in levels per channel; 0 = no seam) of the plain feathered
paste and of the Poisson-corrected one, whether every pixel beyond the band stayed the photo's,
and the paste-back time of each at 24 MP (6000x4000, a 3000x2000 mask). Run:
    .venv/bin/python tests/benchmarks/seam_bench.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from engine import masks, seams  # noqa: E402


def drifted(height: int, width: int):
    """(photo, edit, mask): a textured photo; the edit drifts in colour across the photo (as a
    VAE's decode does) and has new content in the middle of the mask."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    photo = np.stack([xs / width * 150 + 40, ys / height * 160 + 30,
                      120 + 25 * np.sin(xs / 9)], axis=2)
    photo += rng.normal(0, 4, photo.shape).astype(np.float32)
    drift = np.stack([25 + 30 * xs / width, -20 + 20 * ys / height, np.full_like(xs, 12)], axis=2)
    edit = photo + drift
    mask = np.zeros((height, width), np.float32)
    mask[height // 4:3 * height // 4, width // 4:3 * width // 4] = 1.0
    core = np.s_[3 * height // 8:5 * height // 8, 3 * width // 8:5 * width // 8]
    edit[core] += rng.integers(-50, 50, edit[core].shape)
    as_bytes = lambda a: np.clip(a, 0, 255).astype(np.uint8)  # noqa: E731
    return as_bytes(photo), as_bytes(edit), mask


def paste(photo, edit, alpha, seam: str):
    if seam == "poisson":
        edit = seams.poisson_edit(photo, edit, alpha)
    return masks.composite(photo, edit, alpha)


def main() -> None:
    photo, edit, mask = drifted(480, 640)
    print("seam score (levels per channel along the edge; 0 = none), 640x480 constructed edit:")
    for feather in (0, 4, 16):
        alpha = masks.paste_alpha(mask, feather)
        scores = {}
        for seam in seams.SEAM_METHODS:
            result = paste(photo, edit, alpha, seam)
            kept = np.array_equal(result[alpha == 0], photo[alpha == 0])
            scores[seam] = seams.seam_score(photo, edit, result, alpha)
        print(f"  feather {feather:2d} px: feather {scores['feather']:6.2f}  poisson "
              f"{scores['poisson']:6.2f}  ({scores['poisson'] / scores['feather']:.0%} of it); "
              f"beyond the band unchanged: {kept}")
    photo, edit, mask = drifted(4000, 6000)
    alpha = masks.paste_alpha(mask, 16)
    for seam in seams.SEAM_METHODS:
        started = time.perf_counter()
        paste(photo, edit, alpha, seam)
        print(f"24 MP paste-back with {seam}: {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
