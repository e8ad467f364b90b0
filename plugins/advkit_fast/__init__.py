"""advkit plugin: ``fast``, AutoAttack's attacks on a schedule that reaches its worst case at a fraction of its cost.

See :mod:`advkit_fast.suite` for the schedule and docs/benchmarks.md for what it
measured against standard AutoAttack. Nothing is imported until the attack is built.
"""

from __future__ import annotations

from advkit.plugin import hookimpl


@hookimpl
def advkit_register_attacks(register):
    from advkit_fast.factory import fast

    register("fast", fast, aliases=("fast-aa",), early_stop=True, library=("autoattack", "pyautoattack"))
