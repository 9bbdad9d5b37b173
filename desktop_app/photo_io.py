"""Photo helpers for the app on top of engine.imaging (numpy + Pillow only, light to import)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image
from PySide6.QtGui import QImage

from engine import imaging, masks
from engine.errors import InputError
from engine.resources import resource_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
EXPORT_FILTERS = {  # file-dialog filter -> suffix
    "PNG image (*.png)": ".png",
    "JPEG image (*.jpg *.jpeg)": ".jpg",
    "WebP image (*.webp)": ".webp",
    "TIFF image (*.tif *.tiff)": ".tif",
}
QUALITY_SUFFIXES = (".jpg", ".jpeg", ".webp")  # the lossy formats: Export asks how fine

load_photo = imaging.load_photo
read_metadata = imaging.read_metadata


def photo_from_qimage(image: QImage):
    """A photo from a pasted or dropped QImage (alpha kept when it has any)."""
    if image.isNull():
        raise InputError("the clipboard holds no picture; copy an image first")
    rgba = image.convertToFormat(QImage.Format.Format_RGBA8888)
    w, h = rgba.width(), rgba.height()
    data = np.frombuffer(rgba.constBits(), np.uint8, count=rgba.bytesPerLine() * h)
    pixels = data.reshape(h, rgba.bytesPerLine())[:, : 4 * w].reshape(h, w, 4).copy()
    mode = "RGBA" if image.hasAlphaChannel() else "RGB"
    pil = Image.fromarray(pixels if mode == "RGBA" else pixels[..., :3], mode)
    return imaging.photo_from_image(pil)


def session_photo(photo, rgb: np.ndarray):
    """The opened photo's metadata with the current base pixels, for an engine session."""
    return dataclasses.replace(photo, rgb=rgb, native=None, colour_converted=False, warnings=[])


def export(path, photo, edited: np.ndarray, metadata: dict | None, quality: int = 95) -> Path:
    """Write the edit atomically in the photo's own profile and depth, with alpha, EXIF, metadata
    (JPEG and WebP at ``quality``)."""
    return imaging.export_photo(path, photo, edited, metadata=metadata or None, quality=quality)


def export_suffix(original: Path | None) -> str:
    """The suffix Export proposes: the photo's own format when Export writes it, else PNG."""
    suffix = original.suffix.lower() if original is not None else ""
    suffix = {".jpeg": ".jpg", ".tiff": ".tif"}.get(suffix, suffix)
    return suffix if suffix in EXPORT_FILTERS.values() else ".png"


def export_filter(suffix: str) -> str:
    """The file-dialog filter that writes ``suffix``."""
    return next(f for f, s in EXPORT_FILTERS.items() if s == suffix)


def is_image_path(path: str) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def sample_photos() -> list[tuple[Path, str]]:
    """(path, description) of the shipped sample photos, described by their README's table."""
    folder = resource_path("samples")
    described = {}
    try:
        for line in (folder / "README.md").read_text(encoding="utf-8").splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 4 and (folder / cells[0]).is_file():
                described[cells[0]] = f"{cells[2]} ({cells[3]})"
    except OSError:
        pass
    files = sorted(p for p in folder.glob("*") if is_image_path(p.name))
    return [(p, described.get(p.name, p.name)) for p in files]


def read_mask(path, size: tuple[int, int]) -> np.ndarray:
    """A greyscale mask file as (H, W) float32 for a photo of ``size`` (W, H); InputError if not,
    also for a decompression bomb (its size is read from the header, the pixels never)."""
    return imaging.load_mask(path, size)


def write_mask(path, mask: np.ndarray) -> Path:
    """Save ``mask`` as a greyscale PNG (atomic); returns the path written."""
    path = Path(path).with_suffix(".png")
    grey = np.asarray(masks.to_image(mask))
    imaging.save_image(path, np.repeat(grey[..., None], 3, axis=2))
    return path
