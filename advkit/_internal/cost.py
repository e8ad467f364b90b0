"""What a run will cost, before and while it runs: seconds per pass, and a plan of the passes left.

advkit's own estimator (no library plans an attack run). Work is counted in
model passes (:mod:`advkit._internal.passes`), and turned into seconds with the
model's time per forward and per backward image, measured at the run's batch
size on the run's device (:func:`calibrate`) and corrected as the run goes by
the ratio of the seconds spent to the seconds the passes done were expected to take.

:class:`Plan` holds one evaluation's attacks in the order they run. Each knows
its declared stages (worst-case passes per point), the points it will see (known
when it starts; before that, the survivors of the attacks before it, at the
break rates seen so far) and, once it has finished batches, its measured passes
per point, which replace the declaration for its other batches. From it:

- :meth:`Plan.range`: the announced range, from "the cascade leaves what the
  first attack's break rate says, and every later attack stops after its first
  stage" up to "no point breaks from here on";
- :meth:`Plan.remaining`: the live estimate, with the batch in progress read
  from the counter (the stage it is in and the points it still works on).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

from advkit._internal.passes import Passes, Stage


def calibrate(model, x, y, repeats: int = 3) -> dict:
    """Seconds of ``model``'s forward and forward+backward passes on the batch ``x``: per image at this
    batch size (``forward``, ``backward``), and split into a cost per call and per image, from a second
    timing at an eighth of the batch (``forward_call``, ``forward_image``, ``backward_call``, ``backward_image``).

    The median of ``repeats`` timed passes after one warm-up pass (the fastest would be optimistic on a
    shared machine); the model's mode is left as it was.
    """
    import statistics

    import torch
    import torch.nn.functional as F

    def timed(fn, xb, yb) -> float:
        fn(xb, yb)
        times = []
        for _ in range(repeats):
            if xb.is_cuda:
                torch.cuda.synchronize(xb.device)
            t0 = time.perf_counter()
            fn(xb, yb)
            if xb.is_cuda:
                torch.cuda.synchronize(xb.device)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def forward(xb, yb):
        with torch.no_grad():
            model(xb)

    def backward(xb, yb):
        xg = xb.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(xg), yb)
            if loss.requires_grad:  # a model whose outputs do not depend on the input through autograd has no pass
                torch.autograd.grad(loss, xg, allow_unused=True)

    big, small = x.shape[0], max(1, x.shape[0] // 8)
    out = {}
    for name, fn in (("forward", forward), ("backward", backward)):
        t_big = timed(fn, x, y)
        t_small = timed(fn, x[:small], y[:small]) if small < big else t_big
        slope = max((t_big - t_small) / (big - small), 0.0) if big > small else t_big / big
        out[name] = t_big / big
        out[f"{name}_image"] = slope if slope > 0 else t_big / big
        out[f"{name}_call"] = max(t_big - out[f"{name}_image"] * big, 0.0)
    return out


class Clock:
    """Seconds for a number of passes: calibrated, then corrected by what the run has measured."""

    def __init__(self, per_image: dict):
        self.live_passes, self.live_seconds = Passes(), 0.0  # the batch in progress, so far
        f_img, f_call = per_image.get("forward_image", per_image["forward"]), per_image.get("forward_call", 0.0)
        b_img = per_image.get("backward_image", per_image["backward"])
        b_call = per_image.get("backward_call", 0.0)
        # a backward pass alone: forward+backward minus its forward
        self.costs = (f_img, max(b_img - f_img, 0.0), f_call, max(b_call - f_call, 0.0))
        self.spent = 0.0
        self.expected = 0.0

    def raw(self, p: Passes) -> float:
        return sum(c * n for c, n in zip(self.costs, p.as_tuple()))

    @property
    def factor(self) -> float:
        spent, expected = self.spent + self.live_seconds, self.expected + self.raw(self.live_passes)
        return spent / expected if expected > 0 and spent > 1.0 else 1.0

    def live(self, p: Passes, seconds: float) -> None:
        """The batch in progress has spent ``p`` in ``seconds`` so far (until :meth:`observe` takes over)."""
        self.live_passes, self.live_seconds = p, seconds

    def seconds(self, p: Passes) -> float:
        return self.raw(p) * self.factor

    def observe(self, p: Passes, seconds: float) -> None:
        """A finished piece of work: its passes took ``seconds``."""
        self.expected += self.raw(p)
        self.spent += seconds
        self.live_passes, self.live_seconds = Passes(), 0.0


def declared(stages: list[Stage]) -> Passes:
    """The worst-case passes per point of a whole plan (calls: one batch)."""
    total = Passes()
    for s in stages:
        total = total + s.passes()
    return total


@dataclass
class AttackPlan:
    """One attack of the run, as far as its cost is known."""

    name: str
    stages: list[Stage]
    points: int | None = None  # the points it runs on; None until the attacks before it have finished
    done_points: int = 0  # points of finished batches
    done_batches: int = 0
    done_passes: Passes = field(default_factory=Passes)
    broken: int = 0

    def floor(self) -> list[Stage]:
        """The plan of a point broken at once: up to the first stage a point leaves as soon as it is broken
        (one pass of it), or else the first stage (the later ones run only on the points it left)."""
        for k, st in enumerate(self.stages):
            if st.early_stop:
                return [*self.stages[:k], replace(st, forward=min(st.forward, 1), backward=min(st.backward, 1))]
        return self.stages[:1]

    def cost(self, points: float, batches: float, *, broken: float = 0.0) -> Passes | None:
        """Passes for ``points`` points in ``batches`` batches: measured per point and per batch once a
        batch is done, else declared: the worst case, with a share ``broken`` of the points costing only
        :meth:`floor` (broken at once); None when unknown."""
        if self.done_points:
            d = self.done_passes
            per_image = Passes(d.forward, d.backward).scaled(1 / self.done_points)
            per_call = Passes(0, 0, d.forward_calls, d.backward_calls).scaled(1, 1 / self.done_batches)
            return per_image.scaled(points) + per_call.scaled(1, batches)
        if not self.stages:
            return None
        total, live = Passes(), points * (1 - broken)
        for s in self.stages if live > 0 else ():
            total = total + s.passes(live, batches)
        for s in self.floor() if broken else ():
            total = total + s.passes(points * broken, 0 if live > 0 else batches)
        return total

    @property
    def survival(self) -> float | None:
        return 1.0 - self.broken / self.done_points if self.done_points else None


@dataclass
class InBatch:
    """The batch in progress: its points, the stage it is in, the passes done in it and in its stage."""

    points: int
    start: Passes
    stage: int = 0
    stage_start: Passes = field(default_factory=Passes)
    live: int = 0

    def remaining(self, plan: AttackPlan, now: Passes) -> Passes:
        """Passes left in this batch: the rest of its stage, then the later stages, for the points still live."""
        done = now - self.start
        if plan.done_points:  # measured passes per point and per batch: what is left of them
            whole = plan.cost(self.points, 1)
            return Passes(*(max(a - b, 0) for a, b in zip(whole.as_tuple(), done.as_tuple())))
        if not plan.stages:
            return Passes()
        live = self.live or self.points
        k = min(self.stage, len(plan.stages) - 1)
        in_stage = now - self.stage_start
        cur = replace(plan.stages[k], share=1.0).passes(live)  # the stage in progress: its live points are seen
        left = Passes(*(max(a - b, 0) for a, b in zip(cur.as_tuple(), in_stage.as_tuple())))
        for s in plan.stages[k + 1:]:
            left = left + s.passes(live)
        return left


class Plan:
    """The attacks of one evaluation, in order; see the module docstring."""

    def __init__(self, attacks: list[AttackPlan], clock: Clock, correct: int, independent: bool, batch_size: int):
        self.attacks, self.clock, self.correct, self.independent = attacks, clock, correct, independent
        self.batch_size = max(int(batch_size), 1)
        self.batch: InBatch | None = None
        self.current = 0
        self.trace: list[tuple[float, float]] = []  # (seconds since the start, estimated seconds left)
        self.t0 = time.perf_counter()

    def expected_points(self, k: int, *, breaks: bool) -> float:
        """Points attack ``k`` will see: known once it started; else the survivors of the attacks before it,
        at their observed survival rates (``breaks``) or with no point broken from here on."""
        a = self.attacks[k]
        if a.points is not None:
            return a.points
        if self.independent:
            return self.correct
        prev = self.attacks[k - 1]
        before = self.expected_points(k - 1, breaks=breaks)
        if not breaks or prev.survival is None:
            return before - prev.broken
        left = max(before - prev.done_points, 0)
        return before - prev.broken - left * (1 - prev.survival)

    def weakness(self) -> float:
        """The share of its points the first attack broke so far (1 before it has finished a batch): how
        readily the model's points break, for the low end of the range."""
        first = self.attacks[0]
        return 1.0 if first.survival is None else 1.0 - first.survival

    def _later(self, k: int, *, breaks: bool, optimistic: bool = False) -> float:
        """Seconds for the unfinished batches of attack ``k`` (not counting a batch in progress); ``optimistic``:
        the points break as readily as the first attack's did (:meth:`weakness`) and then cost little."""
        a = self.attacks[k]
        in_progress = self.batch.points if (self.batch is not None and k == self.current) else 0
        points = max(self.expected_points(k, breaks=breaks) - a.done_points - in_progress, 0)
        cost = a.cost(points, math.ceil(points / self.batch_size), broken=self.weakness() if optimistic else 0.0)
        return self.clock.seconds(cost) if cost is not None else 0.0

    def remaining(self, now: Passes | None = None) -> float:
        """Seconds left in the run, now (``now``: the counter of the attack in progress)."""
        left = 0.0
        if self.batch is not None and now is not None:
            left += self.clock.seconds(self.batch.remaining(self.attacks[self.current], now))
        for k in range(self.current, len(self.attacks)):
            left += self._later(k, breaks=True)
        return left

    def range(self) -> tuple[float, float]:
        """``(low, high)`` seconds for what is left; see the module docstring."""
        low = sum(self._later(k, breaks=True, optimistic=True) for k in range(self.current, len(self.attacks)))
        high = sum(self._later(k, breaks=False) for k in range(self.current, len(self.attacks)))
        return low, high

    def batch_starts(self, points: int) -> None:
        """A batch of the current attack is about to be computed (a hook for announcing the plan)."""

    def batch_ends(self) -> None:
        """A computed batch has ended."""

    def record(self, now: Passes | None) -> float:
        """The live estimate, also kept in :attr:`trace` (at most every two seconds)."""
        eta = self.remaining(now)
        t = time.perf_counter() - self.t0
        if not self.trace or t - self.trace[-1][0] >= 2.0:
            self.trace.append((round(t, 2), round(eta, 2)))
        return eta


