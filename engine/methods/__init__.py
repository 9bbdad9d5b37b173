"""The editing methods as plain values: what each needs and shows, its input checks, and lazy
access to its code.

Importing this package does not import torch, so the app can list methods, build their panels
and check a run's inputs before the model loads. Each method has here one ``MethodInfo`` (what
the CLI, the worker and the app need to know about it: the app compares no method names) and
one module engine/methods/<name>.py with ``run(session, ctx, source, target, mask, params,
options) -> list[EditResult]``.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from engine.errors import InputError
from engine.fields import from_dict
from engine.methods import options as _options
from engine.params import SEED_RANGE, EditParams

SEED_MAX = SEED_RANGE[1]
MASK_KINDS = ("auto", "user", "optional", "none")
EXTEND_SIDES = ("left", "right", "top", "bottom")  # the order of a margins tuple
# check_inputs(paint=PAINT_IN_PHOTO): the photo itself already carries a scribble's colours (the
# CLI's photo, or EditSession.run on a painted photo), so there is no separate layer to check.
PAINT_IN_PHOTO = "in photo"


@dataclass(frozen=True)
class Inputs:
    """What a method's own check reads: the run's inputs as plain values (options parsed)."""

    source: str
    target: str
    mask: np.ndarray | None  # the user's mask at the photo's size (1 = edit), or None
    params: EditParams
    options: object  # the method's options dataclass
    paint: object  # (colours, coverage) of a scribble layer, None, or PAINT_IN_PHOTO


def _no_checks(inputs: Inputs) -> None:
    """Methods without needs beyond the shared ones."""


def _no_margins(options) -> tuple[int, int, int, int]:
    return 0, 0, 0, 0


def _encode_decode(params: EditParams, options, has_mask: bool) -> dict[str, int]:
    """Methods that encode the photo through params.encode_steps and decode back."""
    return {"encode": params.encode_steps, "decode": params.encode_steps}


@dataclass(frozen=True)
class MethodInfo:
    name: str  # used by --method and in saved metadata
    title: str  # shown in the app's method menu
    summary: str  # what it is good for (tooltip, README)
    options: type  # frozen dataclass of the method's own options (engine.methods.options)
    # "auto": finds its own mask when none is given; "user": works in a mask the user paints
    # (check_inputs says when it may be missing); "optional": uses a mask when given; "none":
    # changes the whole photo.
    mask: str
    # Reads the source text itself, so the app asks for it (the others use it only as the fallback
    # negative prompt); check_inputs says when it may be empty.
    uses_source: bool
    params: tuple[str, ...]  # the EditParams fields its panel shows (resolution etc. are Settings)
    variations: bool  # repeating the run with the next seeds gives different results
    # A field (of EditParams or the options) shown only for some option values:
    # field -> (option, values it is shown for).
    shown_when: dict[str, tuple[str, tuple]] = field(default_factory=dict)
    checks: Callable[[Inputs], None] = _no_checks  # the method's own needs (InputError)
    # (left, right, top, bottom) px of canvas a run adds around the photo, from the options:
    # results are that much larger and the photo sits at (left, top) in them.
    margins: Callable[[object], tuple[int, int, int, int]] = _no_margins
    # The paint layer is part of the run's input for these option values: (option, values).
    paint_when: tuple[str, tuple] | None = None
    # stage -> steps one run reports (on_step totals), from (params, options, has_mask): the
    # app's time-left estimate.
    plan: Callable[[EditParams, object, bool], dict[str, int]] = _encode_decode
    # EditParams fields whose default differs for this method (its paper's and reference code's);
    # a value the user gives always wins.
    defaults: dict[str, object] = field(default_factory=dict)
    # What its target text is called: "instruction" for a method that takes an edit instruction
    # ("make the car red") instead of a description of the result (the CLI's --instruction, the
    # batch manifest's column, the app's label).
    target_name: str = "target"
    # A method of mask "optional" that finds its mask first (as an "auto" one) for these option
    # values when none is given: (option, values).
    auto_when: tuple[str, tuple] | None = None

    def shows(self, name: str, options: dict | None = None) -> bool:
        """Whether the panel shows ``name`` (an EditParams field, an option, or "variations")."""
        condition = self.shown_when.get(name)
        if condition is not None and (options or {}).get(condition[0]) not in condition[1]:
            return False
        if name == "variations":
            return self.variations
        return name in self.params or name in self.option_names()

    def default_params(self) -> EditParams:
        """EditParams' defaults with this method's own (``defaults``) in place."""
        return EditParams().replace(**self.defaults)

    def option_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.options))

    def default_options(self) -> dict:
        return dataclasses.asdict(self.options())

    def parse_options(self, options: dict | None):
        """The options dataclass from plain values; InputError naming an unknown or bad one."""
        return from_dict(self.options, options)

    def canvas_margins(self, options: dict | None) -> tuple[int, int, int, int]:
        """``margins`` for plain option values (defaults filled in)."""
        return tuple(int(v) for v in self.margins(self.parse_options(options)))

    def _option_in(self, when: tuple | None, options: dict | None) -> bool:
        """Whether ``when`` (option name, values) holds for these options (None: never)."""
        if when is None:
            return False
        option, values = when
        return getattr(self.parse_options(options), option) in values

    def takes_paint(self, options: dict | None) -> bool:
        """Whether a run with these options reads the paint layer (Blended's scribble)."""
        return self._option_in(self.paint_when, options)

    def finds_mask(self, options: dict | None = None) -> bool:
        """Whether a run with these options and no mask finds its mask first (``execute`` does,
        and the app offers Find mask)."""
        return self.mask == "auto" or self._option_in(self.auto_when, options)

    def step_plan(self, params: EditParams, options: dict | None, has_mask: bool) -> dict[str, int]:
        """``plan`` for plain option values: stage -> steps one run (variation) reports."""
        return dict(self.plan(params, self.parse_options(options), has_mask))


def check_inputs(method: str, source: str | None, target: str | None, mask, params: EditParams,
                 options: dict | None = None, paint=None):
    """Check a run's inputs before any work; return the parsed options.

    The one check every surface uses (CLI, worker, app), so each shows the same sentence:
    InputError names the field and the fix. ``mask`` is the user's mask (None: none given);
    ``paint`` a scribble's (colours, coverage) layer, None, or PAINT_IN_PHOTO.
    """
    info_ = info(method)
    parsed = info_.parse_options(options)
    if not isinstance(params, EditParams):
        raise InputError("params must be an EditParams")
    params.validate()
    if not isinstance(target, str) or not target.strip():
        if info_.target_name == "instruction":
            raise InputError("the instruction is empty: say what to change, e.g. \u201cmake the "
                             "car red\u201d", field="instruction")
        raise InputError("the target text is empty: say what the photo should become, e.g. "
                         "\u201ca bowl of pears\u201d", field="target")
    if source is not None and not isinstance(source, str):
        raise InputError("the source text must be text")
    if mask is not None and info_.mask != "none" and not (np.asarray(mask) > 0).any():
        hint = (" or clear it to have one found from the two texts" if info_.mask == "auto" else
                " or clear it to have one found for you" if info_.finds_mask(options) else "")
        raise InputError("the mask is empty, so nothing would change: paint the area to edit, "
                         f"load a mask{hint}, or lower the mask threshold", field="mask")
    info_.checks(Inputs((source or "").strip(), target.strip(), mask, params, parsed, paint))
    return parsed


def check_own(method: str, source: str, target: str, mask, params: EditParams, options) -> None:
    """Step 1 of a method's ``run``: its own needs, on parsed options (the photo carries any paint)."""
    info(method).checks(Inputs(source, target, mask, params, options, PAINT_IN_PHOTO))


def mask_unless_masked(method: str, mask, options) -> tuple[object, list[str]]:
    """The mask a method with a ``masked`` option runs with (None unless it is on) and the
    warning when a given mask is ignored."""
    if options.masked or mask is None:
        return mask, []
    return None, [f"{info(method).title} changed the whole photo and ignored the mask; turn "
                  "'masked' on to keep everything outside it"]


# ---- each method's own needs ------------------------------------------------------------------

def _blended_checks(inputs: Inputs) -> None:
    action = inputs.options.action
    if action != "extend" and inputs.mask is None:
        what = "the subject to keep" if action == "background" else "the area to change"
        raise InputError(f"Blended Latent Diffusion ({action}) needs a mask: paint {what} "
                         "(or load one)", field="mask")
    if action == "extend" and not any(_extend_margins(inputs.options)):
        raise InputError("extend adds no canvas: set extend_left, extend_right, extend_top or "
                         "extend_bottom (px of new canvas)", field="extend_left")
    if action == "scribble" and inputs.paint is not PAINT_IN_PHOTO and (
            inputs.paint is None or not np.any(np.asarray(inputs.paint[1]) > 0)):
        raise InputError("Scribble starts from colours you paint: choose Paint (P), pick a colour "
                         "and paint rough shapes inside the mask")
    last_seed = inputs.params.seed + inputs.options.candidates - 1
    if last_seed > SEED_MAX:
        raise InputError(f"seed {inputs.params.seed} leaves no room for "
                         f"{inputs.options.candidates} candidates (each takes the next seed, up "
                         f"to {SEED_MAX}); pick a smaller seed", field="seed")


def _extend_margins(options) -> tuple[int, int, int, int]:
    if options.action != "extend":
        return 0, 0, 0, 0
    return tuple(getattr(options, f"extend_{side}") for side in EXTEND_SIDES)


def _with_mask(params: EditParams, plan: dict[str, int], finds_mask: bool) -> dict[str, int]:
    """``plan`` led by the mask stage when the run finds its mask first."""
    return {"mask": params.mask_samples, **plan} if finds_mask else plan


def _diffedit_plan(params: EditParams, options, has_mask: bool) -> dict[str, int]:
    return _with_mask(params, _encode_decode(params, options, has_mask), not has_mask)


def _blended_plan(params: EditParams, options, has_mask: bool) -> dict[str, int]:
    steps = params.encode_steps if options.action == "scribble" else params.steps
    return {"decode": steps * options.candidates}


def _sdedit_plan(params: EditParams, options, has_mask: bool) -> dict[str, int]:
    return {"decode": params.encode_steps}


def _sdedit_checks(inputs: Inputs) -> None:
    if inputs.options.masked and inputs.mask is None:
        raise InputError("masked SDEdit needs a mask: paint the area to change, or turn 'masked' "
                         "off to change the whole photo", field="mask")


def _flowedit_plan(params: EditParams, options, has_mask: bool) -> dict[str, int]:
    return _with_mask(params, {"decode": params.encode_steps}, options.masked and not has_mask)


def _flowedit_checks(inputs: Inputs) -> None:
    if not inputs.source:
        raise InputError("FlowEdit moves the photo from what its text says to the target: give "
                         "the source text (what is in the photo now)", field="source")
    if inputs.options.n_min >= inputs.params.encode_steps:
        raise InputError(f"n_min ({inputs.options.n_min}) leaves no editing steps of the "
                         f"{inputs.params.encode_steps} the strength runs: lower n_min or raise "
                         "the strength or steps", field="n_min")


def _instruct_plan(params: EditParams, options, has_mask: bool) -> dict[str, int]:
    return _with_mask(params, {"decode": params.steps}, options.auto_mask and not has_mask)


def _p2p_checks(inputs: Inputs) -> None:
    if not inputs.source:
        raise InputError("Prompt-to-Prompt edits a caption of the photo: give the source text "
                         "(what is in the photo now)", field="source")


_SAMPLED = ("negative_prompt", "steps", "strength", "guidance", "mask_threshold", "feather", "eta",
            "seed")

METHODS: dict[str, MethodInfo] = {
    info.name: info
    for info in (
        MethodInfo("diffedit", "DiffEdit", "Change an object by describing it: the mask is found "
                   "from the two texts, refined by you, and only that area is regenerated.",
                   _options.DiffEditOptions, "auto", uses_source=True,
                   params=(*_SAMPLED[:5], "mask_samples", *_SAMPLED[5:]), variations=True,
                   plan=_diffedit_plan),
        MethodInfo("blended", "Blended Latent Diffusion", "Generate new content from the target "
                   "text inside a mask you paint; also background replacement, extending the photo "
                   "and scribble guidance.", _options.BlendedOptions, "user", uses_source=False,
                   params=_SAMPLED, variations=False,  # its candidates take the next seeds
                   # The other actions start from pure noise, so only scribble has a strength.
                   shown_when={"strength": ("action", ("scribble",)),
                               **{f"extend_{side}": ("action", ("extend",)) for side in EXTEND_SIDES}},
                   checks=_blended_checks, margins=_extend_margins,
                   paint_when=("action", ("scribble",)), plan=_blended_plan),
        MethodInfo("sdedit", "SDEdit", "Re-imagine the whole photo (or a masked part) under the "
                   "target text at a chosen strength; the classic baseline.",
                   _options.SDEditOptions, "optional", uses_source=False, params=_SAMPLED,
                   variations=True,
                   # Without 'masked' the mask is ignored, and with it its threshold and feather.
                   shown_when={"mask_threshold": ("masked", (True,)), "feather": ("masked", (True,))},
                   checks=_sdedit_checks, plan=_sdedit_plan),
        MethodInfo("p2p", "Prompt-to-Prompt", "Edit by changing words of a caption: swap, add or "
                   "re-weight words while the layout stays; a local blend keeps the change on the "
                   "edited words' area.", _options.PromptToPromptOptions, "optional",
                   uses_source=True,  # it inverts under the caption and maps its words
                   # Deterministic (no seed, eta or variations); the source is its negative text.
                   params=("steps", "strength", "guidance", "mask_threshold", "feather"),
                   variations=False, checks=_p2p_checks,
                   # It edits from the fully inverted photo (google/prompt-to-prompt inverts
                   # all 50 DDIM steps before editing).
                   defaults={"strength": 1.0}),
        MethodInfo("pnp", "Plug-and-Play", "Translate the whole photo to the target text while "
                   "keeping its structure (features and self-attention injected from the photo).",
                   _options.PlugAndPlayOptions, "none", uses_source=False,
                   params=("negative_prompt", "steps", "strength", "guidance", "eta", "seed"),
                   variations=True,
                   # It translates from the fully inverted photo (pnp-diffusers inverts to the
                   # last timestep and samples all 50 steps from there).
                   defaults={"strength": 1.0}),
        MethodInfo("flowedit", "FlowEdit", "Move the photo from its description to the target "
                   "text without inverting it (flow-matching models: FLUX.2 klein...); the whole "
                   "photo, or only a mask with the original pasted back outside.",
                   _options.FlowEditOptions, "optional", uses_source=True,
                   params=(*_SAMPLED[:5], "mask_samples", "feather", "seed"), variations=True,
                   # Without 'masked' there is no mask, so no threshold, samples or feather.
                   shown_when={name: ("masked", (True,))
                               for name in ("mask_threshold", "mask_samples", "feather")},
                   checks=_flowedit_checks, plan=_flowedit_plan),
        MethodInfo("instruct", "Instruction edit", "Say what to change (\u201cmake the car red\u201d) "
                   "to a model that edits from the photo (FLUX.2 klein, FLUX.1 Kontext, "
                   "Qwen-Image-Edit); the area it is about is found for you to refine, and only "
                   "that area changes (or the whole photo).",
                   _options.InstructOptions, "optional", uses_source=False,
                   params=("negative_prompt", "steps", "guidance", "mask_threshold", "mask_samples",
                           "feather", "seed"), variations=True, plan=_instruct_plan,
                   target_name="instruction", auto_when=("auto_mask", (True,))),
    )
}


def info(name: str) -> MethodInfo:
    try:
        return METHODS[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}") from None


def carry_params(params: EditParams, old: str, new: str) -> EditParams:
    """``params`` set for method ``old``, moved to method ``new``: a field still at ``old``'s own
    default takes ``new``'s (a ratio left at DiffEdit's 0.8 becomes Prompt-to-Prompt's 1.0); a
    field set to anything else is the user's and stays."""
    return params.carried(info(old).default_params(), info(new).default_params(),
                          {*info(old).defaults, *info(new).defaults})


def result_count(name: str, options: dict) -> int:
    """How many results one run of method ``name`` returns with ``options``: its candidates, else one."""
    return int(options.get("candidates", getattr(info(name).options(), "candidates", 1)))


def implementation(name: str, prediction_type: str = "noise"):
    """What runs method ``name`` (its ``run``; imports torch) on a backbone of
    ``prediction_type``: the method's module, or on a flow transformer engine.methods.dit's
    Prompt-to-Prompt and Plug-and-Play."""
    info(name)
    if prediction_type == "flow" and name in ("p2p", "pnp"):
        return importlib.import_module("engine.methods.dit").RUNNERS[name]
    return importlib.import_module(f"engine.methods.{name}")
