"""The `diffedit-studio` console script: the CLI's subcommands, or the editor for none (or a photo).

It lives in the app because it may open the window; the engine's CLI never imports the app.
"""

from __future__ import annotations

import sys
from pathlib import Path

from engine.cli import SUBCOMMANDS


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or names_a_photo(argv[0]):
        from desktop_app.app import main as app_main

        return app_main(argv)
    from engine.cli import main as cli_main

    return cli_main(argv)


def names_a_photo(arg: str) -> bool:
    """The `diffedit-studio PHOTO` form: anything that is not a subcommand or a flag and is an
    existing file or has an image suffix (the app reports a missing photo itself)."""
    from engine.imaging import SAVE_FORMATS

    if arg in SUBCOMMANDS or arg.startswith("-"):
        return False
    path = Path(arg)
    return path.is_file() or path.suffix.lower() in set(SAVE_FORMATS) | {".gif", ".bmp"}


if __name__ == "__main__":
    sys.exit(main())
