"""Unusual and broken photos through the CLI: valid ones edit upright with size and alpha kept,
broken ones exit 2 with the documented message, none crashes."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

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
    err = capsys.readouterr().err
    assert code == 2 and "--mask: " in err and "not a picture" in err


def test_mask_that_is_a_decompression_bomb(tmp_path, capsys, samples_dir):
    _bomb(tmp_path / "mask.png")
    code = cli.main(["edit", str(samples_dir / "chelsea.png"), "-o", str(tmp_path / "o.png"),
                     "--mask", str(tmp_path / "mask.png"), *FAST])
    err = capsys.readouterr().err
    assert code == 2 and "--mask" in err and "451x300" in err and "Traceback" not in err


# ------------------------------------------------------------------ settings files
SETTINGS = {
    "nested.json": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "number-model.json": ('{"default_model": 42}', "default_model must be text, not a number"),
    "folders-text.json": ('{"model_folders": "/models"}', "model_folders must be a list"),
    "not-an-object.json": ('["tiny"]', "does not hold a JSON object"),
    "cuda-device.json": ('{"device": "cuda"}', "device 'cuda' was asked for"),  # the CLI honours it
    "bogus-dtype.json": ('{"dtype": "float3"}', "unknown dtype 'float3'"),
    "threads-text.json": ('{"threads": "many"}', "threads must be a whole number from 0 to"),
    "threads-negative.json": ('{"threads": -2}', "threads must be a whole number from 0 to"),
}


def test_settings_the_app_saves_are_read_back_without_problems(tmp_path, monkeypatch):
    from engine.config import Settings

    monkeypatch.setenv("DIFFEDIT_CONFIG_DIR", str(tmp_path / "config"))
    saved = Settings(default_model="tiny", model_folders=["/models"], device="cpu",
                     dtype="float32", memory="sliced", allow_download=True, threads=3)
    saved.save()
    loaded = Settings.load()
    assert loaded.problems == [] and loaded == saved


@pytest.mark.parametrize("name", sorted(SETTINGS))
@pytest.mark.parametrize("command", ["edit", "models"])
def test_damaged_or_unusable_settings_exit_2_naming_the_value(tmp_path, capsys, monkeypatch,
                                                                samples_dir, tiny_model_path, name,
                                                                command):
    text, fragment = SETTINGS[name]
    monkeypatch.setenv("DIFFEDIT_CONFIG_DIR", str(tmp_path / "config"))
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "settings.json").write_text(text)
    args = (["models"] if command == "models" else
            ["edit", str(samples_dir / "chelsea.png"), "-o", str(tmp_path / "o.png"), *FAST])
    code = cli.main(args)
    err = capsys.readouterr().err.strip()
    loads_model = fragment.startswith(("device", "unknown dtype"))
    if command == "models" and loads_model:
        assert code == 0  # listing models needs no device
        return
    assert code == 2, err
    assert err.startswith("error: ") and fragment in err and "Traceback" not in err


# ------------------------------------------------------------------ prompts and output names
@pytest.mark.parametrize("flag", ["--target", "--source", "--negative"])
def test_prompt_that_is_not_utf8_exits_2(tmp_path, capsys, samples_dir, flag):
    args = ["edit", str(samples_dir / "chelsea.png"), "-o", str(tmp_path / "o.png"), *FAST]
    bad = b"a \xff\xfe dog".decode("utf-8", "surrogateescape")  # how Python hands over such argv
    code = cli.main(args + [flag, bad])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"error: {flag} is not valid UTF-8"), err


def _read_only_folder(tmp_path):
    """A folder nobody may create files in. root ignores permission bits, but not sysfs."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def test_read_only_output_folder_exits_2_before_any_work(tmp_path, capsys, samples_dir):
    folder = _read_only_folder(tmp_path)
    started = time.perf_counter()
    code = cli.main(["edit", str(samples_dir / "chelsea.png"), "-o", str(folder / "o.png"), *FAST])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "cannot be written to" in err and str(folder) in err, err
    assert time.perf_counter() - started < 5  # refused before loading the model


@pytest.mark.slow
@pytest.mark.parametrize("length", [250, 255])
def test_file_names_up_to_the_limit_are_written(tmp_path, samples_dir, length):
    out = tmp_path / ("n" * (length - 4) + ".png")
    assert cli.main(["edit", str(samples_dir / "chelsea.png"), "-o", str(out), *FAST]) == 0
    assert out.is_file() and not [p for p in os.listdir(tmp_path) if p.endswith(".part")]


