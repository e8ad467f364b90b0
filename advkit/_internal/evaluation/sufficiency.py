"""EOT sufficiency: is the white-box attack on a random model still getting stronger with more EOT samples?

An attack on a random model follows the gradient of the mean logits over ``e``
samples (EOT). Too few samples leave the gradient noisy and the attack weak, so
robust accuracy falls as ``e`` grows until the estimate is good enough. advkit
runs the white-box reference attack (the attack registered with
``reference="white-box"``) with EOT 1, 5, 20 and 50 on a seeded sample of the
clean-correct points, judged like the run, and says whether the accuracy was
still falling between the last two (beyond what the draws' noise explains).
advkit's own (the check of Athalye et al. 2018 and Pintor et al. 2022, made a number).
"""

from __future__ import annotations

import math
import random
import sys

from advkit._internal import distributed as D
from advkit._internal.attack import create_attack
from advkit._internal.cost import declared
from advkit._internal.plugins import registry
from advkit._internal.seeds import derive_seed
from advkit._internal.stochastic import EOTModel

SAMPLES = (1, 5, 20, 50)
POINTS = 32


def _sample(points: list[int], seed: int) -> list[int]:
    rng = random.Random(derive_seed(seed, "eot-sufficiency", len(points)))
    return sorted(rng.sample(points, min(POINTS, len(points))))


def draw_noise(scores: list[float], draws: int) -> float:
    """Standard error of a mean score that comes from the draws alone (each point: R Bernoulli draws)."""
    if draws < 2 or not scores:
        return 0.0
    return math.sqrt(sum(p * (1 - p) for p in scores) / (draws - 1)) / len(scores)


def eot_sufficiency(s, seed: int, quiet: bool) -> dict:
    """Accuracy of the white-box reference attack at each EOT in :data:`SAMPLES`; ``still_falling`` when the
    last step lowered it by more than one point of the sample and twice the draws' standard error."""
    if not s.inputs.attacks:
        return {"skipped": "the run asked for no attack (attacks none)"}
    found = registry("attack").with_capability("reference", "white-box")
    if not found or not s.correct:
        why = "no attack is registered as the white-box reference" if not found else "no clean-correct point"
        return {"skipped": why}
    name, pts = found[0].name, _sample(s.correct, seed)
    params = dict(s.inputs.attack_opts.get(name, {}))
    built = {e: create_attack(name, EOTModel(s.counter, e).eval() if e > 1 else s.counter, s.inputs.threat, **params)
             for e in SAMPLES}
    per_point = declared(built[1].stages)
    if not quiet and D.is_main():
        print(f"advkit: EOT sufficiency: {name} on {len(pts)} points at EOT {', '.join(map(str, SAMPLES))}: up to "
              f"{sum(SAMPLES) * len(pts) * per_point.forward:,.0f} forward and "
              f"{sum(SAMPLES) * len(pts) * per_point.backward:,.0f} backward image passes", file=sys.stderr, flush=True)
    rows, scores = [], []
    for e, atk in built.items():
        atk.name = name
        ran, seconds, _ = s.runner.attack(f"eot-sufficiency:{e}:{name}", atk, pts, key=f"eot-sufficiency:{name}",
                                          label=f"EOT sufficiency: {name} with EOT {e}")
        scores = [min(s.clean[i], ran[i]["score"]) for i in pts]
        rows.append({"eot": e, "accuracy": sum(scores) / len(pts), "seconds": round(seconds, 2)})
    drop = rows[-2]["accuracy"] - rows[-1]["accuracy"]
    tolerance = max(1 / len(pts), 2 * draw_noise(scores, s.draws))
    return {"attack": name, "points": len(pts), "rows": rows, "still_falling": drop > tolerance + 1e-12,
            "tolerance": tolerance}
