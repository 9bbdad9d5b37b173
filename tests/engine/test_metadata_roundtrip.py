"""Metadata round trip: a PNG, JPEG, WebP or TIFF photo exported as any of the four keeps its EXIF
(less the GPS with strip_gps), colour profile, XMP and DPI, also for an outpainted result."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from engine import imaging
from engine.errors import InputError
from tests.engine.test_imaging_corpus import rgb_icc_profile

FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif"}
# A wide-gamut profile (not sRGB), so the photo is converted for editing and back on export.
WIDE = [(0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446)]
ICC = rgb_icc_profile(WIDE, gamma=2.2, description="Wide test RGB")
XMP = (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
       b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
       b'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator>Ann Example</dc:creator>'
       b'</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>')
MAKE, TAKEN = 0x010F, 0x9003  # IFD0 Make; EXIF IFD DateTimeOriginal
EXIF_IFD, GPS_IFD = 0x8769, 0x8825


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[MAKE] = "TestCam"
    sub = exif.get_ifd(EXIF_IFD)
    sub[TAKEN] = "2024:05:06 07:08:09"
    exif[EXIF_IFD] = sub
    gps = exif.get_ifd(GPS_IFD)
    gps[1], gps[2] = "N", (52.0, 31.0, 12.0)
    exif[GPS_IFD] = gps
    return exif


def _write_source(path, fmt: str, rgb: np.ndarray) -> None:
    """The source file, written with Pillow alone (not with the code under test)."""
    exif = _exif()
    options = {"icc_profile": ICC}
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", XMP.decode())
        options.update(pnginfo=info, dpi=(300, 300))
    elif fmt == "JPEG":
        options.update(xmp=XMP, dpi=(300, 300), quality=95)
    elif fmt == "WEBP":
        exif[0x011A], exif[0x011B], exif[0x0128] = 300.0, 300.0, 2
        options.update(xmp=XMP, lossless=True)
    else:
        exif[0x02BC] = XMP
        options.update(dpi=(300, 300))
    Image.fromarray(rgb).save(path, format=fmt, exif=exif.tobytes(), **options)


def _check(path, *, gps: bool) -> Image.Image:
    """Read ``path`` with Pillow alone and check all four kinds of metadata are there."""
    image = Image.open(path)
    image.load()
    exif = image.getexif()
    assert exif.get(MAKE) == "TestCam", f"{path.name}: EXIF lost"
    assert exif.get_ifd(EXIF_IFD).get(TAKEN) == "2024:05:06 07:08:09", f"{path.name}: EXIF IFD lost"
    assert bool(exif.get_ifd(GPS_IFD)) == gps, f"{path.name}: GPS {'lost' if gps else 'kept'}"
    assert image.info.get("icc_profile") == ICC, f"{path.name}: colour profile lost"
    xmp = image.info.get("xmp") or getattr(image, "tag_v2", {}).get(0x02BC) or b""
    assert b"Ann Example" in (xmp.encode() if isinstance(xmp, str) else xmp), f"{path.name}: XMP lost"
    dpi = image.info.get("dpi")
    if dpi is None:  # WebP keeps it in the EXIF
        dpi = (float(exif.get(0x011A, 0)), float(exif.get(0x011B, 0)))
    assert dpi == pytest.approx((300, 300), abs=0.01), f"{path.name}: DPI lost ({dpi})"
    return image


def _rgb() -> np.ndarray:
    y, x = np.mgrid[0:48, 0:64]
    return np.dstack([x * 4, y * 5, (x + y) * 2]).astype(np.uint8)


@pytest.mark.slow
@pytest.mark.parametrize("strip_gps", [False, True])
@pytest.mark.parametrize("source_format", FORMATS)
@pytest.mark.parametrize("out_format", FORMATS)
def test_every_format_keeps_exif_icc_xmp_and_dpi(tmp_path, source_format, out_format, strip_gps):
    source = tmp_path / f"photo{FORMATS[source_format]}"
    _write_source(source, source_format, _rgb())
    photo = imaging.load_photo(source)
    assert photo.xmp is not None and photo.dpi == pytest.approx((300, 300), abs=0.01)
    edited = photo.rgb.copy()
    edited[10:20, 10:30] = (200, 30, 30)
    out = imaging.export_photo(tmp_path / f"edited{FORMATS[out_format]}", photo, edited,
                               metadata={"parameters": "a test"}, strip_gps=strip_gps)
    _check(out, gps=not strip_gps)
    assert imaging.read_metadata(out)["parameters"] == "a test"


@pytest.mark.parametrize("out_format", FORMATS)
def test_an_extended_result_keeps_the_metadata_and_one_colour_space(tmp_path, out_format):
    source = tmp_path / "photo.png"
    original = _rgb()
    _write_source(source, "PNG", original)
    photo = imaging.load_photo(source)
    assert photo.colour_converted  # edited in sRGB, exported in the wide profile
    left, top = 8, 4
    canvas = np.zeros((48 + 4 + 6, 64 + 8 + 2, 3), np.uint8)
    canvas[:] = (10, 150, 90)  # the new area, in sRGB like everything the engine makes
    canvas[top:top + 48, left:left + 64] = photo.rgb
    extended = imaging.extended_photo(photo, canvas, (left, top))
    out = imaging.export_photo(tmp_path / f"wide{FORMATS[out_format]}", extended, canvas)
    image = _check(out, gps=True)
    if out_format in ("PNG", "TIFF"):  # lossless: exact values
        pixels = np.asarray(image.convert("RGB"))
        assert np.array_equal(pixels[top:top + 48, left:left + 64], original)  # the file's own values
        new_area = imaging.srgb_to_profile(canvas[:1, :1], ICC)[0, 0]
        assert tuple(pixels[0, 0]) == tuple(new_area) != (10, 150, 90)  # converted into the profile


def test_extended_photo_moves_the_alpha_and_refuses_a_canvas_too_small():
    rgb = _rgb()
    alpha = np.full(rgb.shape[:2], 7, np.uint8)
    photo = imaging.Photo(rgb=rgb, alpha=alpha)
    canvas = np.zeros((50, 70, 3), np.uint8)
    canvas[2:50, 3:67] = rgb
    moved = imaging.extended_photo(photo, canvas, (3, 2))
    assert moved.alpha[2:50, 3:67].tolist() == alpha.tolist() and moved.alpha[0, 0] == 255
    with pytest.raises(InputError, match="does not fit"):
        imaging.extended_photo(photo, canvas, (10, 2))


@pytest.mark.slow
def test_the_cli_keeps_the_metadata_of_an_extended_result(tmp_path):
    from engine import cli

    source = tmp_path / "photo.jpg"
    _write_source(source, "JPEG", _rgb())
    code = cli.main(["edit", str(source), "-o", str(tmp_path / "wide.webp"), "--model", "tiny",
                     "--target", "a meadow", "--method", "blended", "--action", "extend",
                     "--extend-right", "16", "--candidates", "1", "--steps", "2", "--quiet",
                     "--strip-gps"])
    assert code == 0
    image = _check(tmp_path / "wide.webp", gps=False)
    assert image.size == (64 + 16, 48)
