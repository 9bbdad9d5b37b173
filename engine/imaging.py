"""Load and save photos: EXIF orientation, colour profiles, alpha, bit depth, metadata, atomic export.

numpy + Pillow only (no torch, no Qt). Inside the engine a photo is always upright 8-bit sRGB with
its alpha kept apart; whatever the file had beyond that (a wide-gamut profile, 16 bits per channel)
is kept on the Photo so that ``export_pixels`` can give it back for the pixels an edit left alone.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import struct
import tempfile
import threading
import warnings as _warnings
import zlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, PngImagePlugin, UnidentifiedImageError

from engine.errors import InputError

DEFAULT_MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "DIFFEDIT_MAX_PIXELS"
MIN_SIDE = 16
METADATA_KEYS = ("parameters", "diffedit")

# Formats we open. Deliberately short: Pillow can open many more (EPS even runs Ghostscript), and
# every decoder is attack surface for files downloaded from anywhere.
READ_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "TIFF", "GIF", "BMP", "AVIF")
SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP",
                ".tif": "TIFF", ".tiff": "TIFF"}
# The suffixes of files taken for photos (a folder given to `batch`).
PHOTO_SUFFIXES = (*SAVE_FORMATS, ".gif", ".bmp", ".avif")
_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}

_EXIF_ORIENTATION = 0x0112
_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825
_USER_COMMENT = 0x9286
_TIFF_DESCRIPTION = 0x010E
_TIFF_XMP = 0x02BC  # XMLPacket
_RESOLUTION_TAGS = (0x011A, 0x011B, 0x0128)  # XResolution, YResolution, ResolutionUnit
# Tags of a TIFF's first IFD that describe its pixel layout or are carried separately (profile,
# XMP); a TIFF's getexif() includes them, and no other file may inherit them.
_LAYOUT_TAGS = (0x00FE, 0x0100, 0x0101, 0x0102, 0x0103, 0x0106, 0x0111, 0x0115, 0x0116, 0x0117,
                0x011C, 0x013D, 0x0140, 0x0142, 0x0143, 0x0144, 0x0145, 0x0152, 0x0153, 0x8773,
                _TIFF_XMP)
_PNG_XMP_KEY = "XML:com.adobe.xmp"
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")

# Image.MAX_IMAGE_PIXELS is process-wide; we lift it only around Image.open (we check the size
# ourselves right after) and this lock keeps two loads from restoring each other's value.
_pillow_limit_lock = threading.Lock()


@dataclass
class Photo:
    """An opened photo, upright, as 8-bit sRGB plus what is needed to export it faithfully."""

    rgb: np.ndarray                      # (H, W, 3) uint8, upright, sRGB
    alpha: np.ndarray | None = None      # (H, W) uint8, untouched by edits
    path: Path | None = None
    exif: bytes | None = None            # EXIF minus orientation (already applied to the pixels)
    icc_profile: bytes | None = None     # the file's RGB profile, to embed again on export
    xmp: bytes | None = None             # the XMP packet (captions, keywords, rights), kept as is
    dpi: tuple[float, float] | None = None  # print resolution, from the file or its EXIF
    format: str | None = None            # "PNG", "JPEG", ... as Pillow names it
    warnings: list[str] = field(default_factory=list)
    # The upright pixels in the file's own colour space and depth (uint8 or uint16, (H, W, 3)),
    # kept only when they differ from ``rgb``: a non-sRGB profile or more than 8 bits per channel.
    native: np.ndarray | None = None
    colour_converted: bool = False       # rgb was converted from icc_profile into sRGB

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])

    @property
    def high_depth(self) -> np.ndarray | None:
        """The full-depth original as (H, W, 3) uint16, or None for an 8-bit photo."""
        if self.native is not None and self.native.dtype == np.uint16:
            return self.native
        return None


# ----------------------------------------------------------------------------------------- load


def resolve_max_pixels(max_pixels: int | None = None) -> int:
    """The pixel limit: the argument, else $DIFFEDIT_MAX_PIXELS, else DEFAULT_MAX_PIXELS."""
    if max_pixels is None:
        raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not raw:
            return DEFAULT_MAX_PIXELS
        try:
            max_pixels = int(raw.replace("_", ""))
        except ValueError:
            raise InputError(
                f"{MAX_PIXELS_ENV}={raw!r} is not a whole number of pixels; "
                f"set it to e.g. 200000000 or unset it for the default ({DEFAULT_MAX_PIXELS})"
            ) from None
    if max_pixels <= 0:
        raise InputError(f"the pixel limit must be a positive number of pixels, got {max_pixels}")
    return int(max_pixels)


def load_photo(path: str | os.PathLike, *, max_pixels: int | None = None) -> Photo:
    """Open a photo file as an upright sRGB Photo; any problem is an InputError saying what to do."""
    path = Path(path)
    limit = resolve_max_pixels(max_pixels)
    with _open_file(path) as stream:
        notes: list[str] = []
        with _open_image(stream, str(path), notes) as im:
            photo = _photo_from_pil(im, str(path), limit, notes)
    photo.path = path
    return photo


def probe_photo(path: str | os.PathLike, *, max_pixels: int | None = None) -> tuple[int, int]:
    """The upright (width, height) of a photo file after load_photo's checks that need no
    decoding (exists, opens, size limits): a cheap check of many photos before a batch."""
    path = Path(path)
    limit = resolve_max_pixels(max_pixels)
    with _open_file(path) as stream, _open_image(stream, str(path)) as im:
        _check_size(*im.size, str(path), limit)
        try:
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
        except Exception:  # noqa: BLE001 - damaged EXIF: load_photo drops it, so no rotation
            orientation = 1
    width, height = im.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _open_file(path: Path):
    """The photo file opened for reading; a missing, folder, unreadable or empty file is an
    InputError saying what to do."""
    name = str(path)
    if not path.exists():
        raise InputError(f"cannot open {name}: the file does not exist; check the path")
    if path.is_dir():
        raise InputError(f"cannot open {name}: it is a folder, not a photo; pick an image file")
    try:
        stream = open(path, "rb")  # noqa: SIM115 - the caller closes it
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror or exc}; check its permissions") from None
    if os.fstat(stream.fileno()).st_size == 0:
        stream.close()
        raise InputError(f"cannot open {name}: the file is empty (0 bytes); it may not have "
                         "finished copying or downloading, so get the file again")
    return stream


def load_mask(path: str | os.PathLike, photo_size: tuple[int, int]) -> np.ndarray:
    """A mask file (white = edit) as float32 in [0, 1] at the photo's size, or an InputError.

    Its size is checked from the header before a single pixel is decoded, so a decompression
    bomb (or any picture of another size) is refused unread; formats as for load_photo."""
    from engine import masks

    path = Path(path)
    name = str(path)
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed by the with block below
    except FileNotFoundError:
        raise InputError(f"{name}: the file does not exist") from None
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror or exc}") from None
    with stream, _open_image(stream, name) as image:
        width, height = image.size
        if (width, height) != tuple(photo_size):
            raise InputError(f"{name} is {width}x{height} but the photo is {photo_size[0]}x"
                             f"{photo_size[1]}; they must match")
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
            raise InputError(f"cannot open {name}: the file is damaged ({exc}); "
                             "save the mask again") from None
        return masks.from_image(image, expected_size=photo_size)


def photo_from_image(image: Image.Image, *, max_pixels: int | None = None) -> Photo:
    """A Photo from an in-memory picture (clipboard, drag and drop), normalised like load_photo."""
    if not isinstance(image, Image.Image):
        raise InputError(f"expected a picture, got {type(image).__name__}")
    limit = resolve_max_pixels(max_pixels)
    return _photo_from_pil(image, "the pasted picture", limit)


@contextlib.contextmanager
def _pillow_notes(notes: list[str], name: str):
    """Turn the Python warnings Pillow emits (e.g. damaged EXIF) into messages for the user."""
    # catch_warnings is process-wide state; the block is short and only Pillow code runs in it.
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        yield
    for item in caught:
        note = f"{name}: {str(item.message).strip()} (the file was read anyway)"
        if note not in notes:
            notes.append(note)


def _open_image(fp, name: str, notes: list[str] | None = None) -> Image.Image:
    Image.init()
    formats = [f for f in READ_FORMATS if f in Image.OPEN]
    with _pillow_limit_lock:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with _pillow_notes([] if notes is None else notes, name):
                return Image.open(fp, formats=formats)
        except UnidentifiedImageError:
            if _looks_like_image(fp):
                raise InputError(f"cannot open {name}: the file is damaged (it starts like a "
                                 "picture but cannot be read); re-export or download it again"
                                 ) from None
            raise InputError(
                f"cannot open {name}: it is not a picture in a supported format "
                f"({', '.join(_format_names())}); convert it to PNG or JPEG first"
            ) from None
        except Image.DecompressionBombError as exc:  # only if a plugin checks on its own
            raise InputError(f"cannot open {name}: {exc}") from None
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
            raise InputError(f"cannot open {name}: the file is damaged ({exc}); "
                             "re-export or download it again") from None
        finally:
            Image.MAX_IMAGE_PIXELS = previous


_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"II*\0", b"MM\0*", b"BM")


def _looks_like_image(fp) -> bool:
    fp.seek(0)
    head = fp.read(16)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    return head.startswith(_SIGNATURES)


def _format_names() -> list[str]:
    return ["PNG", "JPEG", "WebP", "TIFF", "GIF", "BMP"] + (["AVIF"] if "AVIF" in Image.OPEN else [])


def _check_size(width: int, height: int, name: str, limit: int) -> None:
    if width * height > limit:
        raise InputError(
            f"{name} is {width}x{height} = {width * height / 1e6:.1f} megapixels, above the limit "
            f"of {limit / 1e6:g} megapixels ({limit} pixels), which guards against decompression "
            f"bombs. If you trust the file, raise the limit with the max_pixels argument or the "
            f"{MAX_PIXELS_ENV} environment variable (e.g. {MAX_PIXELS_ENV}={max(limit * 2, 1)})"
        )
    if min(width, height) < MIN_SIDE:
        raise InputError(
            f"{name} is only {width}x{height} pixels; the model needs at least {MIN_SIDE} pixels "
            f"on each side. Use a larger photo or upscale this one first"
        )


def _photo_from_pil(im: Image.Image, name: str, limit: int, notes: list[str] | None = None
                    ) -> Photo:
    warnings: list[str] = list(notes or [])
    _check_size(*im.size, name, limit)  # header only: refuse before decoding a single pixel

    frames = getattr(im, "n_frames", 1) or 1
    if frames > 1:
        warnings.append(f"{name} holds {frames} frames (an animation, pages or extra pictures); "
                        "only the first is edited and exported")
    colour_16bit = _is_16bit_colour(im)
    try:
        with _pillow_notes(warnings, name):
            im.seek(0)
            im.load()
    except Image.DecompressionBombError as exc:
        raise InputError(f"cannot open {name}: {exc}") from None
    except MemoryError:
        raise InputError(f"not enough memory to open {name} ({im.size[0]}x{im.size[1]}); close "
                         "other programs or use a smaller photo") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError) as exc:
        raise InputError(f"cannot open {name}: the file is damaged or incomplete ({exc}); "
                         "re-export or download it again") from None

    exif, rotated = _upright(im, name, warnings)
    fmt = im.format
    icc = rotated.info.get("icc_profile") or im.info.get("icc_profile") or None

    rgb_image, alpha = _split_alpha(rotated)
    native16 = None
    if rgb_image.mode in _SIXTEEN_BIT_MODES:
        native16 = np.clip(np.asarray(rgb_image, np.int64), 0, 65535).astype(np.uint16)
        native16 = np.repeat(native16[..., None], 3, axis=2)
        rgb_image = Image.fromarray(_to_8bit(native16[..., 0]), "L")
        warnings.append(f"{name} has 16 bits per channel: it is edited at 8 bits; pixels the edit "
                        "leaves alone keep full depth in a PNG export, other formats save 8 bits")
    elif rgb_image.mode == "F":
        values = np.asarray(rgb_image, np.float32)
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        rgb_image = Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8), "L")
        warnings.append(f"{name} has floating-point pixels; they were reduced to 8 bits")
    if colour_16bit:
        warnings.append(f"{name} has 16 bits per colour channel, which can only be read at 8 bits; "
                        "it is edited and saved at 8 bits per channel")

    rgb, native, icc = _to_srgb(rgb_image, icc, name, warnings)
    converted = native is not None
    if native16 is not None:
        native = native16
    return Photo(rgb=rgb, alpha=alpha, path=None, exif=exif, icc_profile=icc, format=fmt,
                 warnings=warnings, native=native, colour_converted=converted, xmp=_xmp_of(im),
                 dpi=_dpi_of(im))


def _xmp_of(im: Image.Image) -> bytes | None:
    """The XMP packet of a PNG (iTXt), JPEG (APP1), WebP (XMP chunk) or TIFF (tag 700)."""
    xmp = im.info.get("xmp")
    if xmp is None and hasattr(im, "tag_v2"):
        xmp = im.tag_v2.get(_TIFF_XMP)
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    return bytes(xmp) if isinstance(xmp, (bytes, bytearray)) and xmp else None


def _dpi_of(im: Image.Image) -> tuple[float, float] | None:
    """The print resolution in dots per inch: the file's own field, else its EXIF (WebP has only
    that); None when absent or not positive."""
    dpi = im.info.get("dpi")
    if dpi is None:
        try:
            exif = im.getexif()
            x, y, unit = (exif.get(tag) for tag in _RESOLUTION_TAGS)
        except Exception:  # noqa: BLE001 - damaged EXIF: no resolution, as for the EXIF itself
            return None
        if x is None or y is None:
            return None
        per_inch = 2.54 if unit == 3 else 1.0  # unit 3: per centimetre
        dpi = (float(x) * per_inch, float(y) * per_inch)
    try:
        x, y = (float(v) for v in dpi)
    except (TypeError, ValueError):
        return None
    return (x, y) if x > 0 and y > 0 else None


def _is_16bit_colour(im: Image.Image) -> bool:
    """True for 16-bit colour files, which Pillow decodes to 8 bits (greyscale keeps 16)."""
    if im.mode in _SIXTEEN_BIT_MODES:
        return False
    for tile in getattr(im, "tile", None) or []:
        rawmode = tile.args[0] if isinstance(tile.args, tuple) else tile.args
        if isinstance(rawmode, str) and ";16" in rawmode:
            return True
    bits = getattr(im, "tag_v2", {}).get(258) if hasattr(im, "tag_v2") else None
    if isinstance(bits, tuple) and any(b > 8 for b in bits):
        return True
    return False


def _upright(im: Image.Image, name: str, warnings: list[str]) -> tuple[bytes | None, Image.Image]:
    """Apply the EXIF orientation; return (EXIF bytes without orientation or None, upright image)."""
    try:
        with _pillow_notes(warnings, name):
            exif = im.getexif()
    except Exception:  # noqa: BLE001 - Pillow raises many types on damaged EXIF
        warnings.append(f"{name}: the EXIF data is damaged and was dropped")
        return None, im
    orientation = exif.get(_EXIF_ORIENTATION, 1)
    if orientation not in range(1, 9):
        orientation = 1
    upright = im
    if orientation != 1:
        method = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                  4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                  6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                  8: Image.Transpose.ROTATE_90}[orientation]
        upright = im.transpose(method)
        upright.info = dict(im.info)
    if _EXIF_ORIENTATION in exif:
        del exif[_EXIF_ORIENTATION]
    if not len(exif):
        return None, upright
    try:
        return exif.tobytes(), upright
    except Exception:  # noqa: BLE001
        warnings.append(f"{name}: the EXIF data could not be kept (damaged)")
        return None, upright


def _split_alpha(im: Image.Image) -> tuple[Image.Image, np.ndarray | None]:
    """Colour (mode RGB, L or a 16-bit/float grey mode, or CMYK) and the alpha channel apart."""
    mode = im.mode
    if mode == "P" or mode == "PA":
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
        mode = im.mode
    elif mode in ("L", "1") and "transparency" in im.info:
        im = im.convert("LA")
        mode = "LA"
    elif mode == "RGB" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "RGBa", "LA", "La"):
        if mode in ("RGBa", "La"):  # premultiplied: undo it so colours are right
            im = im.convert(mode.upper())
            mode = im.mode
        alpha = np.array(im.getchannel("A"), np.uint8)
        colour = im.convert("RGB" if mode == "RGBA" else "L")
        return colour, alpha
    if mode in ("RGB", "L", "CMYK", "F") or mode in _SIXTEEN_BIT_MODES:
        return im, None
    if mode == "1":
        return im.convert("L"), None
    try:
        return im.convert("RGB"), None
    except (ValueError, OSError):
        raise InputError(f"unsupported colour mode {mode}; convert the photo to RGB first") from None


def _to_8bit(values16: np.ndarray) -> np.ndarray:
    return np.rint(values16.astype(np.float32) / 257.0).astype(np.uint8)


def _profile(icc: bytes) -> ImageCms.ImageCmsProfile | None:
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (OSError, ImageCms.PyCMSError, TypeError, ValueError):
        return None


_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
_PROBE = Image.fromarray(
    np.stack(np.meshgrid(*[np.arange(0, 256, 51, dtype=np.uint8)] * 3), -1).reshape(1, -1, 3), "RGB"
)


def _is_srgb(profile: ImageCms.ImageCmsProfile) -> bool:
    """True when converting to sRGB would change no colour by more than rounding."""
    transform = ImageCms.buildTransform(profile, _SRGB, "RGB", "RGB",
                                        ImageCms.Intent.RELATIVE_COLORIMETRIC)
    moved = np.asarray(ImageCms.applyTransform(_PROBE, transform), np.int16)
    return bool(np.abs(moved - np.asarray(_PROBE, np.int16)).max() <= 2)


def _describe(profile: ImageCms.ImageCmsProfile) -> str:
    try:
        return (profile.profile.profile_description or "unnamed").strip() or "unnamed"
    except Exception:  # noqa: BLE001
        return "unnamed"


def _to_srgb(im: Image.Image, icc: bytes | None, name: str, warnings: list[str]):
    """(rgb uint8, native pixels or None, icc to keep for export or None) for an RGB/L/CMYK image."""
    profile = _profile(icc) if icc else None
    if icc and profile is None:
        warnings.append(f"{name}: the embedded colour profile is damaged and was ignored; "
                        "colours are read as sRGB")
        icc = None
    space = profile.profile.xcolor_space.strip() if profile is not None else None
    expected = {"RGB": "RGB", "L": "GRAY", "CMYK": "CMYK"}.get(im.mode)
    if profile is not None and space != expected:
        warnings.append(f"{name}: the colour profile is for {space} but the pixels are {im.mode}; "
                        "the profile was ignored")
        profile, icc = None, None

    if im.mode == "CMYK":
        if profile is not None:
            rgb = ImageCms.profileToProfile(im, profile, _SRGB, outputMode="RGB",
                                            renderingIntent=ImageCms.Intent.PERCEPTUAL)
        else:
            rgb = im.convert("RGB")
        warnings.append(f"{name} is a CMYK picture: it was converted to RGB (sRGB) for editing "
                        "and is exported in RGB")
        return np.array(rgb, np.uint8), None, None

    if im.mode == "L":
        grey = np.repeat(np.array(im, np.uint8)[..., None], 3, axis=2)
        if profile is None:
            return grey, None, None
        # Edited in sRGB colour; exported in grey with the profile, untouched pixels as they were.
        rgb = ImageCms.profileToProfile(im, profile, _SRGB, outputMode="RGB",
                                        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
        warnings.append(f"{name} is greyscale with the colour profile '{_describe(profile)}': it "
                        "is edited in sRGB and exported in greyscale with that profile (WebP "
                        "cannot hold a grey profile: there it is exported in sRGB)")
        return np.array(rgb, np.uint8), grey, icc

    rgb = np.array(im.convert("RGB"), np.uint8)
    if profile is None or _is_srgb(profile):
        return rgb, None, icc
    converted = ImageCms.profileToProfile(im.convert("RGB"), profile, _SRGB, outputMode="RGB",
                                          renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
    warnings.append(f"{name} uses the colour profile '{_describe(profile)}': it is converted to "
                    "sRGB for editing and back to that profile on export")
    return np.array(converted, np.uint8), rgb, icc


def srgb_to_profile(rgb: np.ndarray, icc_profile: bytes | None) -> np.ndarray:
    """Convert 8-bit sRGB pixels into the colour space of ``icc_profile`` (unchanged if None)."""
    if not icc_profile:
        return np.asarray(rgb, np.uint8)
    profile = _profile(icc_profile)
    if profile is None:
        raise InputError("the colour profile to export with is damaged; export without it")
    image = Image.fromarray(np.ascontiguousarray(rgb, np.uint8), "RGB")
    grey = _is_grey(profile)
    out = ImageCms.profileToProfile(image, _SRGB, profile, outputMode="L" if grey else "RGB",
                                    renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
    out = np.array(out, np.uint8)
    return np.repeat(out[..., None], 3, axis=2) if grey else out


def _is_grey(profile: ImageCms.ImageCmsProfile | None) -> bool:
    return profile is not None and profile.profile.xcolor_space.strip() == "GRAY"


def _grey_to_srgb(grey: np.ndarray, profile: ImageCms.ImageCmsProfile) -> np.ndarray:
    image = Image.fromarray(np.ascontiguousarray(grey, np.uint8), "L")
    return np.array(ImageCms.profileToProfile(image, profile, _SRGB, outputMode="RGB",
                    renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC), np.uint8)


def export_pixels(photo: Photo, edited: np.ndarray) -> np.ndarray:
    """The pixels to save for an edit of ``photo``, in the file's own colour space and depth.

    Pixels the edit left byte-identical take the original values (full depth, original profile);
    changed pixels are converted from sRGB into the photo's profile (and scaled to 16 bits when the
    photo had them). Save the result together with ``photo.icc_profile``.
    """
    edited = np.asarray(edited, np.uint8)
    if edited.shape != photo.rgb.shape:
        raise InputError(f"the edit is {edited.shape[1]}x{edited.shape[0]} but the photo is "
                         f"{photo.size[0]}x{photo.size[1]}")
    if photo.native is None:
        return edited
    profile_pixels = srgb_to_profile(edited, photo.icc_profile if photo.colour_converted else None)
    changed = np.any(edited != photo.rgb, axis=2)
    out = photo.native.copy()
    if out.dtype == np.uint16:
        out[changed] = profile_pixels[changed].astype(np.uint16) * 257
    else:
        out[changed] = profile_pixels[changed]
    return out


def export_photo(path: str | os.PathLike, photo: Photo, edited: np.ndarray, *,
                 metadata: dict | None = None, strip_gps: bool = False, quality: int = 95) -> Path:
    """Save an edit of ``photo`` with its alpha, EXIF, XMP, DPI, colour profile and depth (see
    export_pixels). For a result on a larger canvas, pass ``extended_photo(photo, ...)``."""
    return save_image(path, export_pixels(photo, edited), alpha=photo.alpha, metadata=metadata,
                      exif=photo.exif, icc_profile=photo.icc_profile, quality=quality,
                      strip_gps=strip_gps, xmp=photo.xmp, dpi=photo.dpi)


def extended_photo(photo: Photo, rgb: np.ndarray, offset: tuple[int, int]) -> Photo:
    """``photo``'s export data for a larger canvas ``rgb`` (an outpainted result) holding the photo
    with its top-left at ``offset`` (x, y): EXIF, XMP, DPI and the colour profile stay; the alpha
    and the file's own pixels move along, and the new area (opaque) is converted into the
    photo's colour space, so the whole canvas is in one space."""
    rgb = np.ascontiguousarray(rgb, np.uint8)
    height, width = photo.rgb.shape[:2]
    left, top = (int(v) for v in offset)
    if (rgb.ndim != 3 or rgb.shape[2] != 3 or left < 0 or top < 0
            or top + height > rgb.shape[0] or left + width > rgb.shape[1]):
        raise InputError(f"a {photo.size[0]}x{photo.size[1]} photo at ({left}, {top}) does not fit "
                         f"the {rgb.shape[1]}x{rgb.shape[0]} result")
    window = (slice(top, top + height), slice(left, left + width))
    alpha = None
    if photo.alpha is not None:
        alpha = np.full(rgb.shape[:2], 255, np.uint8)
        alpha[window] = photo.alpha
    native = None
    if photo.native is not None:
        native = srgb_to_profile(rgb, photo.icc_profile if photo.colour_converted else None)
        if photo.native.dtype == np.uint16:
            native = native.astype(np.uint16) * 257
        kept = np.all(rgb[window] == photo.rgb, axis=2)  # the photo's own pixels, byte for byte
        native[window][kept] = photo.native[kept]
    return dataclasses.replace(photo, rgb=rgb.copy(), alpha=alpha, native=native, warnings=[])


