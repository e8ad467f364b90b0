"""PART's per-pixel budget: which pixels of an image keep the full eps (our own code).

As in the reference implementation, a class activation map is standardised
over the pixels of each image (z-score) and the pixels above ``threshold``
(1 by default) are the *important* ones: they keep ``eps``, all others get
``eps_low``. The reference z-scores the RGB values of a jet-coloured, squared
map, which gives a different mask per colour channel; here the map itself is
standardised, so the mask is one (N, 1, H, W) plane broadcast over channels.

An image whose map is flat (all zeros after Grad-CAM's ReLU, say) says nothing
about its pixels: it keeps the full eps everywhere, as in plain adversarial
training.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by the functions that use it, so that `advkit list` stays fast
    import torch

from advkit.plugin import UserError

DEFAULT_RATIO = 7 / 8  # 7/255 at eps 8/255, the paper's setting


def zscore(cam: torch.Tensor) -> torch.Tensor:
    """Standardise each (1, H, W) map over its pixels (population std); flat maps give 0."""
    import torch

    flat = cam.flatten(1).double()
    mu = flat.mean(1, keepdim=True)
    sd = flat.std(1, unbiased=False, keepdim=True)
    z = torch.where(sd > 0, (flat - mu) / sd.clamp_min(1e-300), torch.zeros_like(flat))
    return z.view_as(cam).to(cam.dtype)


def is_flat(cam: torch.Tensor) -> torch.Tensor:
    """Per image: the map has no spread worth standardising (relative to its size, in its dtype)."""
    import torch

    flat = cam.flatten(1)
    spread = flat.amax(1) - flat.amin(1)
    return spread <= torch.finfo(flat.dtype).eps * flat.abs().amax(1)


def important(cam: torch.Tensor, threshold: float = 1.0) -> torch.Tensor:
    """Boolean (N, 1, H, W): pixels whose z-score exceeds ``threshold`` (every pixel of a flat map)."""
    high = zscore(cam) > threshold
    return high | is_flat(cam).view(-1, 1, 1, 1)


def budget_map(high: torch.Tensor, eps: float, eps_low: float, dtype=None) -> torch.Tensor:
    """``eps`` where ``high``, ``eps_low`` elsewhere (float32 unless ``dtype``)."""
    import torch

    dtype = dtype or torch.float32
    return torch.where(high, torch.tensor(float(eps), dtype=dtype, device=high.device),
                       torch.tensor(float(eps_low), dtype=dtype, device=high.device))


def check_threshold(value) -> float:
    t = float(value)
    if not math.isfinite(t):
        raise UserError(f"part.threshold must be a finite z-score (default 1), got {value!r}")
    return t


def check_low(eps_low=None, ratio=None) -> None:
    """Refuse an ``eps_low``/``ratio`` pair that cannot be right whatever eps is."""
    if eps_low is not None and ratio is not None:
        raise UserError("part: give eps_low or ratio, not both")
    if eps_low is not None and not float(eps_low) >= 0:
        raise UserError(f"part.eps_low must be >= 0, got {eps_low!r}")
    if ratio is not None and not (0 <= float(ratio) <= 1):
        raise UserError(f"part.ratio must lie in [0, 1], got {ratio!r}")


def low_budget(eps: float, eps_low=None, ratio=None) -> float:
    """The budget of unimportant pixels: ``eps_low`` as given (at most eps), or ``ratio * eps`` (default 7/8)."""
    check_low(eps_low, ratio)
    if eps_low is None:
        return (DEFAULT_RATIO if ratio is None else float(ratio)) * eps
    if float(eps_low) > eps:
        raise UserError(f"part.eps_low={float(eps_low):.6g} exceeds the threat model's eps={eps:.6g}")
    return float(eps_low)
