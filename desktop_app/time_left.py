"""Time left in a run from the measured times of its steps: a smoothed pace per stage, so the
estimate neither reads "about 0 s" while steps remain nor leaps when a stage begins; and the cost
of the next run before it starts, from its step plan and the paces, model evaluations and peak
memory of the last run like it."""

from __future__ import annotations

from dataclasses import dataclass, field

STAGE_ORDER = ("mask", "encode", "decode")
SMOOTHING = 0.4  # the newest step's weight: noise averages out, a slower stage is caught in ~3 steps
# What a step of each stage costs relative to the others, for a run unlike any measured before:
# DiffEdit's mask samples run batched, its inversion takes one model evaluation a step and its
# guided decode two (0.6, 0.8 and 1.6 s a step on this project's CPU machine). The last run
# measured since the app started replaces them (runs.RunController hands its paces in).
RELATIVE_COST = {"mask": 0.75, "encode": 1.0, "decode": 2.0}


def steps_left(plan: dict, stage: str, step: int, total: int, variation: int,
               variations: int) -> dict[str, int]:
    """Steps still to run after step ``step`` (0-based) of ``stage``, per stage: the rest of this
    one, the later stages of ``plan`` (stage -> steps per variation), and the decode of each
    variation still to come (they share the encoding)."""
    left = {stage: total - step - 1}
    if stage in STAGE_ORDER:
        for later in STAGE_ORDER[STAGE_ORDER.index(stage) + 1:]:
            left[later] = left.get(later, 0) + plan.get(later, 0)
    left["decode"] = left.get("decode", 0) + (variations - variation - 1) * plan.get("decode", 0)
    return left


def relative_costs(pace: dict[str, float]) -> dict[str, float]:
    """The stages' relative costs from a measured run's paces; a stage it did not run keeps its
    RELATIVE_COST ratio to one it did."""
    ref = next(iter(pace))
    unit = pace[ref] / RELATIVE_COST.get(ref, 1.0)
    return {**{stage: cost * unit for stage, cost in RELATIVE_COST.items()}, **pace}


@dataclass
class StepClock:
    """Seconds per step of each stage, smoothed, from the times the steps finished.

    A stage's first step also carries its set-up (the model warming up, the photo being
    encoded), so it is not a sample of the stage's pace: the stage starts from its pace in an
    earlier run of the same kind (``prior``), else from the pace of the stage before scaled by
    the stages' ``relative`` cost (a guided decode step costs about twice an inversion step),
    and the run's very first step counts only until a second one is measured."""

    started: float  # when the run was submitted
    prior: dict[str, float] = field(default_factory=dict)  # paces of an earlier run like this
    relative: dict[str, float] = field(default_factory=lambda: dict(RELATIVE_COST))
    pace: dict[str, float] = field(default_factory=dict)
    _last: float | None = None
    _stage: str = ""
    _first_only: bool = False  # pace[_stage] is the run's first step, set-up included

    def step_done(self, stage: str, now: float) -> None:
        seconds = now - (self.started if self._last is None else self._last)
        self._last = now
        if stage == self._stage:
            old = self.pace[stage]
            self.pace[stage] = seconds if self._first_only else old + SMOOTHING * (seconds - old)
            self._first_only = False
        elif stage in self.prior:
            self.pace.setdefault(stage, self.prior[stage])
        elif self._stage:
            self.pace.setdefault(stage, self._scaled(stage))
        else:
            self.pace[stage], self._first_only = seconds, True
        self._stage = stage

    @property
    def measured(self) -> bool:
        """Whether a step's pace is known (not just the run's first step, set-up included)."""
        return bool(self._stage) and not self._first_only

    def _scaled(self, stage: str) -> float:
        """The current stage's pace carried over to ``stage`` by their relative costs."""
        ratio = self.relative.get(stage, 1.0) / self.relative.get(self._stage, 1.0)
        return self.pace.get(self._stage, 0.0) * ratio

    def seconds_left(self, left: dict[str, int]) -> float:
        """The steps in ``left`` (stage -> count) at each stage's pace (an unmeasured stage at
        its earlier run's, else at the current one's scaled by their relative costs)."""
        return sum(n * self.pace.get(stage, self.prior.get(stage) or self._scaled(stage))
                   for stage, n in left.items())


