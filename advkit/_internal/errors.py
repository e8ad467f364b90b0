"""Errors that are the user's to fix: the CLI prints them as one line, exit code 2."""

from __future__ import annotations

import difflib


class UserError(Exception):
    """Bad input from the user (a name, a value, a file). Shown without a traceback."""


class ThreatViolation(RuntimeError):
    """An attack returned points outside the threat model: a bug in that attack."""


def closest(name: str, candidates, n: int = 3) -> list[str]:
    """The candidates closest to ``name``, best first."""
    candidates = list(candidates)
    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    if not hits:
        hits = [c for c in lowered if name.lower() in c or c in name.lower()][:n]
    return [lowered[h] for h in hits]


def unknown(kind: str, name: str, candidates) -> UserError:
    """A ``UserError`` for an unknown name that suggests the closest valid ones."""
    hits = closest(name, candidates)
    hint = f"; did you mean {', '.join(repr(h) for h in hits)}?" if hits else ""
    return UserError(f"unknown {kind} {name!r}{hint} (see 'advkit list {kind}s')")
