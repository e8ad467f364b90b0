"""The three AutoAttack implementations advkit can drive, and the choice between them.

In order of preference: the official ``autoattack`` package (fra31), its
``pyautoattack`` repackaging (same code, keyword-only API, logs to the stdlib
logger ``auto-attack``), and as a last resort torchattacks' ``AutoAttack``,
which is *not* the standard AutoAttack (its APGD runs 10 steps) and is
labelled so. ``ADVKIT_AUTOATTACK=autoattack|pyautoattack|torchattacks``
forces one.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import os
import sys

from advkit.plugin import UserError

IMPLEMENTATIONS = ("autoattack", "pyautoattack", "torchattacks")
ENV = "ADVKIT_AUTOATTACK"

# The attacks of each version, in the order AutoAttack runs them.
VERSIONS = {
    "standard": ["apgd-ce", "apgd-t", "fab-t", "square"],
    "plus": ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"],
    "rand": ["apgd-ce", "apgd-dlr"],
}
ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")


def choose() -> str:
    """The implementation to use: forced by ``ADVKIT_AUTOATTACK``, else the first importable."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced:
        if forced not in IMPLEMENTATIONS:
            raise UserError(f"{ENV}={forced!r}: use one of {', '.join(IMPLEMENTATIONS)}")
        if importlib.util.find_spec(forced) is None:
            raise UserError(f"{ENV}={forced} but the package {forced!r} is not installed")
        return forced
    for name in IMPLEMENTATIONS:
        if importlib.util.find_spec(name) is None:
            continue
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "AutoAttack"):  # not some other package of the same name
            return name
    raise UserError("no AutoAttack implementation found: pip install pyautoattack (or autoattack, or torchattacks)")


def parse_attacks(text: str, version: str) -> list[str]:
    """``"apgd-ce,apgd-t"`` (also ``+``, ``;`` or spaces between names) -> a list in AutoAttack's run order."""
    names = [n for n in text.replace("+", ",").replace(";", ",").replace(" ", ",").lower().split(",") if n]
    bad = [n for n in names if n not in ATTACKS]
    if bad:
        raise UserError(f"unknown AutoAttack attack {bad[0]!r}; choose from {', '.join(ATTACKS)}")
    order = VERSIONS.get(version, []) + [a for a in ATTACKS if a not in VERSIONS.get(version, [])]
    return [a for a in order if a in names]


def set_budget(adv, *, n_iter=None, n_restarts=None, n_queries=None, n_target_classes=None, eot_iter=None) -> None:
    """Override the attack objects of a fra31 ``AutoAttack`` (``autoattack`` or ``pyautoattack``)."""
    for apgd in (adv.apgd, adv.apgd_targeted):
        if n_iter is not None:
            # the constructor derives its step-size checkpoints from n_iter: keep them consistent
            apgd.n_iter = apgd.n_iter_orig = int(n_iter)
            apgd.n_iter_2 = max(int(0.22 * n_iter), 1)
            apgd.n_iter_min = max(int(0.06 * n_iter), 1)
            apgd.size_decr = max(int(0.03 * n_iter), 1)
        if n_restarts is not None:
            apgd.n_restarts = int(n_restarts)
        if eot_iter is not None:
            apgd.eot_iter = int(eot_iter)
    if n_iter is not None:
        adv.fab.n_iter = int(n_iter)
    if n_restarts is not None:
        adv.fab.n_restarts = int(n_restarts)  # FAB-T itself always runs 1 restart
        adv.square.n_restarts = int(n_restarts)
    if n_queries is not None:
        adv.square.n_queries = int(n_queries)
    if n_target_classes is not None:
        adv.apgd_targeted.n_target_classes = int(n_target_classes)
        adv.fab.n_target_classes = int(n_target_classes)