def left_text(clock: StepClock, left: dict[str, int]) -> str:
    """"about 12 s left" while steps remain, "finishing" after the last one (the VAE decode and
    the paste-back), "estimating" while no pace is measured yet."""
    if sum(left.values()) <= 0:
        return "finishing\u2026"
    if not clock.measured:
        return "estimating the time left\u2026"
    return f"about {duration(max(clock.seconds_left(left), 1.0))} left"


def run_steps(plan: dict, variations: int) -> dict[str, int]:
    """The steps a whole run reports per stage: its plan's, the decode once per variation."""
    return {stage: n * (variations if stage == "decode" else 1) for stage, n in plan.items() if n}


@dataclass(frozen=True)
class Usage:
    """What a finished run used, from the engine's stats of its results: model evaluations per
    step of each stage (CFG takes two a step, DiffEdit's inversion one) and its peak memory."""

    evals: dict[str, float]  # stage -> model evaluations per step
    peak_bytes: int  # GPU: the run's peak allocation; CPU: the app process's peak resident memory
    gpu: bool
    extra_seconds: float = 0.0  # per variation, beyond its steps: VAE decode, paste-back, set-up

    @classmethod
    def of(cls, results, steps: dict[str, int], variations: int = 1, seconds: float = 0.0,
           paces: dict[str, float] | None = None) -> "Usage":
        """From a run's results (engine.results.EditResult), the steps it ran per stage, its
        variations and (when its paces were measured) how long it took in all."""
        evals: dict[str, int] = {}
        for result in results:
            for stage, n in result.stats.get("unet_evals", {}).items():
                evals[stage] = evals.get(stage, 0) + n
        per_step = {stage: n / steps[stage] for stage, n in evals.items() if steps.get(stage)}
        peak = max((int(r.stats.get("peak_memory_bytes", 0)) for r in results), default=0)
        gpu = any(str(r.stats.get("device", "")).startswith("cuda") for r in results)
        extra = 0.0
        if paces and all(stage in paces for stage in steps):
            stepped = sum(n * paces[stage] for stage, n in steps.items())
            extra = max(0.0, seconds - stepped) / max(1, variations)
        return cls(per_step, peak, gpu, extra)


def cost_text(steps: dict[str, int], paces: dict[str, float], short: bool = False,
              usage: Usage | None = None, variations: int = 1) -> str:
    """What the next run costs, said before it starts: "13 steps (mask 3, encode 5, decode 5),
    18 model evaluations, about 20 s, 5.1 GB GPU memory" with the paces (seconds per step per
    stage) and ``usage`` a run like it measured on this machine, else the steps alone; ``short``
    ("13 steps, about 20 s, 5.1 GB") leaves out the stages, the evaluations and the note."""
    total = sum(steps.values())
    text = f"{total} step{'s' if total != 1 else ''}"
    if len(steps) > 1 and not short:
        text += " (" + ", ".join(f"{stage} {n}" for stage, n in steps.items()) + ")"
    if usage is not None and not short and all(stage in usage.evals for stage in steps):
        evals = round(sum(n * usage.evals[stage] for stage, n in steps.items()))
        text += f", {evals} model evaluation{'s' if evals != 1 else ''}"
    if not (paces and all(stage in paces for stage in steps)):
        return text if short else f"{text}; the time shows after a first run like it"
    seconds = sum(n * paces[stage] for stage, n in steps.items())
    text += f", about {duration(seconds + (usage.extra_seconds * variations if usage else 0.0))}"
    if usage is not None and usage.peak_bytes:
        text += f", {usage.peak_bytes / 1e9:.1f} GB"
        if not short:
            text += " GPU memory" if usage.gpu else " memory (the app's peak)"
    return text


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