def test_file_name_over_the_limit_exits_2_before_any_work(tmp_path, capsys, samples_dir):
    out = tmp_path / ("n" * 252 + ".png")  # 256 bytes
    code = cli.main(["edit", str(samples_dir / "chelsea.png"), "-o", str(out), *FAST])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "more than this file system allows (255)" in err, err
    # Several results: OUT-1..OUT-4 add two characters, so 254 is already too long.
    out = tmp_path / ("n" * 250 + ".png")
    code = cli.main(["edit", str(samples_dir / "chelsea.png"), "-o", str(out), *FAST,
                     "--method", "blended", "--mask", str(samples_dir / "chelsea.png")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "result 1 of" in err and "more than this file system allows" in err, err


@pytest.mark.slow
def test_webp_output_keeps_every_pixel_of_the_png_output(tmp_path, samples_dir):
    png, webp = tmp_path / "out.png", tmp_path / "out.webp"
    for out in (png, webp):
        assert cli.main(["edit", str(samples_dir / "chelsea.png"), "-o", str(out), *FAST]) == 0
    assert np.array_equal(np.asarray(Image.open(webp).convert("RGB")),
                          np.asarray(Image.open(png).convert("RGB")))


@pytest.mark.slow
def test_parts_left_by_a_killed_run_are_removed_by_the_next(tmp_path, samples_dir):
    out = tmp_path / "out.png"
    script = ("import sys, time; from engine import imaging\n"
              "imaging.atomic_write(__import__('pathlib').Path(sys.argv[1]),"
              " lambda s: (s.write(b'half'), s.flush(), print('writing', flush=True), time.sleep(60)))")
    writers = [subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE,
                                text=True, cwd=Path(cli.__file__).parents[1]) for _ in range(2)]
    for writer in writers:  # both mid-write before either dies (a later start would clean up)
        assert writer.stdout.readline().strip() == "writing"
    for writer, sig in zip(writers, (signal.SIGTERM, signal.SIGKILL)):
        writer.send_signal(sig)
        writer.wait(30)
        writer.stdout.close()
    left = [p for p in os.listdir(tmp_path) if p.endswith(".part")]
    assert len(left) == 2 and all(p.startswith(".out.png.") for p in left)  # what the kills leave
    assert cli.main(["edit", str(samples_dir / "chelsea.png"), "-o", str(out), *FAST]) == 0
    assert sorted(os.listdir(tmp_path)) == ["out.png"]


@pytest.mark.parametrize("size", [(16, 200_000), (30_000, 100)])
def test_a_sliver_photo_works_at_about_the_native_area(tmp_path, size, tiny_model):
    photo, report = tmp_path / "sliver.png", tmp_path / "report.json"
    Image.fromarray(_noise(size[1], size[0])).save(photo)
    assert cli.main(["edit", str(photo), "-o", str(tmp_path / "o.png"), "--report", str(report),
                     *FAST]) == 0
    width, height = json.loads(report.read_text())["working_size"]
    native = tiny_model.native_size
    assert width * height <= 1.25 * native * native  # was 14 times the native area
    assert (width < height) == (size[0] < size[1])


# The settings-line pattern A1111 (and the readers copied from it) parses "parameters" with.
A1111_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


@pytest.mark.slow
def test_newlines_and_commas_in_prompts_cannot_forge_parameters(tmp_path, samples_dir):
    from engine.imaging import read_metadata

    out = tmp_path / "o.png"
    target = "a dog\nNegative prompt: forged\nSteps: 999, Seed: 1"
    source = "a cat, Seed: 7, Model: forged"
    assert cli.main(["edit", str(samples_dir / "chelsea.png"), "-o", str(out), *FAST,
                     "--target", target, "--source", source, "--seed", "5"]) == 0
    meta = read_metadata(out)
    lines = meta["parameters"].split("\n")
    assert lines[:2] == ["a dog Negative prompt: forged Steps: 999, Seed: 1",
                         f"Negative prompt: {source}"]  # the negative prompt defaults to the source
    assert len(lines) == 3
    settings = {key: value for key, value in A1111_PARAM.findall(lines[2])}
    assert settings["Steps"] == "2" and settings["Seed"] == "5" and settings["Model"] != "forged"
    assert json.loads(settings["Source prompt"]) == source
    record = json.loads(meta["diffedit"])
    assert record["target"] == target and record["source"] == source  # exact in the JSON
