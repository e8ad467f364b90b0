"""What an AutoAttack run is doing, as it happens, and what it costs.

A batch of standard AutoAttack can run for an hour on a CPU; the engine's bar
moves once per batch. :func:`track` wraps the sub-attack objects of a fra31
``AutoAttack`` (``autoattack`` or ``pyautoattack``: the same attack code) so
that each sub-attack, each of its restarts or target classes, and each of
Square's queries is shown next to the bar through :func:`advkit.plugin.activity`
("AutoAttack: APGD-T 3/9"). The library's own logging (``verbose``) is no use
here: it is off by default, and on it prints every iteration's loss. Only
counters are added; the attacks themselves run unchanged.

:func:`stages` is the plan of a run: the worst-case work per attacked point
of each sub-attack (no point broken early), from the version's settings, for
the engine's cost estimate and progress bar.
"""

from __future__ import annotations

import functools

from advkit.plugin import activity

LABELS = {"apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR", "apgd-t": "APGD-T", "fab": "FAB", "fab-t": "FAB-T",
          "square": "Square"}

# The settings each version gives its attack objects (fra31 ``AutoAttack._set_version``, Linf/L2).
SETTINGS = {
    "standard": {"n_iter": 100, "apgd_restarts": 1, "fab_restarts": 1, "n_target_classes": 9, "n_queries": 5000,
                 "square_restarts": 1, "eot_iter": 1},
    "plus": {"n_iter": 100, "apgd_restarts": 5, "fab_restarts": 5, "n_target_classes": 9, "n_queries": 5000,
             "square_restarts": 1, "eot_iter": 1},
    "rand": {"n_iter": 100, "apgd_restarts": 1, "fab_restarts": 1, "n_target_classes": 9, "n_queries": 5000,
             "square_restarts": 1, "eot_iter": 20},
}


def stages(version: str, attacks: list[str], budget: dict, n_classes: int = 10) -> list:
    """The plan of a run: per sub-attack, its worst-case forward and backward passes per attacked point.

    Per iteration, APGD takes one forward and one backward pass per EOT sample (plus a forward to start);
    FAB untargeted one backward per class (its Jacobian) and two forwards; FAB-T and APGD-T run once per
    target; Square takes one forward per query. ``n_restarts`` applies to APGD, FAB and Square, as
    :func:`advkit_autoattack.backends.set_budget` sets it. (Measured on small CNNs, the counts per point
    of points that never break match these within a few passes.)
    """
    from advkit.plugin import Stage

    s = dict(SETTINGS[version])
    if "n_restarts" in budget:
        s["apgd_restarts"] = s["fab_restarts"] = s["square_restarts"] = budget["n_restarts"]
    s.update({k: v for k, v in budget.items() if k in s})
    it, targets = s["n_iter"], min(s["n_target_classes"], n_classes - 1)
    apgd = (it + 1, it)
    runs = {
        "apgd-ce": (apgd, s["apgd_restarts"] * s["eot_iter"]),
        "apgd-dlr": (apgd, s["apgd_restarts"] * s["eot_iter"]),
        "apgd-t": (apgd, targets),
        "fab": ((2 * it + 3, it * n_classes), s["fab_restarts"]),
        "fab-t": ((2 * it + 3, it), targets),
        "square": ((s["n_queries"] + 1, 0), s["square_restarts"]),
    }
    return [Stage(LABELS[a], runs[a][0][0] * runs[a][1], runs[a][0][1] * runs[a][1]) for a in attacks]


class Tracker:
    """Counts the units of work of a fra31 ``AutoAttack`` object and reports them with :func:`activity`."""

    def __init__(self, adv, run_list: list[str]):
        self.adv, self.run_list = adv, run_list
        self.current, self.unit, self.units, self.queries = "", 0, 1, 0
        for obj in (adv.apgd, adv.apgd_targeted, adv.fab, adv.square):
            obj.perturb = self._wrap_perturb(obj, obj.perturb)
            obj.attack_single_run = self._wrap_unit(obj.attack_single_run)
        adv.square.margin_and_loss = self._wrap_query(adv.square.margin_and_loss)

    def _name(self, obj) -> str:
        adv = self.adv
        if obj is adv.apgd:
            return "apgd-ce" if obj.loss == "ce" else "apgd-dlr"
        if obj is adv.apgd_targeted:
            return "apgd-t"
        if obj is adv.fab:
            return "fab-t" if obj.targeted else "fab"
        return "square"

    def _units(self, name: str, obj) -> int:
        targets = getattr(obj, "n_target_classes", 1) if name in ("apgd-t", "fab-t") else 1
        return max(1, targets * int(getattr(obj, "n_restarts", 1)))

    def text(self) -> str:
        k = self.run_list.index(self.current) + 1 if self.current in self.run_list else 0
        of = f" ({k}/{len(self.run_list)})" if len(self.run_list) > 1 and k else ""
        line = f"AutoAttack{of}: {LABELS.get(self.current, self.current)} {min(max(self.unit, 1), self.units)}/{self.units}"
        if self.current == "square":
            line += f", query {min(self.queries, self.adv.square.n_queries)}/{self.adv.square.n_queries}"
        return line

    def _wrap_perturb(self, obj, fn):
        @functools.wraps(fn)
        def perturb(*args, **kwargs):
            self.current = self._name(obj)
            self.unit, self.units, self.queries = 0, self._units(self.current, obj), 0
            stage = self.run_list.index(self.current) if self.current in self.run_list else None
            activity(self.text(), force=True, stage=stage)
            return fn(*args, **kwargs)

        return perturb

    def _wrap_unit(self, fn):
        @functools.wraps(fn)
        def unit(*args, **kwargs):
            self.unit += 1
            self.queries = 0
            activity(self.text(), force=True)
            return fn(*args, **kwargs)

        return unit

    def _wrap_query(self, fn):
        @functools.wraps(fn)
        def query(*args, **kwargs):
            self.queries += 1
            activity(self.text())
            return fn(*args, **kwargs)

        return query
