"""The progress bar and the live estimate of one attack run, moved by the pass counter inside every batch.

Shared by the evaluation (every attack of a run) and the training engine's validation.

A batch of AutoAttack is hours on a CPU; a bar that moves per batch would sit at
0/N. The attack's :class:`~advkit._internal.passes.PassCounter` tells the meter of
every forward and backward pass: the bar advances by the share of the batch's
passes done (the batch's remaining passes come from :mod:`advkit._internal.cost`:
the declared stages for the points still live, or the passes per point measured
on finished batches), and the time left is the run's plan turned into seconds.
"""

from __future__ import annotations

import time
from dataclasses import replace

from advkit._internal.cost import AttackPlan, InBatch, Plan
from advkit._internal.passes import Passes
from advkit._internal.progress import show_eta, stage_listener


class Meter:
    """Bar and plan bookkeeping around the batches of attack ``k`` of ``plan`` (a plan of its own if None)."""

    def __init__(self, bar, attack, plan: Plan | None = None, k: int = 0):
        self.bar, self.counter, self.k = bar, attack.counter, k
        self.plan = plan
        self.attack_plan = plan.attacks[k] if plan is not None else AttackPlan(attack.name, list(attack.stages))
        self.batch: InBatch | None = None
        self.base = 0.0  # bar position at the start of the batch in progress
        self.drawn = 0.0
        self.listening = None

    # -- one batch --------------------------------------------------------------------------------------------
    def start(self, points: int) -> None:
        if self.counter is None:
            return
        self.batch = InBatch(points, replace(self.counter.count), stage_start=replace(self.counter.count))
        self.started = time.perf_counter()
        if self.plan is not None:
            self.plan.current = self.k
            self.plan.batch_starts(points)
            self.plan.batch = self.batch
        self.counter.listeners.append(self._on_pass)
        self.listening = stage_listener(self._on_stage).__enter__()

    def stop(self) -> None:
        if self.counter is not None and self._on_pass in self.counter.listeners:
            self.counter.listeners.remove(self._on_pass)
        if self.listening is not None:
            self.listening.__exit__(None, None, None)
            self.listening = None
        if self.plan is not None:
            self.plan.batch = None
        self.batch = None

    def finished(self, rec: dict, resumed: bool) -> None:
        """A batch of the evaluation's log is done (or was read back)."""
        self.done(len(rec["index"]), Passes.of(rec.get("passes")), sum(bool(v) for v in rec["broken"]),
                  None if resumed else float(rec.get("seconds", 0.0)))

    def done(self, n: int, passes: Passes, broken: int, seconds: float | None) -> None:
        """A batch of ``n`` points is done: its measured passes and breaks go into the plan
        (``seconds`` None: read back from an earlier run, not timed now)."""
        a = self.attack_plan
        a.done_points += n
        a.done_batches += 1
        a.done_passes = a.done_passes + passes
        a.broken += broken
        if self.plan is not None and seconds is not None:
            self.plan.clock.observe(passes, seconds)
            self.plan.batch_ends()
        self.base += n
        self._move(self.base)
        if self.plan is not None:
            show_eta(self.bar, self.plan.record(None), force=True)

    # -- inside a batch ---------------------------------------------------------------------------------------
    def _on_stage(self, stage: int) -> None:
        if self.batch is not None and stage != self.batch.stage:
            self.batch.stage, self.batch.stage_start, self.batch.live = stage, replace(self.counter.count), 0

    def _on_pass(self, counter) -> None:
        b = self.batch
        if b is None:
            return
        b.live = max(b.live, counter.last_batch)  # the points the current stage works on
        now = time.monotonic()
        if now - self.drawn < 0.25:
            return
        self.drawn = now
        done = counter.count - b.start
        if self.plan is not None:
            self.plan.clock.live(done, time.perf_counter() - self.started)
        left = b.remaining(self.attack_plan, counter.count)
        work = (done.total + left.total) or 1
        self._move(self.base + b.points * min(done.total / work, 0.99))
        if self.plan is not None:
            show_eta(self.bar, self.plan.record(counter.count))

    def _move(self, position: float) -> None:
        if self.bar is not None and position > self.bar.n:
            self.bar.update(position - self.bar.n)
