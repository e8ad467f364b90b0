"""The cost plan of an evaluation: calibrated at the run's batch size, announced as a range, kept in the report.

The range is said once, when the first batch that is not on disk is about to
run (batches read back from an earlier run are left out; a finished run says
nothing). When that batch is expected to be short, the announcement waits for
it to end, so that the first attack's break rate and its measured passes inform
what the cascade will leave to the later attacks. A margin of 30 % either way
covers the timing noise of a shared machine. Printed when the high end is over
half a minute; always recorded in report.json (``cost``), with the live
estimates the bar showed (``cost.trace``: seconds since the start, seconds left).
"""

from __future__ import annotations

import time

from advkit._internal import distributed as D
from advkit._internal.cost import AttackPlan, Clock, Plan, calibrate
from advkit._internal.progress import format_seconds, say

MARGIN = 1.3  # timing noise on a shared machine, either way
SAY_ABOVE = 30.0  # seconds: shorter runs are not announced (the report keeps the range anyway)
SHORT_BATCH = 30.0  # seconds: a first batch this short is run before the announcement


class RunPlan(Plan):
    """A :class:`Plan` that announces itself once (see the module docstring)."""

    def __init__(self, attacks, clock, correct, independent, *, quiet: bool, batch: int, per_image: dict):
        super().__init__(attacks, clock, correct, independent, batch)
        self.quiet, self.per_image = quiet, per_image
        self.announced: tuple[float, float] | None = None
        self.announced_at = 0.0
        self.deferred = False

    def batch_starts(self, points: int) -> None:
        """Called before a batch is computed: announce now, or after this batch when it is short."""
        if self.announced is not None or self.deferred:
            return
        a = self.attacks[self.current]
        cost = a.cost(points, 1)
        first = self.clock.seconds(cost) if cost is not None else 0.0
        if first < SHORT_BATCH and (len(self.attacks) > 1 or a.points and a.points > points):
            self.deferred = True
            return
        self.announce()

    def batch_ends(self) -> None:
        if self.deferred and self.announced is None:
            self.announce()

    def announce(self) -> None:
        low, high = self.range()
        self.announced = (low / MARGIN, high * MARGIN)
        self.announced_at = time.perf_counter() - self.t0
        if self.quiet or not D.is_main() or self.announced[1] < SAY_ABOVE:
            return
        say(f"advkit: {self.line()}")

    def line(self) -> str:
        low, high = self.announced
        parts = []
        for k in range(self.current, len(self.attacks)):
            lo = self._later(k, breaks=True, optimistic=True) / MARGIN
            hi = self._later(k, breaks=False) * MARGIN
            parts.append(f"{self.attacks[k].name} {_span(lo, hi)}")
        unknown = [a.name for a in self.attacks[self.current:] if a.cost(1, 1) is None]
        tail = f"; {', '.join(unknown)} not estimated (no declared plan)" if unknown else ""
        return (f"estimated time left: {_span(low, high)} ({', '.join(parts)}{tail}); low: the cascade leaves what "
                f"the break rates so far say and later attacks stop early, high: no point breaks from here on; "
                f"one forward+backward pass takes {1000 * self.per_image['backward']:.2f} ms per image at batch "
                f"{min(self.batch_size, self.correct)} here; the bar shows the live estimate")

    def summary(self) -> dict:
        """For report.json: the announced range (seconds left when announced, and when that was), the live
        estimates, how long the attacks took, and the calibration."""
        return {"announced_s": list(self.announced) if self.announced else None,
                "announced_at_s": round(self.announced_at, 2) if self.announced else None,
                "elapsed_s": round(time.perf_counter() - self.t0, 2), "trace": self.trace,
                "calibration_s_per_image": self.per_image, "calibration_batch": self.batch_size,
                "correction": round(self.clock.factor, 3)}


def _span(low: float, high: float) -> str:
    a, b = format_seconds(low), format_seconds(high)
    return a if a == b else f"{a} to {b}"


def make_plan(s, attacks, independent: bool) -> RunPlan | None:
    """The plan of the attacks of session ``s`` on its clean-correct points (None when there are none)."""
    if not s.correct or not attacks:
        return None
    first = s.correct[: s.runner.batch_size]
    x, y = s.inputs.x[first].to(s.runner.device), s.inputs.y[first].to(s.runner.device)
    per_image = calibrate(s.model, x, y)
    plans = [AttackPlan(a.name, list(a.stages)) for a in attacks]
    return RunPlan(plans, Clock(per_image), len(s.correct), independent, quiet=s.runner.quiet,
                   batch=s.runner.batch_size, per_image=per_image)
