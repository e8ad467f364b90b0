"""Parameter checks shared by the training defenses (one clear line per mistake)."""

from __future__ import annotations

from advkit.plugin import UserError


def nonneg(name: str, value) -> float:
    v = float(value)
    if not v >= 0:
        raise UserError(f"{name} must be >= 0, got {value!r}")
    return v


def fraction(name: str, value, upper_open: bool = False) -> float:
    v = float(value)
    if not (0 <= v < 1 if upper_open else 0 <= v <= 1):
        raise UserError(f"{name} must lie in [0, 1{')' if upper_open else ']'}, got {value!r}")
    return v


def steps(name: str, value) -> int:
    if int(value) != value or int(value) < 0:
        raise UserError(f"{name} must be a whole number >= 0, got {value!r}")
    return int(value)


def step_size(name: str, value):
    if value is None:
        return None
    v = float(value)
    if not v > 0:
        raise UserError(f"{name} must be > 0 (or omitted for eps/4), got {value!r}")
    return v
