"""`diffedit-studio batch`: manifest checks before any work, outputs equal to single `edit` runs,
the journal that makes a killed batch resumable, and per-item failures."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from engine import batch, cli
from engine.fields import AUTO

FAST = ["--model", "tiny", "--steps", "4", "--mask-samples", "2"]


@pytest.fixture(autouse=True)
def _tiny_built(tiny_model_path):
    """`--model tiny` resolves to the same cached tiny model the fixture built."""


@pytest.fixture
def photos(tmp_path, samples_dir):
    """Five small photos (one JPEG) and two masks in tmp_path/in."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i, name in enumerate(["chelsea", "coffee", "rocket", "astronaut", "chelsea"]):
        image = Image.open(samples_dir / f"{name}{'.jpg' if name == 'rocket' else '.png'}")
        image = image.convert("RGB").resize((96 + 8 * i, 72))
        image.save(folder / (f"p{i}.jpg" if i == 2 else f"p{i}.png"))
    for i in (1, 3):
        mask = np.zeros((72, 96 + 8 * i), np.uint8)
        mask[20:50, 30:70] = 255
        Image.fromarray(mask).save(folder / f"m{i}.png")
    return folder


# Five items over the methods: an auto mask, a mask file, SDEdit into WebP, two Blended candidates
# (OUT-1, OUT-2) and Prompt-to-Prompt; each with the `edit` flags that should give the same bytes.
ITEMS = [
    ({"image": "p0.png", "source": "a cat", "target": "a dog", "seed": 3},
     ["p0.png", "--source", "a cat", "--target", "a dog", "--seed", "3"], ["p0.png"]),
    ({"image": "p1.png", "target": "a cup of tea", "mask": "m1.png", "feather": 2},
     ["p1.png", "--target", "a cup of tea", "--mask", "m1.png", "--feather", "2"], ["p1.png"]),
    ({"image": "p2.jpg", "target": "a painting", "method": "sdedit", "strength": 0.5,
      "output": "painted.webp"},
     ["p2.jpg", "--target", "a painting", "--method", "sdedit", "--strength", "0.5"],
     ["painted.webp"]),
    ({"image": "p3.png", "target": "a ball", "method": "blended", "mask": "m3.png",
      "candidates": 2, "seed": 7},
     ["p3.png", "--target", "a ball", "--method", "blended", "--mask", "m3.png", "--candidates",
      "2", "--seed", "7"], ["p3.png", "p3-1.png", "p3-2.png"]),  # p3: the best, beside all
    ({"image": "p4.png", "source": "a red cat", "target": "a blue cat", "method": "p2p"},
     ["p4.png", "--source", "a red cat", "--target", "a blue cat", "--method", "p2p"], ["p4.png"]),
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# ---- checked before any work -------------------------------------------------------------------

@pytest.mark.parametrize("rows, line, field", [
    ([{"image": "p0.png", "target": "a dog"}, {"image": "missing.png", "target": "a dog"}],
     2, "'image'"),
    ([{"image": "p0.png", "target": "a dog", "masked": True}], 1, "'masked'"),
    ([{"image": "p0.png", "target": "a dog"}, {"image": "p1.png", "target": "a dog"},
      {"image": "p1.png", "target": "a cup", "output": "p0.png"}], 3, "output"),
    ([{"image": "p0.png", "target": "a dog"}, {"image": "p1.png", "target": "a dog", "seed": -1}],
     2, "'seed'"),
    ([{"image": "p0.png", "target": "a dog", "seed": "three"}], 1, "'seed'"),
    ([{"image": "p0.png", "target": "a dog", "colour": "red"}], 1, "'colour'"),
    ([{"image": "p0.png", "target": "a dog", "mask": "m1.png"}], 1, "'mask'"),  # wrong size
    ([{"image": "p0.png"}], 1, "'target'"),
    ([{"image": "p0.png", "target": "a ball", "method": "blended"}], 1, "needs a mask"),
    ([{"image": "p0.png", "target": "a dog", "output": "../p0.png"}], 1, "'output'"),
])
def test_a_bad_manifest_exits_2_naming_line_and_field_and_writes_nothing(
        photos, tmp_path, capsys, rows, line, field):
    manifest = write_jsonl(photos / "batch.jsonl", rows)
    out = tmp_path / "out"
    before = sorted(photos.iterdir())
    assert cli.main(["batch", str(manifest), "--out-dir", str(out), *FAST]) == 2
    message = one_error(capsys)
    assert f"batch.jsonl line {line}" in message and field in message
    assert not out.exists() and sorted(photos.iterdir()) == before


def test_a_duplicate_output_names_both_lines(photos, tmp_path, capsys):
    manifest = write_jsonl(photos / "batch.jsonl", [
        {"image": "p0.png", "target": "a dog", "output": "same.png"},
        {"image": "p1.png", "target": "a dog"},
        {"image": "p2.jpg", "target": "a dog", "output": "same.png"}])
    assert cli.main(["batch", str(manifest), "--out-dir", str(tmp_path / "out"), *FAST]) == 2
    message = one_error(capsys)
    assert "line 3" in message and "line 1" in message and "same.png" in message


def test_csv_cells_are_typed_and_a_bad_one_is_named(photos, tmp_path, capsys):
    (photos / "batch.csv").write_text("image,target,seed,strength,masked,method,mask\n"
                                      "p1.png,a dog,4,0.6,yes,sdedit,m1.png\n"
                                      "p0.png,a cup,,,,,\n", encoding="utf-8")
    defaults = batch.Defaults(target="", params=batch.EditParams(steps=4))
    first, second = batch.read_manifest(photos / "batch.csv", tmp_path, defaults, "tiny")
    assert (first.method, first.params.seed, first.params.strength, first.options) == (
        "sdedit", 4, 0.6, {"masked": True})
    assert (second.method, second.params.seed, second.params.strength) == ("diffedit", 0, 0.8)
    assert first.mask == photos / "m1.png" and second.mask is None
    assert second.image == photos / "p0.png" and second.outputs == (tmp_path / "p0.png",)
    (photos / "bad.csv").write_text("image,target,steps\np0.png,a dog,4\np1.png,a dog,many\n",
                                    encoding="utf-8")
    assert cli.main(["batch", str(photos / "bad.csv"), "--out-dir", str(tmp_path / "o"), *FAST]) == 2
    message = one_error(capsys)
    assert "bad.csv line 3, field 'steps'" in message and "whole number" in message


def test_each_item_gets_its_methods_own_defaults_unless_a_value_is_given(photos, tmp_path):
    (photos / "methods.csv").write_text("image,target,source,method,strength\n"
                                        "p0.png,a dog,a cat,p2p,\n"
                                        "p1.png,a dog,a cat,p2p,0.5\n"
                                        "p2.jpg,a dog,,,\n", encoding="utf-8")
    items = batch.read_manifest(photos / "methods.csv", tmp_path, batch.Defaults(target=""), "tiny")
    # Prompt-to-Prompt inverts fully by default; a given ratio wins; DiffEdit keeps its 0.8.
    assert [item.params.strength for item in items] == [1.0, 0.5, 0.8]
    flags = batch.Defaults(target="", params=batch.EditParams(strength=0.6))  # --strength 0.6
    assert {item.params.strength for item in batch.read_manifest(
        photos / "methods.csv", tmp_path, flags, "tiny")} == {0.6, 0.5}


def test_an_item_without_a_feather_gets_its_photos_default_as_edit_does(tmp_path, tiny_model):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.full((900, 1200, 3), 120, np.uint8)).save(folder / "big.png")
    mask = np.zeros((900, 1200), np.uint8)
    mask[300:600, 400:800] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    manifest = write_jsonl(folder / "batch.jsonl", [
        {"image": "big.png", "target": "a dog", "mask": "mask.png"},
        {"image": "big.png", "target": "a dog", "mask": "mask.png", "feather": 0, "output": "b.png"}])
    flags = batch.Defaults(params=batch.EditParams(steps=2))  # no --feather: AUTO
    items = batch.read_manifest(manifest, tmp_path / "out", flags, "tiny")
    # 4 working px of the tiny model's 128 px side cover 32 px of a 1200x900 photo; a given
    # feather is kept.
    assert [batch._edit(tiny_model, item)[1][0].params.feather for item in items] == [32, 0]
    given = batch.read_manifest(manifest, tmp_path / "out", batch.Defaults(
        params=batch.EditParams(steps=2, feather=4)), "tiny")  # --feather 4
    assert batch._edit(tiny_model, given[0])[1][0].params.feather == 4
    assert given[0].digest != items[0].digest