def clamp_targets(adv, n_classes: int, notes: list) -> None:
    """At most ``n_classes - 1`` target classes (standard AA assumes at least 10 classes)."""
    for obj in (adv.apgd_targeted, adv.fab):
        if obj.n_target_classes > n_classes - 1:
            notes.append(f"{type(obj).__name__}: n_target_classes {obj.n_target_classes} -> {n_classes - 1} "
                         f"(the model has {n_classes} classes)")
            obj.n_target_classes = n_classes - 1


class _Collect(logging.Handler):
    def __init__(self, sink: list):
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record):
        self.sink.append(record.getMessage())


@contextlib.contextmanager
def quiet(notes: list):
    """Silence AutoAttack's prints and logging, keeping its warnings (its sanity checks) in ``notes``.

    Also restores the trace function, which AutoAttack's check for dynamic
    defenses resets with ``sys.settrace(None)`` (it would stop coverage tools).
    """
    logger = logging.getLogger("auto-attack")
    handler, propagate, level = _Collect(notes), logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    trace = sys.gettrace()
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            yield
    finally:
        sys.settrace(trace)
        logger.removeHandler(handler)
        logger.propagate, logger.level = propagate, level
        notes.extend(line.strip() for line in out.getvalue().splitlines() if "warning" in line.lower())


def fra31(impl: str, model, threat, *, version: str, attacks: list[str] | None, seed: int, device):
    """A configured fra31 ``AutoAttack`` object from ``autoattack`` or ``pyautoattack``."""
    module = importlib.import_module(impl)
    cls = getattr(module, "AutoAttack", None)
    if cls is None:
        raise UserError(f"the installed {impl!r} has no AutoAttack class")
    kw = {"norm": threat.norm, "eps": float(threat.eps), "version": version, "seed": seed, "device": device}
    if impl == "autoattack":
        kw["verbose"] = False
    with quiet([]):
        adv = cls(model, **kw)
    adv.verbose = False
    if attacks is not None:
        adv.attacks_to_run = list(attacks)
        adv.version = "custom"
    return adv


def run_fra31(impl: str, adv, x, y, batch_size: int):
    if impl == "pyautoattack":
        out = adv.run_standard_evaluation(x, y, batch_size=batch_size)
    else:
        out = adv.run_standard_evaluation(x, y, bs=batch_size)
    return out[0] if isinstance(out, tuple) else out


def torchattacks_aa(model, threat, *, version: str, attacks: list[str] | None, seed: int, n_classes: int,
                    n_iter=None, n_restarts=None, n_queries=None, n_target_classes=None, eot_iter=None):
    """torchattacks' ``AutoAttack`` (not the standard one), with the same budget overrides."""
    import torchattacks

    if threat.norm not in ("Linf", "L2"):
        raise UserError(f"torchattacks' AutoAttack supports Linf and L2 only, not {threat}")
    if attacks is not None and not set(attacks) <= set(VERSIONS[version]):
        version = "plus"  # the only version with every attack; its restarts are reset below
        n_restarts = 1 if n_restarts is None else n_restarts
    with contextlib.redirect_stdout(io.StringIO()):
        atk = torchattacks.AutoAttack(model, norm=threat.norm, eps=float(threat.eps), version=version,
                                      n_classes=n_classes, seed=seed)
    multi = atk._autoattack
    chosen = list(zip(VERSIONS[version], multi.attacks))
    if attacks is not None:
        chosen = [(n, a) for n, a in chosen if n in attacks]
    for name, sub in chosen:
        if n_iter is not None and hasattr(sub, "steps"):
            sub.steps = int(n_iter)
        if n_restarts is not None and name != "fab-t":
            sub.n_restarts = int(n_restarts)
        if n_queries is not None and hasattr(sub, "n_queries"):
            sub.n_queries = int(n_queries)
        if n_target_classes is not None and hasattr(sub, "n_target_classes"):
            sub.n_target_classes = int(n_target_classes)
        if eot_iter is not None and hasattr(sub, "eot_iter"):
            sub.eot_iter = int(eot_iter)
    if len(chosen) == 1:
        return chosen[0][1]
    multi.attacks = [a for _, a in chosen]
    return atk