# ----------------------------------------------------------------------------------------- save


def save_image(path: str | os.PathLike, rgb: np.ndarray, *, alpha: np.ndarray | None = None,
               metadata: dict | None = None, exif: bytes | None = None,
               icc_profile: bytes | None = None, quality: int = 95,
               strip_gps: bool = False, xmp: bytes | None = None,
               dpi: tuple[float, float] | None = None) -> Path:
    """Write an image atomically (temp file in the same folder, fsync, rename); format from suffix.

    ``rgb`` is (H, W, 3) uint8, or uint16 (kept at 16 bits in PNG, reduced elsewhere); pixels are
    written as given, so convert them into ``icc_profile`` first (export_pixels does). With a grey
    profile the file is greyscale (the first channel), except WebP, which holds RGB only and gets
    the grey converted to sRGB without the profile. WebP is written lossless, so that pixels an
    edit left alone stay exact; ``quality`` applies to JPEG only.
    ``metadata`` {"parameters": str, "diffedit": str} goes into PNG text chunks, the EXIF
    UserComment of JPEG/WebP, and the TIFF ImageDescription. ``xmp`` goes where each format
    keeps it, ``dpi`` into the file's resolution field (WebP: its EXIF). Alpha is dropped for JPEG.
    """
    path = Path(path)
    fmt = SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"cannot save {path}: unknown file type {path.suffix or '(none)'!r}; "
                         f"use one of {', '.join(SAVE_FORMATS)}")
    if not 1 <= int(quality) <= 100:
        raise InputError(f"quality must be between 1 and 100, got {quality}")
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype not in (np.uint8, np.uint16):
        raise InputError(f"save_image needs (H, W, 3) uint8 or uint16 pixels, got "
                         f"{rgb.shape} {rgb.dtype}")
    if alpha is not None:
        alpha = np.asarray(alpha)
        if alpha.shape != rgb.shape[:2] or alpha.dtype != np.uint8:
            raise InputError(f"alpha must be {rgb.shape[:2]} uint8, got {alpha.shape} {alpha.dtype}")
        if fmt not in _ALPHA_FORMATS:
            alpha = None  # JPEG has no alpha channel
    if not path.parent.is_dir():
        raise InputError(f"cannot save {path}: the folder {path.parent} does not exist")
    text = _metadata_text(metadata)
    exif_obj = _export_exif(exif, strip_gps)
    if rgb.dtype == np.uint16 and fmt != "PNG":
        rgb = _to_8bit(rgb)
    grey = bool(icc_profile) and _is_grey(_profile(icc_profile))
    if grey and fmt == "WEBP":
        rgb, icc_profile, grey = _grey_to_srgb(rgb[..., 0], _profile(icc_profile)), None, False

    if dpi and fmt == "WEBP":  # WebP has no resolution field of its own
        exif_obj[_RESOLUTION_TAGS[0]], exif_obj[_RESOLUTION_TAGS[1]] = (float(v) for v in dpi)
        exif_obj[_RESOLUTION_TAGS[2]] = 2  # inches

    def write(stream) -> None:
        if rgb.dtype == np.uint16:
            _write_png16(stream, rgb16=rgb, alpha=alpha, text=text, exif=exif_obj,
                         icc_profile=icc_profile, grey=grey, xmp=xmp, dpi=dpi)
            return
        image = Image.fromarray(np.ascontiguousarray(rgb[..., 0] if grey else rgb),
                                "L" if grey else "RGB")
        if alpha is not None:
            image.putalpha(Image.fromarray(np.ascontiguousarray(alpha), "L"))
        options: dict = {}
        if icc_profile:
            options["icc_profile"] = icc_profile
        if dpi and fmt != "WEBP":
            options["dpi"] = tuple(float(v) for v in dpi)
        if xmp and fmt in ("JPEG", "WEBP"):
            options["xmp"] = xmp
        if fmt == "PNG":
            info = PngImagePlugin.PngInfo()
            for key, value in text.items():
                info.add_text(key, value)  # Pillow switches to iTXt for non-Latin-1 text
            if xmp:
                info.add_itxt(_PNG_XMP_KEY, xmp.decode("utf-8", errors="replace"))
            options["pnginfo"] = info
            options["compress_level"] = 4  # 2-3x faster than 6 for ~5% larger files
        elif fmt in ("JPEG", "WEBP"):
            if fmt == "JPEG":
                options["quality"] = int(quality)
                options["subsampling"] = 0 if quality >= 90 else 2  # keep colour edges sharp
            else:  # lossy WebP moved untouched pixels by up to 122 levels; exact keeps RGB under alpha 0
                # Effort 25/method 1: as small as the default effort, 5x faster (a 1.5 MP photo:
                # 5.7 s instead of 28 s on a busy 2-core CPU; PNG 3.6 s at 1.6x the size).
                options.update(lossless=True, exact=True, quality=25, method=1)
            if text:
                _set_user_comment(exif_obj, text)
        elif fmt == "TIFF":
            # Uncompressed on purpose: Pillow's libtiff (compressing) path drops the EXIF sub-IFDs.
            # The description and XMP go into the EXIF's first IFD, which is the TIFF's own: given
            # as separate tiffinfo, Pillow would write those and drop the EXIF.
            if text:
                exif_obj[_TIFF_DESCRIPTION] = json.dumps(text, ensure_ascii=True)
            if xmp:
                exif_obj[_TIFF_XMP] = xmp
        if len(exif_obj):
            options["exif"] = exif_obj.tobytes()
        image.save(stream, format=fmt, **options)

    return atomic_write(path, write)


