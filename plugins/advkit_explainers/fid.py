"""The ``fid`` explainer: FID, or a Fréchet distance in another network's features, between two image sets.

The sets are named: ``inputs`` (the explained images), ``class-gen`` (images
the explained model generates for their labels, as in the paper's FID table),
``noise``, ``train`` / ``test`` (images of the reference dataset) or
``NAME@SPLIT`` (another dataset). With the default extractor, the FID
Inception-v3 from local weights, the score is the FID (``fid``); with
``extractor=model`` (the explained model's representation) or another advkit
model it is a Fréchet distance in that network's features
(``frechet_distance``), which is not FID and is reported as such.
"""

from __future__ import annotations

import warnings

import torch

from advkit.plugin import Explanation, UserError
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


def metric_name(ext, spec: str) -> str:
    """What the number is, in words."""
    if ext.is_fid:
        return "FID" if ext.standard else "FID with non-standard Inception weights (not comparable with published FIDs)"
    if spec.strip().lower() == "model":
        return "Fréchet distance in the model's own features, not FID"
    return f"Fréchet distance in the features of {spec.strip()}, not FID"


def small_sample_note(n_a: int, n_b: int, k: int) -> str | None:
    """A note when a set has fewer images than features (singular covariance, biased distance)."""
    if min(n_a, n_b) >= k:
        return None
    return (f"{min(n_a, n_b)} images is fewer than the {k} features: the covariance is singular and the distance "
            f"is biased upward; compare only numbers computed from the same number of images")


def fid(
    a: str = "class-gen",
    b: str = "inputs",
    extractor: str = "inception",
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
    """FID (or a Fréchet distance in another network's features) between image sets A and B.

    A, B: inputs | class-gen | noise | train | test | NAME@SPLIT (class-gen:
    images generated for the labels of the inputs, with ITERATIONS, EPS, STEP,
    SHRINKAGE as in class-gen; train/test: the first N_REF images of DATASET,
    default the dataset being explained, N_REF=0: as many as the inputs).
    EXTRACTOR: inception (the FID Inception-v3, from WEIGHTS=FILE or torch-
    fidelity's cached download; score ``fid``), model (the explained model's
    representation) or a model spec or checkpoint for advkit's load_model (with
    WEIGHTS); LAYER: the feature layer of a model extractor. Those two give the
    score ``frechet_distance``, which is not FID.
    """
    a, b = check_set("fid.a", a), check_set("fid.b", b)
    generation = {"shrinkage": shrinkage, "iterations": iterations, "eps": eps, "step": step, "batch_size": batch_size}

    def explain(model, x, y, ctx):
        ext = load_extractor("fid", extractor, layer, weights, model, x, ctx.dataset)  # before any image is generated
        n = int(n_ref) if int(n_ref) > 0 else x.shape[0]
        set_a = image_set(a, model, x, y, ctx, dataset=dataset, n=n, generation=generation)
        set_b = set_a if b == a else image_set(b, model, x, y, ctx, dataset=dataset, n=n, generation=generation)
        return _explanation(ext, extractor, x, (a, set_a), (b, set_b), batch_size)

    return explain


def image_set(name: str, model, x, y, ctx, *, dataset: str, n: int, generation: dict) -> torch.Tensor:
    """The image set ``name`` (a checked name, see :func:`fid`), detached.

    ``generation``: the keyword arguments of class-gen's ``generate``;
    ``n``: how many images of a dataset set.
    """
    if name == "inputs":
        out = x
    elif name == "noise":
        out = torch.rand_like(x)
    elif name == "class-gen":
        ref, labels, _ = reference_data(dataset, "test", like=x, ctx=ctx)
        _, out = generate(model, y.long(), ref, labels, **generation)
    else:
        ds, _, split = name.rpartition("@") if "@" in name else (dataset, "", name)
        out, _, _ = reference_data(ds, split, like=x, ctx=ctx, n=n)
    return out.detach()


def _explanation(ext, extractor: str, x, named_a: tuple, named_b: tuple, batch_size: int) -> Explanation:
    """The distance between the sets ``named_a``/``named_b`` ((name, images)) in the features of ``ext``."""
    (a, set_a), (b, set_b) = named_a, named_b
    fa, fb = ext(set_a, batch_size), ext(set_b, batch_size)
    d = frechet_distance(fa, fb)
    meta = {"metric": metric_name(ext, extractor), "extractor": ext.description, "a": a, "b": b,
            "n_a": set_a.shape[0], "n_b": set_b.shape[0], "features": fa.shape[1], "images_title": f"set a ({a})"}
    if ext.is_fid:
        meta["weights_sha256"] = ext.sha256
    note = small_sample_note(set_a.shape[0], set_b.shape[0], fa.shape[1])
    if note:
        warnings.warn(f"fid: {note}", stacklevel=3)  # attributed to the explainer's caller
        meta["note"] = note
    key = "fid" if ext.is_fid else "frechet_distance"
    return Explanation(
        method="fid", inputs=x.detach(), images=set_a if a != "inputs" else None,
        scores={key: torch.tensor([d])}, meta={key: d, **meta},
        extras={f"set b ({b})": set_b} if b != "inputs" else {},
    )
