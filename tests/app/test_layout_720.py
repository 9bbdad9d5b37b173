"""At 1280x720 the Edit panel shows a method's options without scrolling, the mask tools and the
history share the left side, and the labels are plain words (the papers' terms in tooltips)."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QLabel, QScrollArea

from desktop_app.main_window import MainWindow
from desktop_app.methods import METHODS
from desktop_app.worker import EngineController

JARGON = ("Encoding ratio", "Cross-attention", "Self-attention", "injection", "Local blend",
          "Re-weight")


@pytest.fixture
def small_window(qtbot, settings, fake_engine, photo):
    engine = EngineController(fake_engine)
    win = MainWindow(settings, engine)  # fresh settings: the default layout
    qtbot.addWidget(win)
    win.resize(1280, 720)
    win.show()
    qtbot.waitExposed(win)
    win.open_photo(photo, "test.png")
    yield win
    win.close()
    engine.shutdown()


def _scroll(dock) -> QScrollArea:
    return dock.findChild(QScrollArea)


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_each_methods_options_are_in_sight_at_1280x720(qtbot, small_window, method):
    small_window.params.set_method(method)
    qtbot.wait(50)  # the layout settles
    area = _scroll(small_window.params_dock)
    assert area.verticalScrollBar().maximum() == 0, f"{method}: the panel scrolls"
    box = small_window.params.option_boxes[method]
    if small_window.params.option_widgets[method]:
        bottom = box.mapTo(area.viewport(), box.rect().bottomLeft()).y()
        assert box.isVisible() and bottom <= area.viewport().height()


def test_the_mask_tools_do_not_scroll_and_the_history_has_room(qtbot, small_window):
    qtbot.wait(50)
    assert _scroll(small_window.mask_dock).verticalScrollBar().maximum() == 0
    assert small_window.history_dock.isVisible() and small_window.history.tree.height() >= 150
    assert small_window.centralWidget().width() >= 560  # the photo keeps most of the width


def test_plain_labels_and_the_papers_terms_in_tooltips(small_window):
    panel = small_window.params
    labels = [label for label in panel.findChildren(QLabel) if label.buddy() is not None]
    texts = " | ".join(label.text() for label in labels)
    assert not any(word.lower() in texts.lower() for word in JARGON), texts
    assert all(label.toolTip() for label in labels), "every field keeps its tooltip"
    strength = next(label for label in labels if label.text() == "Strength")
    assert "encoding ratio" in strength.toolTip()
    cross = next(label for label in labels if label.text() == "Keep word layout")
    assert "cross-attention" in cross.toolTip()


def test_the_settings_dialog_fits_a_1280x720_screen(qtbot, settings):
    from desktop_app.dialogs import SettingsDialog

    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    dialog.show()
    # 720 px less a title bar and a task bar: what a dialog may need to be seen whole
    assert dialog.minimumSizeHint().height() <= 720 - 80
    assert dialog.minimumSizeHint().width() <= 1280
    # every page's fields stay within its tab
    for index in range(dialog.tabs.count()):
        page = dialog.tabs.widget(index)
        assert page.minimumSizeHint().height() <= dialog.tabs.contentsRect().height()
