"""Representation inversion (Engstrom et al., 2019), optimised with L2 PGD.

From a source image x_src (another image or noise), find δ minimising
‖R(x_src + δ) − R(x_targ)‖₂ / ‖R(x_targ)‖₂. A robust model's inversions look
like the target; a standard model reaches the same representation with
images that do not.
"""

from __future__ import annotations

import torch

from advkit.errors import UserError
from advkit.explainer import Explanation

from advkit_explainers.common import check_choice
from advkit_explainers.layers import Representation
from advkit_explainers.pgd import l2_pgd

SOURCES = ("next", "noise")


def next_other_class(y: torch.Tensor) -> torch.Tensor:
    """For each image, the index of the next one in the batch (cyclically) of another class, else the next one."""
    n = y.shape[0]
    out = []
    for i in range(n):
        j = next((k % n for k in range(i + 1, i + n) if y[k % n] != y[i]), (i + 1) % n)
        out.append(j)
    return torch.tensor(out, device=y.device)


def relative_distance(r: torch.Tensor, r_targ: torch.Tensor) -> torch.Tensor:
    return (r - r_targ).norm(dim=1) / r_targ.norm(dim=1).clamp_min(1e-12)


def invert(
    source: str = "next",
    iterations: int = 10000,
    eps: float = 1000.0,
    step: float = 1.0,
    layer: str = "",
    batch_size: int = 128,
):
    """Representation inversion: from SOURCE, match each image's representation by L2 PGD.

    SOURCE: next (the next image in the batch of another class) or noise
    (uniform); ITERATIONS, EPS, STEP: the L2 PGD (paper: 10000, 1000, 1);
    LAYER: the representation (default: the input of the final linear layer).
    Scores: ``distance_start`` and ``distance_end`` (‖R(x) − R(x_targ)‖ /
    ‖R(x_targ)‖) and ``pixel_distance`` (‖x − x_targ‖₂ at the end).
    """
    source = check_choice("invert.source", source, SOURCES)

    def explain(model, x, y, ctx):
        if source == "next" and x.shape[0] < 2:
            raise UserError("invert: source=next needs at least 2 images (use --n 2 or more, or source=noise)")
        rep = Representation(model, x, layer)
        targ = rep.batched(x, batch_size)
        src = x[next_other_class(y)] if source == "next" else torch.rand_like(x)

        def objective(xb, rows):
            return relative_distance(rep(xb), targ[rows])

        inv = l2_pgd(src, objective, iterations=iterations, eps=eps, step=step, maximize=False,
                     batch_size=batch_size, desc="invert", ctx=ctx)
        return Explanation(
            method="invert", inputs=x.detach(), images=inv,
            scores={
                "distance_start": relative_distance(rep.batched(src, batch_size), targ),
                "distance_end": relative_distance(rep.batched(inv, batch_size), targ),
                "pixel_distance": (inv - x).flatten(1).norm(dim=1),
            },
            meta={"source": source, "iterations": int(iterations), "eps": float(eps), "step": float(step),
                  "layer": rep.description, "inputs_title": "target", "images_title": "inversion"},
            extras={"source": src.detach()},
        )

    return explain
