"""Rooms a newcomer can find: no module of the app grows past 600 lines (issue 11, point 7)."""

from pathlib import Path

LIMIT = 600
APP = Path(__file__).resolve().parents[2] / "desktop_app"


def test_no_app_module_is_over_600_lines():
    sizes = {str(path.relative_to(APP)): len(path.read_text(encoding="utf-8").splitlines())
             for path in APP.rglob("*.py")}
    assert len(sizes) > 20  # the app's modules were found
    assert {name: lines for name, lines in sizes.items() if lines > LIMIT} == {}
