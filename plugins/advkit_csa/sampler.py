"""The sampling rounds of :func:`advkit_csa.shapley.frequency_shapley`, one group of images at a time.

A group is as many images as their per-player reconstructions fit in memory
together (at most 64). Per image the ``P`` single-player reconstructions are
computed once; the group then samples in rounds: first the pilot of full
permutations (all of them without adaptive sampling), then focused
permutations on the players that carry the variance. The units of all the
group's active images go through the model together, in batches of
``batch_size``. An image leaves the rounds once its budget is spent or its
largest standard error is at most ``target_se``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from advkit_csa.chains import (
    ImageSamples,
    _value,
    focused_logits,
    full_logits,
    needed_prefixes,
    record_focused,
    record_full,
)
from advkit_csa.combine import MIN_UNITS_CV, allocate, estimate

MAX_FOCUSED_ROUNDS = 64  # focused rounds per group at most
MAX_GROUP = 64  # images per group at most
GROUP_BYTES = 256 << 20  # memory for a group's per-player reconstructions (float32)


@dataclass(frozen=True)
class Schedule:
    """The sampling settings (a :class:`advkit_csa.shapley.ShapleySettings`) in units and passes, for ``p`` players.

    ``inner``: forward passes per permutation (its inner coalitions);
    ``budget``: passes per image besides the two ends; ``pilot_units`` /
    ``round_units``: units of full permutations in the pilot and per pilot
    round; ``round_passes``: passes per image and focused round with
    ``target_se`` (else None); ``group``: images sampled together;
    ``units_per_chunk``: full units per model call.
    """

    settings: object
    p: int
    inner: int
    budget: int
    pilot_units: int
    round_units: int
    round_passes: int | None
    group: int
    units_per_chunk: int

    @classmethod
    def of(cls, settings, p: int, image_numel: int) -> Schedule:
        s, per_unit, inner = settings, settings.per_unit, max(p - 1, 0)
        pilot_perms = int(s.permutations)
        if s.adaptive and p > 2:
            pilot_perms = min(pilot_perms, max(2 * MIN_UNITS_CV, math.ceil(float(s.pilot_share) * int(s.permutations))))
        pilot_units = max(1, math.ceil(pilot_perms / per_unit))
        round_units = pilot_units if s.target_se is None else max(1, math.ceil(int(s.round_permutations) / per_unit))
        if s.target_se is not None and s.use_cv:
            round_units = max(round_units, MIN_UNITS_CV)
        return cls(settings=s, p=p, inner=inner, budget=int(s.permutations) * inner, pilot_units=pilot_units,
                   round_units=round_units,
                   round_passes=int(s.round_permutations) * inner if s.target_se is not None else None,
                   group=max(1, min(MAX_GROUP, GROUP_BYTES // max(p * image_numel * 4, 1))),
                   units_per_chunk=max(1, int(s.batch_size) // max(1, inner * per_unit)))


def _next_batch(cost: torch.Tensor, start: int, limit: int) -> tuple[int, int]:
    """End of the batch of units from ``start`` whose costs fit in ``limit`` (at least one unit), and its cost."""
    end, total = start + 1, int(cost[start])
    while end < len(cost) and total + int(cost[end]) <= limit:
        total += int(cost[end])
        end += 1
    return end, total


class GroupSampler:
    """Samples one group of images ``xs`` (on ``device``) of classes ``ys`` (CPU) with stable ids ``ids``.

    ``fwd`` is the counting forward pass, ``bar`` the progress bar (in passes),
    ``seed_of(index, *keys)`` the seed of an image's random draws.
    """

    def __init__(self, schedule: Schedule, fwd, bar, seed_of, players, xs, ys, ids, device):
        self.plan, self.settings, self.fwd, self.bar, self.seed_of = schedule, schedule.settings, fwd, bar, seed_of
        self.device = device
        self.comps, self.base = players.components(xs)
        self.full = self.base + self.comps.sum(1)
        self.states = [ImageSamples(ids[i], int(ys[i]), torch.Generator().manual_seed(seed_of(ids[i])), schedule.p)
                       for i in range(xs.shape[0])]

    def run(self) -> None:
        """The two ends, the pilot, then the focused rounds."""
        self._ends()
        self._pilot()
        self._focused()

    def write(self, out: dict, start: int) -> None:
        """Write the final estimates into the rows from ``start`` of ``out``'s per-image tensors."""
        for i, s in enumerate(self.states):
            j = start + i
            out["values"][j], out["stderr"][j], _ = self._estimate(s, True)
            out["v_full"][j], out["v_empty"][j] = s.vn, s.v0
            out["permutations"][j] = (len(s.full_d) + len(s.foc_d)) * self.settings.per_unit
            out["passes"][j] = s.passes

    def _estimate(self, s: ImageSamples, final: bool):
        st = self.settings
        return estimate(s, st.antithetic, st.use_cv, self.seed_of, final, st.surrogate_ratio, st.max_surrogate_pairs)

    def _check_target(self, active: list[int]) -> None:
        """Mark done the images of ``active`` whose largest standard error is at most ``target_se``."""
        if self.settings.target_se is None:
            return
        for i in active:
            _, se, _ = self._estimate(self.states[i], False)
            if float(se.max()) <= float(self.settings.target_se):
                self.states[i].done = True

    def _ends(self) -> None:
        """``v`` on all players and on none (the centre cell only), two passes per image."""
        n, value = len(self.states), self.settings.value
        ends = self.fwd(torch.cat([self.base, self.full]).clone()).cpu()
        for i, s in enumerate(self.states):
            s.z0, s.zn = ends[i], ends[n + i]
            s.v0 = float(_value(s.z0, torch.tensor(s.y), value))
            s.vn = float(_value(s.zn, torch.tensor(s.y), value))
            s.passes = 2
        self.bar.update(2 * n)

    # ------------------------------------------------------------------------- pilot: full permutations

    def _pilot(self) -> None:
        """Full permutations (all of them without adaptive sampling), in rounds of ``round_units`` units."""
        done_units, plan = 0, self.plan
        while done_units < plan.pilot_units:
            k = min(plan.round_units, plan.pilot_units - done_units)
            active = [i for i, s in enumerate(self.states) if not s.done]
            if not active:
                break
            if plan.p > 1:
                self._full_units(active, k)
            else:  # one player: its value is v(all) - v(empty), exactly
                for i in active:
                    s = self.states[i]
                    for _ in range(k):
                        s.full_d.append(torch.tensor([s.vn - s.v0], dtype=torch.float64))
                        s.full_orders.append(torch.zeros(1, dtype=torch.long))
            done_units += k
            self._check_target(active)

    def _full_units(self, active: list[int], k: int) -> None:
        """``k`` full units of each image of ``active``, ``units_per_chunk`` units per model call."""
        st, chunk, passes_per_unit = self.settings, self.plan.units_per_chunk, self.settings.per_unit * self.plan.inner
        all_orders = torch.cat([self.states[i].draw(k) for i in active])
        all_owners = torch.tensor(active).repeat_interleave(k)
        for c in range(0, len(all_owners), chunk):
            orders, owners = all_orders[c : c + chunk], all_owners[c : c + chunk]
            zf, zr = full_logits(self.fwd, self.comps, self.base, self.full, owners.to(self.device), orders, st.antithetic)
            for i in owners.unique().tolist():
                sel = owners == i
                record_full(self.states[i], orders[sel], zf[sel], zr[sel] if zr is not None else None, st.value, st.antithetic)
                self.states[i].passes += int(sel.sum()) * passes_per_unit
            self.bar.update(len(orders) * passes_per_unit)

    # ------------------------------------------------------------------------- focused permutations

    def _focused(self) -> None:
        """Focused permutations on the players that carry the variance, until the budgets are spent."""
        plan, rounds = self.plan, 0
        while plan.p > 2 and rounds < MAX_FOCUSED_ROUNDS:
            active = [i for i, s in enumerate(self.states) if not s.done and plan.budget + 2 - s.passes > 0]
            if not active:
                break
            units = []
            for i in active:
                drawn = self._focused_draw(self.states[i], rounds)
                if drawn is not None:
                    units.append((i, *drawn))
            if not units:
                break
            self._evaluate_focused(units)
            rounds += 1
            self._check_target([i for i, _, _, _ in units])

    def _focused_draw(self, s: ImageSamples, rounds: int):
        """One round's focused units of one image: orders, observed players and needed prefixes (None: done)."""
        plan, st = self.plan, self.settings
        left = plan.budget + 2 - s.passes
        spend = left if st.target_se is None and rounds >= 2 else min(left, plan.round_passes or max(left // 3, 1))
        _, _, unit_var = self._estimate(s, False)
        counts = len(s.full_d) + (torch.stack(s.foc_masks).sum(0) if s.foc_masks else torch.zeros(plan.p))
        q, units = allocate(unit_var, counts, spend / (2 * st.per_unit))
        if units == 0:
            s.done = True
            return None
        orders, masks = s.draw(units), s.draw_masks(units, q)
        return orders, masks, needed_prefixes(orders, masks)

    def _evaluate_focused(self, units: list) -> None:
        """Evaluate and record the focused ``units`` (image, orders, masks, need), in batches of ``batch_size`` passes."""
        st = self.settings
        owners = torch.cat([torch.full((len(o),), i) for i, o, _, _ in units])
        orders = torch.cat([o for _, o, _, _ in units])
        masks = torch.cat([m for _, _, m, _ in units])
        need = torch.cat([nd for _, _, _, nd in units])
        cost = need.sum(1) * st.per_unit
        c = 0
        while c < len(owners):
            e, total = _next_batch(cost, c, int(st.batch_size))
            zf, zr = focused_logits(self.fwd, self.comps, self.base, self.full, owners[c:e].to(self.device), orders[c:e],
                                    need[c:e], st.antithetic)
            rows = torch.cat([torch.zeros(1, dtype=torch.long), need[c:e].sum(1).cumsum(0)])
            for i in owners[c:e].unique().tolist():
                sel = (owners[c:e] == i).nonzero().flatten()
                lo, hi = int(rows[sel[0]]), int(rows[sel[-1] + 1])
                record_focused(self.states[i], orders[c:e][sel], masks[c:e][sel], need[c:e][sel], zf[lo:hi],
                               zr[lo:hi] if zr is not None else None, st.value, st.antithetic)
                self.states[i].passes += int(cost[c:e][sel].sum())
            self.bar.update(total)
            c = e
