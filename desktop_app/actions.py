"""The window's commands: every QAction with its keys, icon and tip, and where the menus and the
toolbar show them. The slots are the window's own methods."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QSlider, QWidget

from desktop_app.canvas import BRUSH, ERASER, LASSO, PAINT, RECT, SEGMENT
from desktop_app.canvas.items import colour_swatch
from desktop_app.dialogs import TINY_NOTE
from desktop_app.icons import icon


SPLIT_STEP = 5  # % of the width the split keys move it


def add_action(window, key, text, slot=None, shortcut=None, icon_name=None, tip="", checkable=False):
    """One command as ``window.actions[key]``, its keys in its tooltip; ``slot`` gets triggered
    (or toggled, when ``checkable``)."""
    action = QAction(text, window)
    if shortcut is not None:
        shortcuts = shortcut if isinstance(shortcut, list) else [shortcut]
        action.setShortcuts([QKeySequence(s) for s in shortcuts])
    if icon_name:
        action.setIcon(icon(icon_name))
    keys = ", ".join(k.toString(QKeySequence.SequenceFormat.NativeText) for k in action.shortcuts())
    tooltip = tip or text.replace("&", "").rstrip("\u2026")
    action.setToolTip(f"{tooltip} ({keys})" if keys else tooltip)
    action.setStatusTip(tip)
    action.setCheckable(checkable)
    if slot is not None:
        (action.toggled if checkable else action.triggered).connect(slot)
    window.actions[key] = action
    window.addAction(action)  # shortcuts work whichever dock has focus
    return action


def redo_keys(platform_keys: list[QKeySequence]) -> list[QKeySequence]:
    """Ctrl+Shift+Z and Ctrl+Y, then the platform's own Redo keys, each once: a key listed twice is
    ambiguous to Qt and does nothing (X11 desktops give Ctrl+Shift+Z for Redo, Windows Ctrl+Y)."""
    keys: list[QKeySequence] = []
    for key in [QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y"), *platform_keys]:
        if not key.isEmpty() and key not in keys:
            keys.append(key)
    return keys


def build_actions(window) -> None:
    """Every command of the window; the menus, the toolbar, the panels and the keys use these."""
    K = QKeySequence.StandardKey

    def A(*args, **kwargs):
        return add_action(window, *args, **kwargs)

    A("open", "&Open\u2026", window.open_dialog, K.Open, "open", "Open a photo")
    A("paste", "&Paste Photo", window.paste, K.Paste, tip="Open the picture on the clipboard")
    A("export", "&Export\u2026", window.export_dialog, ["Ctrl+E", "Ctrl+Shift+S"], "export",
      "Save the image on the canvas as PNG, JPEG or WebP with the edit's settings")
    A("batch", "&Batch\u2026", window.batch_dialog,
      tip="Edit a folder of photos with these settings: the command to copy")
    A("settings", "&Settings\u2026", window.settings_dialog, K.Preferences, "settings",
      "Model, device, precision and default parameters")
    A("quit", "&Quit", window.close, K.Quit)
    undo = window.doc.undo_stack.create_action(window, False, [QKeySequence(K.Undo)])
    undo.setIcon(icon("undo"))
    redo = window.doc.undo_stack.create_action(window, True, redo_keys(QKeySequence.keyBindings(K.Redo)))
    redo.setIcon(icon("redo"))
    for key, action in (("undo", undo), ("redo", redo)):
        action.setIconText(key.title())  # the toolbar keeps a short label; the menu names the step
        window.actions[key] = action
        window.addAction(action)
    A("find_mask", "&Find Mask", window.find_mask, "Ctrl+M", "find_mask",
      "Estimate where to edit: where the model's predictions under the two texts "
      "(or with and without the instruction) differ")
    A("edit", "&Edit", window.run_edit, ["Ctrl+Return", "Ctrl+Enter"], "edit",
      "Re-generate inside the mask (finds a mask first if there is none)")
    A("cancel", "&Cancel Run", window.cancel, "Esc", "cancel", "Stop the run within one step")
    tools = QActionGroup(window)
    A("brush", "&Brush", lambda on: on and window.canvas.set_tool(BRUSH), "B", "brush",
      "Paint the mask: add to where the edit happens", checkable=True)
    A("eraser", "E&raser", lambda on: on and window.canvas.set_tool(ERASER), "E", "eraser",
      "Erase the mask: protect from the edit", checkable=True)
    A("rect_select", "&Rectangle", lambda on: on and window.canvas.set_tool(RECT), "R", "rect_select",
      "Drag a rectangle to add it to the mask; hold Alt while pressing to take it away "
      "(one undo step)", checkable=True)
    A("lasso", "&Lasso", lambda on: on and window.canvas.set_tool(LASSO), "L", "lasso",
      "Draw round an area to add it to the mask; hold Alt while pressing to take it away "
      "(one undo step)", checkable=True)
    A("segment", "&Segment", lambda on: on and window.canvas.set_tool(SEGMENT), "S", "segment",
      "Click an object to add it to the mask (SAM finds its outline); Alt+click takes it away "
      "(one undo step)", checkable=True)
    A("paint", "&Paint", lambda on: on and window.canvas.set_tool(PAINT), "P", None,
      "Paint rough colours for Blended scribble (they steer the edit inside the mask)",
      checkable=True)
    A("paint_colour", "Paint C&olour\u2026", window.choose_paint_colour,
      tip="The Paint tool's colour")
    A("clear_paint", "Clear Pa&int", lambda: window.doc.clear_paint(),
      tip="Remove all painted colours (undoable)")
    for key in ("brush", "eraser", "rect_select", "lasso", "segment", "paint"):
        tools.addAction(window.actions[key])
    window.actions["paint"].setIcon(colour_swatch(window.canvas.paint_colour))
    window.actions["brush"].setChecked(True)
    A("bigger", "Larger Brush", window.canvas.grow_brush, "]")
    A("smaller", "Smaller Brush", window.canvas.shrink_brush, "[")
    A("show_mask", "Show &Mask", window.canvas.set_mask_visible, "M", "mask",
      "Show or hide the mask overlay", checkable=True)
    window.actions["show_mask"].setChecked(True)
    A("show_heatmap", "Show &Heatmap", window.canvas.set_show_heatmap, "H",
      tip="Show the automatic mask's heatmap instead of the mask", checkable=True)
    A("mask_colour", "Mask &Colour\u2026", window.choose_mask_colour)
    A("invert", "&Invert", window.doc.invert_mask, "Ctrl+I", "invert", "Swap edited and kept areas")
    A("clear_mask", "&Clear", window.doc.clear_mask, "Ctrl+Shift+Delete",
      tip="Remove the whole mask (heatmap and strokes)")
    A("grow", "&Grow", lambda: window.doc.grow_mask(window.mask_panel.amount.value()),
      tip="Grow the mask by the pixels set beside")
    A("shrink", "&Shrink", lambda: window.doc.shrink_mask(window.mask_panel.amount.value()),
      tip="Shrink the mask by the pixels set beside")
    A("feather", "&Feather", lambda: window.doc.feather_mask(window.mask_panel.amount.value()),
      tip="Soften the mask's edge by the pixels set beside")
    A("load_mask", "&Load Mask\u2026", window.load_mask_dialog, tip="Use a greyscale PNG as the mask")
    A("save_mask", "Sa&ve Mask\u2026", window.save_mask_dialog, tip="Save the mask as a PNG")
    A("fit", "&Fit to Window", window.canvas.fit, "Ctrl+0", "fit")
    A("actual", "&100 %", window.canvas.actual_pixels, "Ctrl+1", "zoom100")
    A("zoom_in", "Zoom &In", lambda: window.canvas.zoom_by(1.25), K.ZoomIn)
    A("zoom_out", "Zoom &Out", lambda: window.canvas.zoom_by(0.8), K.ZoomOut)
    A("split_left", "Split &Left", lambda: window.move_split(-SPLIT_STEP), ",",
      tip="Move the before/after split left (shows more of after)")
    A("split_right", "Split &Right", lambda: window.move_split(SPLIT_STEP), ".",
      tip="Move the before/after split right (shows more of before)")
    A("models", "&Models\u2026", window.models_dialog, tip="Find, add and download models")
    A("tiny", "Use the &Tiny Test Model", window.use_tiny_model,
      tip=f"Load the tiny test model ({TINY_NOTE})")
    A("shortcuts", "&Keyboard Shortcuts", window.shortcuts_dialog, K.HelpContents)
    A("credits", "Sample Photo &Credits", window.sample_credits)
    A("about", "&About DiffEdit Studio", window.about)


def build_menus(window):
    """The menu bar; returns the (recent, sample) photo menus, which the window fills."""
    a = window.actions
    bar = window.menuBar()
    file_menu = bar.addMenu("&File")
    file_menu.addAction(a["open"])
    recent_menu = file_menu.addMenu("Open &Recent")
    sample_menu = file_menu.addMenu("Open &Sample")
    file_menu.addAction(a["paste"])
    file_menu.addSeparator()
    file_menu.addAction(a["export"])
    file_menu.addAction(a["batch"])
    file_menu.addSeparator()
    file_menu.addAction(a["settings"])
    file_menu.addSeparator()
    file_menu.addAction(a["quit"])
    edit_menu = bar.addMenu("&Edit")
    for key in ("undo", "redo", None, "find_mask", "edit", "cancel"):
        edit_menu.addSeparator() if key is None else edit_menu.addAction(a[key])
    mask_menu = bar.addMenu("&Mask")
    for key in ("brush", "eraser", "rect_select", "lasso", "segment", "paint", "paint_colour",
                "clear_paint",
                "smaller", "bigger",
                None, "show_mask", "show_heatmap",
                "mask_colour", None, "invert", "clear_mask", "grow", "shrink", "feather", None,
                "load_mask", "save_mask"):
        mask_menu.addSeparator() if key is None else mask_menu.addAction(a[key])
    view_menu = bar.addMenu("&View")
    for key in ("fit", "actual", "zoom_in", "zoom_out", None, "split_left", "split_right"):
        view_menu.addSeparator() if key is None else view_menu.addAction(a[key])
    view_menu.addSeparator()
    for dock in (window.params_dock, window.mask_dock, window.history_dock):
        view_menu.addAction(dock.toggleViewAction())
    models_menu = bar.addMenu("M&odels")
    models_menu.addAction(a["models"])
    models_menu.addAction(a["tiny"])
    help_menu = bar.addMenu("&Help")
    for key in ("shortcuts", "credits", "about"):
        help_menu.addAction(a[key])
    return recent_menu, sample_menu


def build_toolbar(window):
    """The main toolbar; returns it and its before/after compare slider (0-100)."""
    bar = window.addToolBar("Main")
    bar.setObjectName("main_toolbar")
    bar.setIconSize(QSize(20, 20))
    bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    for key in ("open", "export", None, "undo", "redo", None, "brush", "eraser", "rect_select", "lasso",
                "paint", "show_mask",
                None, "fit", "actual", None, "find_mask", "edit", "cancel"):
        bar.addSeparator() if key is None else bar.addAction(window.actions[key])
    # Secondary actions show only their icon (the tooltip has the name and keys), so that the
    # compare slider fits without an overflow menu at common window widths.
    for key in ("undo", "redo", "rect_select", "lasso", "show_mask", "fit", "actual", "cancel"):
        bar.widgetForAction(window.actions[key]).setToolButtonStyle(
            Qt.ToolButtonStyle.ToolButtonIconOnly)
    bar.addSeparator()
    compare = QWidget()
    row = QHBoxLayout(compare)
    row.setContentsMargins(6, 0, 6, 0)
    label = QLabel("Before")
    split = QSlider(Qt.Orientation.Horizontal)
    split.setRange(0, 100)
    split.setValue(0)
    split.setFixedWidth(120)
    split.setToolTip("Split view: drag to compare before (left) with after (right). "
                     "Hold \\ on the canvas to see the whole photo before.")
    row.addWidget(label)
    row.addWidget(split)
    row.addWidget(QLabel("After"))
    compare.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Preferred)
    bar.addWidget(compare)
    return bar, split