def _metadata_text(metadata: dict | None) -> dict[str, str]:
    if not metadata:
        return {}
    out = {}
    for key, value in metadata.items():
        if value is None:
            continue
        out[str(key)] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return out


def _export_exif(exif: bytes | None, strip_gps: bool) -> Image.Exif:
    result = Image.Exif()
    if exif:
        try:
            result.load(exif)
        except Exception:  # noqa: BLE001 - damaged EXIF must not block an export
            result = Image.Exif()
    if _EXIF_ORIENTATION in result:  # the pixels we write are upright
        del result[_EXIF_ORIENTATION]
    for tag in _LAYOUT_TAGS:  # a TIFF source's layout describes its file, not ours
        if tag in result:
            del result[tag]
    if strip_gps and _GPS_IFD in result:
        del result[_GPS_IFD]
    return result


def _set_user_comment(exif: Image.Exif, text: dict[str, str]) -> None:
    # JSON with ensure_ascii keeps the comment pure ASCII, the one charset every reader agrees on.
    exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = b"ASCII\0\0\0" + json.dumps(text).encode("ascii")
    exif[_EXIF_IFD] = exif.get_ifd(_EXIF_IFD)


def atomic_write(path: Path, write, *, sync_folder: bool = True) -> Path:
    """Write a file through ``write(stream)`` into a temporary file beside it, fsync it and rename
    it into place: a failure half-way leaves any earlier file at ``path`` intact. ``sync_folder``
    also makes the rename durable (callers writing many files can sync the folder once).

    The temporary file is ``.NAME.PID.XXXXXXXX.part``; one that a killed writer (SIGKILL, a power
    cut) left behind is removed by the next write into that folder once its process is gone."""
    path = Path(path)
    mode = _new_file_mode(path)
    remove_stale_parts(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{_shortened(path.name)}.{os.getpid()}.", suffix=".part",
                               dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        if hasattr(os, "chmod"):
            os.chmod(tmp, mode)  # mkstemp makes 0600 files; a photo should look like any other
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise InputError(f"could not save {path}: {exc.strerror or exc}; nothing was "
                             "overwritten. Check the folder is writable and the disk has space"
                             ) from exc
        raise
    if sync_folder:
        fsync_folder(path.parent)
    return path


# A temporary name adds ".", ".PID.", 8 random characters and ".part" to the target's name.
_PART_OVERHEAD = 40
_STALE_PART = re.compile(r"^\..*\.(\d+)\.[a-z0-9_]{8}\.part$")


def _shortened(name: str, limit: int = 255 - _PART_OVERHEAD) -> str:
    """``name`` cut to ``limit`` UTF-8 bytes, so a target name near the file system's limit of
    255 bytes still has a temporary name."""
    return name.encode("utf-8", "surrogateescape")[:limit].decode("utf-8", "ignore")


def writable_problem(path: Path) -> str | None:
    """Why ``path`` could not be written by atomic_write, or None: checked before a long edit
    so that it does not fail only at the end."""
    path = Path(path)
    limit = _name_max(path.parent)
    size = len(path.name.encode("utf-8", "surrogateescape"))
    if size > limit:
        return (f"the file name is {size} bytes long, more than this file system allows ({limit}); "
                "use a shorter name")
    try:
        with tempfile.TemporaryFile(dir=path.parent):  # the one sure test: root, ACLs, read-only mounts
            pass
    except OSError as exc:
        return (f"the folder {path.parent} cannot be written to ({exc.strerror or exc}); "
                "pick another folder or change its permissions")
    return None


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError):
        return 255  # Windows and macOS file systems allow 255 characters too


