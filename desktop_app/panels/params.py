"""The prompt and parameter panel: what is there, what it should become, the method with only its
own parameters and options (option widgets built from the engine's option field metadata)."""

from __future__ import annotations

import random
import textwrap

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox,
                               QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QPushButton,
                               QSizePolicy, QSlider, QSpinBox, QToolButton, QVBoxLayout, QWidget)

from desktop_app import methods
from desktop_app.methods import DEFAULT_METHOD, METHODS
from desktop_app.panels.fields import param_box
from engine.methods import carry_params
from engine.params import SEED_RANGE, EditParams

SEED_MAX = SEED_RANGE[1]

TIPS = {
    "source": "Describe what is in the photo now, e.g. \u201ca bowl of fruits\u201d.\n"
              "The mask is where this and the target disagree.",
    "target": "Describe what the photo should become, e.g. \u201ca bowl of pears\u201d.",
    "instruction": "Say what to change, e.g. \u201cmake the car red\u201d. Find Mask shows the "
                   "area it is about, to refine; without a mask the whole photo changes.",
    "negative": "What the edit should avoid. Empty: the reference text is used, which pushes the "
                "edit away from what is there now.",
    "method": "The editing method. Each shows only the parameters and options it uses.",
    "steps": "Denoising steps of the full schedule. More is slower and a little cleaner.",
    "strength": "How far the photo is noised before it is re-generated (the papers' encoding "
                "ratio).\nHigher changes more (shape and colour); lower keeps more of the photo.",
    "guidance": "How strongly the target text steers the edit (classifier-free guidance).",
    "mask_threshold": "Heatmap level above which a pixel is edited. Moving it re-thresholds "
                      "instantly and keeps your brush strokes.",
    "mask_samples": "Noise samples averaged to find the mask. More gives a steadier mask; "
                    "each costs two model evaluations.",
    "feather": "Soft edge, in pixels, when the edit is pasted back into the photo. Pixels beyond "
               "it stay exactly the original.\nAuto (one step below 0) scales it with the photo: 4 pixels "
               "of the working resolution, e.g. 27 px on a 4000x3000 photo worked at 512 px.\n"
               "Linear fades the edit into the photo over that "
               "edge. Poisson first carries the edit's colours smoothly onto the photo's at the "
               "border, so a colour shift leaves no seam (the edit's inside shifts with it).",
    "eta": "Variety: DDIM randomness while decoding. 0 is deterministic; variations need more "
           "than 0 to differ (0.5 is used for them when this is 0).",
    "seed": "Random seed. Unlocked, every run picks a new one; locked, runs repeat exactly.",
    "variations": "How many results to make in one run, with consecutive seeds. They appear "
                  "together in the history so you can pick one.",
}
LABELS = {
    "source": "In the photo", "target": "Should become", "instruction": "Instruction",
    "steps": "Steps", "strength": "Strength", "guidance": "Guidance",
    "mask_threshold": "Mask threshold", "mask_samples": "Mask samples", "feather": "Edge feather",
    "eta": "Variety", "seed": "Seed", "variations": "Variations",
}
PLACEHOLDERS = {
    "clip_model": "none: candidates unranked", "reweight_words": "e.g. fluffy",
    "blend_words": "e.g. cat dog",
}
# The target field as each kind of target text asks for it (MethodInfo.target_name): label,
# placeholder, tooltip.
TARGET_TEXTS = {name: (LABELS[name], example, TIPS[name])
                for name, example in (("target", "a bowl of pears"),
                                      ("instruction", "make the car red"))}
VARIATION_ETA = 0.5  # used when variations > 1 and eta is 0, or they would all be identical


