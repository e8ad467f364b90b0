"""SHAP values as expected gradients: captum's ``GradientShap`` with baselines drawn from data.

Expected gradients average (x − x')·∇f(x' + α(x − x')) over baselines x' drawn
from a dataset and α ~ U(0, 1) (the estimator of SHAP's ``GradientExplainer``);
``stdevs`` > 0 adds SmoothGrad noise to the inputs first. ``output`` chooses f:
the target class's logit (the default) or its softmax probability (captum is
handed the model followed by a softmax).
"""

from __future__ import annotations

import torch

from advkit.plugin import Explanation, UserError
from advkit_explainers.common import (
    OUTPUTS,
    check_choice,
    dataset_name,
    explained_output,
    reference_data,
    target_classes,
    target_logits,
)


def draw_baselines(x: torch.Tensor, dataset: str, split: str, n_baselines: int, ctx) -> torch.Tensor:
    """``n_baselines`` random images of ``dataset`` (or of the batch itself with ``dataset=batch``)."""
    if dataset.strip().lower() == "batch":
        pool = x
    else:
        pool, _, _ = reference_data(dataset, split, like=x, ctx=ctx)
    idx = torch.randperm(pool.shape[0], device=pool.device)[: max(1, n_baselines)]
    return pool[idx].detach()


def shap(
    samples: int = 200,
    n_baselines: int = 100,
    stdevs: float = 0.0,
    dataset: str = "",
    data_split: str = "train",
    target: str = "label",
    batch_size: int = 256,
    output: str = "logit",
):
    """SHAP values by expected gradients (captum GradientShap), baselines drawn from a dataset.

    SAMPLES (baseline, α) draws per image among N_BASELINES random images of
    DATASET's DATA_SPLIT (default: the dataset being explained, else fmnist-mini;
    ``dataset=batch``: the explained images themselves);
    STDEVS: Gaussian noise added to the inputs per draw; TARGET: label or pred;
    BATCH_SIZE: model evaluations per pass; OUTPUT: the f explained, the target
    class's logit or its softmax probability. Scores: ``gap`` (Σ attributions −
    (f(x) − mean f(baselines)), zero in expectation) and ``logit`` (f(x); named
    ``probability`` with ``output=probability``).
    """
    samples, n_baselines, batch_size = int(samples), int(n_baselines), max(1, int(batch_size))
    output = check_choice("shap.output", output, OUTPUTS)
    if samples < 1 or n_baselines < 1:
        raise UserError(f"shap.samples and shap.n_baselines must be >= 1 (got {samples}, {n_baselines})")

    def explain(model, x, y, ctx):
        from captum.attr import GradientShap

        cls = target_classes(model, x, y, target)
        base = draw_baselines(x, dataset, data_split, n_baselines, ctx)
        f = explained_output(model, output)
        gs = GradientShap(f)
        per = max(1, batch_size // samples)  # images per pass: per * samples evaluations
        attrs = [
            gs.attribute(x[i : i + per], baselines=base, n_samples=samples, stdevs=float(stdevs), target=cls[i : i + per]).detach()
            for i in range(0, x.shape[0], per)
        ]
        attrs = torch.cat(attrs)
        with torch.inference_mode():
            base_out = torch.cat([f(base[i : i + batch_size]) for i in range(0, base.shape[0], batch_size)])
            expected = base_out.mean(0)[cls]
        value = target_logits(f, x, cls)
        source = "batch" if dataset.strip().lower() == "batch" else dataset_name(dataset, ctx)[0]
        return Explanation(
            method="shap", inputs=x.detach(), maps=attrs,
            scores={"gap": attrs.flatten(1).sum(1) - (value - expected), output: value},
            meta={"samples": samples, "n_baselines": base.shape[0], "stdevs": float(stdevs), "dataset": source,
                  "data_split": data_split, "target": target, "output": output, "classes": cls.tolist()},
        )

    return explain
