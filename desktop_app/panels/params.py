"""The prompt and parameter panel: what is there, what it should become, and how to run."""

from __future__ import annotations

import random

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QPlainTextEdit, QPushButton, QSizePolicy, QSlider,
                               QSpinBox, QToolButton, QVBoxLayout, QWidget)

from desktop_app.qt_compat import emit
from desktop_app.methods import DEFAULT_METHOD, METHODS
from engine.params import EditParams

SEED_MAX = 2**31 - 1  # QSpinBox's range; plenty of distinct seeds

TIPS = {
    "source": "Describe what is in the photo now, e.g. \u201ca bowl of fruits\u201d.\n"
              "The mask is where this and the target disagree.",
    "target": "Describe what the photo should become, e.g. \u201ca bowl of pears\u201d.",
    "negative": "What the edit should avoid. Empty: the reference text is used, which pushes the "
                "edit away from what is there now.",
    "method": "The editing method. Each shows only the parameters it uses.",
    "steps": "Denoising steps of the full schedule. More is slower and a little cleaner.",
    "strength": "Encoding ratio: how far the photo is noised before it is re-generated.\n"
                "Higher changes more (shape and colour); lower keeps more of the photo.",
    "guidance": "How strongly the target text steers the edit (classifier-free guidance).",
    "mask_threshold": "Heatmap level above which a pixel is edited. Moving it re-thresholds "
                      "instantly and keeps your brush strokes.",
    "mask_samples": "Noise samples averaged to find the mask. More gives a steadier mask; "
                    "each costs two model evaluations.",
    "feather": "Soft edge, in pixels, when the edit is pasted back into the photo. Pixels beyond "
               "it stay exactly the original.",
    "eta": "Variety: DDIM randomness while decoding. 0 is deterministic; variations need more "
           "than 0 to differ (0.5 is used for them when this is 0).",
    "seed": "Random seed. Unlocked, every run picks a new one; locked, runs repeat exactly.",
    "variations": "How many results to make in one run, with consecutive seeds. They appear "
                  "together in the history so you can pick one.",
}
LABELS = {
    "steps": "Steps", "strength": "Encoding ratio", "guidance": "Guidance",
    "mask_threshold": "Mask threshold", "mask_samples": "Mask samples", "feather": "Edge feather",
    "eta": "Variety", "seed": "Seed", "variations": "Variations",
}
VARIATION_ETA = 0.5  # used when variations > 1 and eta is 0, or they would all be identical