class ParamsPanel(QWidget):
    find_mask_requested = Signal()
    edit_requested = Signal()
    cancel_requested = Signal()
    method_changed = Signal(str)
    options_changed = Signal()
    changed = Signal()  # anything shown changed (prompts, method, parameters, options, seed lock)

    def __init__(self, parent=None):
        super().__init__(parent)
        defaults = METHODS[DEFAULT_METHOD].default_params()  # the engine's, for the first method
        self._shown_method = DEFAULT_METHOD  # whose defaults the shown values are measured against
        self._unused: frozenset[str] = frozenset()  # fields the loaded model ignores
        self._unused_options: dict[str, frozenset[str]] = {}  # method -> options it ignores
        outer = QVBoxLayout(self)

        prompts = QFormLayout()
        prompts.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        self.source = QLineEdit()
        self.source.setPlaceholderText("a bowl of fruits")
        self.target = QLineEdit()
        self.target.setPlaceholderText("a bowl of pears")
        self.negative = QPlainTextEdit()
        self.negative.setPlaceholderText("optional")
        self.negative.setFixedHeight(self.fontMetrics().lineSpacing() * 3)
        self.negative.setTabChangesFocus(True)
        self.method = QComboBox()
        for info in METHODS.values():
            self.method.addItem(info.title, info.name)
            self.method.setItemData(self.method.count() - 1, _wrap(info.summary),
                                    Qt.ItemDataRole.ToolTipRole)
        self.method.setCurrentIndex(self.method.findData(DEFAULT_METHOD))
        self.method_summary = QLabel()
        self.method_summary.setWordWrap(True)
        self.method_summary.setEnabled(False)  # the palette's quieter text colour
        self._add(prompts, "Method", self.method, TIPS["method"])
        prompts.addRow("", self.method_summary)
        self._add(prompts, LABELS["source"], self.source, TIPS["source"])
        self._add(prompts, LABELS["target"], self.target, TIPS["target"])
        self._add(prompts, "Avoid", self.negative, TIPS["negative"])
        self.prompts_form = prompts
        # The shared parameters' widgets by EditParams field name, the method's registry entry
        # says which it shows.
        self.fields: dict[str, QWidget] = {"negative_prompt": self.negative}
        outer.addLayout(prompts)

        self.form = QFormLayout()
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        self.steps, self.strength, self.guidance = (param_box(name, getattr(defaults, name))
                                                    for name in ("steps", "strength", "guidance"))
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0, 100)
        self.threshold_spin = param_box("mask_threshold", defaults.mask_threshold)
        threshold_row = QWidget()
        row = QHBoxLayout(threshold_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.threshold_slider, 1)
        row.addWidget(self.threshold_spin)
        self.threshold_slider.setValue(round(defaults.mask_threshold * 100))
        self.threshold_slider.valueChanged.connect(lambda v: self.threshold_spin.setValue(v / 100))
        self.threshold_spin.valueChanged.connect(self._show_threshold_on_slider)
        self.mask_samples, self.feather, self.eta, self.seed = (
            param_box(name, getattr(defaults, name))
            for name in ("mask_samples", "feather", "eta", "seed"))
        self.seam = QComboBox()
        for key, text in (("feather", "Linear"), ("poisson", "Poisson")):
            self.seam.addItem(text, key)
        self.seam.setCurrentIndex(self.seam.findData(defaults.seam))
        feather_row = QWidget()
        row = QHBoxLayout(feather_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.feather)
        row.addWidget(self.seam, 1)
        self.random_seed = QToolButton()
        self.random_seed.setText("Random")
        self.random_seed.setToolTip("Pick a new random seed now")
        self.random_seed.clicked.connect(self.randomize_seed)
        self.lock_seed = QToolButton()
        self.lock_seed.setText("Lock")
        self.lock_seed.setCheckable(True)
        self.lock_seed.setToolTip("Locked: every run uses this seed. Unlocked: a new seed per run. "
                                  "Typing a seed locks it.")
        self._seed_from_code = False
        self.seed.valueChanged.connect(self._lock_a_chosen_seed)
        seed_row = QWidget()
        row = QHBoxLayout(seed_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.seed, 1)
        row.addWidget(self.random_seed)
        row.addWidget(self.lock_seed)
        self.variations = self._spin(1, 16, 1)
        for name, widget in (("steps", self.steps), ("strength", self.strength),
                             ("guidance", self.guidance), ("mask_threshold", threshold_row),
                             ("mask_samples", self.mask_samples), ("feather", feather_row),
                             ("eta", self.eta), ("seed", seed_row), ("variations", self.variations)):
            self.fields[name] = widget
            self._add(self.form, LABELS[name], widget, TIPS[name])
        outer.addLayout(self.form)

        # Each method's options, built once from its option dataclass; kept while the app runs,
        # so switching methods and back finds the options as they were left.
        self.option_boxes: dict[str, QGroupBox] = {}
        self.option_widgets: dict[str, dict[str, QWidget]] = {}
        for info in METHODS.values():
            box = self._build_options(info)
            self.option_boxes[info.name] = box
            outer.addWidget(box)
        self.paint_row = QWidget()  # scribble's paint tools; the window supplies the actions
        self.paint_row.setToolTip("Scribble: paint rough colours inside the mask with the Paint "
                                  "tool; the run starts from them")
        self.paint_buttons = QHBoxLayout(self.paint_row)
        self.paint_buttons.setContentsMargins(0, 0, 0, 0)
        painting = next(name for name, info in METHODS.items() if info.paint_when is not None)
        self.option_boxes[painting].layout().addRow(self.paint_row)  # full width: three buttons

        # The run buttons live in their own row, which the window pins below the scrolling
        # fields so that Edit stays in sight whatever a method's options take.
        self.run_row = QWidget()
        buttons = QHBoxLayout(self.run_row)
        buttons.setContentsMargins(8, 4, 8, 8)
        self.find_mask_button = QPushButton("Find Mask")
        self.find_mask_button.setToolTip("Estimate where to edit from the texts or the instruction (Ctrl+M). "
                                         "Refine it with the brush before editing.")
        self.edit_button = QPushButton("Edit")
        self.edit_button.setDefault(True)
        self.edit_button.setToolTip("Re-generate inside the mask (Ctrl+Return). "
                                    "Without a mask, one is found first.")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the run within one step (Esc). The photo stays as it was.")
        self.cancel_button.setEnabled(False)
        for button in (self.find_mask_button, self.edit_button, self.cancel_button):
            button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            buttons.addWidget(button)
        outer.addStretch(1)
        self.find_mask_button.clicked.connect(self.find_mask_requested)
        self.edit_button.clicked.connect(self.edit_requested)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self._edit_tip = self._cost = ""
        self.method.currentIndexChanged.connect(self._on_method)
        self._on_method()
        # One signal for whoever keeps what the panel shows (autosave): no polling needed.
        for signal in (self.source.textChanged, self.target.textChanged, self.negative.textChanged,
                       self.method.currentIndexChanged, self.seam.currentIndexChanged,
                       self.lock_seed.toggled, self.options_changed,
                       *(box.valueChanged for box in (self.steps, self.strength, self.guidance,
                                                      self.threshold_spin, self.mask_samples,
                                                      self.feather, self.eta, self.seed,
                                                      self.variations))):
            signal.connect(self.changed)

    # ------------------------------------------------------------------ building

    def _add(self, form: QFormLayout, label: str, widget: QWidget, tip: str) -> None:
        widget.setToolTip(tip)
        caption = QLabel(label)
        caption.setToolTip(tip)
        caption.setBuddy(widget)
        form.addRow(caption, widget)

    def _spin(self, low, high, value, suffix="") -> QSpinBox:
        box = QSpinBox()
        box.setRange(low, high)
        box.setValue(value)
        box.setSuffix(suffix)
        box.setAccelerated(True)
        return box

    def _double(self, low, high, value, step, decimals) -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setRange(low, high)
        box.setDecimals(decimals)
        box.setSingleStep(step)
        box.setValue(value)
        return box

    def _build_options(self, info) -> QGroupBox:
        """A form of the method's option widgets, made from each field's metadata: choices give a
        combo box, a range a spin box with those limits, bool a check box, str a line edit."""
        box = QGroupBox(f"{info.title} options")
        form = QFormLayout(box)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        widgets = {}
        for f in methods.option_fields(info.name):
            widget = self._option_widget(f)
            widget.setObjectName(f"option_{info.name}_{f.name}")
            widgets[f.name] = widget
            self._add(form, methods.option_label(f.name), widget, _wrap(f.metadata["help"]))
        self.option_widgets[info.name] = widgets
        box.setVisible(False)
        return box

    def _option_widget(self, f) -> QWidget:
        low_high, choices = f.metadata.get("range"), f.metadata.get("choices")
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if choices is not None:
            widget = QComboBox()
            for choice in choices:
                widget.addItem(methods.CHOICE_LABELS.get(choice, choice), choice)
            widget.setCurrentIndex(widget.findData(f.default))
            widget.currentIndexChanged.connect(self._on_option)
        elif kind == "bool":
            widget = QCheckBox()
            widget.setChecked(bool(f.default))
            widget.toggled.connect(self._on_option)
        elif kind == "int":
            low, high = low_high or (0, 2**31 - 1)
            widget = self._spin(low, high, f.default, suffix=" px" if f.name.startswith("extend_") else "")
            widget.valueChanged.connect(self._on_option)
        elif kind == "float":
            low, high = low_high or (-1e6, 1e6)
            widget = self._double(low, high, f.default, (high - low) / 40, 2)
            if f.name.endswith("_fraction"):
                widget.setSuffix(" of the steps")
            widget.valueChanged.connect(self._on_option)
        else:
            widget = QLineEdit(str(f.default))
            widget.setPlaceholderText(PLACEHOLDERS.get(f.name, ""))
            widget.setClearButtonEnabled(True)
            widget.textChanged.connect(self._on_option)
        return widget

    def _on_option(self, *_args) -> None:
        self._update_visibility()
        self.options_changed.emit()

    def _show_threshold_on_slider(self, value: float) -> None:
        self.threshold_slider.blockSignals(True)
        self.threshold_slider.setValue(round(value * 100))
        self.threshold_slider.blockSignals(False)

    def bind_threshold(self, doc) -> None:
        """Show and edit the document's mask threshold, which lives there alone: the spin box
        (and the slider driving it) writes through doc.set_threshold and follows
        doc.threshold_changed, whoever changed it (a P2P blend level, a result's mask, restore)."""
        self.threshold_spin.setValue(doc.threshold)
        self.threshold_spin.valueChanged.connect(doc.set_threshold)
        doc.threshold_changed.connect(self.threshold_spin.setValue)

    def _on_method(self) -> None:
        key = self.method_key()
        info = METHODS[key]
        # A value still at the last method's default takes this one's (Prompt-to-Prompt's and
        # Plug-and-Play's full inversion); one the user set stays (engine.methods.carry_params).
        shown = self.params()
        carried = carry_params(shown, self._shown_method, key)
        self._shown_method = key
        if carried != shown:
            self.set_params(carried)
        self.method_summary.setText(info.summary)
        # Methods that only use it as the fallback negative text run without it.
        self.source.setPlaceholderText("a bowl of fruits" if info.uses_source
                                       else "optional: the edit steers away from it")
        # An instruction says the whole change: no text of what is there now goes with it.
        label, example, tip = TARGET_TEXTS[info.target_name]
        for widget in (self.prompts_form.labelForField(self.target), self.target):
            widget.setToolTip(tip)
        self.prompts_form.labelForField(self.target).setText(label)
        self.target.setPlaceholderText(example)
        self.prompts_form.setRowVisible(self.source, info.target_name != "instruction")
        for name, box in self.option_boxes.items():
            box.setVisible(name == key and bool(self.option_widgets[name]))
        self._update_visibility()
        self.find_mask_button.setVisible(methods.finds_mask(key))
        mask_note = {"auto": "Without a mask, one is found first.",
                     "user": "Needs a mask: paint it with the brush.",
                     "optional": "Uses the mask where the method's options ask for one.",
                     "none": "Changes the whole photo; the mask is not used."}[info.mask]
        self._edit_tip = f"Run {info.title} (Ctrl+Return). {mask_note}"
        self.set_cost(self._cost)
        self.method_changed.emit(key)

    def set_cost(self, text: str) -> None:
        """What the next run costs (steps, time), said under the Edit button's own tooltip."""
        self._cost = text
        self.edit_button.setToolTip(f"{self._edit_tip}\nThis run: {text}" if text else self._edit_tip)

    def _update_visibility(self) -> None:
        key = self.method_key()
        options = self.options()
        for name, widget in self.fields.items():
            visible = methods.shows(key, name, options) and name not in self._unused
            widget.setVisible(visible)
            form = self.prompts_form if widget is self.negative else self.form
            form.labelForField(widget).setVisible(visible)
        form = self.option_boxes[key].layout()
        ignored = self._unused_options.get(key, ())
        for name, widget in self.option_widgets[key].items():
            visible = methods.shows(key, name, options) and name not in ignored
            widget.setVisible(visible)
            form.labelForField(widget).setVisible(visible)
        self.paint_row.setVisible(METHODS[key].takes_paint(options))

    # ------------------------------------------------------------------ reading

    def method_key(self) -> str:
        return self.method.currentData() or DEFAULT_METHOD

    def options(self, method: str | None = None) -> dict:
        """The options of ``method`` (default: the chosen one) as shown, as plain values."""
        values = {}
        for name, widget in self.option_widgets[method or self.method_key()].items():
            if isinstance(widget, QComboBox):
                values[name] = widget.currentData()
            elif isinstance(widget, QCheckBox):
                values[name] = widget.isChecked()
            elif isinstance(widget, QSpinBox):
                values[name] = widget.value()
            elif isinstance(widget, QDoubleSpinBox):
                values[name] = round(widget.value(), 4)
            else:
                values[name] = widget.text().strip()
        return values

    def set_options(self, values: dict, method: str | None = None) -> None:
        """Show these option values for ``method`` (default: the chosen one); unknown keys and
        values outside the widgets' choices are ignored (an older app's saved settings)."""
        widgets = self.option_widgets.get(method or self.method_key(), {})
        for name, value in (values or {}).items():
            widget = widgets.get(name)
            if isinstance(widget, QComboBox):
                if widget.findData(value) >= 0:
                    widget.setCurrentIndex(widget.findData(value))
            elif isinstance(widget, QCheckBox):
                widget.setChecked(bool(value))
            elif isinstance(widget, (QSpinBox, QDoubleSpinBox)):
                widget.setValue(value)
            elif isinstance(widget, QLineEdit):
                widget.setText(str(value))
        self._update_visibility()

    def set_method(self, method: str) -> None:
        if self.method.findData(method) >= 0:
            self.method.setCurrentIndex(self.method.findData(method))

    def set_unused(self, names, options: dict | None = None) -> None:
        """Hide the shared fields the loaded model ignores (a distilled model's guidance) and,
        per method, the options it ignores (P2P's word swap on a flow transformer)."""
        self._unused = frozenset(names)
        self._unused_options = dict(options or {})
        self._update_visibility()

    def set_methods(self, names) -> None:
        """The menu lists only ``names``: the methods the loaded model's backbone runs (a
        flow-matching model has no P2P or PnP: they edit a UNet's attention). A chosen method the model cannot
        run gives way to the first it can."""
        allowed = set(names)
        items = self.method.model()
        for index in range(self.method.count()):
            supported = self.method.itemData(index) in allowed
            items.item(index).setEnabled(supported)
            self.method.view().setRowHidden(index, not supported)
        if self.method.currentData() not in allowed:
            first = next((i for i in range(self.method.count()) if self.method.itemData(i) in allowed), -1)
            if first >= 0:
                self.method.setCurrentIndex(first)

    def set_paint_actions(self, actions) -> None:
        """Tool buttons for scribble's paint layer (the Paint tool, its colour, clearing it)."""
        short = ("Paint", "Colour\u2026", "Clear paint")  # the narrow dock's labels
        for index, action in enumerate(actions):
            button = QToolButton()
            if action.isCheckable():  # the tool: its button shows whether it is chosen
                button.setDefaultAction(action)
            else:
                button.setText(short[index] if index < len(short) else action.text())
                button.setToolTip(action.toolTip())
                button.clicked.connect(action.trigger)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            self.paint_buttons.addWidget(button)
        self.paint_buttons.addStretch(1)

    def prompts(self) -> tuple[str, str]:
        return self.source.text().strip(), self.target.text().strip()

    def params(self) -> EditParams:
        """The parameters as shown (not validated: the widgets' ranges already match EditParams)."""
        return EditParams(
            steps=self.steps.value(), strength=round(self.strength.value(), 4),
            guidance=round(self.guidance.value(), 4),
            mask_threshold=round(self.threshold_spin.value(), 4),
            mask_samples=self.mask_samples.value(), feather=self.feather.value(),
            seam=self.seam.currentData(), seed=self.seed.value(), eta=round(self.eta.value(), 4),
            negative_prompt=self.negative.toPlainText().strip(),
        )

    def run_seeds(self) -> tuple[int, ...]:
        """Seeds for the next run: a fresh one unless locked, then one per variation."""
        if not self.lock_seed.isChecked():
            self.randomize_seed()
        first = self.seed.value()
        return tuple((first + i) % (SEED_MAX + 1) for i in range(self.variations.value()))

    def run_params(self) -> EditParams:
        """params() adjusted for variations (which need some variety to differ)."""
        params = self.params()
        if self.variations.value() > 1 and params.eta == 0.0:
            params = params.replace(eta=VARIATION_ETA)
        return params

    # ------------------------------------------------------------------ writing

    def randomize_seed(self) -> None:
        self._show_seed(random.randint(0, SEED_MAX))

    def _show_seed(self, seed: int) -> None:
        self._seed_from_code = True
        try:
            self.seed.setValue(seed)
        finally:
            self._seed_from_code = False

    def _lock_a_chosen_seed(self, _seed: int) -> None:
        if not self._seed_from_code:  # a seed the user typed or stepped to is the one to use
            self.lock_seed.setChecked(True)

    def set_params(self, params: EditParams, source: str | None = None, target: str | None = None,
                   method: str | None = None, options: dict | None = None) -> None:
        """Show these settings ("Use these settings" and the Settings dialog's defaults). The
        method first, so that its defaults do not replace the values given."""
        if method is not None:
            self.set_method(method)
        self.steps.setValue(params.steps)
        self.strength.setValue(params.strength)
        self.guidance.setValue(params.guidance)
        self.threshold_spin.setValue(params.mask_threshold)
        self.mask_samples.setValue(params.mask_samples)
        self.feather.setValue(params.feather)
        self.seam.setCurrentIndex(max(0, self.seam.findData(params.seam)))
        self.eta.setValue(params.eta)
        self._show_seed(min(params.seed, SEED_MAX))
        self.negative.setPlainText(params.negative_prompt)
        if source is not None:
            self.source.setText(source)
        if target is not None:
            self.target.setText(target)
        if options is not None:
            self.set_options(options)

    def set_running(self, running: bool) -> None:
        self.find_mask_button.setEnabled(not running)
        self.edit_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)


def _wrap(text: str) -> str:
    """A tooltip line-wrapped (plain-text tooltips are not), first letter capitalised."""
    text = text[:1].upper() + text[1:]
    return textwrap.fill(text, 64)
