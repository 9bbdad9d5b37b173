"""The CLI: outputs, metadata, reports, and exit codes (0 done, 2 user mistake, 1 internal)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from engine import cli, masks
from engine.geometry import default_feather
from engine.imaging import read_metadata

FAST = ["--steps", "6", "--mask-samples", "2", "--model", "tiny"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(autouse=True)
def _tiny_built(tiny_model_path):
    """`--model tiny` resolves to the same cached tiny model the fixture built."""


def test_edit_writes_same_size_output_with_metadata_and_report(tmp_path, samples_dir):
    out, report, mask_out = tmp_path / "out.png", tmp_path / "report.json", tmp_path / "mask.png"
    user_mask = np.zeros((400, 600), np.uint8)
    user_mask[100:300, 200:450] = 255
    Image.fromarray(user_mask).save(tmp_path / "user.png")
    code = cli.main(["edit", str(samples_dir / "coffee.png"), "-o", str(out), "--target", "a cup of tea",
                     "--source", "a cup of coffee", "--mask", str(tmp_path / "user.png"), "--quiet",
                     "--report", str(report), "--save-mask", str(mask_out), "--seed", "3", *FAST])
    assert code == 0
    original = np.asarray(Image.open(samples_dir / "coffee.png").convert("RGB"))
    edited = np.asarray(Image.open(out).convert("RGB"))
    assert edited.shape == original.shape
    feather = json.loads(report.read_text())["params"]["feather"]  # scaled with the photo
    assert feather == default_feather((600, 400), 128)
    keep = masks.paste_alpha(user_mask / 255.0, feather) == 0
    assert np.array_equal(edited[keep], original[keep])
    meta = read_metadata(out)
    assert "a cup of tea" in meta["parameters"] and "Seed: 3" in meta["parameters"]
    record = json.loads(meta["diffedit"])
    assert record["params"]["steps"] == 6 and record["source"] == "a cup of coffee"
    data = json.loads(report.read_text())
    assert data["unet_evals"] == {"encode": 5, "decode": 10}
    assert data["device"] == "cpu" and data["peak_memory_bytes"] > 0
    assert set(data["seconds"]) >= {"encode", "decode", "total"}
    assert np.array_equal(np.asarray(Image.open(mask_out)) > 127, user_mask > 127)


def test_mask_command_writes_mask_and_heatmap(tmp_path, samples_dir):
    out, heat = tmp_path / "mask.png", tmp_path / "heat.png"
    report = tmp_path / "report.json"
    code = cli.main(["mask", str(samples_dir / "chelsea.png"), "-o", str(out), "--heatmap", str(heat),
                     "--target", "a dog", "--source", "a cat", "--quiet", "--mask-samples", "2",
                     "--model", "tiny", "--report", str(report)])
    assert code == 0
    mask, heatmap = Image.open(out), Image.open(heat)
    assert mask.size == heatmap.size == (451, 300)
    assert set(np.unique(np.asarray(mask))) <= {0, 255}
    data = json.loads(report.read_text())
    assert data["unet_evals"] == {"mask": 4}  # R and Q for each of the 2 noise samples
    assert data["seconds"]["mask"] > 0 and data["device"] == "cpu" and data["peak_memory_bytes"] > 0


def test_strip_gps_leaves_the_location_out(tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "Camera Maker"
    exif.get_ifd(0x8825)[1] = "N"
    exif.get_ifd(0x8825)[2] = (48.0, 51.0, 24.0)
    exif[0x8825] = exif.get_ifd(0x8825)
    photo = tmp_path / "trip.jpg"
    pixels = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(photo, exif=exif.tobytes())
    Image.new("L", (80, 64), 255).save(tmp_path / "all.png")
    for flag, name in (([], "kept.jpg"), (["--strip-gps"], "stripped.jpg")):
        assert cli.main(["edit", str(photo), "-o", str(tmp_path / name), "--target", "x", "--quiet",
                         "--mask", str(tmp_path / "all.png"), *flag, *FAST]) == 0
    with Image.open(tmp_path / "kept.jpg") as kept, Image.open(tmp_path / "stripped.jpg") as stripped:
        assert kept.getexif().get_ifd(0x8825)[1] == "N"
        assert stripped.getexif()[0x010F] == "Camera Maker"
        assert not stripped.getexif().get_ifd(0x8825)


@pytest.mark.parametrize("args,message", [
    (["edit", "{sample}", "-o", "{tmp}/o.png", "--target", "x", "--steps", "0"], "steps must be"),
    (["edit", "{tmp}/missing.png", "-o", "{tmp}/o.png", "--target", "x"], "does not exist"),
    (["edit", "{sample}", "--target", "x"], "required: -o"),
    (["edit", "{sample}", "-o", "{tmp}/o.png", "--target", " ", "--model", "tiny"], "target"),
    (["edit", "{sample}", "-o", "{tmp}/o.xyz", "--target", "x", "--model", "tiny", "--steps", "2"],
     "unknown image type"),
    (["edit", "{sample}", "-o", "{tmp}/o.png", "--target", "x", "--save-mask", "{sample}"],
     "--save-mask {sample} is the input photo"),
    (["edit", "{sample}", "-o", "{tmp}/o.png", "--target", "x", "--mask", "{tmp}/user.png",
      "--save-mask", "{tmp}/user.png"], "is the --mask file"),
    (["edit", "{sample}", "-o", "{tmp}/o.png", "--target", "x", "--save-heatmap", "{tmp}/o.png"],
     "both name"),
    (["edit", "{sample}", "-o", "{tmp}/o.png", "--target", "x", "--report", "{tmp}/no/r.json"],
     "the folder {tmp}/no does not exist"),
    (["edit", "{sample}", "-o", "{tmp}/o.png", "--target", "x", "--save-mask", "{tmp}/m.xyz"],
     "unknown image type"),
    (["mask", "{sample}", "-o", "{tmp}/m.png", "--target", "x", "--heatmap", "{sample}"],
     "is the input photo"),
    (["edit", "{sample}", "-o", "{tmp}/o.png", "--target", "x", "--mask", "{sample2}"], "must match"),
    (["edit", "{sample}", "-o", "{sample}", "--target", "x"], "is the input photo"),
    (["edit", "{sample}", "-o", "{tmp}/o.png", "--target", "x", "--model", "{tmp}/m.ckpt"], "pickle"),
    (["edit", "{sample}", "-o", "{tmp}/o.png", "--target", "x"], "no model"),
    (["edit"], "required"),
    (["mdoels"], "unknown command 'mdoels'"),
])
def test_user_mistakes_exit_2_with_one_error_line(tmp_path, samples_dir, capsys, args, message):
    (tmp_path / "m.ckpt").write_bytes(b"x")
    Image.new("L", (600, 400), 255).save(tmp_path / "user.png")
    fill = dict(sample=samples_dir / "coffee.png", sample2=samples_dir / "chelsea.png", tmp=tmp_path)
    filled = [a.format(**fill) for a in args]
    code = cli.main(filled)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ")
    assert "Traceback" not in "\n".join(err)
    assert message.format(**fill) in err[-1]
    assert (samples_dir / "coffee.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # never touched


def test_a_typo_in_a_subcommand_is_an_error_not_the_app(tmp_path):
    typo = run_cli("mdoels")
    assert typo.returncode == 2 and "unknown command 'mdoels'" in typo.stderr


def test_internal_failure_exits_1(monkeypatch, tmp_path, samples_dir, capsys):
    import engine.session

    def boom(*a, **k):
        raise RuntimeError("simulated engine bug")

    monkeypatch.setattr(engine.session.EditSession, "run", boom)
    code = cli.main(["edit", str(samples_dir / "coffee.png"), "-o", str(tmp_path / "o.png"),
                     "--target", "x", "--quiet", *FAST])
    assert code == 1
    assert "simulated engine bug" in capsys.readouterr().err


@pytest.mark.slow
def test_process_exit_codes_and_no_traceback(tmp_path, samples_dir):
    ok = run_cli("edit", samples_dir / "chelsea.png", "-o", tmp_path / "o.jpg", "--target", "a dog",
                 "--source", "a cat", *FAST)
    assert ok.returncode == 0, ok.stderr
    assert Image.open(tmp_path / "o.jpg").size == (451, 300)
    bad = run_cli("edit", samples_dir / "chelsea.png", "-o", tmp_path / "o.png", "--target", "a dog",
                  "--guidance", "99", *FAST)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["error: --guidance must be from 0.0 to 50.0, got 99.0"]


def test_options_of_another_method_are_refused(tmp_path, samples_dir, capsys):
    code = cli.main(["edit", str(samples_dir / "coffee.png"), "-o", str(tmp_path / "o.png"),
                     "--target", "x", "--candidates", "3", *FAST])
    assert code == 2
    assert "--candidates do not apply to --method diffedit" in capsys.readouterr().err
