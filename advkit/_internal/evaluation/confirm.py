"""``--confirm NAME[:fraction=F,...]``: a registered attack on a seeded sample of the points the run left unbroken.

A cheap suite (``fast``) is checked by a trusted one (standard AutoAttack, ``aa``)
without paying for the trusted one on every point: the confirming attack runs on
a seeded random sample of the survivors (``fraction`` of them, 0.1 by default, at
least ``min`` points, 20 by default), through the same verified, logged and
resumable path as every attack. What it breaks there estimates what the run
missed: the gap in robust accuracy is (survivors / n) x (broken / sampled), with
a 95 % interval for sampling without replacement (Wilson's score interval on the
effective sample size m (N - 1) / (N - m), the finite-population correction; the
interval closes on the estimate when every survivor is sampled). The run's robust
accuracy stays the suite's own; the report says so and gives the estimate beside it.
"""

from __future__ import annotations

import math
import random

from advkit._internal.errors import UserError
from advkit._internal.evaluation.report import wilson
from advkit._internal.registry import parse_spec
from advkit._internal.seeds import derive_seed

OWN = {"fraction": 0.1, "min": 20}  # the confirmation's own keys; the others are the attack's parameters


def parse_confirm(spec) -> tuple[str, dict, dict] | None:
    """``"aa:fraction=0.2,n_iter=50"`` -> ``("aa", {"fraction": 0.2, "min": 20}, {"n_iter": "50"})``."""
    if spec is None or spec == "" or str(spec).strip().lower() == "none":
        return None
    name, params = parse_spec(str(spec))
    own = dict(OWN)
    try:
        if "fraction" in params:
            own["fraction"] = float(params.pop("fraction"))
        if "min" in params:
            own["min"] = int(params.pop("min"))
    except ValueError:
        raise UserError(f"--confirm {spec!r}: fraction must be a number in (0, 1] and min a whole number") from None
    if not 0 < own["fraction"] <= 1 or own["min"] < 1:
        raise UserError(f"--confirm {spec!r}: fraction must lie in (0, 1] and min be at least 1")
    return name, own, params


def sample(survivors: list[int], fraction: float, least: int, seed: int) -> list[int]:
    """A seeded random sample of ``survivors`` (sorted), ``fraction`` of them but at least ``least``."""
    m = min(len(survivors), max(least, math.ceil(fraction * len(survivors))))
    rng = random.Random(derive_seed(seed, "confirm", len(survivors)))
    return sorted(rng.sample(sorted(survivors), m))


def gap_interval(broken: int, sampled: int, survivors: int, n: int) -> dict:
    """The estimated gap in robust accuracy (a fraction of all ``n`` points) and its 95 % interval."""
    if sampled == 0:
        return {"gap": 0.0, "ci95": [0.0, 0.0]}
    p = broken / sampled
    if sampled >= survivors:
        lo = hi = p
    else:
        effective = sampled * (survivors - 1) / (survivors - sampled)
        lo, hi = wilson(p * effective, effective)
    scale = survivors / n
    return {"gap": scale * p, "ci95": [scale * lo, scale * hi]}


def run_confirm(s, spec: tuple[str, dict, dict], robust: list[int], seed: int) -> dict:
    """Run the confirming attack on a sample of ``robust``; what it found, for the report."""
    name, own, params = spec
    atk = s.build(name, **params)
    chosen = sample(robust, own["fraction"], own["min"], seed)
    ran, seconds, passes = s.runner.attack(f"confirm:{atk.name}", atk, chosen, key=f"confirm:{atk.name}",
                                           label=f"{atk.name} (confirm: {len(chosen)} of {len(robust)} survivors)")
    broken = sorted(i for i, r in ran.items() if r["broken"])
    est = gap_interval(len(broken), len(chosen), len(robust), s.n)
    return {"attack": atk.name, "implementation": atk.implementation, "fraction": own["fraction"],
            "survivors": len(robust), "sampled": len(chosen), "broken": len(broken), "broken_points": broken,
            "seconds": seconds, "passes": passes.as_dict(), **est,
            "standard_autoattack": bool(atk.extra.get("autoattack_standard"))}
