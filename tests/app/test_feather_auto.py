"""The paste-back feather defaults to Auto: each photo gets the feather its size needs (issue 18,
point 8), and a number the user chooses is kept as chosen."""

from __future__ import annotations

import numpy as np
import pytest

from engine.fields import AUTO
from engine.geometry import default_feather
from engine.imaging import Photo
from engine.params import EditParams


@pytest.mark.slow
def test_the_panel_shows_auto_and_each_photo_gets_its_own_feather(window, qtbot, dialogs):
    panel = window.params
    assert panel.feather.value() == AUTO and panel.feather.text() == "Auto"
    assert panel.params().feather == AUTO
    big = Photo(rgb=np.full((900, 1200, 3), 90, np.uint8))
    feathers = []
    for photo in (window.doc.current_photo(), big):
        window.open_photo(photo, "photo.png")
        with qtbot.waitSignal(window.engine.job_finished, timeout=10_000):
            window.actions["edit"].trigger()  # no mask yet: the fake's disc is found first
        assert dialogs.shown == [], dialogs.texts()
        entry = window.doc.history[-1]
        width, height = window.doc.size
        # the fake model's native side is 64: 4 working px of it on this photo
        assert entry.params.feather == default_feather((width, height), 64)
        feathers.append(entry.params.feather)
        window.doc.mark_exported()
    assert feathers == [7, 65]  # 4 * sqrt(W * H) / 64, rounded: 128x96 and 1200x900
    assert panel.feather.value() == AUTO  # the panel still says Auto for the next photo


def test_a_chosen_feather_is_used_as_chosen(window, qtbot):
    window.params.feather.setValue(0)
    with qtbot.waitSignal(window.engine.job_finished, timeout=10_000):
        window.actions["edit"].trigger()
    assert window.doc.history[-1].params.feather == 0


def test_the_settings_default_can_be_auto_or_a_number(settings):
    from desktop_app.dialogs import SettingsDialog

    assert settings.default_params().feather == AUTO  # the factory default
    dialog = SettingsDialog(settings)
    assert dialog.feather.text() == "Auto"
    dialog.feather.setValue(12)
    dialog.accept()
    assert settings.default_params().feather == 12
    dialog = SettingsDialog(settings)
    dialog.feather.setValue(AUTO)
    dialog.accept()
    assert settings.default_params() == EditParams()