def test_outputs_are_never_inputs_and_existing_files_are_never_replaced(photos, tmp_path, capsys):
    manifest = write_jsonl(photos / "batch.jsonl", [{"image": "p0.png", "target": "a dog"}])
    # The output folder is the photos' own: p0.png would replace its photo.
    assert cli.main(["batch", str(manifest), "--out-dir", str(photos), *FAST]) == 2
    assert "is the photo of batch.jsonl line 1" in one_error(capsys)
    # A file already there that this batch did not write.
    out = tmp_path / "out"
    out.mkdir()
    (out / "p0.png").write_bytes(b"the user's own file")
    assert cli.main(["batch", str(manifest), "--out-dir", str(out), *FAST]) == 2
    assert "not from this batch" in one_error(capsys)
    assert (out / "p0.png").read_bytes() == b"the user's own file"
    assert sorted(os.listdir(out)) == ["p0.png"]


def test_a_folder_is_every_photo_in_it_with_the_flags(photos, tmp_path):
    (photos / "notes.txt").write_text("not a photo")
    (photos / ".hidden.png").write_bytes((photos / "p0.png").read_bytes())
    items = batch.read_manifest(photos, tmp_path / "out", batch.Defaults(target="a dog"), "tiny")
    assert [item.image.name for item in items] == ["m1.png", "m3.png", "p0.png", "p1.png",
                                                   "p2.jpg", "p3.png", "p4.png"]
    assert {item.target for item in items} == {"a dog"}
    assert items[4].outputs == (tmp_path / "out" / "p2.jpg",)


