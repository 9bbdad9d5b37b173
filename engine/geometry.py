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

    def mask_to_latent(self, mask: np.ndarray) -> np.ndarray:
        """A soft latent-size mask: area-averaged from the photo's mask, zero over the padding."""
        w, h = self.content_size
        pw, ph = self.padded_size
        working = np.pad(masks.resize(mask, (w, h)), ((0, ph - h), (0, pw - w)))
        return masks.resize(working, self.latent_size)

    def latent_map_to_photo(self, latent_map: np.ndarray) -> np.ndarray:
        """A latent-size map (e.g. the mask heatmap) cropped to the content and scaled to the photo."""
        lw, lh = self.latent_content
        cropped = np.ascontiguousarray(latent_map[:lh, :lw], dtype=np.float32)
        image = Image.fromarray(cropped, mode="F").resize(self.photo_size, Image.Resampling.BILINEAR)
        return np.clip(np.asarray(image, np.float32), 0.0, 1.0)
