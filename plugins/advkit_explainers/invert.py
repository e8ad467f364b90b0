"""Representation inversion (Engstrom et al., 2019), optimised with L2 PGD.

From a source image x_src (another image or noise), find δ minimising
‖R(x_src + δ) − R(x_targ)‖₂ / ‖R(x_targ)‖₂. A robust model's inversions look
like the target; a standard model reaches the same representation with
images that do not.

The distance the PGD minimised says nothing about whether the inversion looks
like the target (any model reaches its own minimum). The paper that the
explainers follow measures the inversions in an independent network instead: the l2 distance between the
192 mid-layer features of Inception-v3 (the FID Inception, after its second
max-pool, spatially averaged) of the target and of the inversion. That is the
``inception_l2`` score; without the Inception weights the run says so and
gives ``model_l2`` instead, the same distance in the explained model's own
last convolutional stage (spatially averaged), which is not independent.
"""

from __future__ import annotations

import warnings

import torch

from advkit.plugin import Explanation, UserError
from advkit_explainers.common import check_choice
from advkit_explainers.extractor import InceptionExtractor
from advkit_explainers.inception import find_weights
from advkit_explainers.layers import Representation, cam_layer
from advkit_explainers.pgd import l2_pgd

SOURCES = ("next", "noise")
MEASURES = ("inception", "model", "none")


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


def pooled_stage(model, x: torch.Tensor, batch_size: int = 128) -> tuple[str, torch.Tensor]:
    """The explained model's last convolutional stage (see ``cam_layer``), averaged over space: (N, C)."""
    try:
        name, module = cam_layer(model, x)
    except UserError:
        raise UserError("invert: model_l2 needs a convolutional layer; give the FID Inception weights "
                        "(weights=FILE) or pass measure=none") from None
    store: dict[str, torch.Tensor] = {}
    handle = module.register_forward_hook(lambda mod, args, out: store.__setitem__("a", out))
    out = []
    try:
        with torch.inference_mode():
            for i in range(0, x.shape[0], batch_size):
                model(x[i : i + batch_size])
                out.append(store["a"].mean((2, 3)))
    finally:
        handle.remove()
    return name, torch.cat(out).clone()


def feature_l2(model, target: torch.Tensor, inv: torch.Tensor, measure: str, weights: str, batch_size: int):
    """The paper's check of an inversion: {score name: per-image l2 distance}, and the meta describing it."""
    if measure == "none":
        return {}, {}
    if measure == "inception" and find_weights(weights) is not None:
        ext = InceptionExtractor("invert", weights, "192", target.device)
        d = (ext(inv, batch_size) - ext(target, batch_size)).norm(dim=1)
        return {"inception_l2": d}, {"feature_l2": f"{ext.description}, l2 between target and inversion"}
    meta = {}
    if measure == "inception":
        note = ("the FID Inception-v3 weights are not on this machine (pass weights=FILE, see docs/explainers.md): "
                "model_l2 is measured in the explained model's own features, not independently as in the paper")
        warnings.warn(f"invert: {note}", stacklevel=3)
        meta["note"] = note
    name, ft = pooled_stage(model, target, batch_size)
    _, fi = pooled_stage(model, inv, batch_size)
    meta["feature_l2"] = f"the explained model's {name}, spatially averaged ({ft.shape[1]} features), not independent"
    return {"model_l2": (fi - ft).norm(dim=1)}, meta


def invert(
    source: str = "next",
    iterations: int = 10000,
    eps: float = 1000.0,
    step: float = 1.0,
    layer: str = "",
    measure: str = "inception",
    weights: str = "",
    batch_size: int = 128,
):
    """Representation inversion: from SOURCE, match each image's representation by L2 PGD.

    SOURCE: next (the next image in the batch of another class) or noise
    (uniform); ITERATIONS, EPS, STEP: the L2 PGD (paper: 10000, 1000, 1);
    LAYER: the representation (default: the input of the final linear layer).
    Scores: ``distance_start`` and ``distance_end`` (‖R(x) − R(x_targ)‖ /
    ‖R(x_targ)‖, what the PGD minimised), ``pixel_distance`` (‖x − x_targ‖₂
    at the end) and the paper's independent check, MEASURE: inception
    (``inception_l2``: l2 between the 192 mid-layer features of the FID
    Inception-v3, from WEIGHTS=FILE or the cached download; without them
    ``model_l2`` with a warning), model (``model_l2``: the explained model's
    last convolutional stage, spatially averaged) or none.
    """
    source = check_choice("invert.source", source, SOURCES)
    measure = check_choice("invert.measure", measure, MEASURES)

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
        measured, measure_meta = feature_l2(model, x, inv, measure, weights, batch_size)
        return Explanation(
            method="invert", inputs=x.detach(), images=inv,
            scores={
                "distance_start": relative_distance(rep.batched(src, batch_size), targ),
                "distance_end": relative_distance(rep.batched(inv, batch_size), targ),
                "pixel_distance": (inv - x).flatten(1).norm(dim=1),
                **measured,
            },
            meta={**measure_meta, "source": source, "iterations": int(iterations), "eps": float(eps), "step": float(step),
                  "layer": rep.description, "inputs_title": "target", "images_title": "inversion"},
            extras={"source": src.detach()},
        )

    return explain
