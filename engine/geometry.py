"""Working resolution: fit a photo of any size to the model's native area and grid, and back.

The model sees about ``side * side`` pixels whatever the photo's size, padded to the UNet's
grid; results come back at the photo's own size for paste-back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from engine import masks

CORE_COVERAGE = 1 / 16  # share of a latent cell a mask must cover to be edited there at full strength
DETAIL_RADIUS = 2  # working pixels around each pixel in which the edit's gain is measured
DETAIL_FLAT = (0.01 * 255) ** 2  # variance of a flat patch: the gain is drawn towards 1 below it
DETAIL_CHANGE = (0.05 * 255) ** 2  # residual variance at which an edit keeps half the old detail
DETAIL_STRIP_ROWS = 512
FEATHER_WORKING_PX = 4  # default paste-back feather in working pixels (4 px on a photo at 512 px)


def default_feather(photo_size: tuple[int, int], side: int) -> int:
    """The default paste-back feather in photo pixels for a photo worked on at about side*side
    px: the photo pixels FEATHER_WORKING_PX working pixels cover (27 on 4000x3000 at 512), never
    less than FEATHER_WORKING_PX (smaller photos keep the fade they had)."""
    width, height = photo_size
    return max(FEATHER_WORKING_PX, round(FEATHER_WORKING_PX * math.sqrt(width * height) / side))


@dataclass(frozen=True)
class WorkingGeometry:
    photo_size: tuple[int, int]  # (W, H) of the photo
    content_size: tuple[int, int]  # (w, h) the photo is resized to
    padded_size: tuple[int, int]  # (pw, ph): content plus edge padding to the grid
    latent_factor: int  # pixels per latent cell (the VAE's downsampling)

    @classmethod
    def fit(cls, photo_size: tuple[int, int], side: int, multiple: int, latent_factor: int):
        """Scale (up or down) to about side*side pixels, keeping the aspect ratio."""
        width, height = photo_size
        scale = math.sqrt(side * side / float(width * height))
        w = max(multiple, round(width * scale))
        h = max(multiple, round(height * scale))
        # A sliver (16 x 200000) keeps its full length when its short side is raised to the grid,
        # 14 times the native area: shorten the long side instead, so the area stays about side².
        if w * h > side * (side + multiple):  # beyond what rounding to the grid adds
            if w < h:
                h = max(multiple, side * side // w)
            else:
                w = max(multiple, side * side // h)
        pw = math.ceil(w / multiple) * multiple
        ph = math.ceil(h / multiple) * multiple
        return cls((width, height), (w, h), (pw, ph), latent_factor)

    @property
    def latent_size(self) -> tuple[int, int]:
        pw, ph = self.padded_size
        return pw // self.latent_factor, ph // self.latent_factor

    @property
    def latent_content(self) -> tuple[int, int]:
        """Latent cells covered (even partly) by the photo's content."""
        w, h = self.content_size
        return math.ceil(w / self.latent_factor), math.ceil(h / self.latent_factor)

    def to_working(self, rgb: np.ndarray) -> np.ndarray:
        """Resize the (H, W, 3) photo to the content size and edge-pad it to the padded size."""
        w, h = self.content_size
        pw, ph = self.padded_size
        resized = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.LANCZOS))
        return np.pad(resized, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")

    def from_working(self, rgb: np.ndarray) -> np.ndarray:
        """Crop the padding off a working-size (ph, pw, 3) result and scale it to the photo size."""
        w, h = self.content_size
        cropped = np.ascontiguousarray(rgb[:h, :w])
        if (w, h) == self.photo_size:
            return cropped
        return np.asarray(Image.fromarray(cropped).resize(self.photo_size, Image.Resampling.LANCZOS))

    def from_working_with_detail(self, rgb: np.ndarray, photo: np.ndarray) -> np.ndarray:
        """``from_working``, with the photo's own detail finer than the working size carried over
        where the edit kept the photo's structure (a global edit of a big photo otherwise comes
        back as the working-size render scaled up, 6.8x on 12 MP).

        Per channel and pixel: ``a * photo + upscaled(edit - a * working photo)``, with ``a``
        the edit's local linear gain against the working photo (a guided filter's coefficient,
        He et al. 2013, here drawn towards 1 where the working photo is flat), upscaled. With
        ``a`` 1 this is the upscaled edit plus exactly the detail the model never saw; a local
        change of brightness or colour scales that detail with it; where the edit drew
        something else (no correlation, ``a`` near 0) the old detail is not added.
        """
        w, h = self.content_size
        width, height = self.photo_size
        if width <= w and height <= h:
            return self.from_working(rgb)
        edit = np.asarray(rgb[:h, :w], np.float32)
        guide = np.asarray(Image.fromarray(photo).resize((w, h), Image.Resampling.LANCZOS), np.float32)
        out = np.empty_like(photo)
        for c in range(3):
            gain = _local_gain(guide[..., c], edit[..., c])
            rest = edit[..., c] - gain * guide[..., c]
            for top in range(0, height, DETAIL_STRIP_ROWS):  # strips bound the memory on 24 MP
                bottom = min(height, top + DETAIL_STRIP_ROWS)
                box = (0.0, top * h / height, float(w), bottom * h / height)
                size = (width, bottom - top)
                a = _resize_float(gain, size, Image.Resampling.BILINEAR, box)
                b = _resize_float(rest, size, Image.Resampling.LANCZOS, box)
                strip = a * photo[top:bottom, :, c] + b
                out[top:bottom, :, c] = np.clip(np.rint(strip), 0, 255)
        return out

    def mask_coverage(self, mask: np.ndarray) -> np.ndarray:
        """The share of each latent cell's area the photo's mask covers (soft values count in
        part), zero over the padding."""
        w, h = self.content_size
        pw, ph = self.padded_size
        working = np.pad(masks.resize(mask, (w, h)), ((0, ph - h), (0, pw - w)))
        return masks.resize(working, self.latent_size)

    def mask_to_latent(self, mask: np.ndarray) -> np.ndarray:
        """The latent-size mask the sampler blends with: 1 on every cell the photo's mask covers
        by at least CORE_COVERAGE of its area, 0 elsewhere (and over the padding).

        Binary, as DiffEdit and Blended Latent Diffusion have it: an area-averaged weight edits a
        thin stroke at a fraction of full strength at every step (a 4 px stroke at 512 px got
        0.5, nothing under 16 px got 1). The mask's soft edge is applied once, at the photo's
        resolution, by the paste-back, which also keeps the cells' pixels outside the mask.
        """
        return (self.mask_coverage(mask) >= CORE_COVERAGE).astype(np.float32)

    def latent_map_to_photo(self, latent_map: np.ndarray) -> np.ndarray:
        """A latent-size map (e.g. the mask heatmap) at the photo's size, each cell where it lies.

        Cell (i, j) holds working pixels [f*j, f*(j+1)) x [f*i, f*(i+1)), and the photo was scaled
        to the content size, so the photo spans exactly content / f cells, the last row and column
        partly: that span (not whole cells) is what is stretched onto the photo, bilinearly
        between cell centres. Padding cells never contribute.
        """
        lw, lh = self.latent_content
        w, h = self.content_size
        f = self.latent_factor
        cropped = np.ascontiguousarray(latent_map[:lh, :lw], dtype=np.float32)
        image = Image.fromarray(cropped, mode="F").resize(
            self.photo_size, Image.Resampling.BILINEAR, box=(0.0, 0.0, w / f, h / f))
        return np.clip(np.asarray(image, np.float32), 0.0, 1.0)


def _box_mean(values: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the (2r+1)-square around each pixel (clipped at the borders)."""
    total = masks.window_sum(values.astype(np.float64), radius)
    return (total / masks.window_sum(np.ones(values.shape), radius)).astype(np.float32)


def _local_gain(guide: np.ndarray, edit: np.ndarray) -> np.ndarray:
    """How much of the photo's detail the edit keeps, per working pixel (smoothed): the slope of
    the local linear fit edit ~ slope * guide + b (drawn towards 1 on flat patches, where
    nothing says the detail changed), times how well that fit explains the edit (an edit that
    drew something new leaves a large residual, and gets none of the old detail)."""
    mean_g, mean_e = _box_mean(guide, DETAIL_RADIUS), _box_mean(edit, DETAIL_RADIUS)
    var_g = _box_mean(guide * guide, DETAIL_RADIUS) - mean_g * mean_g
    var_e = _box_mean(edit * edit, DETAIL_RADIUS) - mean_e * mean_e
    covariance = _box_mean(guide * edit, DETAIL_RADIUS) - mean_g * mean_e
    slope = (covariance + DETAIL_FLAT) / (var_g + DETAIL_FLAT)
    residual = np.maximum(var_e - 2 * slope * covariance + slope * slope * var_g, 0.0)
    return _box_mean(slope * DETAIL_CHANGE / (DETAIL_CHANGE + residual), DETAIL_RADIUS)


def _resize_float(values: np.ndarray, size: tuple[int, int], method, box) -> np.ndarray:
    return np.asarray(Image.fromarray(values, mode="F").resize(size, method, box=box), np.float32)