class ParamsPanel(QWidget):
    find_mask_requested = Signal()
    edit_requested = Signal()
    cancel_requested = Signal()
    threshold_changed = Signal(float)
    method_changed = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        defaults = EditParams()
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
            self.method.addItem(info.label, info.key)
            self.method.setItemData(self.method.count() - 1, info.summary, Qt.ItemDataRole.ToolTipRole)
        self._add(prompts, "In the photo", self.source, TIPS["source"])
        self._add(prompts, "Should become", self.target, TIPS["target"])
        self._add(prompts, "Avoid", self.negative, TIPS["negative"])
        self._add(prompts, "Method", self.method, TIPS["method"])
        outer.addLayout(prompts)

        self.form = QFormLayout()
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        self.fields: dict[str, QWidget] = {}
        self.steps = self._spin(1, 1000, defaults.steps)
        self.strength = self._double(0.01, 1.0, defaults.strength, 0.05, 2)
        self.guidance = self._double(0.0, 50.0, defaults.guidance, 0.5, 1)
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0, 100)
        self.threshold_spin = self._double(0.0, 1.0, defaults.mask_threshold, 0.01, 2)
        threshold_row = QWidget()
        row = QHBoxLayout(threshold_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.threshold_slider, 1)
        row.addWidget(self.threshold_spin)
        self.threshold_slider.setValue(round(defaults.mask_threshold * 100))
        self.threshold_slider.valueChanged.connect(lambda v: self.threshold_spin.setValue(v / 100))
        self.threshold_spin.valueChanged.connect(self._on_threshold)
        self.mask_samples = self._spin(1, 100, defaults.mask_samples)
        self.feather = self._spin(0, 256, defaults.feather, suffix=" px")
        self.eta = self._double(0.0, 1.0, defaults.eta, 0.1, 2)
        self.seed = self._spin(0, SEED_MAX, defaults.seed)
        self.random_seed = QToolButton()
        self.random_seed.setText("Random")
        self.random_seed.setToolTip("Pick a new random seed now")
        self.random_seed.clicked.connect(self.randomize_seed)
        self.lock_seed = QToolButton()
        self.lock_seed.setText("Lock")
        self.lock_seed.setCheckable(True)
        self.lock_seed.setToolTip("Locked: every run uses this seed. Unlocked: a new seed per run.")
        seed_row = QWidget()
        row = QHBoxLayout(seed_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.seed, 1)
        row.addWidget(self.random_seed)
        row.addWidget(self.lock_seed)
        self.variations = self._spin(1, 16, 1)
        for name, widget in (("steps", self.steps), ("strength", self.strength),
                             ("guidance", self.guidance), ("mask_threshold", threshold_row),
                             ("mask_samples", self.mask_samples), ("feather", self.feather),
                             ("eta", self.eta), ("seed", seed_row), ("variations", self.variations)):
            self.fields[name] = widget
            self._add(self.form, LABELS[name], widget, TIPS[name])
        outer.addLayout(self.form)

        buttons = QHBoxLayout()
        self.find_mask_button = QPushButton("Find mask")
        self.find_mask_button.setToolTip("Estimate where to edit from the two prompts (Ctrl+M). "
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
        outer.addLayout(buttons)
        outer.addStretch(1)
        self.find_mask_button.clicked.connect(self.find_mask_requested)
        self.edit_button.clicked.connect(self.edit_requested)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.method.currentIndexChanged.connect(self._on_method)
        self._on_method()

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

    def _on_threshold(self, value: float) -> None:
        self.threshold_slider.blockSignals(True)
        self.threshold_slider.setValue(round(value * 100))
        self.threshold_slider.blockSignals(False)
        emit(self.threshold_changed, float(value))

    def _on_method(self) -> None:
        info = METHODS[self.method_key()]
        for name, widget in self.fields.items():
            visible = name in info.fields
            widget.setVisible(visible)
            self.form.labelForField(widget).setVisible(visible)
        self.find_mask_button.setVisible(info.finds_mask)
        emit(self.method_changed, info.key)

    # ------------------------------------------------------------------ reading

    def method_key(self) -> str:
        return self.method.currentData() or DEFAULT_METHOD

    def prompts(self) -> tuple[str, str]:
        return self.source.text().strip(), self.target.text().strip()

    def params(self) -> EditParams:
        """The parameters as shown (not validated: the widgets' ranges already match EditParams)."""
        return EditParams(
            steps=self.steps.value(), strength=round(self.strength.value(), 4),
            guidance=round(self.guidance.value(), 4),
            mask_threshold=round(self.threshold_spin.value(), 4),
            mask_samples=self.mask_samples.value(), feather=self.feather.value(),
            seed=self.seed.value(), eta=round(self.eta.value(), 4),
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
        self.seed.setValue(random.randint(0, SEED_MAX))

    def set_params(self, params: EditParams, source: str | None = None, target: str | None = None,
                   method: str | None = None) -> None:
        """Show these settings ("Use these settings" and the Settings dialog's defaults)."""
        self.steps.setValue(params.steps)
        self.strength.setValue(params.strength)
        self.guidance.setValue(params.guidance)
        self.threshold_spin.setValue(params.mask_threshold)
        self.mask_samples.setValue(params.mask_samples)
        self.feather.setValue(params.feather)
        self.eta.setValue(params.eta)
        self.seed.setValue(min(params.seed, SEED_MAX))
        self.negative.setPlainText(params.negative_prompt)
        if source is not None:
            self.source.setText(source)
        if target is not None:
            self.target.setText(target)
        if method is not None and self.method.findData(method) >= 0:
            self.method.setCurrentIndex(self.method.findData(method))

    def set_running(self, running: bool) -> None:
        self.find_mask_button.setEnabled(not running)
        self.edit_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
