"""Process-wide settings of the libraries we build on (diffusers, transformers), set in one place."""

from __future__ import annotations


def quiet_libraries() -> None:
    """Loading chatter and per-file progress bars belong to the libraries' own CLIs, not ours."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
