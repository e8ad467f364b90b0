"""Progress bars on stderr, and what happens inside a long unit of work next to them."""

from __future__ import annotations

import sys
import time
from contextvars import ContextVar

_OPEN: ContextVar[tuple] = ContextVar("advkit_open_bars", default=())


_STAGE: ContextVar[tuple] = ContextVar("advkit_stage_listeners", default=())
_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total_fmt} {unit} [{elapsed}{postfix}]"


def progress(total: int, desc: str, *, quiet: bool = False, unit: str = "it"):
    """A tqdm bar on stderr (silent when ``quiet``, off a terminal, or on a non-main rank under torchrun).

    ``desc`` is what a person reads ("PGD (cascade 1/3)"). The bar may advance by fractions within a
    unit of work; the time left is advkit's own estimate (:func:`show_eta`, from passes done and left),
    not tqdm's rate. While the bar is open, :func:`activity` writes what is happening inside the current
    unit of work (an AutoAttack sub-attack, a query count) after it.
    """
    from tqdm.auto import tqdm

    from advkit._internal.distributed import is_main

    bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, file=sys.stderr,
               disable=True if (quiet or not is_main()) else None, bar_format=_FORMAT)
    bar._advkit_text = {"eta": "", "activity": ""}
    _OPEN.set(_OPEN.get() + (bar,))
    close = bar.close

    def closing():
        _OPEN.set(tuple(b for b in _OPEN.get() if b is not bar))
        close()

    bar.close = closing
    return bar


def say(text: str) -> None:
    """A line on stderr above any open progress bar (not glued to it)."""
    if _OPEN.get():
        from tqdm.auto import tqdm

        tqdm.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr, flush=True)


def _draw(bar, force: bool) -> None:
    text = "; ".join(t for t in (bar._advkit_text.get("eta"), bar._advkit_text.get("activity")) if t)
    now = time.monotonic()
    if not force and now - getattr(bar, "_advkit_drawn", 0.0) < 0.2:
        bar.set_postfix_str(text, refresh=False)
        return
    bar._advkit_drawn = now
    bar.set_postfix_str(text, refresh=True)


def _innermost():
    bars = [b for b in _OPEN.get() if not getattr(b, "disable", True) and hasattr(b, "_advkit_text")]
    return bars[-1] if bars else None


def activity(text: str, *, force: bool = False, stage: int | None = None) -> None:
    """Show ``text`` ("AutoAttack: APGD-T 3/9") after the innermost open progress bar.

    For plugins whose one call runs long (a batch of AutoAttack, Square's queries). ``stage``: the index
    of the attack's declared stage now running (:attr:`LibraryAttack.stages`), which the time estimate
    uses. Costs nothing when no bar is shown; redraws at most every 0.2 s unless ``force``.
    """
    if stage is not None:
        for listener in _STAGE.get():
            listener(stage)
    bar = _innermost()
    if bar is None:
        return
    bar._advkit_text["activity"] = text
    _draw(bar, force)


def show_eta(bar, seconds: float | None, *, force: bool = False) -> None:
    """Write the estimated time left ("~3 min left") on ``bar``."""
    if bar is None or getattr(bar, "disable", True) or not hasattr(bar, "_advkit_text"):
        return
    bar._advkit_text["eta"] = "" if seconds is None else f"~{format_seconds(seconds)} left"
    _draw(bar, force)


class stage_listener:
    """While open, ``listener(stage)`` hears every :func:`activity` call that names a stage."""

    def __init__(self, listener):
        self.listener = listener

    def __enter__(self):
        self.token = _STAGE.set(_STAGE.get() + (self.listener,))
        return self

    def __exit__(self, *exc):
        _STAGE.reset(self.token)


def format_seconds(seconds: float) -> str:
    """``42 s``, ``7 min``, ``1 h 35 min``."""
    s = int(round(seconds))
    if s < 90:
        return f"{s} s"
    if s < 3600:
        return f"{round(s / 60)} min"
    return f"{s // 3600} h {round(s % 3600 / 60)} min"
