"""What every engine and plugin shares at run time: seeds, progress bars, cost estimates, the model fingerprint, versions.

One implementation each, so that a report, a training state and a CSA bank
built from the same model carry the same fingerprint, and every seeded random
choice in advkit derives the same way.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import platform
import random
import sys
import time
from contextvars import ContextVar

#: The distributions whose versions a report records.
VERSIONED = ("advkit", "torch", "torchvision", "timm", "torchattacks", "adversarial-robustness-toolbox",
             "autoattack", "pyautoattack", "captum", "numpy")


def derive_seed(seed: int, *keys) -> int:
    """A 63-bit seed that is a pure function of ``seed`` and ``keys`` (strings and numbers)."""
    digest = hashlib.sha256(repr((int(seed),) + tuple(keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), Python's ``random`` and NumPy's global generator."""
    import torch

    torch.manual_seed(seed)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:
        pass


def generator(device, seed: int):
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


_OPEN: ContextVar[tuple] = ContextVar("advkit_open_bars", default=())


def progress(total: int, desc: str, *, quiet: bool = False, unit: str = "it"):
    """A tqdm bar on stderr (silent when ``quiet``, off a terminal, or on a non-main rank under torchrun).

    ``desc`` is what a person reads ("PGD (cascade 1/3)"). tqdm shows the rate and, the total being
    known, the time left. While the bar is open, :func:`activity` writes what is happening inside the
    current unit of work (an AutoAttack sub-attack, a query count) after it.
    """
    from tqdm.auto import tqdm

    from advkit.distributed import is_main

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


def calibrate(model, x, y, repeats: int = 2) -> dict:
    """Seconds per image of one forward and of one forward+backward pass of ``model`` on the batch ``x``.

    The fastest of ``repeats`` timed passes after one warm-up pass; the model's mode is left as it was.
    """
    import torch
    import torch.nn.functional as F

    def timed(fn) -> float:
        fn()
        best = float("inf")
        for _ in range(repeats):
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            t0 = time.perf_counter()
            fn()
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            best = min(best, time.perf_counter() - t0)
        return best / x.shape[0]

    def forward():
        with torch.no_grad():
            model(x)

    def backward():
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            torch.autograd.grad(F.cross_entropy(model(xg), y), xg)

    return {"forward": timed(forward), "backward": timed(backward)}


def estimate_seconds(per_image: dict, passes: dict, points: int) -> float:
    """Time to attack ``points`` images with ``passes`` per image (``{"backward": n, "forward": m}``:
    forward+backward and forward-only passes, counted as if no point broke early), given
    :func:`calibrate`'s ``per_image`` seconds."""
    return points * (passes.get("backward", 0) * per_image["backward"] + passes.get("forward", 0) * per_image["forward"])


def cost_estimate(attacks, x, y, points: int, *, threshold: float = 180.0, calibration_batch: int = 32) -> str | None:
    """A line announcing a long evaluation, or ``None`` when it should take under ``threshold`` seconds.

    ``attacks``: :class:`advkit.attack.Attack` objects (their ``name``, their target ``model``, and the
    ``passes`` per point their plugin declares in ``extra``; an attack that declares none is named as not
    estimated); ``points``: how many images each may see at most; ``x, y``: a batch on the device the
    attacks run on; its first ``calibration_batch`` images time each target model once (:func:`calibrate`:
    a few seconds at most for a ResNet on a CPU).
    """
    known = [a for a in attacks if a.extra.get("passes")]
    if not known or points <= 0:
        return None
    x, y = x[:calibration_batch], y[:calibration_batch]
    timed: dict[int, dict] = {}
    for a in known:
        if id(a.model) not in timed:
            timed[id(a.model)] = calibrate(a.model, x, y)
    parts = [(a.name, estimate_seconds(timed[id(a.model)], a.extra["passes"], points)) for a in known]
    total = sum(t for _, t in parts)
    if total < threshold:
        return None
    detail = ", ".join(f"{name} {format_seconds(t)}" for name, t in parts)
    unknown = [a.name for a in attacks if not a.extra.get("passes")]
    tail = f"; {', '.join(unknown)} not estimated" if unknown else ""
    per = min(t["backward"] for t in timed.values())
    return (f"estimated time: about {format_seconds(total)} for {len(known)} attack(s) on up to {points} points "
            f"({detail}{tail}; one forward+backward pass takes {1000 * per:.2f} ms per image here)")


def model_fingerprint(model) -> str:
    """sha256 over the names, dtypes, shapes and bytes of the model's state-dict tensors."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def versions() -> dict:
    """Versions of Python, torch and the attack libraries, for reports."""
    out = {"python": platform.python_version()}
    for pkg in VERSIONED:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
