"""The bank's estimator on a set of reference games: sign quality, bias and efficiency gap (used by csa_quality.py).

    python benchmarks/csa_quality.py --bias                     # the games the estimator was tuned on
    python benchmarks/csa_quality.py --bias --reference tests/fixtures/csa/reference-smallcnn-fmnist-at-seed1.safetensors

Runs the gradient estimator with the bank's settings (``pairs=512, target_loss=0.003``) under six seeds
(none the reference's) and compares with the reference values (1,024 permutations of the permutation
estimator, which is unbiased for the Shapley value):

- *disagreement* and *p_X error*: the bank-quality metric (:mod:`advkit_csa.quality`), mean over seeds;
- *bias*: the six-seed mean of the estimates against the reference, ``sum |mean - ref| / sum |ref|`` per
  game (mean over games), beside the part of it that sampling noise alone explains (both estimates'
  standard errors, ``sqrt(2/pi) * sqrt(se_mean^2 + se_ref^2)`` per player); and the *slope* of the mean
  on the reference (least squares through 0: 1 is no shrinkage);
- *efficiency gap*: ``|sum(values) - (v(all) - v(empty))|``, in probability and over ``|v(all) - v(empty)|``,
  mean and largest.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

SEEDS = (1, 2, 3, 4, 5, 6)


def measure(path: Path, images: int | None = None, seeds=SEEDS) -> dict:
    import advkit
    from advkit_csa.linearized import gradient_shapley
    from advkit_csa.players import FrequencyPlayers
    from advkit_csa.quality import ReferenceGames

    ref = ReferenceGames.load(path)
    if images:
        ref = ref.subset(range(min(images, len(ref))))
    model = advkit.load_model(ref.meta["model"]).eval()
    players = FrequencyPlayers(tuple(ref.images.shape[-2:]))
    runs = [gradient_shapley(model, ref.images, ref.labels, pairs=512, target_loss=0.003, seed=s,
                             indices=ref.indices.tolist(), batch_size=128, progress=False) for s in seeds]
    scores = [ref.score(r.values, players) for r in runs]
    values = torch.stack([r.values.double() for r in runs])  # (seeds, N, P)
    mean, truth = values.mean(0), ref.values.double()
    se = (values.var(0) / len(runs) + ref.stderr.double() ** 2).sqrt()
    bias = ((mean - truth).abs().sum(1) / truth.abs().sum(1)).mean()
    noise = ((math.sqrt(2 / math.pi) * se).sum(1) / truth.abs().sum(1)).mean()
    total = (ref.v_full - ref.v_empty).double()
    absolute = torch.stack([(r.values.double().sum(1) - (r.v_full - r.v_empty).double()).abs() for r in runs])
    gaps = absolute / total.abs().clamp_min(1e-9)
    return {
        "reference": str(path), "model": ref.meta["model"], "images": len(ref), "image_seed": ref.meta.get("seed"),
        "disagreement": sum(float(q["disagreement"].mean()) for q in scores) / len(scores),
        "disagreement_seeds": [float(q["disagreement"].mean()) for q in scores],
        "p_relerr": sum(float(q["p_relerr"].mean()) for q in scores) / len(scores),
        "floor": float(scores[0]["floor_disagreement"].mean()),
        "passes": sum(float(r.passes.double().mean()) for r in runs) / len(runs),
        "bias": float(bias), "noise": float(noise),
        "slope": float((mean * truth).sum() / (truth * truth).sum()),
        "gap_mean": float(gaps.mean()), "gap_max": float(gaps.max()),
        "gap_abs_mean": float(absolute.mean()), "gap_abs_max": float(absolute.max()),
        "total_min": float(total.abs().min()),
    }


def report(path: Path, images: int | None = None) -> dict:
    r = measure(path, images)
    print(f"{r['model']} (images seed {r['image_seed']}, {r['images']} games): disagreement {r['disagreement']:.4f} "
          f"(seeds {' '.join(f'{d:.4f}' for d in r['disagreement_seeds'])}; floor {r['floor']:.4f}), p_X error "
          f"{r['p_relerr']:.2f}, {r['passes']:.0f} passes/image; |mean - ref| / |ref| {r['bias']:.3f} (noise alone "
          f"{r['noise']:.3f}), slope {r['slope']:.3f}; efficiency gap {r['gap_mean']:.3f} mean, {r['gap_max']:.3f} max "
          f"of |v(all) - v(empty)| ({r['gap_abs_mean']:.3f} mean, {r['gap_abs_max']:.3f} max in probability; smallest "
          f"|v(all) - v(empty)| {r['total_min']:.3f})")
    print(json.dumps(r))
    return r
