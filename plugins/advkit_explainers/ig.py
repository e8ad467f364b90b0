"""Integrated gradients: captum's ``IntegratedGradients`` with image baselines.

The quadrature is captum's, with one exception: captum's ``riemann_trapezoid``
evaluates the gradient at n evenly spaced points 0, 1/(n-1), ..., 1 but weights
them with a step of 1/n (the Δα = 1/(m+1) of the paper's eq. 9-11), so its
weights sum to (n-1)/n and the attributions fall short of completeness by about
1/n. ``method=trapezoid`` (the default) is the composite trapezoid rule over
the same points, i.e. captum's sum rescaled by n/(n-1); ``riemann_trapezoid``
keeps the paper's formula as written.

``output`` chooses the function explained: the target class's logit (the
default) or its softmax probability (the paper's model score), by handing
captum the model followed by a softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from advkit.plugin import Explanation, UserError, generator
from advkit_explainers.common import OUTPUTS, check_choice, explained_output, target_classes, target_logits

METHODS = ("trapezoid", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle", "gausslegendre")
BASELINES = ("black", "blurred", "noise")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflection padding (kernel radius 3 sigma, clipped to the image)."""
    radius = max(1, min(int(3 * sigma + 0.5), min(x.shape[-2:]) - 1))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    out = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(out, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def make_baseline(x: torch.Tensor, kind: str, sigma: float = 5.0, seed: int = 0) -> torch.Tensor:
    """The IG baseline x': black (zeros), blurred (Gaussian blur of x) or noise (uniform in [0, 1], drawn
    from ``seed``: the run's seed, so that a run's attributions are reproducible)."""
    kind = check_choice("ig.baseline", kind, BASELINES)
    if kind == "black":
        return torch.zeros_like(x)
    if kind == "noise":
        return torch.rand(x.shape, dtype=x.dtype, device=x.device, generator=generator(x.device, seed))
    if not sigma > 0:
        raise UserError(f"ig.sigma must be > 0, got {sigma!r}")
    return gaussian_blur(x, float(sigma)).clamp(0, 1)


def integrated_gradients(model, x, cls, baseline, *, steps: int, method: str, batch_size: int):
    """IG attributions (shaped like x) and the completeness gap per image.

    The gap is Σ attributions − (f(x) − f(x')) for f = ``model``'s output for the target class
    (captum's convergence delta, corrected for the rescaling of ``trapezoid``).
    """
    from captum.attr import IntegratedGradients

    captum_method = "riemann_trapezoid" if method == "trapezoid" else method
    scale = steps / (steps - 1) if method == "trapezoid" else 1.0
    ig = IntegratedGradients(model)
    attrs, gaps = [], []
    for i in range(0, x.shape[0], batch_size):
        sl = slice(i, i + batch_size)
        a, delta = ig.attribute(
            x[sl], baselines=baseline[sl], target=cls[sl], n_steps=steps, method=captum_method,
            internal_batch_size=max(batch_size, x[sl].shape[0]), return_convergence_delta=True,
        )
        if scale != 1.0:
            # delta = Σa − Δf, so after a → s·a the gap is s·(delta + Δf) − Δf.
            df = a.flatten(1).sum(1) - delta
            a = a * scale
            delta = scale * (delta + df) - df
        attrs.append(a.detach())
        gaps.append(delta.detach())
    return torch.cat(attrs), torch.cat(gaps)


def ig(
    steps: int = 50,
    method: str = "trapezoid",
    baseline: str = "black",
    sigma: float = 5.0,
    target: str = "label",
    batch_size: int = 256,
    output: str = "logit",
):
    """Integrated gradients (captum) from a black, blurred or uniform-noise baseline.

    STEPS points on the straight path; METHOD: trapezoid (composite trapezoid
    rule), riemann_trapezoid (the paper's eq. 11 as written), riemann_left /
    right / middle or gausslegendre; SIGMA: blur of the blurred baseline, in
    pixels; TARGET: label or pred; BATCH_SIZE: model evaluations per pass;
    OUTPUT: the f explained, the target class's logit or its softmax probability.
    Scores: ``gap`` (completeness: Σ attributions − (f(x) − f(x'))), ``logit``
    and ``baseline_logit`` (f(x), f(x')), named ``probability`` and
    ``baseline_probability`` with ``output=probability``.
    """
    method = check_choice("ig.method", method, METHODS)
    check_choice("ig.baseline", baseline, BASELINES)
    output = check_choice("ig.output", output, OUTPUTS)
    if int(steps) < 2:
        raise UserError(f"ig.steps must be at least 2, got {steps!r}")
    steps, batch_size = int(steps), max(1, int(batch_size))

    def explain(model, x, y, ctx):
        cls = target_classes(model, x, y, target)
        base = make_baseline(x, baseline, sigma, ctx.seed)
        f = explained_output(model, output)
        attrs, gaps = integrated_gradients(f, x, cls, base, steps=steps, method=method, batch_size=batch_size)
        return Explanation(
            method="ig", inputs=x.detach(), maps=attrs,
            scores={"gap": gaps, output: target_logits(f, x, cls), f"baseline_{output}": target_logits(f, base, cls)},
            meta={"steps": steps, "method": method, "baseline": baseline, "target": target, "output": output,
                  "classes": cls.tolist()},
        )

    return explain
