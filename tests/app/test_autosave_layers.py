"""Autosave of the editing methods' state: the scribble paint layer, method options, per-entry
heatmaps, and an applied extend result that changed the canvas size."""

from __future__ import annotations

import numpy as np

from desktop_app import autosave
from desktop_app.autosave import Autosaver, find_orphans, install, restore_panel
from desktop_app.document import Document
from desktop_app.panels.params import ParamsPanel
from doc_fingerprint import fingerprint
from engine.params import EditParams
from engine.results import EditResult
from test_autosave import busy_document, crash, stroke



def test_scribble_paint_layer_and_method_options_round_trip(qtbot, tmp_path):
    doc = busy_document(qtbot)
    doc.begin_stroke("paint", 7.0, 0.6, colour=(10, 200, 30))
    for point in ((20, 20), (80, 50)):
        doc.stroke_to(*point)
    doc.end_stroke()
    heat = np.linspace(0, 1, 96 * 128, dtype=np.float32).reshape(96, 128)
    doc.add_result(doc.new_group(), EditResult(
        image=doc.base.copy(), mask=np.ones(doc.shape, np.float32), heatmap=heat, source="a cat",
        target="a cat, painted", params=EditParams(seed=5), model_name="tiny", method="blended",
        options={"action": "scribble", "blend_threshold": 0.35}, seconds=2.0))
    panel = ParamsPanel()
    qtbot.addWidget(panel)
    panel.set_method("blended")
    panel.set_options({"action": "scribble"})
    saver = Autosaver(doc, panel, root=tmp_path)
    saver.flush()
    doc.begin_stroke("paint", 4.0, 1.0, colour=(250, 250, 0))  # painted into in place after a save
    doc.stroke_to(60, 70)
    doc.end_stroke()
    saver.flush()
    expected, panel_expected = fingerprint(doc), autosave.panel_state(panel)
    assert expected["paint"] is not None and expected["history"][-1]["options"]["action"] == "scribble"
    crash(saver)
    sessions, _ = find_orphans(tmp_path)
    state = sessions[0].load()
    restored, panel2 = Document(), ParamsPanel()
    qtbot.addWidget(panel2)
    install(restored, state)
    restore_panel(panel2, state["panel"])
    assert fingerprint(restored) == expected
    assert autosave.panel_state(panel2) == panel_expected and panel2.options()["action"] == "scribble"
    sessions[0].discard()


def test_an_applied_extend_result_of_another_size_round_trips(qtbot, tmp_path):
    doc = busy_document(qtbot)
    big = np.zeros((96 + 20, 128 + 32, 3), np.uint8)
    big[10:106, 16:144] = doc.base
    entry = doc.add_result(doc.new_group(), EditResult(
        image=big, mask=np.ones(big.shape[:2], np.float32), heatmap=None, source="a cat",
        target="a cat in a wider room", params=EditParams(seed=8), model_name="tiny",
        method="blended", options={"action": "extend", "extend_left": 16, "extend_top": 10},
        seconds=3.0))
    doc.apply_entry(entry.id)
    assert doc.size == (160, 116) and doc.photo.alpha.shape == (116, 160)
    stroke(doc, "add", [(150, 110)])  # a stroke on the new canvas
    saver = Autosaver(doc, root=tmp_path)
    saver.flush()
    expected = fingerprint(doc)
    crash(saver)
    sessions, _ = find_orphans(tmp_path)
    restored = Document()
    install(restored, sessions[0].load())
    assert fingerprint(restored) == expected and restored.size == (160, 116)
    sessions[0].discard()
