"""What an attack costs, in model passes: images through forward and through backward (:class:`Passes`),
and what an attack declares of its plan (:class:`Stage`). Light: no torch here, so that registering stays cheap.

:class:`advkit._internal.counter.PassCounter` wraps the model an attack sees (advkit's own code; no
library counts this). Every call adds the batch's images to ``forward``; when
the output takes part in autograd, a hook on it adds them to ``backward`` once
the gradient flows back through the model. So every attack family (torchattacks,
ART, AutoAttack, advkit's own) is counted the same way, from what it actually
did, not from a declared budget. The report, the estimate and the progress bar
all read the same counter (listeners are told of every pass).

:class:`Stage` is what an attack declares about its plan: the worst-case passes
per point of each of its stages, in order (``LibraryAttack.stages``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Passes:
    """Images through the model's forward and through its backward, and the calls that carried them."""

    forward: int = 0
    backward: int = 0
    forward_calls: int = 0
    backward_calls: int = 0

    def _zip(self, other: Passes, sign: int) -> Passes:
        return Passes(*(a + sign * b for a, b in zip(self.as_tuple(), other.as_tuple())))

    def __add__(self, other: Passes) -> Passes:
        return self._zip(other, 1)

    def __sub__(self, other: Passes) -> Passes:
        return self._zip(other, -1)

    def scaled(self, images: float, calls: float = 1.0) -> Passes:
        """Images multiplied by ``images``, calls by ``calls`` (rounded)."""
        return Passes(round(self.forward * images), round(self.backward * images),
                      round(self.forward_calls * calls), round(self.backward_calls * calls))

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.forward, self.backward, self.forward_calls, self.backward_calls)

    @property
    def total(self) -> int:
        """Forward plus backward images: the passes an attack spent."""
        return self.forward + self.backward

    def as_dict(self) -> dict:
        return {"forward": self.forward, "backward": self.backward, "forward_calls": self.forward_calls,
                "backward_calls": self.backward_calls}

    @classmethod
    def of(cls, d: dict | None) -> Passes:
        d = d or {}
        return cls(*(int(d.get(k, 0)) for k in ("forward", "backward", "forward_calls", "backward_calls")))


@dataclass(frozen=True)
class Stage:
    """One stage of an attack's plan: its name, its worst-case passes per point it works on, the largest
    share of the points still live when it starts that it works on (1: all of them), and whether a point
    leaves it as soon as it is broken (then a point the model cannot defend costs about one pass)."""

    name: str
    forward: float = 0.0
    backward: float = 0.0
    share: float = 1.0
    early_stop: bool = False  # a point leaves the stage (and the attack) as soon as it is broken

    def passes(self, points: float = 1.0, batches: float = 1.0) -> Passes:
        """The stage on ``points`` live points in ``batches`` batches (one call per pass per point and batch)."""
        return Passes(round(self.forward * points * self.share), round(self.backward * points * self.share),
                      round(self.forward * batches), round(self.backward * batches))
