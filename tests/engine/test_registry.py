"""The method registry and the described EditParams fields: one table drives validation, the CLI's
flags and every surface's wording."""

import dataclasses

import numpy as np
import pytest

from engine import cli, fields, methods
from engine.errors import InputError
from engine.params import GUIDANCE_RANGE, SEED_RANGE, EditParams, field_table


def test_every_edit_parameter_is_described_and_its_range_is_what_validation_enforces():
    for name, f in field_table().items():
        assert f.metadata["help"] and fields.label(f), name
        EditParams().replace(**{name: f.default}).validate()
        kind = fields.kind(f)
        if kind in (int, float):
            low, high = f.metadata["range"]
            EditParams().replace(**{name: low}).validate()
            EditParams().replace(**{name: high}).validate()
            step = 1 if kind is int else 1e-3
            for bad in (low - step, high + step):
                if (bad == 0 and f.metadata["zero"]) or (bad == fields.AUTO and f.metadata["auto"]):
                    EditParams().replace(**{name: bad}).validate()  # a special value
                    bad = bad - step  # the one below it is refused
                with pytest.raises(InputError, match=f"^{name} must be from {low} to {high}"):
                    EditParams().replace(**{name: bad}).validate()
        elif kind is bool:
            with pytest.raises(InputError, match=f"^{name} must be true or false"):
                EditParams().replace(**{name: "yes"}).validate()
    assert field_table()["seed"].metadata["range"] == SEED_RANGE
    assert field_table()["guidance"].metadata["range"] == GUIDANCE_RANGE
    EditParams(resolution=0).validate()  # 0: the model's native size
    with pytest.raises(InputError, match="resolution must be from 64"):
        EditParams(resolution=32).validate()


def test_registry_metadata_is_consistent_with_the_parameters_and_options():
    params = set(field_table())
    for info in methods.METHODS.values():
        assert info.mask in methods.MASK_KINDS
        assert set(info.params) <= params, info.name
        for name, (option, values) in info.shown_when.items():
            assert name in params | set(info.option_names()), (info.name, name)
            assert option in info.option_names()
        defaults = info.default_options()
        assert info.parse_options(defaults) == info.options()
        plan = info.step_plan(EditParams(), defaults, has_mask=True)
        assert plan and all(v > 0 for v in plan.values())
    blended = methods.info("blended")
    assert blended.shows("strength", {"action": "scribble"})
    assert not blended.shows("strength", {"action": "inpaint"})
    assert not blended.shows("extend_left", {"action": "inpaint"})
    assert blended.canvas_margins({"action": "extend", "extend_left": 8, "extend_top": 16}) == (8, 0, 16, 0)
    assert blended.canvas_margins({"action": "inpaint", "extend_left": 8}) == (0, 0, 0, 0)
    assert blended.takes_paint({"action": "scribble"}) and not blended.takes_paint({})
    assert not methods.info("p2p").shows("seed") and not methods.info("p2p").shows("variations")
    assert methods.info("diffedit").step_plan(EditParams(), {}, False) == {"mask": 10, "encode": 40,
                                                                          "decode": 40}


MISTAKES = [  # (method, source, mask kind, options, the sentence's start)
    ("blended", "", None, {}, "Blended Latent Diffusion (inpaint) needs a mask"),
    ("blended", "", None, {"action": "background"}, "Blended Latent Diffusion (background) needs"),
    ("blended", "", None, {"action": "extend"}, "extend adds no canvas"),
    ("blended", "", "box", {"candidates": 3, "seed": None}, "seed 2147483646 leaves no room"),
    ("sdedit", "", None, {"masked": True}, "masked SDEdit needs a mask"),
    ("p2p", "", None, {}, "Prompt-to-Prompt edits a caption"),
    ("diffedit", "a cat", "empty", {}, "the mask is empty, so nothing would change"),
    ("sdedit", "", "box", {"masked": True, "bogus": 1}, "unknown option(s) bogus"),
    ("p2p", "a cat", None, {"cross_fraction": 2.0}, "cross_fraction must be from 0.0 to 1.0"),
]


@pytest.mark.parametrize("method, source, mask_kind, options, start", MISTAKES)
def test_the_cli_and_the_session_say_what_check_inputs_says(tmp_path, tiny_model, cat, method,
                                                            source, mask_kind, options, start):
    from PIL import Image

    from engine.session import EditSession

    options = dict(options)
    params = EditParams(steps=2, mask_samples=1)
    argv = []
    if options.pop("seed", 0) is None:
        params = params.replace(seed=SEED_RANGE[1] - 1)
    mask = None
    if mask_kind is not None:
        mask = np.zeros(cat.rgb.shape[:2], np.float32)
        if mask_kind == "box":
            mask[100:200, 150:300] = 1
        Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / "mask.png")
        argv += ["--mask", str(tmp_path / "mask.png")]
    with pytest.raises(InputError) as checked:
        methods.check_inputs(method, source, "a dog", mask, params, options)
    sentence = str(checked.value)
    assert sentence.startswith(start)
    with pytest.raises(InputError) as ran:
        EditSession(tiny_model, cat).run(method, source, "a dog", mask, params, options)
    assert str(ran.value) == sentence

    photo = tmp_path / "cat.png"
    Image.fromarray(cat.rgb).save(photo)
    for name, value in options.items():
        if name in ("bogus",):
            continue
        flag = "--" + name.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    if "bogus" in options:
        return  # the CLI has no flag for an unknown option: argparse refuses it by name
    result = _cli(["edit", str(photo), "-o", str(tmp_path / "out.png"), "--target", "a dog",
                   "--source", source, "--method", method, "--model", "tiny", "--quiet",
                   "--steps", "2", "--mask-samples", "1", "--seed", str(params.seed), *argv])
    # The CLI's words: the same sentence, option names as flags and the input at fault named.
    assert result == (2, [f"error: {cli._in_cli_words(checked.value)}"])


def _cli(argv):
    import contextlib
    import io

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = cli.main(argv)
    return code, [line for line in stderr.getvalue().splitlines() if line.startswith("error")]


def test_one_seed_range_everywhere(tiny_model, cat):
    assert methods.SEED_MAX == SEED_RANGE[1] == 2**31 - 1
    EditParams(seed=SEED_RANGE[1]).validate()
    with pytest.raises(InputError, match=f"seed must be from 0 to {SEED_RANGE[1]}"):
        EditParams(seed=SEED_RANGE[1] + 1).validate()
    fields_ = {f.name: f for f in dataclasses.fields(EditParams)}
    assert fields.flag(fields_["negative_prompt"]) == "--negative"
    assert fields.flag(fields_["mask_threshold"]) == "--mask-threshold"
