"""Keeps the flow benchmark script working: one repeat on the tiny Z-Image-Turbo, its
evaluation counts checked (never its timings)."""

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the benchmark script end to end


def test_the_flow_benchmark_counts_both_sides_work(tiny_zimage_path, capsys):
    spec = importlib.util.spec_from_file_location("flow_bench", Path(__file__).with_name("flow_bench.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    figures = bench.run(["--model", str(tiny_zimage_path), "--repeat", "1", "--threads", "1"])
    result = figures[str(tiny_zimage_path)]
    rows = {name: (theirs["evals"], ours["evals"]) for name, theirs, ours in result["rows"]}
    # 8 Turbo steps; DiffEdit at strength 0.8: the pipeline runs int-truncated 7, we encode and
    # decode round(6.4) = 6; the automatic mask adds 2 samples x 2 texts.
    assert rows == {"Blended (inpaint)": (8, 8), "DiffEdit, user mask": (7, 12),
                    "DiffEdit, auto mask": (7, 16)}
    assert all(run["seconds"] > 0 for _, *sides in result["rows"] for run in sides)
    assert "| 8 | 1 | 2 | 16 |" in capsys.readouterr().out  # steps, guidance, samples, evaluations
