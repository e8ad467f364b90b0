"""Direct feature visualisation (Engstrom et al., 2019), with L2 PGD on representation activations.

Maximise one activation R(x)_t, or the mean of several, from noise or from an
image, then list the dataset images that activate the same feature(s) most
and least, to check that the visualisation shows what the feature responds
to. Robust models give recognisable patterns; standard models give noise.
When R is the output of a ReLU, the ascent follows the ReLU's input (same
maximisers), so that it can leave a start where the feature is zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advkit.plugin import Explanation, UserError
from advkit_explainers.common import check_choice, reference_data
from advkit_explainers.layers import Representation
from advkit_explainers.pgd import l2_pgd

STARTS = ("noise", "image")


def parse_features(text: str) -> list[list[int]]:
    """``"130,492"`` → [[130], [492]]; ``"3+17,5"`` → [[3, 17], [5]] (a group is maximised jointly)."""
    try:
        return [[int(t) for t in group.split("+")] for group in str(text).replace(" ", "").split(",") if group]
    except ValueError:
        raise UserError(f"feature-viz.features must look like 130,492 or 3+17 (got {text!r})") from None


def random_alive(acts: torch.Tensor, n: int) -> list[list[int]]:
    """``n`` random features that vary over the reference images (dead units make blank pictures)."""
    alive = (acts.std(0) > 1e-6).nonzero()[:, 0]
    if alive.numel() == 0:
        raise UserError("feature-viz: no feature of the representation varies over the reference images")
    pick = alive[torch.randperm(alive.numel(), device=alive.device)]
    return [[int(pick[j % pick.numel()])] for j in range(n)]


def group_weights(groups: list[list[int]], k: int, device) -> torch.Tensor:
    """(len(groups), k) with 1/|z| on each group's features: R(x) @ Wᵀ is each group's mean activation."""
    w = torch.zeros(len(groups), k, device=device)
    for j, g in enumerate(groups):
        bad = [t for t in g if not 0 <= t < k]
        if bad:
            raise UserError(f"feature-viz.features: {bad} not in 0..{k - 1} (the representation has {k} features)")
        w[j, g] = 1.0 / len(g)
    return w


def feature_viz(
    features: str = "",
    start: str = "noise",
    iterations: int = 400,
    eps: float = 1000.0,
    step: float = 1.0,
    top: int = 3,
    layer: str = "",
    dataset: str = "",
    data_split: str = "test",
    pool: int = 0,
    batch_size: int = 128,
):
    """Feature visualisation: maximise representation activations by L2 PGD; show top/bottom dataset images.

    FEATURES: comma-separated indices of R(x), ``3+17`` for a joint (mean)
    objective; empty: one random varying feature per explained image. START:
    noise (uniform) or image (the explained images). ITERATIONS, EPS, STEP:
    the L2 PGD (paper: 400, 1000, 1). TOP: how many most and least activating
    images of DATASET's DATA_SPLIT (default: the dataset being explained; POOL: its
    first POOL images, 0 = all) to show. LAYER: the representation (default:
    the input of the final linear layer). Scores: ``activation_start``,
    ``activation_end`` and ``activation_top`` (mean over the top images).
    """
    start = check_choice("feature-viz.start", start, STARTS)
    settings = _Settings(groups=parse_features(features), start=start, iterations=iterations, eps=eps, step=step,
                         top=max(0, int(top)), layer=layer, dataset=dataset, data_split=data_split, pool=pool,
                         batch_size=batch_size)

    def explain(model, x, y, ctx):
        return _visualise(settings, model, x, ctx)

    return explain


@dataclass(frozen=True)
class _Settings:
    """The parameters of :func:`feature_viz`; ``groups``: FEATURES parsed (empty: random), ``top`` at least 0."""

    groups: list
    start: str
    iterations: int
    eps: float
    step: float
    top: int
    layer: str
    dataset: str
    data_split: str
    pool: int
    batch_size: int


def _visualise(s: _Settings, model, x: torch.Tensor, ctx) -> Explanation:
    """Visualise the feature groups of ``s`` (or random ones, one per image of ``x``) and rank the reference images."""
    rep = Representation(model, x, s.layer)
    ref, _, info = reference_data(s.dataset, s.data_split, like=x, ctx=ctx, n=int(s.pool))
    acts = rep.batched(ref, s.batch_size)
    groups = s.groups or random_alive(acts, x.shape[0])
    w = group_weights(groups, acts.shape[1], x.device)
    n = len(groups)
    x0 = torch.rand(n, *x.shape[1:], device=x.device) if s.start == "noise" else x[torch.arange(n) % x.shape[0]]
    pre = rep.pre_relu()
    viz = _ascend(s, pre, w, x0, ctx)
    ref_act = acts @ w.T  # (M, n)
    k = min(s.top, ref.shape[0])
    hi, lo, extras = _extremes(ref, ref_act, k)
    names = ["+".join(map(str, g)) for g in groups]
    return Explanation(
        method="feature-viz", inputs=x0.detach(), images=viz,
        scores={"activation_start": (rep.batched(x0, s.batch_size) * w).sum(1),
                "activation_end": (rep.batched(viz, s.batch_size) * w).sum(1),
                "activation_top": ref_act.gather(0, hi).mean(0) if k else torch.zeros(n)},
        meta={"features": groups, "start": s.start, "iterations": int(s.iterations), "eps": float(s.eps),
              "step": float(s.step), "layer": rep.description, "objective": pre.description, "dataset": info.name,
              "data_split": s.data_split, "top_indices": hi.T.tolist(), "bottom_indices": lo.T.tolist(),
              "inputs_title": f"start ({s.start})", "images_title": "visualisation",
              "captions": [f"feature {name}" for name in names]},
        extras=extras,
    )


def _ascend(s: _Settings, pre, w: torch.Tensor, x0: torch.Tensor, ctx) -> torch.Tensor:
    """L2 PGD from ``x0`` maximising, for row ``j``, the mean activation of group ``j`` (weights ``w[j]``) before its ReLU."""

    def objective(xb, rows):
        return (pre(xb) * w[rows]).sum(1)

    return l2_pgd(x0, objective, iterations=s.iterations, eps=s.eps, step=s.step, maximize=True,
                  batch_size=s.batch_size, desc="feature-viz", ctx=ctx)


def _extremes(ref: torch.Tensor, ref_act: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Positions (k, n) of the ``k`` reference images that activate each group most and least, and those images by rank."""
    hi = ref_act.topk(k, dim=0).indices  # (k, n)
    lo = (-ref_act).topk(k, dim=0).indices
    extras = {f"top {r + 1}": ref[hi[r]] for r in range(k)}
    extras.update({f"bottom {r + 1}": ref[lo[r]] for r in range(k)})
    return hi, lo, extras