def test_ray_without_the_extra_says_how_to_install_it(photos, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    manifest = write_jsonl(photos / "batch.jsonl", [{"image": "p0.png", "target": "a dog"}])
    assert cli.main(["batch", str(manifest), "--out-dir", str(tmp_path / "out"), "--ray", *FAST]) == 2
    assert "pip install 'diffedit-studio[cluster]'" in one_error(capsys)
    assert not (tmp_path / "out").exists()


# ---- running -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_five_items_equal_five_single_edits_byte_for_byte(photos, tmp_path, threads_restored):
    import torch

    torch.set_num_threads(1)  # as an earlier run in the process may leave it: batch uses its own
    manifest = write_jsonl(photos / "batch.jsonl", [row for row, _, _ in ITEMS])
    out, single = tmp_path / "out", tmp_path / "single"
    single.mkdir()
    report = tmp_path / "report.json"
    assert cli.main(["batch", str(manifest), "--out-dir", str(out), "--quiet", "--report",
                     str(report), *FAST]) == 0
    for _, flags, names in ITEMS:
        args = [str(photos / flags[0]), "-o", str(single / names[0])]
        args += [str(photos / a) if a.startswith("m") and a.endswith(".png") else a for a in flags[1:]]
        assert cli.main(["edit", *args, "--quiet", *FAST]) == 0
        for name in names:
            assert (out / name).read_bytes() == (single / name).read_bytes(), name
    data = json.loads(report.read_text())
    assert data["counts"] == {"done": 5, "skipped": 0, "failed": 0, "not run": 0}
    assert [len(row["outputs"]) for row in data["items"]] == [1, 1, 1, 3, 1]
    assert data["items"][0]["unet_evals"] == {"mask": 4, "encode": 3, "decode": 6}
    assert data["unet_evals"] == sum(sum(row["unet_evals"].values()) for row in data["items"])
    # A rerun finds every item finished: nothing is rewritten.
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert cli.main(["batch", str(manifest), "--out-dir", str(out), "--quiet", "--report",
                     str(report), *FAST]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != batch.JOURNAL} == {
        name: stamp for name, stamp in stamps.items() if name != batch.JOURNAL}
    assert json.loads(report.read_text())["counts"]["skipped"] == 5


@pytest.mark.slow
def test_a_failing_item_is_recorded_and_the_batch_goes_on(photos, tmp_path, capsys):
    whole = (photos / "p0.png").read_bytes()
    (photos / "cut.png").write_bytes(whole[: len(whole) * 2 // 3])  # a copy cut short: opens, fails
    manifest = write_jsonl(photos / "batch.jsonl", [
        {"image": "cut.png", "target": "a dog"}, {"image": "p1.png", "target": "a cup of tea"}])
    out, report = tmp_path / "out", tmp_path / "report.json"
    code = cli.main(["batch", str(manifest), "--out-dir", str(out), "--quiet", "--report",
                     str(report), *FAST])
    assert code == batch.SOME_FAILED
    assert "failed: batch.jsonl line 1: cannot open" in capsys.readouterr().err
    assert (out / "p1.png").is_file() and not (out / "cut.png").exists()
    data = json.loads(report.read_text())
    assert [row["status"] for row in data["items"]] == ["failed", "done"]
    assert "damaged or incomplete" in data["items"][0]["error"]
    journal = [json.loads(line) for line in (out / batch.JOURNAL).read_text().splitlines()]
    assert [(r["key"], r["state"]) for r in journal] == [
        ("cut.png", "started"), ("p1.png", "started"), ("cut.png", "failed"), ("p1.png", "done")]
    # A rerun tries the failed item again and leaves the finished one alone.
    stamp = (out / "p1.png").stat().st_mtime_ns
    assert cli.main(["batch", str(manifest), "--out-dir", str(out), "--quiet", *FAST]) == batch.SOME_FAILED
    assert (out / "p1.png").stat().st_mtime_ns == stamp
    assert (out / batch.JOURNAL).read_text().count('"failed"') == 2


@pytest.mark.slow
def test_sigkill_then_rerun_keeps_finished_outputs_and_does_the_rest(photos, tmp_path):
    rows = [{"image": f"p{i % 5}.{'jpg' if i % 5 == 2 else 'png'}", "target": "a dog",
             "seed": i, "output": f"out{i}.png"} for i in range(6)]
    manifest = write_jsonl(photos / "batch.jsonl", rows)
    out = tmp_path / "out"
    args = ["batch", str(manifest), "--out-dir", str(out), "--quiet", *FAST]
    process = subprocess.Popen([sys.executable, "-m", "engine", *args], stderr=subprocess.PIPE)
    journal = out / batch.JOURNAL
    deadline = time.monotonic() + 300
    try:
        while not (journal.is_file() and '"done"' in journal.read_text()):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no item finished in 300 s"
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    records = [json.loads(line) for line in journal.read_text().splitlines() if line.endswith("}")]
    done = {r["key"] for r in records if r["state"] == "done"}
    assert 1 <= len(done) < len(rows), "the kill must land mid-batch"
    finished = {name: ((out / name).read_bytes(), (out / name).stat().st_mtime_ns) for name in done}
    assert cli.main(args) == 0
    for name, (data, stamp) in finished.items():
        assert (out / name).read_bytes() == data and (out / name).stat().st_mtime_ns == stamp
    assert sorted(p.name for p in out.iterdir()) == sorted([batch.JOURNAL, *(r["output"] for r in rows)])


@contextlib.contextmanager
def time_limit(seconds: int):
    """Fail (rather than hang) when a block runs longer than ``seconds``."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.slow
def test_ray_gives_the_bytes_of_a_local_batch_and_resumes_from_the_journal(photos, tmp_path):
    ray = pytest.importorskip("ray", reason="the optional extra diffedit-studio[cluster] is not "
                              "installed")
    pytest.importorskip("ray.data")
    manifest = write_jsonl(photos / "batch.jsonl", [ITEMS[0][0], ITEMS[3][0]])
    local, clustered = tmp_path / "local", tmp_path / "ray"
    assert cli.main(["batch", str(manifest), "--out-dir", str(local), "--quiet", *FAST]) == 0
    report = tmp_path / "report.json"
    with time_limit(600):
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
        try:
            args = ["batch", str(manifest), "--out-dir", str(clustered), "--ray", "--actors", "2",
                    "--quiet", "--report", str(report), *FAST]
            assert cli.main(args) == 0
            names = sorted(p.name for p in local.iterdir())
            assert sorted(p.name for p in clustered.iterdir()) == names
            for name in names:
                if name != batch.JOURNAL:
                    assert (clustered / name).read_bytes() == (local / name).read_bytes(), name
            assert json.loads(report.read_text())["counts"]["done"] == 2
            # The journal makes a Ray run resumable too: a finished output is deleted, the rerun
            # makes only that one again.
            (clustered / "p0.png").unlink()
            assert cli.main(args) == 0
            assert (clustered / "p0.png").read_bytes() == (local / "p0.png").read_bytes()
            counts = json.loads(report.read_text())["counts"]
            assert (counts["done"], counts["skipped"]) == (1, 1)
        finally:
            ray.shutdown()


def test_the_apps_command_line_parses_back_to_the_same_settings(tmp_path):
    import shlex

    params = batch.EditParams(steps=20, strength=0.6, guidance=5.0, mask_threshold=0.4,
                              mask_samples=4, feather=2, seed=9, eta=0.2,
                              negative_prompt="blurry, 'odd' quotes")
    options = {"action": "background", "candidates": 2, "extend_left": 0, "extend_right": 0,
               "extend_top": 0, "extend_bottom": 0, "clip_model": ""}
    line = batch.command_line("/models/my sd", "blended", "a bowl of fruit", "a bowl of pears",
                              params, options)
    words = shlex.split(line)
    assert words[:5] == ["diffedit-studio", "batch", "PHOTOS_FOLDER", "--out-dir", "RESULTS_FOLDER"]
    args = cli.build_parser().parse_args(words[1:])
    assert (args.model, args.method, args.source, args.target) == (
        "/models/my sd", "blended", "a bowl of fruit", "a bowl of pears")
    assert cli._params(args) == params
    assert cli._method_options(args) == {"action": "background", "candidates": 2}
    # At the method's defaults nothing but the texts is spelled out (an Auto feather is the
    # batch's default too: it scales with each photo); a feather in px is.
    plain = batch.command_line("", "diffedit", "", "a dog", batch.EditParams(), {})
    assert shlex.split(plain)[5:] == ["--target", "a dog"]
    p2p = batch.command_line("", "p2p", "a cat", "a dog", batch.EditParams(strength=1.0, feather=4), {})
    assert shlex.split(p2p)[5:] == ["--method", "p2p", "--source", "a cat", "--target", "a dog",
                                    "--feather", "4"]
    auto = cli.build_parser().parse_args(["batch", "PHOTOS", "--out-dir", "OUT", "--feather", "-1"])
    assert cli._params(auto).feather == AUTO
