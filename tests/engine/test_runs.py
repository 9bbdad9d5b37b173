"""engine.runs: one request, one execute(): variations equal single runs byte for byte, the auto
mask is found once, the scribble layer is the run's input, and mistakes are refused before work."""

import numpy as np
import pytest

from engine import masks, methods
from engine.errors import InputError
from engine.methods.blended import scribble_photo
from engine.params import SEED_RANGE, EditParams
from engine.runs import RunRequest, execute
from engine.session import EditSession

FAST = EditParams(steps=4, mask_samples=2, eta=0.5, seed=11)


@pytest.fixture
def box(cat):
    mask = np.zeros(cat.rgb.shape[:2], np.float32)
    mask[80:220, 120:330] = 1.0
    return mask


def sessions(model):
    opened = {}

    def open_session(key, photo):
        if key not in opened:
            opened[key] = EditSession(model, photo)
        return opened[key]
    return open_session, opened


@pytest.mark.parametrize("method, with_mask", [("diffedit", True), ("diffedit", False),
                                               ("sdedit", False)])
def test_n_variations_equal_n_single_runs_byte_for_byte(tiny_model, cat, box, method, with_mask):
    mask = box if with_mask else None
    request = RunRequest(cat, "cat", method, "a cat", "a dog", mask, FAST, variations=3)
    open_session, _ = sessions(tiny_model)
    got = execute(request, open_session)
    assert [r.variation for r in got] == [0, 1, 2]
    assert [r.params.seed for r in got] == [11, 12, 13]

    single = EditSession(tiny_model, cat)
    heatmap = None
    if method == "diffedit" and not with_mask:  # the mask comes from the first seed, once
        heatmap = single.estimate_mask("a cat", "a dog", FAST)
        mask = masks.threshold(heatmap, FAST.mask_threshold)
    for index, result in enumerate(got):
        [alone] = single.run(method, "a cat", "a dog", mask, FAST.replace(seed=11 + index))
        assert result.image.tobytes() == alone.image.tobytes()
        assert result.mask.tobytes() == alone.mask.tobytes()
        if heatmap is not None:
            assert result.heatmap.tobytes() == heatmap.tobytes()
    assert len({r.image.tobytes() for r in got}) == 3  # eta > 0: the seeds differ


def test_the_auto_mask_step_is_counted_once_in_the_first_variation(counted, cat):
    model, unet = counted
    request = RunRequest(cat, "cat", "diffedit", "a cat", "a dog", None, FAST, variations=2)
    first, second = execute(request, sessions(model)[0])
    steps = FAST.encode_steps
    assert first.stats["unet_evals"] == {"mask": 2 * FAST.mask_samples, "encode": steps,
                                         "decode": 2 * steps}
    assert "mask" not in second.stats["unet_evals"]  # shared, and the encoding is cached
    assert unet.evaluations == 2 * FAST.mask_samples + steps + 2 * 2 * steps


def test_scribble_paint_is_laid_over_the_photo_and_keyed_by_its_pixels(tiny_model, cat, box):
    paint = np.zeros_like(cat.rgb)
    paint[..., 0] = 255
    coverage = np.zeros(cat.rgb.shape[:2], np.float32)
    coverage[100:200, 150:300] = 1.0
    options = {"action": "scribble", "candidates": 1}
    request = RunRequest(cat, "cat", "blended", "", "a red ball", box, FAST, options,
                         paint=(paint, coverage))
    open_session, opened = sessions(tiny_model)
    [result] = execute(request, open_session)
    [key] = opened
    assert key.startswith("cat+scribble-")
    painted = scribble_photo(cat.rgb, paint, coverage, box)
    [alone] = EditSession(tiny_model, painted).run("blended", "", "a red ball", box, FAST, options)
    assert result.image.tobytes() == alone.image.tobytes()
    outside = masks.grow(box, result.params.feather + 1) == 0  # beyond the pasted-back feather
    assert np.array_equal(result.image[outside], cat.rgb[outside])


@pytest.mark.parametrize("changes, start", [
    ({"variations": 2, "method": "blended"}, "Blended Latent Diffusion makes no variations"),
    ({"variations": 0}, "variations must be a whole number of 1 or more"),
    ({"variations": 3, "params": FAST.replace(seed=SEED_RANGE[1] - 1)}, "seed 2147483646 leaves "
     "no room for 3 variations"),
    ({"method": "blended", "options": {"action": "scribble"}, "paint": None}, "Scribble starts"),
    ({"target": "  "}, "the target text is empty"),
])
def test_mistakes_are_refused_before_any_session_opens(cat, box, changes, start):
    fields = dict(photo=cat, photo_key="cat", method="diffedit", source="a cat", target="a dog",
                  mask=box, params=FAST)
    fields.update(changes)
    request = RunRequest(**fields)
    opened = []
    with pytest.raises(InputError, match=f"^{start}"):
        execute(request, lambda key, photo: opened.append(key))
    assert opened == []
    with pytest.raises(InputError, match=f"^{start}"):
        request.check()
    assert methods.SEED_MAX == SEED_RANGE[1]
