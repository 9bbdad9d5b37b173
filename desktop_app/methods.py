"""Editing methods the app offers, and which parameter fields each one shows.

DiffEdit is the only one today; the methods from issue 4 add an entry here (and an engine method)
and the parameter panel shows just their fields.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodInfo:
    key: str  # name the engine and the CLI use
    label: str  # shown in the method menu
    summary: str  # tooltip
    fields: tuple[str, ...]  # parameter widgets shown (EditParams names, plus "variations")
    finds_mask: bool = True  # offers "Find mask" (an automatic mask from the two prompts)


METHODS: dict[str, MethodInfo] = {
    "diffedit": MethodInfo(
        key="diffedit",
        label="DiffEdit",
        summary="Finds where the two prompts disagree, then re-generates only there.",
        fields=("steps", "strength", "guidance", "mask_threshold", "mask_samples", "feather",
                "eta", "seed", "variations"),
    ),
}
DEFAULT_METHOD = "diffedit"
