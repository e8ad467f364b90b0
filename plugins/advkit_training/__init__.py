"""Adversarial-training defenses: PGD-AT, TRADES, MART, label smoothing and mixed-batch training.

Objectives (``pgd-at``, ``trades``, ``mart``) own the *objective* point and get
their examples from the engine's training PGD (:mod:`advkit.adversary`) unless
an adversary defense such as ``mixed`` (or PART) owns the *adversary* point.
``label-smoothing`` is a modifier: it owns no point and smooths the labels of
whichever objective trains.
"""

from __future__ import annotations

from advkit.plugin import hookimpl


@hookimpl
def advkit_register_defenses(register):
    from advkit_training.mart import MART
    from advkit_training.mixed import Mixed
    from advkit_training.pgd_at import PGDAT
    from advkit_training.smoothing import LabelSmoothing
    from advkit_training.trades import TRADES

    register("pgd-at", PGDAT, aliases=("pgdat", "madry"))
    register("trades", TRADES)
    register("mart", MART)
    register("label-smoothing", LabelSmoothing, aliases=("smoothing",))
    register("mixed", Mixed, aliases=("mixed-batch",))
