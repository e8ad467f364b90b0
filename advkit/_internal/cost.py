"""What a run will cost: the model's time per pass, and the estimate said before a long evaluation."""

from __future__ import annotations

import time

from advkit._internal.progress import format_seconds


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

    ``attacks``: :class:`advkit._internal.attack.Attack` objects (their ``name``, their target ``model``, and the
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
