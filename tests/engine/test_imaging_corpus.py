"""A corpus of generated good, unusual and bad photo files, each checked against load_photo."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

from engine.errors import InputError
from engine.imaging import MIN_SIDE, export_photo, export_pixels, load_photo

RNG = np.random.default_rng(1234)


def noise(h, w, c=3):
    return RNG.integers(0, 256, (h, w, c), dtype=np.uint8)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png16_bytes(planes: np.ndarray) -> bytes:
    """A 16-bit RGB or RGBA PNG written by hand (Pillow cannot write one)."""
    h, w, c = planes.shape
    rows = planes.astype(">u2").reshape(h, -1).view(np.uint8)
    raw = np.hstack([np.zeros((h, 1), np.uint8), rows]).tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, 16, {3: 2, 4: 6}[c], 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


def s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def rgb_icc_profile(colorants, gamma: float, description: str) -> bytes:
    """A minimal ICC v2 matrix/TRC RGB display profile (what Adobe RGB and friends are)."""
    trc = _curve(gamma)
    return _icc_profile(b"RGB ", description, [
        (b"rXYZ", _xyz(colorants[0])), (b"gXYZ", _xyz(colorants[1])), (b"bXYZ", _xyz(colorants[2])),
        (b"rTRC", trc), (b"gTRC", trc), (b"bTRC", trc)])


def grey_icc_profile(gamma: float, description: str) -> bytes:
    """A minimal ICC v2 grey display profile (what "Gray Gamma 2.2" and "Dot Gain 20%" are)."""
    return _icc_profile(b"GRAY", description, [(b"kTRC", _curve(gamma))])


def _xyz(v) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(s15(c) for c in v)


def _curve(gamma: float) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256))


def _icc_profile(space: bytes, description: str, colour_tags) -> bytes:
    desc = description.encode("ascii") + b"\0"
    tags = [
        (b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(desc)) + desc + b"\0" * (8 + 3 + 67)),
        (b"wtpt", _xyz((0.9642, 1.0, 0.8249))),
        *colour_tags,
        (b"cprt", b"text\0\0\0\0" + b"no copyright, test profile\0"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"\0" * 4 + bytes([2, 0x10, 0, 0]) + b"mntr" + space + b"XYZ "
              + struct.pack(">6H", 2024, 1, 1, 0, 0, 0) + b"acsp" + b"\0" * 24
              + struct.pack(">I", 0) + s15(0.9642) + s15(1.0) + s15(0.8249))
    header += b"\0" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + body


def srgb_colorants():
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).profile
    return [srgb.red_colorant[0], srgb.green_colorant[0], srgb.blue_colorant[0]]


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    linear = np.asarray(linear, np.float64)
    v = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.rint(v * 255)


def load_quietly(path, **kw):
    # Any warning Pillow raises (a DecompressionBombWarning above all) must become an error here.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_photo(path, **kw)


# ----------------------------------------------------------------------------- good files


def test_rotated_phone_portrait_jpeg_is_loaded_upright_with_exif_kept(tmp_path):
    stored = np.zeros((48, 64, 3), np.uint8)  # landscape on disk, as phone sensors store it
    stored[:16, :16] = (255, 0, 0)             # marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6                           # "rotate 90 degrees clockwise to display"
    exif[0x010F] = "PhoneMaker"
    path = tmp_path / "portrait.jpg"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=100)

    photo = load_quietly(path)

    assert photo.size == (48, 64)             # upright portrait
    assert photo.rgb.shape == (64, 48, 3)
    # Rotating clockwise moves the stored top-left corner to the top-right.
    assert photo.rgb[2:14, -14:-2].mean(axis=(0, 1))[0] > 200
    assert photo.rgb[2:14, 2:14].mean() < 30
    kept = Image.Exif()
    kept.load(photo.exif)
    assert 0x0112 not in kept and kept[0x010F] == "PhoneMaker"
    assert photo.format == "JPEG" and photo.path == path


def test_orientation_only_exif_leaves_no_exif(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 3
    path = tmp_path / "upside.png"
    pixels = noise(20, 30)
    Image.fromarray(pixels).save(path, exif=exif.tobytes())
    photo = load_quietly(path)
    assert np.array_equal(photo.rgb, pixels[::-1, ::-1])
    assert photo.exif is None


def test_damaged_exif_is_reported_not_raised(tmp_path):
    path = tmp_path / "bad_exif.jpg"
    damaged = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff" + b"\x00" * 20  # 65535 entries
    Image.new("RGB", (20, 20), (9, 9, 9)).save(path, exif=damaged)
    photo = load_quietly(path)  # no Python warning escapes either
    assert photo.size == (20, 20)
    assert any("Corrupt EXIF" in w and "read anyway" in w for w in photo.warnings)


def test_rgba_keeps_alpha_and_colour_untouched(tmp_path):
    pixels = noise(24, 32, 4)
    pixels[0, 0, 3] = 0
    path = tmp_path / "rgba.png"
    Image.fromarray(pixels, "RGBA").save(path)
    photo = load_quietly(path)
    assert np.array_equal(photo.rgb, pixels[..., :3])
    assert np.array_equal(photo.alpha, pixels[..., 3])


def test_la_becomes_grey_rgb_with_alpha(tmp_path):
    grey, alpha = noise(20, 20, 1)[..., 0], noise(20, 20, 1)[..., 0]
    path = tmp_path / "la.png"
    Image.merge("LA", [Image.fromarray(grey), Image.fromarray(alpha)]).save(path)
    photo = load_quietly(path)
    assert np.array_equal(photo.rgb, np.repeat(grey[..., None], 3, axis=2))
    assert np.array_equal(photo.alpha, alpha)


def test_palette_with_transparency_gives_alpha(tmp_path):
    index = np.zeros((20, 24), np.uint8)
    index[5:15, 6:18] = 1
    image = Image.fromarray(index, "P")
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    path = tmp_path / "palette.png"
    image.save(path, transparency=0)
    photo = load_quietly(path)
    assert np.array_equal(photo.alpha, np.where(index == 1, 255, 0).astype(np.uint8))
    assert tuple(photo.rgb[10, 10]) == (10, 200, 30)


def test_palette_gif_without_transparency_has_no_alpha(tmp_path):
    path = tmp_path / "flat.gif"
    Image.new("RGB", (20, 20), (0, 0, 255)).convert("P").save(path)
    photo = load_quietly(path)
    assert photo.alpha is None and tuple(photo.rgb[3, 3]) == (0, 0, 255)


def test_greyscale(tmp_path):
    grey = noise(18, 22, 1)[..., 0]
    path = tmp_path / "grey.png"
    Image.fromarray(grey, "L").save(path)
    photo = load_quietly(path)
    assert photo.rgb.dtype == np.uint8 and photo.alpha is None
    assert np.array_equal(photo.rgb, np.repeat(grey[..., None], 3, axis=2))
    assert photo.native is None and not photo.warnings


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_greyscale_keeps_full_depth(tmp_path, suffix):
    values = RNG.integers(0, 65536, (20, 30), dtype=np.uint16)
    path = tmp_path / f"deep{suffix}"
    Image.fromarray(values).save(path)  # mode I;16
    photo = load_quietly(path)
    assert photo.high_depth is not None
    assert np.array_equal(photo.high_depth, np.repeat(values[..., None], 3, axis=2))
    assert np.abs(photo.rgb[..., 0].astype(int) - values / 257.0).max() <= 0.5
    assert any("16 bits" in w for w in photo.warnings)


def test_16_bit_colour_png_is_read_at_8_bits_with_a_warning(tmp_path):
    planes = RNG.integers(0, 65536, (20, 24, 4), dtype=np.uint16)
    path = tmp_path / "deep_rgba.png"
    path.write_bytes(png16_bytes(planes))
    photo = load_quietly(path)
    assert photo.size == (24, 20)
    assert np.abs(photo.rgb.astype(int) - planes[..., :3] / 257.0).max() <= 1
    assert np.abs(photo.alpha.astype(int) - planes[..., 3] / 257.0).max() <= 1
    assert any("16 bits" in w and "8 bits" in w for w in photo.warnings)


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(path, quality=100)  # full magenta+yellow
    photo = load_quietly(path)
    assert photo.rgb.shape == (32, 32, 3)
    assert np.abs(photo.rgb[16, 16].astype(int) - (255, 0, 0)).max() <= 3
    assert photo.icc_profile is None  # a CMYK profile cannot describe the RGB export
    assert any("CMYK" in w for w in photo.warnings)


def test_lossless_webp_with_alpha(tmp_path):
    pixels = noise(20, 26, 4)
    path = tmp_path / "pic.webp"
    Image.fromarray(pixels, "RGBA").save(path, lossless=True, exact=True)
    photo = load_quietly(path)
    assert photo.format == "WEBP"
    assert np.array_equal(photo.alpha, pixels[..., 3])
    assert np.array_equal(photo.rgb, pixels[..., :3])


@pytest.mark.parametrize("suffix", [".gif", ".tif"])
def test_multi_frame_file_uses_the_first_frame_and_warns(tmp_path, suffix):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (20, 20), c) for c in colours]
    path = tmp_path / f"frames{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    photo = load_quietly(path)
    assert tuple(photo.rgb[10, 10]) == (255, 0, 0)
    assert any("3 frames" in w and "first" in w for w in photo.warnings)


def test_wide_gamut_profile_is_converted_to_srgb_and_back_on_export(tmp_path):
    icc = rgb_icc_profile(srgb_colorants(), gamma=1.0, description="Linear RGB test profile")
    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[:8] = (128, 128, 128)
    pixels[8:] = (64, 0, 200)
    path = tmp_path / "linear.png"
    Image.fromarray(pixels).save(path, icc_profile=icc)

    photo = load_quietly(path)

    # Same primaries, linear tone curve: sRGB values are just the sRGB encoding of value/255.
    expected = srgb_encode(pixels / 255.0)
    assert np.abs(photo.rgb.astype(int) - expected).max() <= 2
    assert photo.icc_profile == icc and photo.colour_converted
    assert any("Linear RGB test profile" in w for w in photo.warnings)

    edited = photo.rgb.copy()
    edited[:4] = (188, 188, 188)  # sRGB 188 is linear 0.5
    out = export_pixels(photo, edited)
    assert np.array_equal(out[4:], pixels[4:])        # untouched: the file's own bytes
    assert np.abs(out[:4].astype(int) - 128).max() <= 2  # edited: back in the linear profile


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg"])
def test_grey_photo_with_a_grey_profile_keeps_its_pixels_and_profile(tmp_path, suffix):
    icc = grey_icc_profile(gamma=1.0, description="Linear grey test profile")
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (32, 1))  # 32x64, every 4th level
    path = tmp_path / f"grey{suffix}"
    Image.fromarray(grey, "L").save(path, icc_profile=icc, **({"quality": 100} if suffix == ".jpg" else {}))
    with Image.open(path) as stored:
        grey = np.asarray(stored)  # what the file holds (JPEG rounds)

    photo = load_quietly(path)
    mid = grey >= 32  # LittleCMS's 8-bit transforms are coarse in the deepest shadows
    assert np.abs(photo.rgb[..., 0].astype(int) - srgb_encode(grey / 255.0))[mid].max() <= 2
    assert any("Linear grey test profile" in w for w in photo.warnings)

    edited = photo.rgb.copy()
    edited[:8] = (188, 40, 40)  # a coloured edit in sRGB
    out = export_photo(tmp_path / f"out{suffix}", photo, edited)
    with Image.open(out) as result:
        assert result.mode == "L" and result.info.get("icc_profile") == icc
        pixels = np.asarray(result)
    if suffix != ".jpg":  # JPEG is lossy by design; the others keep untouched pixels exactly
        assert np.array_equal(pixels[8:], grey[8:])
    assert np.abs(pixels[8:].astype(int) - grey[8:]).max() <= 3
    assert not np.array_equal(pixels[:8], grey[:8])


def test_grey_profile_in_webp_becomes_srgb(tmp_path):
    icc = grey_icc_profile(gamma=1.0, description="Linear grey test profile")
    path = tmp_path / "grey.png"
    Image.fromarray(np.full((16, 16), 64, np.uint8), "L").save(path, icc_profile=icc)
    photo = load_quietly(path)
    out = export_photo(tmp_path / "out.webp", photo, photo.rgb)
    with Image.open(out) as result:
        assert result.mode == "RGB" and not result.info.get("icc_profile")
        assert np.array_equal(np.asarray(result), photo.rgb)  # the same colour, in sRGB


def test_16_bit_grey_with_a_grey_profile_keeps_depth_and_profile(tmp_path):
    icc = grey_icc_profile(gamma=1.8, description="Grey 1.8")
    values = (np.arange(32 * 32).reshape(32, 32) * 61).astype(np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path, icc_profile=icc)
    photo = load_quietly(path)
    edited = photo.rgb.copy()
    edited[:4] = 255
    out = export_photo(tmp_path / "out.png", photo, edited)
    with Image.open(out) as result:
        assert result.mode.startswith("I") and result.info.get("icc_profile") == icc
        assert np.array_equal(np.asarray(result)[4:], values[4:])


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_webp_export_is_lossless(tmp_path, mode):
    pixels = noise(40, 56, 4 if mode == "RGBA" else 3)
    if mode == "RGBA":
        pixels[:10, :, 3] = 0  # fully transparent: its colour must survive too
    path = tmp_path / "photo.png"
    Image.fromarray(pixels, mode).save(path)
    photo = load_quietly(path)
    edited = photo.rgb.copy()
    edited[:5] = 0
    out = export_photo(tmp_path / "out.webp", photo, edited)
    with Image.open(out) as result:
        back = np.asarray(result.convert(mode))
    assert np.array_equal(back[..., :3], edited)
    if mode == "RGBA":
        assert np.array_equal(back[..., 3], pixels[..., 3])


def test_srgb_profile_is_kept_without_conversion(tmp_path):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    pixels = noise(16, 16)
    path = tmp_path / "srgb.png"
    Image.fromarray(pixels).save(path, icc_profile=icc)
    photo = load_quietly(path)
    assert np.array_equal(photo.rgb, pixels)
    assert photo.icc_profile == icc and not photo.colour_converted and not photo.warnings


def test_profile_of_the_wrong_colour_space_is_ignored_with_a_warning(tmp_path):
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    pixels = noise(16, 16)
    path = tmp_path / "lab_profile.png"
    Image.fromarray(pixels).save(path, icc_profile=lab)
    photo = load_quietly(path)
    assert np.array_equal(photo.rgb, pixels)
    assert photo.icc_profile is None
    assert any("Lab" in w and "ignored" in w for w in photo.warnings)


def test_damaged_profile_is_ignored_with_a_warning(tmp_path):
    pixels = noise(16, 16)
    path = tmp_path / "bad_profile.png"
    Image.fromarray(pixels).save(path, icc_profile=b"definitely not an ICC profile")
    photo = load_quietly(path)
    assert np.array_equal(photo.rgb, pixels) and photo.icc_profile is None
    assert any("damaged" in w for w in photo.warnings)


def test_photo_exactly_at_the_minimum_side_loads(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (MIN_SIDE, 40)).save(path)
    assert load_quietly(path).size == (MIN_SIDE, 40)


def test_pillow_bomb_limit_does_not_override_ours(tmp_path, monkeypatch):
    path = tmp_path / "normal.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow alone would refuse 4096 px
    assert load_quietly(path).size == (64, 64)
    assert Image.MAX_IMAGE_PIXELS == 1000  # and the global is restored


# ------------------------------------------------------------------------------ bad files


def expect_error(path, *fragments, **kw) -> str:
    with pytest.raises(InputError) as caught:
        load_quietly(path, **kw)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.jpg", "nope.jpg", "does not exist")


def test_folder_instead_of_file(tmp_path):
    expect_error(tmp_path, "folder")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    expect_error(path, "empty.png", "empty", "again")


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_truncated_file(tmp_path, fmt, suffix):
    buffer = io.BytesIO()
    Image.fromarray(noise(64, 64)).save(buffer, fmt)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    expect_error(path, f"cut{suffix}", "damaged", "again")


@pytest.mark.parametrize("where", [40, 60], ids=["chunk-name", "pixel-data"])
def test_png_with_flipped_bytes(tmp_path, where):
    buffer = io.BytesIO()
    Image.fromarray(noise(32, 32)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    assert data[37:41] == b"IDAT"  # byte 40 names the chunk; byte 60 is compressed pixels
    data[where] ^= 0xFF
    path = tmp_path / "flipped.png"
    path.write_bytes(bytes(data))
    expect_error(path, "flipped.png", "damaged")


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is a shopping list, not a picture\n")
    expect_error(path, "notes.png", "not a picture", "PNG")


def test_formats_outside_the_allow_list_are_refused(tmp_path):
    path = tmp_path / "drawing.eps"  # EPS would make Pillow run Ghostscript
    Image.new("RGB", (32, 32)).save(path)
    expect_error(path, "drawing.eps", "not a picture in a supported format")


def bomb_png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))


def test_decompression_bomb_header_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(100_000, 100_000))  # 10 gigapixels claimed in 100 bytes
    message = expect_error(path, "bomb.png", "100000x100000", "megapixels", "max_pixels",
                           "DIFFEDIT_MAX_PIXELS")
    assert "100 megapixels" in message  # the default limit is stated


def test_pixel_limit_from_argument_and_environment(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(path)
    expect_error(path, "300x200", "0.05 megapixels", max_pixels=50_000)
    assert load_quietly(path, max_pixels=60_000).size == (300, 200)
    monkeypatch.setenv("DIFFEDIT_MAX_PIXELS", "50000")
    expect_error(path, "DIFFEDIT_MAX_PIXELS")
    monkeypatch.setenv("DIFFEDIT_MAX_PIXELS", "lots")
    expect_error(path, "DIFFEDIT_MAX_PIXELS", "'lots'", "whole number")


def test_photo_too_small_for_the_model(tmp_path):
    path = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8)).save(path)
    expect_error(path, "tiny.png", "8x8", f"at least {MIN_SIDE} pixels")
