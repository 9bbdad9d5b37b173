"""Time left in a run from the measured times of its steps: a smoothed pace per stage, so the
estimate neither reads "about 0 s" while steps remain nor leaps when a stage begins; and the cost
of the next run before it starts, from its step plan and the paces of the last run like it."""

from __future__ import annotations

from dataclasses import dataclass, field

STAGE_ORDER = ("mask", "encode", "decode")
SMOOTHING = 0.4  # the newest step's weight: noise averages out, a slower stage is caught in ~3 steps


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


@dataclass
class StepClock:
    """Seconds per step of each stage, smoothed, from the times the steps finished.

    A stage's first step also carries its set-up (the model warming up, the photo being
    encoded), so it is not a sample of the stage's pace: the stage starts from its pace in an
    earlier run of the same kind (``prior``), else from the pace of the stage before, and the
    run's very first step counts only until a second one is measured."""

    started: float  # when the run was submitted
    prior: dict[str, float] = field(default_factory=dict)  # paces of an earlier run like this
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
            self.pace.setdefault(stage, self.pace[self._stage])
        else:
            self.pace[stage], self._first_only = seconds, True
        self._stage = stage

    @property
    def measured(self) -> bool:
        """Whether a step's pace is known (not just the run's first step, set-up included)."""
        return bool(self._stage) and not self._first_only

    def seconds_left(self, left: dict[str, int]) -> float:
        """The steps in ``left`` (stage -> count) at each stage's pace (an unmeasured stage at
        its earlier run's, else at the current one's)."""
        current = self.pace.get(self._stage, 0.0)
        return sum(n * self.pace.get(stage, self.prior.get(stage, current))
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


def cost_text(steps: dict[str, int], paces: dict[str, float], short: bool = False) -> str:
    """What the next run costs, said before it starts: "13 steps (mask 3, encode 5, decode 5),
    about 20 s" with the paces a run like it measured on this machine (seconds per step per
    stage), else the steps alone; ``short`` leaves out the stages and the note."""
    total = sum(steps.values())
    text = f"{total} step{'s' if total != 1 else ''}"
    if len(steps) > 1 and not short:
        text += " (" + ", ".join(f"{stage} {n}" for stage, n in steps.items()) + ")"
    if paces and all(stage in paces for stage in steps):
        return f"{text}, about {duration(sum(n * paces[stage] for stage, n in steps.items()))}"
    return text if short else f"{text}; the time shows after a first run like it"


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