def best_cpu_batch(model, shape, candidates=(16, 32, 64, 128, 256, 512), tolerance: float = 0.05) -> tuple[int, dict]:
    """The CPU batch size for attacks: the smallest whose forward+backward throughput (images per second,
    measured here) is within ``tolerance`` of the best candidate's; also every candidate's throughput.

    Smaller batches of equal speed are preferred: the progress bar and the log move more often.
    """
    import torch
    import torch.nn.functional as F

    rates = {}
    for b in candidates:
        x = torch.rand(b, *shape)
        y = torch.zeros(b, dtype=torch.long)

        def step():
            xg = x.clone().requires_grad_(True)
            with torch.enable_grad():
                torch.autograd.grad(F.cross_entropy(model(xg), y), xg)

        step()  # warm-up
        reps, t0 = 0, time.perf_counter()
        while reps < 2 or time.perf_counter() - t0 < 0.3:
            step()
            reps += 1
        rates[b] = b * reps / (time.perf_counter() - t0)
    best = max(rates.values())
    return min(b for b, r in rates.items() if r >= (1 - tolerance) * best), rates


def largest_batch(model, shape, device, limit: int = 4096) -> int:
    """Half the largest power-of-two batch (from 32) whose forward+backward fits the device's memory.

    The half leaves room for what attacks keep besides the model's activations
    (AutoAttack's restarts and targets, EOT copies).
    """
    import torch

    fits, b = 16, 32
    while b <= limit:
        try:
            x = torch.rand(b, *shape, device=device, requires_grad=True)
            model(x).sum().backward()
            fits = b
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            x = None
            if str(device).startswith("cuda"):
                torch.cuda.empty_cache()
        b *= 2
    return max(1, fits // 2)
