"""The ``fid`` explainer: Fréchet distance between the features of two image sets.

The sets are named: ``inputs`` (the explained images), ``class-gen`` (images
the explained model generates for their labels, as in the paper's FID table),
``noise``, ``train`` / ``test`` (images of the reference dataset) or
``NAME@SPLIT`` (another dataset). The features come from the explained model's
representation, another advkit model, or Inception-v3 from a local file.
"""

from __future__ import annotations

import torch

from advkit.errors import UserError
from advkit.explainer import Explanation

from advkit_explainers.classgen import generate
from advkit_explainers.common import reference_data
from advkit_explainers.extractor import load_extractor
from advkit_explainers.frechet import frechet_distance

FIXED_SETS = ("inputs", "class-gen", "noise", "train", "test")


def check_set(where: str, name: str) -> str:
    s = str(name).strip()
    if s.lower() in FIXED_SETS:
        return s.lower()
    if "@" in s and s.rpartition("@")[2] in ("train", "test"):
        return s
    raise UserError(f"{where} must be one of {', '.join(FIXED_SETS)} or NAME@train / NAME@test; got {name!r}")


def fid(
    a: str = "class-gen",
    b: str = "inputs",
    extractor: str = "",
    layer: str = "",
    weights: str = "",
    dataset: str = "",
    n_ref: int = 0,
    iterations: int = 60,
    eps: float = 30.0,
    step: float = 0.5,
    shrinkage: float = 0.1,
    batch_size: int = 128,
):
    """Fréchet distance between the features of image sets A and B (FID with an Inception extractor).

    A, B: inputs | class-gen | noise | train | test | NAME@SPLIT (class-gen:
    images generated for the labels of the inputs, with ITERATIONS, EPS, STEP,
    SHRINKAGE as in class-gen; train/test: the first N_REF images of DATASET,
    default the dataset being explained, N_REF=0: as many as the inputs).
    EXTRACTOR: empty (the explained model's representation), a model spec or
    checkpoint for advkit's load_model (with WEIGHTS), or inception (needs
    WEIGHTS=FILE); LAYER: its feature layer. Score: ``fid``.
    """
    a, b = check_set("fid.a", a), check_set("fid.b", b)

    def explain(model, x, y, ctx):
        n = int(n_ref) if int(n_ref) > 0 else x.shape[0]
        cache: dict[str, torch.Tensor] = {}

        def images(name: str) -> torch.Tensor:
            if name in cache:
                return cache[name]
            if name == "inputs":
                out = x
            elif name == "noise":
                out = torch.rand_like(x)
            elif name == "class-gen":
                ref, labels, _ = reference_data(dataset, "test", like=x, ctx=ctx)
                _, out = generate(model, y.long(), ref, labels, shrinkage=shrinkage, iterations=iterations,
                                  eps=eps, step=step, batch_size=batch_size)
            else:
                ds, _, split = name.rpartition("@") if "@" in name else (dataset, "", name)
                out, _, _ = reference_data(ds, split, like=x, ctx=ctx, n=n)
            cache[name] = out.detach()
            return cache[name]

        set_a, set_b = images(a), images(b)
        ext = load_extractor(extractor, layer, weights, model, x)
        fa, fb = ext(set_a, batch_size), ext(set_b, batch_size)
        d = frechet_distance(fa, fb)
        return Explanation(
            method="fid", inputs=x.detach(), images=set_a if a != "inputs" else None,
            scores={"fid": torch.tensor([d])},
            meta={"fid": d, "a": a, "b": b, "n_a": set_a.shape[0], "n_b": set_b.shape[0], "features": fa.shape[1],
                  "extractor": ext.description, "images_title": f"set a ({a})"},
            extras={f"set b ({b})": set_b} if b != "inputs" else {},
        )

    return explain