def remove_stale_parts(folder: Path) -> None:
    """Delete the temporary files of atomic writes whose process no longer runs (POSIX only:
    elsewhere a process cannot be probed without side effects)."""
    if os.name != "posix":
        return
    try:
        entries = [e.name for e in os.scandir(folder) if e.name.startswith(".") and
                   e.name.endswith(".part")]
    except OSError:
        return
    for name in entries:
        match = _STALE_PART.match(name)
        if match and not _process_alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or a number no process has): leave it
    return True


def _new_file_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        pass
    try:  # the umask without changing it (os.umask would race with other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o644


def fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); harmless to skip where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_png16(stream, rgb16: np.ndarray, alpha: np.ndarray | None, text: dict[str, str],
                 exif: Image.Exif, icc_profile: bytes | None, grey: bool = False,
                 xmp: bytes | None = None, dpi: tuple[float, float] | None = None) -> None:
    """A 16-bit RGB(A) or grey(+alpha) PNG, which Pillow cannot write: filter 0 rows, deflate,
    standard chunks."""
    height, width = rgb16.shape[:2]
    colour = rgb16[..., :1] if grey else rgb16
    planes = colour if alpha is None else np.dstack([colour, alpha.astype(np.uint16) * 257])
    rows = planes.astype(">u2").reshape(height, -1).view(np.uint8)
    raw = np.hstack([np.zeros((height, 1), np.uint8), rows]).tobytes()  # filter byte 0 per row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    colour_type = (0 if grey else 2) + (0 if alpha is None else 4)
    out = [b"\x89PNG\r\n\x1a\n",
           chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))]
    if icc_profile:
        out.append(chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc_profile)))
    if dpi:  # pHYs: pixels per metre, unit 1
        out.append(chunk(b"pHYs", struct.pack(">IIB", *(round(float(v) / 0.0254) for v in dpi), 1)))
    if len(exif):
        out.append(chunk(b"eXIf", exif.tobytes()[6:]))  # the chunk holds no "Exif\0\0" header
    if xmp:
        text = {**text, _PNG_XMP_KEY: xmp.decode("utf-8", errors="replace")}
    for key, value in text.items():
        out.append(chunk(b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8")))
    out.append(chunk(b"IDAT", zlib.compress(raw, 6)))
    out.append(chunk(b"IEND", b""))
    for part in out:
        stream.write(part)


# ------------------------------------------------------------------------------------- metadata


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The "parameters"/"diffedit" entries written by save_image (PNG text, EXIF, TIFF tag)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"cannot read metadata from {path}: the file does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"cannot read metadata from {path}: the file is empty")
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed by the with block below
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    with stream, _open_image(stream, str(path)) as im:
        try:
            return _metadata_of(im)
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
            raise InputError(f"cannot read metadata from {path}: the file is damaged ({exc})"
                             ) from None


def _metadata_of(im: Image.Image) -> dict[str, str]:
    found: dict[str, str] = {}
    text = getattr(im, "text", None) if im.format == "PNG" else None
    for key in METADATA_KEYS:
        value = (text or {}).get(key, im.info.get(key))
        if isinstance(value, str):
            found[key] = value
    if im.format == "TIFF" and hasattr(im, "tag_v2"):
        found.update(_from_json(im.tag_v2.get(_TIFF_DESCRIPTION)))
    try:
        comment = im.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    except Exception:  # noqa: BLE001 - damaged EXIF means no metadata, not an error
        comment = None
    for key, value in _from_user_comment(comment).items():
        found.setdefault(key, value)
    return found


def _from_json(value) -> dict[str, str]:
    if not isinstance(value, str):
        return {}
    try:
        parsed = json.loads(value)
    except ValueError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {k: v for k, v in parsed.items() if k in METADATA_KEYS and isinstance(v, str)}


def _from_user_comment(comment) -> dict[str, str]:
    """Our JSON comment, or a plain text comment (as other tools write) taken as "parameters"."""
    if isinstance(comment, str):
        comment = comment.encode("utf-8")
    if not isinstance(comment, bytes) or len(comment) < 8:
        return {}
    charset, body = comment[:8], comment[8:]
    if charset.startswith(b"UNICODE"):
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            text = body.decode("utf-16")
        else:  # no BOM: the byte order is the file's; ASCII text tells which by its zero bytes
            big = body[:1] == b"\0"
            text = body.decode("utf-16-be" if big else "utf-16-le", errors="replace")
    else:
        text = body.decode("utf-8", errors="replace")
    text = text.rstrip("\0")
    parsed = _from_json(text)
    if parsed:
        return parsed
    return {"parameters": text} if text.strip() else {}
