"""The editing methods: a light registry (names, titles, options) and lazy access to their code.

Importing this package does not import torch, so the app can list methods and build their
option panels before the model loads. Each method module under engine/methods/ defines
``run(session, ctx, source, target, mask, params, options) -> list[EditResult]``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from engine.errors import InputError
from engine.methods import options as _options


@dataclass(frozen=True)
class MethodInfo:
    name: str  # used by --method and in saved metadata
    title: str  # shown in the app's method menu
    summary: str  # what it is good for (tooltip, README)
    options: type  # frozen dataclass of the method's own options (engine.methods.options)
    mask: str  # "auto" (finds its own), "required" (user mask), "optional", or "none"


METHODS: dict[str, MethodInfo] = {
    info.name: info
    for info in (
        MethodInfo("diffedit", "DiffEdit", "Change an object by describing it: the mask is found "
                   "from the two texts, refined by you, and only that area is regenerated.",
                   _options.DiffEditOptions, "auto"),
        MethodInfo("blended", "Blended Latent Diffusion", "Generate new content from the target "
                   "text inside a mask you paint; also background replacement, extending the photo "
                   "and scribble guidance.", _options.BlendedOptions, "optional"),
        MethodInfo("sdedit", "SDEdit", "Re-imagine the whole photo (or a masked part) under the "
                   "target text at a chosen strength; the classic baseline.",
                   _options.SDEditOptions, "optional"),
        MethodInfo("p2p", "Prompt-to-Prompt", "Edit by changing words of a caption: swap, add or "
                   "re-weight words while the layout stays; a local blend keeps the change on the "
                   "edited words' area.", _options.PromptToPromptOptions, "optional"),
        MethodInfo("pnp", "Plug-and-Play", "Translate the whole photo to the target text while "
                   "keeping its structure (features and self-attention injected from the photo).",
                   _options.PlugAndPlayOptions, "none"),
    )
}


def info(name: str) -> MethodInfo:
    try:
        return METHODS[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}") from None


def result_count(name: str, options: dict) -> int:
    """How many results one run of method ``name`` returns with ``options``: its candidates, else one."""
    return int(options.get("candidates", getattr(info(name).options(), "candidates", 1)))


def implementation(name: str):
    """The module that runs method ``name`` (imports torch)."""
    info(name)
    return importlib.import_module(f"engine.methods.{name}")
