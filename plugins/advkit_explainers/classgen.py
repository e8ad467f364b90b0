"""Class-specific image generation (Santurkar et al., 2019), with L2 PGD on a class logit.

For class i, start from a sample of a normal distribution fitted to the
dataset's images of class i (:mod:`advkit_explainers.mvn`) and maximise the
logit F(x)_i by L2 PGD. A robust model turns the blurry seed into an image of
the class; a standard model adds texture-like noise.
"""

from __future__ import annotations

import torch

from advkit.plugin import Explanation, UserError
from advkit_explainers.common import parse_ints, reference_data, target_logits
from advkit_explainers.mvn import ShrunkNormal
from advkit_explainers.pgd import l2_pgd


def pick_classes(classes: str, y: torch.Tensor, num_classes: int, per_class: int) -> torch.Tensor:
    """"" → the labels of the batch; "all" → every class; "3,5" → those; the latter two PER_CLASS times each."""
    text = str(classes).strip().lower()
    if not text:
        return y.long().clone()
    chosen = list(range(num_classes)) if text == "all" else parse_ints("class-gen.classes", text)
    bad = [c for c in chosen if not 0 <= c < num_classes]
    if bad:
        raise UserError(f"class-gen.classes: {bad} not in 0..{num_classes - 1}")
    return torch.tensor(chosen, device=y.device).repeat_interleave(max(1, int(per_class)))


def seeds(cls: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, shrinkage: float) -> torch.Tensor:
    """One sample per entry of ``cls`` from the normal fitted to that class's images, clamped to [0, 1]."""
    out = torch.empty(cls.shape[0], *images.shape[1:], device=images.device)
    for c in cls.unique().tolist():
        members = images[labels == c]
        if members.shape[0] < 2:
            raise UserError(f"class-gen: the reference data has {members.shape[0]} image(s) of class {c}; need 2 or more")
        where = (cls == c).nonzero()[:, 0]
        out[where] = ShrunkNormal(members, shrinkage).sample(where.numel()).to(out.device)
    return out.clamp(0, 1)


def generate(model, cls, images, labels, *, shrinkage, iterations, eps, step, batch_size, ctx=None):
    """Seeds and generated images for the classes ``cls``."""
    start = seeds(cls, images, labels, shrinkage)

    def objective(xb, rows):
        return model(xb).gather(1, cls[rows, None])[:, 0]

    gen = l2_pgd(start, objective, iterations=iterations, eps=eps, step=step, maximize=True,
                 batch_size=batch_size, desc="class-gen", ctx=ctx)
    return start, gen


def class_gen(
    classes: str = "",
    per_class: int = 1,
    iterations: int = 60,
    eps: float = 30.0,
    step: float = 0.5,
    shrinkage: float = 0.1,
    dataset: str = "",
    data_split: str = "test",
    batch_size: int = 128,
):
    """Class-specific generation: maximise a class logit by L2 PGD from a class-conditional normal sample.

    CLASSES: empty (the label of each explained image), all, or 0,3,5
    (PER_CLASS images each); ITERATIONS, EPS, STEP: the L2 PGD (paper: 60,
    30 with step 0.5 on CIFAR-10; 40 with step 1 on ImageNet); SHRINKAGE: λ in
    (1 − λ)·S + λ·(tr S/d)·I for the covariance of the seeds, fitted on
    DATASET's DATA_SPLIT (default: the dataset being explained, else fmnist-mini).
    Scores: ``logit_start``, ``logit_end`` (target logit) and ``prob_end``.
    """

    def explain(model, x, y, ctx):
        images, labels, info = reference_data(dataset, data_split, like=x, ctx=ctx)
        cls = pick_classes(classes, y, info.num_classes, per_class)
        start, gen = generate(model, cls, images, labels, shrinkage=shrinkage, iterations=iterations, eps=eps,
                              step=step, batch_size=batch_size, ctx=ctx)
        with torch.inference_mode():
            prob = torch.cat([model(gen[i : i + 256]).softmax(1) for i in range(0, gen.shape[0], 256)])
        names = [info.classes[c] if c < len(info.classes) else str(c) for c in cls.tolist()]
        before, after = target_logits(model, start, cls), target_logits(model, gen, cls)
        return Explanation(
            method="class-gen", inputs=start, images=gen,
            scores={"logit_start": before, "logit_end": after, "prob_end": prob.gather(1, cls[:, None])[:, 0].clone()},
            meta={"classes": cls.tolist(), "iterations": int(iterations), "eps": float(eps), "step": float(step),
                  "shrinkage": float(shrinkage), "dataset": info.name, "data_split": data_split,
                  "input_captions": names, "inputs_title": "seed (class-conditional normal)", "images_title": "generated",
                  "captions": [f"logit {a:.1f}→{b:.1f}" for a, b in zip(before.tolist(), after.tolist())]},
        )

    return explain
