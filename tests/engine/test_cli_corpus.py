"""Unusual and broken photos through the CLI: valid ones edit upright with size and alpha kept,
broken ones exit 2 with the documented message, none crashes."""

import io

import numpy as np
import pytest
from PIL import Image

from engine import cli

FAST = ["--steps", "2", "--mask-samples", "1", "--model", "tiny", "--quiet",
        "--target", "a dog", "--source", "a cat"]


def _noise(h, w, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def _rotated_jpeg(path):
    image = Image.fromarray(_noise(40, 60))  # stored landscape, shown portrait (orientation 6)
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, exif=exif.tobytes())
    return (40, 60)  # upright size (width, height)


def _rgba(path):
    image = Image.fromarray(_noise(50, 70, 4, seed=1), "RGBA")
    image.save(path)
    return (70, 50)


def _la(path):
    Image.fromarray(_noise(48, 64, 2, seed=2), "LA").save(path)
    return (64, 48)


def _palette_transparent(path):
    image = Image.fromarray(_noise(40, 40, seed=3)).convert("P", palette=Image.Palette.ADAPTIVE)
    image.info["transparency"] = 0
    image.save(path, transparency=0)
    return (40, 40)


def _grey16(path):
    Image.fromarray((np.arange(64 * 48).reshape(48, 64) * 20).astype(np.uint16)).save(path)
    return (64, 48)


def _cmyk(path):
    Image.fromarray(_noise(40, 56, seed=4)).convert("CMYK").save(path)
    return (56, 40)


def _webp(path):
    Image.fromarray(_noise(44, 60, seed=5)).save(path, lossless=True)
    return (60, 44)


def _gif_frames(path):
    frames = [Image.fromarray(_noise(40, 40, seed=s)).convert("P") for s in (6, 7)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return (40, 40)


VALID = {"rotated.jpg": _rotated_jpeg, "rgba.png": _rgba, "la.png": _la,
         "palette.png": _palette_transparent, "grey16.png": _grey16, "cmyk.jpg": _cmyk,
         "photo.webp": _webp, "frames.gif": _gif_frames}


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_files_edit_upright_with_size_and_alpha(tmp_path, name, tiny_model_path):
    source = tmp_path / name
    size = VALID[name](source)
    out = tmp_path / "out.png"
    assert cli.main(["edit", str(source), "-o", str(out), *FAST]) == 0
    with Image.open(out) as result:
        assert result.size == size
        with Image.open(source) as original:
            had_alpha = original.mode in ("RGBA", "LA") or "transparency" in original.info
        assert ("A" in result.getbands()) == had_alpha
        if name == "rgba.png":
            assert np.array_equal(np.asarray(result.getchannel("A")),
                                  np.asarray(Image.open(source).getchannel("A")))


def _bomb(path):
    # A PNG header claiming 100000 x 100000 pixels: refused before any decoding.
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def _truncated(path):
    buffer = io.BytesIO()
    Image.fromarray(_noise(64, 64)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


BROKEN = {
    "empty.png": (lambda p: p.write_bytes(b""), "empty"),
    "notes.png": (lambda p: p.write_text("these are not pixels"), "not a picture"),
    "half.png": (_truncated, "truncated"),
    "bomb.png": (_bomb, "DIFFEDIT_MAX_PIXELS"),
    "tiny.png": (lambda p: Image.fromarray(_noise(8, 8)).save(p), "at least 16 pixels"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_files_exit_2_with_the_reason(tmp_path, capsys, name):
    make, fragment = BROKEN[name]
    source = tmp_path / name
    make(source)
    code = cli.main(["edit", str(source), "-o", str(tmp_path / "out.png"), *FAST])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "Traceback" not in err
    assert fragment in err and name in err
    assert not (tmp_path / "out.png").exists()


def test_mask_that_is_not_an_image(tmp_path, capsys, samples_dir):
    (tmp_path / "mask.png").write_text("nope")
    code = cli.main(["edit", str(samples_dir / "chelsea.png"), "-o", str(tmp_path / "o.png"),
                     "--mask", str(tmp_path / "mask.png"), *FAST])
    assert code == 2 and "not a readable image" in capsys.readouterr().err


def test_mask_that_is_a_decompression_bomb(tmp_path, capsys, samples_dir):
    _bomb(tmp_path / "mask.png")
    code = cli.main(["edit", str(samples_dir / "chelsea.png"), "-o", str(tmp_path / "o.png"),
                     "--mask", str(tmp_path / "mask.png"), *FAST])
    err = capsys.readouterr().err
    assert code == 2 and "--mask" in err and "451x300" in err and "Traceback" not in err
