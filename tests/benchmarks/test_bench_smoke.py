"""Keeps the DiffEdit benchmark script working: a few-step run on the tiny model, figures checked for shape
and for the UNet work each pipeline must do (never for timings)."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).with_name("bench_diffedit.py")
STEPS, SAMPLES = 4, 2
ENCODED = 3  # 4 steps at strength 0.8: both pipelines encode and decode through 3 of them


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_diffedit", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def figures(bench, tiny_model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "figures.json"
    returned = bench.run(["--model", str(tiny_model_path), "--steps", str(STEPS),
                          "--mask-samples", str(SAMPLES), "--threads", "1", "--scenario", "both",
                          "--json", str(out)])
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written["targets"] == returned["targets"]
    return written


def test_reference_work_is_counted_per_stage(figures):
    stages = figures["reference"]["stages"]
    # generate_mask: source and target, each with CFG's unconditional half, per sample;
    # invert and __call__: CFG pairs at every encoded step.
    assert stages["mask"]["unet_evals"] == 4 * SAMPLES
    assert stages["encode"]["unet_evals"] == 2 * ENCODED
    assert stages["decode"]["unet_evals"] == 2 * ENCODED
    assert figures["reference"]["total"]["unet_evals"] == 4 * SAMPLES + 4 * ENCODED
    assert figures["reference"]["finite_output"]


def test_our_work_is_counted_and_matches_the_engines_own_count(figures):
    ours = figures["ours"]
    expected = {"mask": 2 * SAMPLES, "encode": ENCODED, "decode": 2 * ENCODED}
    assert {k: ours["stages"][k]["unet_evals"] for k in expected} == expected
    assert ours["engine_reported"]["unet_evals"] == expected
    assert ours["total"]["unet_evals"] == sum(expected.values())


def test_every_measured_block_has_time_and_memory(figures):
    blocks = [figures["reference"]["total"], figures["ours"]["total"],
              *figures["reference"]["stages"].values(), *figures["ours"]["stages"].values()]
    for block in blocks:
        assert block["seconds"] > 0
        assert block["peak_memory_bytes"] > 0
    assert figures["config"]["working_size"] == [160, 112]  # coffee.png at the tiny model's 128 px


def test_interactive_loop_reuses_mask_and_encoding(figures):
    loop = figures["interactive"]
    # A brush stroke changes only the mask: no new estimate, no new inversion, only decoding.
    assert loop["re_edit"]["unet_evals"] == 2 * ENCODED
    assert set(loop["re_edit_stages"]) >= {"decode"}
    assert "mask" not in loop["re_edit_stages"] and "encode" not in loop["re_edit_stages"]
    assert loop["rethreshold"]["unet_evals"] == 0
    assert loop["rethreshold"]["size"] == [1024, 1024]
    assert loop["rethreshold"]["seconds_median"] > 0


def test_preview_and_targets_are_reported(figures):
    preview = figures["preview"]
    assert preview["unet_step_calls"] == ENCODED  # one CFG call per decoding step
    assert preview["ratio"] is not None and preview["ratio"] > 0
    targets = figures["targets"]
    assert len(targets) == 8
    # Both scenarios ran, so every target has a measured value and a verdict.
    assert all(row["value"] is not None and isinstance(row["passed"], bool) for row in targets)


def test_gui_stall_is_measured_on_the_apps_engine_thread(bench, tiny_model_path):
    figures = bench.run(["--model", str(tiny_model_path), "--steps", str(STEPS), "--mask-samples",
                         str(SAMPLES), "--threads", "1", "--scenario", "gui"])
    gui = figures["gui"]
    assert gui["previews"] == ENCODED  # one preview per decoding step reached the GUI thread
    assert gui["ticks"] > 0 and gui["worst_stall_ms"] > 0
    [row] = figures["targets"]
    assert row["target"].startswith("Worst GUI-thread stall") and isinstance(row["passed"], bool)


def test_bad_arguments_are_clear_errors(bench, capsys, tmp_path):
    assert bench.main(["--photo", str(tmp_path / "missing.png")]) == 2
    assert "error:" in capsys.readouterr().err
    assert bench.main(["--sd-shaped", "--model", "tiny"]) == 2
    assert "--sd-shaped" in capsys.readouterr().err
    assert bench.main(["--steps", "0"]) == 2
    assert "steps" in capsys.readouterr().err
