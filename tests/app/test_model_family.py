"""A model family's own parameter values (FLUX.2 klein: 4 steps, no guidance, 5 mask samples)
reach the panel when it loads; values the user set stay, and another family brings back the
Settings defaults. Fields a distilled model ignores are hidden."""

from __future__ import annotations

import pytest

from engine.params import EditParams

KLEIN = {"steps": 4, "guidance": 1.0, "mask_samples": 5}


def _load(qtbot, window, source):
    with qtbot.waitSignal(window.engine.model_state, timeout=5000,
                          check_params_cb=lambda state, _m: state == "ready"):
        window.load_model(source)


def test_a_family_with_its_own_defaults_sets_them_and_another_brings_back_the_settings(
        qtbot, window, settings, fake_engine):
    settings.set_default_params(EditParams(steps=30, guidance=6.0, mask_samples=8))
    window.params.set_params(settings.default_params())
    fake_engine.family_defaults = dict(KLEIN)
    _load(qtbot, window, "/models/fake-klein")
    shown = window.params.params()
    assert (shown.steps, shown.guidance, shown.mask_samples) == (4, 1.0, 5)
    assert "its own defaults: steps 4" in window.statusBar().currentMessage()

    fake_engine.family_defaults = {}
    _load(qtbot, window, "/models/fake-sd")
    shown = window.params.params()
    assert (shown.steps, shown.guidance, shown.mask_samples) == (30, 6.0, 8)


def test_a_value_the_user_set_stays_through_model_changes(qtbot, window, settings, fake_engine):
    window.params.set_params(settings.default_params().replace(steps=12))
    fake_engine.family_defaults = dict(KLEIN)
    _load(qtbot, window, "/models/fake-klein")
    shown = window.params.params()
    assert shown.steps == 12  # typed by the user: not the family's 4
    assert (shown.guidance, shown.mask_samples) == (1.0, 5)

    fake_engine.family_defaults = {}
    _load(qtbot, window, "/models/fake-sd")
    defaults = settings.default_params()
    assert window.params.params().steps == 12
    assert window.params.params().guidance == defaults.guidance


def test_a_distilled_family_hides_guidance_and_the_negative_text(qtbot, window, fake_engine):
    panel = window.params
    assert not panel.guidance.isHidden() and not panel.negative.isHidden()
    panel.guidance.setValue(9.0)  # set by the user, then hidden: it takes the family's value
    fake_engine.family_defaults = dict(KLEIN)
    fake_engine.family_unused = {"guidance", "negative_prompt"}
    _load(qtbot, window, "/models/fake-klein")
    assert panel.guidance.isHidden() and panel.negative.isHidden()
    assert panel.form.labelForField(panel.guidance).isHidden()
    assert panel.params().guidance == 1.0
    panel.set_method("sdedit")  # another method keeps them hidden
    assert panel.guidance.isHidden()

    fake_engine.family_defaults, fake_engine.family_unused = {}, set()
    _load(qtbot, window, "/models/fake-sd")
    assert not panel.guidance.isHidden() and not panel.negative.isHidden()


def test_options_a_family_ignores_are_hidden_and_come_back_with_another(qtbot, window,
                                                                      fake_engine):
    panel = window.params
    panel.set_method("p2p")
    p2p = panel.option_widgets["p2p"]
    assert not p2p["mode"].isHidden() and not p2p["cross_fraction"].isHidden()
    fake_engine.family_unused_options = {"p2p": frozenset({"mode", "cross_fraction"})}
    _load(qtbot, window, "/models/fake-klein")
    assert p2p["mode"].isHidden() and p2p["cross_fraction"].isHidden()
    assert panel.option_boxes["p2p"].layout().labelForField(p2p["mode"]).isHidden()
    assert not p2p["blend_words"].isHidden()  # the local blend runs on the family

    fake_engine.family_unused_options = {}
    _load(qtbot, window, "/models/fake-sd")
    assert not p2p["mode"].isHidden() and not p2p["cross_fraction"].isHidden()


@pytest.mark.slow
def test_the_real_tiny_klein_gives_its_distilled_defaults(tiny_flux2_path):
    from desktop_app.worker import EngineBackend
    from engine.models import load_model

    model = load_model(str(tiny_flux2_path), device="cpu")
    family = EngineBackend().family(model)
    assert family.unused == {"guidance", "negative_prompt"}
    # P2P's word swap and re-weighting, PnP's decoder features: no joint-attention counterpart
    assert family.unused_options == {
        "p2p": {"mode", "reweight_words", "reweight_scale", "cross_fraction"},
        "pnp": {"feature_fraction"}}
    values = family.defaults
    assert values["steps"] == 4 and values["guidance"] == 1.0
    # a whole auto-mask edit stays within the distilled budget of 16 evaluations
    encode = EditParams(steps=4).encode_steps
    assert 2 * values["mask_samples"] + 2 * encode <= 16
