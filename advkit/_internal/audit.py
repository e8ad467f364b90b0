"""What an audit check is, seen from a plugin: :class:`Check` and the :func:`finding` it returns.

``advkit eval --audit`` runs every check registered with the
``advkit_register_checks`` hook (the built-in ones included) on a seeded sample
of the clean-correct points. A check gets an
:class:`advkit._internal.evaluation.audit.AuditContext` (the sample, the threat
model, the model as attacks see it, and methods that run registered attacks
through the run's verified, logged path) and returns one finding: passed or
flagged, what was seen on how many points, what it suggests, and the remedy
``--adaptive`` applies for it. Before anything runs, the audit asks each check
its worst-case cost in model passes and announces the sum.
"""

from __future__ import annotations

from advkit._internal.passes import Passes


class Check:
    """One audit check. Set :attr:`doc` (the section of docs/audit.md) and :attr:`remedy`, implement
    :meth:`run`, and :meth:`cost` when the check runs attacks or model passes of its own."""

    doc: str = ""  # anchor in docs/audit.md (default: the registered name)
    remedy: str = ""  # the remedy --adaptive applies when the check flags ("" for none)

    def __init__(self, **params):
        self.params = params
        self.name = ""  # set by the audit from the registration

    def cost(self, ctx) -> Passes:
        """The most passes (forward and backward images, calls) the check spends on ``ctx``'s sample."""
        return Passes()

    def run(self, ctx) -> dict:
        """Run the check on ``ctx``'s sample; return :func:`finding`'s dict."""
        raise NotImplementedError


def finding(check: Check, passed: bool, detail: str, suggests: str = "", *, flagged: int | None = None,
            points: int | None = None, applies: bool = True, remedy: str | None = None) -> dict:
    """A check's result: ``passed`` or flagged, the one-line ``detail`` (what was seen, on how many of how
    many points: ``flagged`` of ``points``), what a flag ``suggests``, and whether it ``applies`` at all
    (a check that cannot run on this model says so instead of passing); ``remedy``: the one this finding
    calls for, when it is not the check's usual ``check.remedy``."""
    return {"check": check.name, "passed": bool(passed) or not applies, "applies": bool(applies),
            "detail": detail, "suggests": "" if passed or not applies else suggests,
            "flagged": flagged, "points": points, "doc": check.doc or check.name,
            "remedy": "" if passed or not applies else check.remedy if remedy is None else remedy}
