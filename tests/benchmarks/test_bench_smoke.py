"""Keeps the DiffEdit benchmark script working: a few-step run on the tiny model, repeated twice, figures
checked for shape, for the UNet work each pipeline must do and for the repeat bookkeeping (never for timings)."""

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # the benchmark script end to end, and the app's engine thread
BENCH = Path(__file__).with_name("bench_diffedit.py")
STEPS, SAMPLES = 4, 2
REPEAT = 2
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
                          "--repeat", str(REPEAT), "--json", str(out)])
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
    assert preview["unet_step_calls"] == REPEAT * ENCODED  # one CFG call per decoding step, every repeat
    assert preview["ratio"] is not None and preview["ratio"] > 0
    targets = figures["targets"]
    assert len(targets) == 8
    # Both scenarios ran, so every target has a measured value and a verdict.
    assert all(row["value"] is not None and isinstance(row["passed"], bool) for row in targets)


def test_every_repeat_is_recorded_and_each_side_reports_its_median_run(figures):
    sides = {"reference": figures["reference"], "ours": figures["ours"],
             "re-edit": {"total": figures["interactive"]["re_edit"],
                         "repeats": figures["interactive"]["re_edit_repeats"]}}
    for name, side in sides.items():
        repeats = side["repeats"]
        totals = repeats["totals_seconds"]
        assert len(totals) == REPEAT and all(t > 0 for t in totals), name
        # With two runs the median is the lower one; the figures shown are that run's own.
        assert repeats["median_repeat"] == totals.index(min(totals)), name
        assert side["total"]["seconds"] == totals[repeats["median_repeat"]], name
        assert (repeats["min_seconds"], repeats["max_seconds"]) == (min(totals), max(totals)), name
    ours = figures["ours"]
    assert figures["interactive"]["first_edit"] == ours["total"]
    assert figures["interactive"]["first_edit_repeats"] == ours["repeats"]


def test_targets_come_from_the_medians_and_ratios_are_paired_per_repeat(figures):
    ref, ours, loop = figures["reference"], figures["ours"], figures["interactive"]
    rows = {row["target"]: row["value"] for row in figures["targets"]}
    assert rows["Wall time of an edit, ours / reference"] == pytest.approx(
        ours["total"]["seconds"] / ref["total"]["seconds"])
    assert rows["Re-edit after a mask stroke / our first edit"] == pytest.approx(
        loop["re_edit"]["seconds"] / loop["first_edit"]["seconds"])
    pairs = zip(ours["repeats"]["totals_seconds"], ref["repeats"]["totals_seconds"])
    assert figures["wall_ratio_per_repeat"] == pytest.approx([o / r for o, r in pairs])
    pairs = zip(loop["re_edit_repeats"]["totals_seconds"], ours["repeats"]["totals_seconds"])
    assert loop["re_edit_vs_first_per_repeat"] == pytest.approx([e / f for e, f in pairs])
    assert figures["config"]["repeat"] == REPEAT


def test_unet_work_is_the_same_in_every_repeat_and_summarised_per_repeat(figures):
    calls = figures["unet_calls"]
    # Work inside the repeats is reported per repeat; the warm-up happened once.
    assert calls["warm-up"]["repeats"] == 1
    assert calls["ours/mask"]["repeats"] == REPEAT
    assert calls["ours/mask"]["unet_evals"] == figures["ours"]["stages"]["mask"]["unet_evals"]
    assert calls["reference/mask"]["unet_evals"] == figures["reference"]["stages"]["mask"]["unet_evals"]
    assert calls["ours/re-edit/decode"]["unet_evals"] == figures["interactive"]["re_edit"]["unet_evals"]


def test_check_same_work_names_the_stage_whose_work_changed(bench):
    probe = bench.UnetProbe.__new__(bench.UnetProbe)  # only its call log is needed
    probe.calls = [(None, "warm-up", 3, 0.1), (0, "ours/mask", 4, 0.1), (0, "ours/decode", 6, 0.1),
                   (1, "ours/mask", 4, 0.1), (1, "ours/decode", 6, 0.1)]
    assert bench.check_same_work(probe, 2) == {"ours/mask": 4, "ours/decode": 6}
    probe.calls.append((2, "ours/decode", 6, 0.1))  # repeat 2 skipped its mask: a cache survived
    with pytest.raises(bench.BenchmarkError, match=r"repeat 2 \(ours/mask: 4 vs 0\)"):
        bench.check_same_work(probe, 3)


def test_median_run_keeps_the_whole_middle_run(bench):
    runs = [{"total": {"seconds": s}, "stages": {"mask": {"seconds": s / 2}}} for s in (3.0, 1.0, 2.0)]
    chosen = bench.median_run(runs)
    assert chosen["total"]["seconds"] == 2.0 and chosen["stages"]["mask"]["seconds"] == 1.0
    assert chosen["repeats"] == {"totals_seconds": [3.0, 1.0, 2.0], "median_repeat": 2,
                                 "min_seconds": 1.0, "max_seconds": 3.0}
    assert bench.median_run(runs[:2])["repeats"]["median_repeat"] == 1  # even count: the lower middle


def test_repeats_alternate_which_side_goes_first_on_a_fresh_session(bench, monkeypatch):
    log = []

    def fake_ours(session, mask, params, source, target, recorder, label):
        log.append(("ours", recorder.probe.repeat, session))
        return {"total": {}}, SimpleNamespace(heatmap=None)

    monkeypatch.setattr(bench, "run_reference",
                        lambda *args: log.append(("reference", args[-1].probe.repeat, None)) or {})
    monkeypatch.setattr(bench, "run_ours", fake_ours)
    monkeypatch.setattr(bench, "run_re_edit",
                        lambda session, *args: log.append(("re-edit", args[-1].probe.repeat, session)))
    recorder = SimpleNamespace(probe=SimpleNamespace(repeat=None))
    photo = np.zeros((64, 64, 3), np.uint8)
    sessions = []
    for index in range(3):
        log.clear()
        bench.run_repeat(index, None, photo, photo, None, "a", "b", recorder, {"compare", "interactive"})
        assert [side for side, _, _ in log] == (["reference", "ours", "re-edit"] if index % 2 == 0
                                                else ["ours", "re-edit", "reference"])
        assert {repeat for _, repeat, _ in log} == {index}  # the probe knew the repeat
        # Sessions are kept (not their ids, which a collected object may hand on).
        ours_sessions = [session for side, _, session in log if side != "reference"]
        assert ours_sessions[0] is ours_sessions[1]  # the re-edit reuses the repeat's own session
        sessions.append(ours_sessions[0])
    assert recorder.probe.repeat is None
    assert len({id(session) for session in sessions}) == 3  # a fresh session every repeat


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
    assert bench.main(["--repeat", "0"]) == 2
    assert "--repeat" in capsys.readouterr().err
    assert bench.main(["--steps", "0"]) == 2
    assert "steps" in capsys.readouterr().err
