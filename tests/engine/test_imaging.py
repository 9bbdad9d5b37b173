"""Saving (atomic, metadata, EXIF, ICC, alpha, 16-bit) and property-based load/save round trips."""

from __future__ import annotations

import json
import os
import stat
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms

from engine import imaging
from engine.errors import InputError
from engine.imaging import (
    MIN_SIDE,
    Photo,
    export_photo,
    export_pixels,
    load_photo,
    photo_from_image,
    read_metadata,
    save_image,
)

RNG = np.random.default_rng(99)
METADATA = {
    "parameters": "a bowl of pears → a bowl of oranges\nSteps: 50, Seed: 7",
    "diffedit": json.dumps({"method": "diffedit", "strength": 0.8, "prompt": "Äpfel"}),
}


def noise(h, w, c=3):
    return RNG.integers(0, 256, (h, w, c), dtype=np.uint8)


def read_png16(path: Path) -> np.ndarray:
    """Decode a 16-bit PNG whose rows all use filter 0 (as save_image writes them)."""
    data = path.read_bytes()
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour_type = header[:4]
    assert depth == 16
    channels = {2: 3, 6: 4}[colour_type]
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, -1)
    assert not rows[:, 0].any()
    return rows[:, 1:].copy().view(">u2").reshape(height, width, channels).astype(np.uint16)


# ------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".PNG"])
def test_metadata_round_trip(tmp_path, suffix):
    path = save_image(tmp_path / f"out{suffix}", noise(20, 24), metadata=METADATA)
    assert read_metadata(path) == METADATA
    assert load_photo(path).size == (24, 20)


def test_png_metadata_is_in_text_chunks_other_tools_read(tmp_path):
    path = save_image(tmp_path / "out.png", noise(20, 20), metadata=METADATA)
    with Image.open(path) as im:
        assert im.text["parameters"] == METADATA["parameters"]
        assert json.loads(im.text["diffedit"])["prompt"] == "Äpfel"


def test_reads_a_plain_unicode_user_comment_as_parameters(tmp_path):
    # What other generators write into JPEGs: "UNICODE\0" + UTF-16 text, no JSON.
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + "a photo, Steps: 20".encode("utf-16-be")
    exif[0x8769] = exif.get_ifd(0x8769)
    path = tmp_path / "other.jpg"
    Image.fromarray(noise(20, 20)).save(path, exif=exif.tobytes())
    assert read_metadata(path) == {"parameters": "a photo, Steps: 20"}


def test_no_metadata_reads_back_empty(tmp_path):
    for suffix in (".png", ".jpg", ".webp", ".tif"):
        assert read_metadata(save_image(tmp_path / f"plain{suffix}", noise(20, 20))) == {}


