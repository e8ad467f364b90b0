"""L2 projected gradient ascent on an image objective, as in the feature-visualisation methods.

Each step moves δ by ``step`` along the per-image L2-normalised gradient,
projects it onto the L2 ball of radius ``eps`` and keeps x0 + δ in [0, 1]
(the L2 step of Engstrom et al.'s ``robustness`` library, which the paper uses).
"""

from __future__ import annotations

from typing import Callable

import torch

from advkit.plugin import ExplainContext, UserError, l2_normalize, l2_project


def l2_pgd(
    x0: torch.Tensor,
    objective: Callable[[torch.Tensor, slice], torch.Tensor],
    *,
    iterations: int,
    eps: float,
    step: float,
    maximize: bool = True,
    batch_size: int = 128,
    desc: str = "pgd",
    ctx: ExplainContext | None = None,
) -> torch.Tensor:
    """Optimise ``objective(x, rows) -> (n,)`` over x in {x0 + δ : ‖δ‖₂ ≤ eps} ∩ [0, 1]; return the last x.

    ``rows`` is the slice of ``x0`` the batch ``x`` comes from, so the
    objective can look up per-image targets.
    """
    if int(iterations) < 0 or not float(eps) > 0 or not float(step) > 0:
        raise UserError(f"PGD needs iterations >= 0, eps > 0 and step > 0 (got {iterations}, {eps}, {step})")
    iterations, batch_size = int(iterations), max(1, int(batch_size))
    sign = 1.0 if maximize else -1.0
    out = []
    n_batches = (x0.shape[0] + batch_size - 1) // batch_size
    with (ctx or ExplainContext(quiet=True)).progress(iterations * n_batches, desc) as bar:
        for i in range(0, x0.shape[0], batch_size):
            rows = slice(i, i + batch_size)
            src = x0[rows].detach()
            x = src.clone()
            for _ in range(iterations):
                x.requires_grad_(True)
                with torch.enable_grad():
                    (g,) = torch.autograd.grad(objective(x, rows).sum(), x)
                with torch.no_grad():
                    delta = l2_project(x - src + sign * step * l2_normalize(g), eps)
                    x = (src + delta).clamp(0, 1)
                bar.update(1)
            out.append(x.detach())
    return torch.cat(out)
