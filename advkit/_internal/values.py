"""Parameter values: the ranges a registration declares, and the conversion of command-line strings.

Written for advkit: the checks every registered factory's parameters pass before it is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from advkit._internal.errors import UserError


@dataclass(frozen=True)
class Range:
    """An allowed interval for a numeric parameter, declared at registration (``ranges={"steps": Range(1)}``).

    ``None`` passes (it means "the factory's default"); bounds are inclusive
    unless ``lo_open``/``hi_open``.
    """

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __str__(self) -> str:
        left = "(" if self.lo_open else "["
        right = ")" if self.hi_open else "]"
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        return f"{left}{lo}, {hi}{right}"

    def check(self, value, where: str) -> None:
        if value is None or isinstance(value, (str, tuple, list)):
            return
        try:
            v = float(value)
        except (TypeError, ValueError):
            return
        ok = v == v  # NaN fails
        if self.lo is not None:
            ok = ok and (v > self.lo if self.lo_open else v >= self.lo)
        if self.hi is not None:
            ok = ok and (v < self.hi if self.hi_open else v <= self.hi)
        if not ok:
            raise UserError(f"{where} must lie in {self}, got {value!r}")


#: Ranges shared by many attacks.
POSITIVE = Range(0, None, lo_open=True)
AT_LEAST_ONE = Range(1)
NON_NEGATIVE = Range(0)
PROBABILITY = Range(0, 1)


def convert(value: Any, default: Any, where: str) -> Any:
    """Convert a command-line string to the type of ``default``; a number of the wrong kind (``steps=2.7``,
    ``steps=True``) is refused, never truncated."""
    if not isinstance(value, str):
        if isinstance(default, int) and not isinstance(default, bool) and value is not None:
            if isinstance(value, bool) or not isinstance(value, int):
                if not (isinstance(value, float) and value.is_integer()):
                    raise UserError(f"{where}: expected an integer, got {value!r}")
                return int(value)
        if isinstance(default, bool) and value is not None and not isinstance(value, bool):
            raise UserError(f"{where}: expected true/false, got {value!r}")
        return value
    v = value.strip()
    if isinstance(default, bool):
        if v.lower() in ("1", "true", "yes", "on"):
            return True
        if v.lower() in ("0", "false", "no", "off"):
            return False
        raise UserError(f"{where}: expected true/false, got {value!r}")
    if isinstance(default, int) and not isinstance(default, bool):
        try:
            return int(v)
        except ValueError:
            raise UserError(f"{where}: expected an integer, got {value!r}") from None
    if isinstance(default, float) or default is None:
        try:
            return parse_number(v)
        except ValueError:
            if isinstance(default, float):
                raise UserError(f"{where}: expected a number, got {value!r}") from None
            if v.lower() in ("none", "null"):
                return None
            if v.lower() in ("true", "false"):
                return v.lower() == "true"
            return v
    return v


def parse_number(text: str) -> float | int:
    """Parse ``8/255``, ``0.031``, ``2e-2`` or ``10``; raise ``ValueError`` otherwise."""
    t = str(text).strip()
    if "/" in t:
        num, _, den = t.partition("/")
        d = float(den)
        if d == 0:
            raise ValueError(f"division by zero in {text!r}")
        return float(num) / d
    if t.lstrip("+-").isdigit():
        return int(t)
    return float(t)