def test_read_metadata_errors_are_clear(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_metadata(tmp_path / "missing.png")
    text = tmp_path / "notes.png"
    text.write_text("hello")
    with pytest.raises(InputError, match="not a picture"):
        read_metadata(text)
    cut = tmp_path / "cut.png"
    cut.write_bytes(save_image(tmp_path / "whole.png", noise(64, 64)).read_bytes()[:200])
    with pytest.raises(InputError, match="damaged"):
        read_metadata(cut)


@pytest.mark.parametrize("suffix", [".png", ".webp", ".tif"])
def test_alpha_is_saved_where_the_format_allows(tmp_path, suffix):
    rgb, alpha = noise(20, 30), noise(20, 30, 1)[..., 0]
    photo = load_photo(save_image(tmp_path / f"a{suffix}", rgb, alpha=alpha))
    assert np.array_equal(photo.alpha, alpha)


def test_alpha_is_dropped_for_jpeg_without_error(tmp_path):
    path = save_image(tmp_path / "a.jpg", noise(20, 30), alpha=np.zeros((20, 30), np.uint8))
    photo = load_photo(path)
    assert photo.alpha is None and photo.size == (30, 20)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
def test_exif_kept_orientation_dropped_and_gps_stripped_on_request(tmp_path, suffix):
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Camera Maker"
    exif.get_ifd(0x8825)[1] = "N"
    exif.get_ifd(0x8825)[2] = (48.0, 51.0, 24.0)
    exif[0x8825] = exif.get_ifd(0x8825)
    raw = exif.tobytes()

    kept = save_image(tmp_path / f"kept{suffix}", noise(20, 20), exif=raw)
    stripped = save_image(tmp_path / f"nogps{suffix}", noise(20, 20), exif=raw, strip_gps=True)

    with Image.open(kept) as im:
        tags = im.getexif()
        assert tags[0x010F] == "Camera Maker" and 0x0112 not in tags
        assert tags.get_ifd(0x8825)[1] == "N"
    with Image.open(stripped) as im:
        tags = im.getexif()
        assert tags[0x010F] == "Camera Maker"
        assert 0x8825 not in tags and not tags.get_ifd(0x8825)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
def test_icc_profile_is_embedded(tmp_path, suffix):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = save_image(tmp_path / f"icc{suffix}", noise(20, 20), icc_profile=icc)
    with Image.open(path) as im:
        assert im.info["icc_profile"] == icc


def test_unknown_suffix_lists_the_allowed_ones(tmp_path):
    with pytest.raises(InputError) as caught:
        save_image(tmp_path / "out.bmp", noise(20, 20))
    message = str(caught.value)
    assert "'.bmp'" in message
    for suffix in (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff"):
        assert suffix in message
    assert not (tmp_path / "out.bmp").exists()


def test_missing_folder_and_bad_arrays_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        save_image(tmp_path / "no" / "such" / "out.png", noise(20, 20))
    with pytest.raises(InputError, match="H, W, 3"):
        save_image(tmp_path / "out.png", noise(20, 20, 4))
    with pytest.raises(InputError, match="alpha"):
        save_image(tmp_path / "out.png", noise(20, 20), alpha=np.zeros((5, 5), np.uint8))
    with pytest.raises(InputError, match="quality"):
        save_image(tmp_path / "out.jpg", noise(20, 20), quality=0)
    assert list(tmp_path.iterdir()) == []


def test_new_files_are_not_private_to_the_owner(tmp_path):
    path = save_image(tmp_path / "out.png", noise(20, 20))
    # mkstemp creates 0600 files; an exported photo must be readable like any other file.
    assert stat.S_IMODE(path.stat().st_mode) != 0o600
    path.chmod(0o640)
    save_image(path, noise(20, 20))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # overwriting keeps the file's mode


# ----------------------------------------------------------------------------- atomicity


def test_failed_rename_leaves_the_previous_file_and_no_temp(tmp_path, monkeypatch):
    path = save_image(tmp_path / "photo.jpg", noise(20, 20))
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(imaging.os, "replace", broken_replace)
    with pytest.raises(InputError) as caught:
        save_image(path, noise(20, 20))
    assert "No space left on device" in str(caught.value)
    assert "nothing was overwritten" in str(caught.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.jpg"]


def test_encoder_crash_half_way_leaves_the_previous_file_and_no_temp(tmp_path, monkeypatch):
    path = save_image(tmp_path / "photo.png", noise(20, 20), metadata=METADATA)
    before = path.read_bytes()
    real_save = Image.Image.save

    def crash_after_some_bytes(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG half a file")
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(Image.Image, "save", crash_after_some_bytes)
    with pytest.raises(RuntimeError, match="encoder exploded"):
        save_image(path, noise(20, 20))
    monkeypatch.setattr(Image.Image, "save", real_save)
    assert path.read_bytes() == before
    assert read_metadata(path) == METADATA
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]


def test_save_writes_through_fsync(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(imaging.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    save_image(tmp_path / "out.png", noise(20, 20))
    assert synced  # at least the data file (the folder too where the OS allows)


# ------------------------------------------------------------------------- 16-bit export


def test_16_bit_photo_keeps_full_depth_outside_the_edit(tmp_path):
    values = RNG.integers(0, 65536, (20, 24), dtype=np.uint16)
    source = tmp_path / "deep.png"
    Image.fromarray(values).save(source)
    photo = load_photo(source)
    edited = photo.rgb.copy()
    edited[:5, :6] = (200, 10, 30)

    out = export_photo(tmp_path / "edited.png", photo, edited, metadata=METADATA)

    planes = read_png16(out)
    assert planes.shape == (20, 24, 3)
    unchanged = np.ones((20, 24), bool)
    unchanged[:5, :6] = False
    expected = np.repeat(values[..., None], 3, axis=2)
    assert np.array_equal(planes[unchanged], expected[unchanged])
    assert np.array_equal(planes[:5, :6], np.full((5, 6, 3), (200 * 257, 10 * 257, 30 * 257)))
    assert read_metadata(out) == METADATA  # Pillow can read the file we wrote by hand
    assert load_photo(out).size == (24, 20)


def test_16_bit_export_to_jpeg_is_reduced_to_8_bits(tmp_path):
    deep = RNG.integers(0, 65536, (20, 20, 3), dtype=np.uint16)
    photo = load_photo(save_image(tmp_path / "deep.jpg", deep, alpha=None))
    assert np.abs(photo.rgb.astype(int) - deep / 257.0).mean() < 4  # JPEG noise only


def test_16_bit_png_with_alpha(tmp_path):
    deep = RNG.integers(0, 65536, (20, 20, 3), dtype=np.uint16)
    alpha = noise(20, 20, 1)[..., 0]
    planes = read_png16(save_image(tmp_path / "deep.png", deep, alpha=alpha))
    assert np.array_equal(planes[..., :3], deep)
    assert np.array_equal(planes[..., 3], alpha.astype(np.uint16) * 257)


def test_export_pixels_of_a_plain_photo_is_the_edit(tmp_path):
    photo = Photo(rgb=noise(20, 20))
    edited = noise(20, 20)
    assert np.array_equal(export_pixels(photo, edited), edited)
    with pytest.raises(InputError, match="20x20"):
        export_pixels(photo, noise(10, 20))


# ------------------------------------------------------------------------ in-memory input


def test_photo_from_image_normalises_like_a_file():
    rgba = noise(20, 30, 4)
    photo = photo_from_image(Image.fromarray(rgba, "RGBA"))
    assert photo.size == (30, 20) and photo.path is None
    assert np.array_equal(photo.alpha, rgba[..., 3])
    with pytest.raises(InputError, match="8x8"):
        photo_from_image(Image.new("RGB", (8, 8)))
    with pytest.raises(InputError, match="picture"):
        photo_from_image(np.zeros((20, 20, 3), np.uint8))


# ---------------------------------------------------------------------- property-based


MODES = ["RGB", "RGBA", "L", "LA", "P", "PT", "I;16", "CMYK"]
ALPHA_MODES = {"RGBA", "LA", "PT"}


def make_image(mode: str, width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    if mode in ("P", "PT"):
        image = Image.fromarray(rng.integers(0, 4, (height, width), dtype=np.uint8), "P")
        image.putpalette(list(rng.integers(0, 256, 12)) + [0] * 756)
        if mode == "PT":
            image.info["transparency"] = 0
        return image
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2, "CMYK": 4}[mode]
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)


def expected_alpha(image: Image.Image, mode: str) -> np.ndarray | None:
    if mode not in ALPHA_MODES:
        return None
    return np.asarray(image.convert("RGBA").getchannel("A"))


FORMATS = {"png": ({"RGB", "RGBA", "L", "LA", "P", "PT", "I;16"}, {}),
           "tif": ({"RGB", "RGBA", "L", "LA", "P", "I;16", "CMYK"}, {}),
           "webp": ({"RGB", "RGBA"}, {"lossless": True, "exact": True})}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt_mode=st.sampled_from([(f, m) for f, (modes, _) in sorted(FORMATS.items()) for m in MODES
                              if m in modes]),
    width=st.integers(MIN_SIDE, 48),
    height=st.integers(MIN_SIDE, 48),
    seed=st.integers(0, 2**16),
)
def test_any_mode_loads_with_the_right_size_and_alpha(fmt_mode, width, height, seed):
    fmt, mode = fmt_mode
    options = FORMATS[fmt][1]
    image = make_image(mode, width, height, seed)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"photo.{fmt}"
        save_kwargs = dict(options)
        if mode == "PT":
            save_kwargs["transparency"] = 0
        image.save(path, **save_kwargs)
        photo = load_photo(path)
    assert photo.size == (width, height)
    assert photo.rgb.shape == (height, width, 3) and photo.rgb.dtype == np.uint8
    alpha = expected_alpha(image, mode)
    if alpha is None:
        assert photo.alpha is None
    else:
        assert np.array_equal(photo.alpha, alpha)
    if mode in ("RGB", "RGBA"):
        assert np.array_equal(photo.rgb, np.asarray(image)[..., :3])


ORIENTATIONS = {
    1: lambda a: a,
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: np.rot90(np.fliplr(a), 1),   # mirror, then rotate 270 clockwise
    6: lambda a: np.rot90(a, -1),             # rotate 90 clockwise
    7: lambda a: np.rot90(np.fliplr(a), -1),  # mirror, then rotate 90 clockwise
    8: lambda a: np.rot90(a, 1),              # rotate 270 clockwise
}


@settings(max_examples=30, deadline=None)
@given(orientation=st.integers(1, 8), width=st.integers(MIN_SIDE, 40),
       height=st.integers(MIN_SIDE, 40), alpha=st.booleans())
def test_exif_orientation_gives_upright_pixels(orientation, width, height, alpha):
    stored = noise(height, width, 4 if alpha else 3)
    exif = Image.Exif()
    exif[0x0112] = orientation
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "o.png"
        Image.fromarray(stored).save(path, exif=exif.tobytes())
        photo = load_photo(path)
    upright = ORIENTATIONS[orientation](stored)
    assert np.array_equal(photo.rgb, upright[..., :3])
    if alpha:
        assert np.array_equal(photo.alpha, upright[..., 3])
    assert photo.exif is None


@settings(max_examples=25, deadline=None)
@given(width=st.integers(MIN_SIDE, 40), height=st.integers(MIN_SIDE, 40),
       suffix=st.sampled_from([".png", ".tif", ".webp"]), with_alpha=st.booleans(),
       parameters=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                          max_size=40))
def test_save_then_load_round_trips_losslessly(width, height, suffix, with_alpha, parameters):
    rgb = noise(height, width)
    alpha = noise(height, width, 1)[..., 0] if with_alpha else None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"out{suffix}"
        if suffix == ".webp":  # lossy WebP is tested for size only
            save_image(path, rgb, alpha=alpha, metadata={"parameters": parameters})
            photo = load_photo(path)
        else:
            save_image(path, rgb, alpha=alpha, metadata={"parameters": parameters})
            photo = load_photo(path)
            assert np.array_equal(photo.rgb, rgb)
        meta = read_metadata(path)
        assert sorted(os.listdir(folder)) == [path.name]
    assert photo.size == (width, height)
    if with_alpha:
        assert np.array_equal(photo.alpha, alpha)  # WebP stores alpha losslessly
    else:
        assert photo.alpha is None
    assert meta == {"parameters": parameters}


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count open files")
def test_loading_and_saving_leave_no_open_files(tmp_path):
    source = save_image(tmp_path / "a.png", noise(20, 20), metadata=METADATA)
    bad = tmp_path / "bad.png"
    bad.write_bytes(source.read_bytes()[:60])
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        load_photo(source)
        read_metadata(source)
        save_image(tmp_path / "b.jpg", noise(20, 20))
        with pytest.raises(InputError):
            load_photo(bad)
    assert len(os.listdir("/proc/self/fd")) == before
