"""Progress bars on stderr, and what happens inside a long unit of work next to them."""

from __future__ import annotations

import sys
import time
from contextvars import ContextVar


_OPEN: ContextVar[tuple] = ContextVar("advkit_open_bars", default=())


def progress(total: int, desc: str, *, quiet: bool = False, unit: str = "it"):
    """A tqdm bar on stderr (silent when ``quiet``, off a terminal, or on a non-main rank under torchrun).

    ``desc`` is what a person reads ("PGD (cascade 1/3)"). tqdm shows the rate and, the total being
    known, the time left. While the bar is open, :func:`activity` writes what is happening inside the
    current unit of work (an AutoAttack sub-attack, a query count) after it.
    """
    from tqdm.auto import tqdm

    from advkit._internal.distributed import is_main

    bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, file=sys.stderr,
               disable=True if (quiet or not is_main()) else None)
    _OPEN.set(_OPEN.get() + (bar,))
    close = bar.close

    def closing():
        _OPEN.set(tuple(b for b in _OPEN.get() if b is not bar))
        close()

    bar.close = closing
    return bar


def activity(text: str, *, force: bool = False) -> None:
    """Show ``text`` ("AutoAttack: APGD-T 3/9") after the innermost open progress bar.

    For plugins whose one call runs long (a batch of AutoAttack, Square's queries). Costs nothing
    when no bar is shown; redraws at most every 0.2 s unless ``force``.
    """
    bars = [b for b in _OPEN.get() if not getattr(b, "disable", True)]
    if not bars:
        return
    bar = bars[-1]
    now = time.monotonic()
    if not force and now - getattr(bar, "_advkit_drawn", 0.0) < 0.2:
        bar.set_postfix_str(text, refresh=False)
        return
    bar._advkit_drawn = now
    bar.set_postfix_str(text, refresh=True)


def format_seconds(seconds: float) -> str:
    """``42 s``, ``7 min``, ``1 h 35 min``."""
    s = int(round(seconds))
    if s < 90:
        return f"{s} s"
    if s < 3600:
        return f"{round(s / 60)} min"
    return f"{s // 3600} h {round(s % 3600 / 60)} min"
