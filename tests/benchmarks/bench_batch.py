"""Benchmark `diffedit-studio batch`: photos per minute with the model loaded once (local), one
`edit` process per photo (the model loaded every time), and 2 Ray CPU actors.

Each mode is timed as the user runs it: wall-clock of the whole command, process start, model
load and Ray start-up included; the batch's own report gives the time after start-up. Outputs of
the local batch and of the per-photo edits are compared byte for byte.

    .venv/bin/python tests/benchmarks/bench_batch.py                       # tiny model, 8 photos
    .venv/bin/python tests/benchmarks/bench_batch.py --photos 20 --json figures.json
    .venv/bin/python tests/benchmarks/bench_batch.py --model PATH --device cuda --modes local,ray
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "resources" / "samples"
MODES = ("local", "per-photo", "ray")


def make_photos(folder: Path, count: int, side: int) -> Path:
    """``count`` photos cut from the samples, a manifest over them, in ``folder``."""
    from PIL import Image

    sources = sorted(SAMPLES.glob("*.png")) + sorted(SAMPLES.glob("*.jpg"))
    rows = []
    for i in range(count):
        with Image.open(sources[i % len(sources)]) as image:
            photo = image.convert("RGB").resize((side + 8 * (i % 3), side * 3 // 4))
        name = f"photo{i:03d}.png"
        photo.save(folder / name)
        rows.append({"image": name, "source": "a photo", "target": "a painting", "seed": i})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return manifest


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(command[:4])}... exited {done.returncode}:\n"
                         f"{done.stderr[-2000:]}")
    return time.perf_counter() - started


def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--side", type=int, default=128, help="photo width in px")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--mask-samples", type=int, default=2)
    parser.add_argument("--actors", type=int, default=2, help="Ray CPU actors")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: " + ", ".join(MODES))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(modes) - set(MODES))
    if unknown or args.photos < 1:
        parser.error(f"unknown mode(s) {', '.join(unknown)}" if unknown else "--photos must be >= 1")
    engine = [sys.executable, "-m", "engine"]
    flags = ["--model", args.model, "--device", args.device, "--steps", str(args.steps),
             "--mask-samples", str(args.mask_samples), "--quiet"]
    figures: dict = {"config": {**vars(args), "json": None, "cpus": os.cpu_count(),
                                "machine": platform.processor() or platform.machine()},
                     "modes": {}}
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as scratch:
        folder = Path(scratch)
        (folder / "in").mkdir()
        manifest = make_photos(folder / "in", args.photos, args.side)
        rows = [json.loads(line) for line in manifest.read_text().splitlines()]
        for mode in modes:
            out = folder / mode
            report = folder / f"{mode}.json"
            if mode == "per-photo":
                out.mkdir()
                seconds = sum(timed([*engine, "edit", str(folder / "in" / row["image"]), "-o",
                                     str(out / row["image"]), "--source", row["source"],
                                     "--target", row["target"], "--seed", str(row["seed"]),
                                     *flags]) for row in rows)
                inner = None
            else:
                extra = ["--ray", "--actors", str(args.actors), "--threads", "1"] if mode == "ray" else []
                seconds = timed([*engine, "batch", str(manifest), "--out-dir", str(out),
                                 "--report", str(report), *extra, *flags])
                inner = json.loads(report.read_text())["seconds"]
            figures["modes"][mode] = {"seconds": round(seconds, 2),
                                      "photos_per_minute": round(60 * args.photos / seconds, 2),
                                      "batch_seconds_after_start": inner}
        if {"local", "per-photo"} <= set(modes):
            same = all((folder / "local" / row["image"]).read_bytes()
                       == (folder / "per-photo" / row["image"]).read_bytes() for row in rows)
            figures["local_equals_per_photo"] = same
    if "local" in figures["modes"]:
        base = figures["modes"]["local"]["photos_per_minute"]
        for mode, row in figures["modes"].items():
            row["vs_local"] = round(row["photos_per_minute"] / base, 3)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return figures


def main(argv: list[str] | None = None) -> int:
    figures = run(argv)
    print(f"{figures['config']['photos']} photos, {figures['config']['steps']} steps, "
          f"model {figures['config']['model']}, {figures['config']['cpus']} CPUs\n")
    print("| mode | wall s | photos/min | vs local | batch s after start-up |")
    print("| --- | --- | --- | --- | --- |")
    for mode, row in figures["modes"].items():
        print(f"| {mode} | {row['seconds']} | {row['photos_per_minute']} | {row.get('vs_local', '-')} "
              f"| {row['batch_seconds_after_start'] if row['batch_seconds_after_start'] else '-'} |")
    if "local_equals_per_photo" in figures:
        print(f"\nlocal batch outputs equal the per-photo edits byte for byte: "
              f"{figures['local_equals_per_photo']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
