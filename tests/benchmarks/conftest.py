"""Benchmarks are scripts run by hand; only the smoke test in this folder is collected by pytest."""

collect_ignore_glob = ["bench_*.py"]
