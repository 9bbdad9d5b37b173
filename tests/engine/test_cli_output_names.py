"""Every file an `edit` will write is checked before any work, including the OUT-1..OUT-N names of a
run with several results: none may replace the photo, the mask or another output."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from engine import cli


def _files(folder):
    """Every file in ``folder`` with its bytes and modification time."""
    return {p.name: (p.read_bytes(), os.stat(p).st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.fixture
def folder(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rocket-2.jpg")
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 20:40] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    Image.fromarray(mask).save(tmp_path / "c-2.png")
    return tmp_path


def _edit(folder, *args):
    return cli.main(["edit", str(folder / "rocket-2.jpg"), "--target", "a bird", "--model", "tiny",
                     "--quiet", "--steps", "2", *map(str, args)])


@pytest.mark.parametrize("args, message", [
    # 4 candidates by default: rocket.jpg writes rocket-1..rocket-4, and rocket-2 is the photo.
    (["-o", "{d}/rocket.jpg", "--method", "blended", "--mask", "{d}/mask.png"],
     "-o (result 2 of 4) {d}/rocket-2.jpg is the input photo"),
    # --overwrite lets -o itself replace the photo, never a candidate's derived name.
    (["-o", "{d}/rocket.jpg", "--method", "blended", "--mask", "{d}/mask.png", "--overwrite"],
     "-o (result 2 of 4) {d}/rocket-2.jpg is the input photo"),
    (["-o", "{d}/c.png", "--method", "blended", "--mask", "{d}/c-2.png"],
     "-o (result 2 of 4) {d}/c-2.png is the --mask file"),
    (["-o", "{d}/c.png", "--method", "blended", "--mask", "{d}/mask.png", "--save-mask", "{d}/c-1.png"],
     "--save-mask and -o (result 1 of 4) both name {d}/c-1.png"),
    (["-o", "{d}/c.png", "--method", "blended", "--mask", "{d}/mask.png", "--candidates", "3",
      "--report", "{d}/c-3.png"],
     "--report and -o (result 3 of 3) both name {d}/c-3.png"),
])
def test_no_result_name_replaces_an_input_or_another_output(folder, capsys, args, message):
    before = _files(folder)
    code = _edit(folder, *(a.format(d=folder) for a in args))
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert message.format(d=folder) in err
    assert _files(folder) == before  # nothing written, nothing replaced


@pytest.mark.slow
def test_one_candidate_writes_the_plain_name_and_keeps_the_photo(folder):
    photo = (folder / "rocket-2.jpg").read_bytes()
    code = _edit(folder, "-o", folder / "rocket.png", "--method", "blended", "--mask",
                 folder / "mask.png", "--candidates", "1")
    assert code == 0
    assert (folder / "rocket.png").is_file() and not (folder / "rocket-1.png").exists()
    assert (folder / "rocket-2.jpg").read_bytes() == photo


@pytest.mark.slow
def test_several_candidates_beside_the_photo_leave_it_untouched(folder):
    photo = (folder / "rocket-2.jpg").read_bytes()
    code = _edit(folder, "-o", folder / "bird.png", "--method", "blended", "--mask",
                 folder / "mask.png", "--candidates", "2")
    assert code == 0
    assert (folder / "bird-1.png").is_file() and (folder / "bird-2.png").is_file()
    assert (folder / "rocket-2.jpg").read_bytes() == photo
