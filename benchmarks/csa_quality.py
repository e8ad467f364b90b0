"""Bank quality against forward passes, every estimator on the same reference games (used by bench_shapley.py).

    python benchmarks/csa_quality.py --threads 2              # the whole sweep (about half an hour on two cores)
    python benchmarks/csa_quality.py --estimators gradient --images 6

For each estimator and budget, the values of the reference games
(``tests/fixtures/csa/reference-smallcnn-fmnist.safetensors``: 2 training images
per class, 1,024 permutations each) are estimated with a seed other than the
reference's, scored with :mod:`advkit_csa.quality` (weighted NFC disagreement
and relative error of ``p_X``, means over the images), and the forward passes
needed to reach the chosen bank quality are interpolated (log-log between the
two budgets around it). Estimators:

- ``plain``: permutation sampling, no variance reduction;
- ``permutation``: the permutation estimator's defaults (antithetic pairs,
  control variate, adaptive focusing), i.e. the bank before the gradient
  estimator existed;
- ``regression`` / ``kernelshap``: a paired KernelSHAP-style regression with
  the exact efficiency constraint, coalition sizes from leverage scores (Musco
  & Witter 2025) or from the Shapley kernel (Covert & Lee 2021); measured to
  choose, not used;
- ``gradient``: :mod:`advkit_csa.linearized` at a fixed number of pairs;
- ``gradient+stop``: the same with the sequential stopping rule, at most 512
  pairs (the bank default: ``target_loss=0.003``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

REFERENCE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "csa" / "reference-smallcnn-fmnist.safetensors"
TARGET = 0.005  # the chosen bank quality: mean weighted NFC disagreement at most this (99.5 % agreement)

BUDGETS = {
    "plain": [16, 32, 64, 128],  # permutations
    "permutation": [16, 32, 64, 128],
    "regression": [2048, 8192],  # coalitions (forward passes), leverage-score sizes
    "kernelshap": [2048, 8192],  # the same with Shapley-kernel sizes
    "gradient": [32, 64, 128, 256, 512],  # pairs
    "gradient+stop": [0.006, 0.005, 0.004, 0.003, 0.002],  # target_loss, at most 512 pairs (the bank default: 0.003)
}
# Seeds per estimator (none is the reference's): the means over several seeds for the cheap estimators, whose
# per-game errors are heavier-tailed; plain sampling is averaged over two, the others run once.
SEEDS = {"plain": (1, 2), "permutation": (1,), "regression": (1,), "kernelshap": (1,), "gradient": (1, 2, 3, 4, 5, 6),
         "gradient+stop": (1, 2, 3, 4, 5, 6)}


def regression_shapley(model, x, y, coalitions: int, seed: int, sizes: str = "leverage") -> torch.Tensor:
    """Paired regression estimate (N, P) of the frequency Shapley values (benchmark only).

    Coalition sizes ``s`` are drawn with probability proportional to 1
    (leverage scores) or to the Shapley kernel ``1 / (s (P - s))``; each
    coalition is evaluated with its complement; weighted least squares with
    weights ``kernel(s) / q(s)`` under ``sum phi = v(all) - v(empty)``.
    """
    from advkit_csa.chains import _value
    from advkit_csa.players import FrequencyPlayers

    players = FrequencyPlayers(tuple(x.shape[-2:]))
    p = players.num_players
    s = torch.arange(1, p, dtype=torch.float64)
    q = torch.ones_like(s) if sizes == "leverage" else 1 / (s * (p - s))
    q = q / q.sum()
    out = torch.zeros(x.shape[0], p)
    for n in range(x.shape[0]):
        g = torch.Generator().manual_seed(seed * 100003 + n)
        half = coalitions // 2
        size = torch.multinomial(q.float(), half, replacement=True, generator=g) + 1
        members = torch.rand(half, p, generator=g).argsort(1).argsort(1) < size[:, None]
        members = torch.cat([members, ~members])
        comps, base = players.components(x[n : n + 1])
        with torch.inference_mode():
            imgs = torch.cat([base, base + comps.sum(1), (base.flatten(1) + members.float() @ comps[0].flatten(1)).view(-1, *x.shape[1:])])
            v = torch.cat([_value(model(imgs[i : i + 256].clamp(0, 1)), y[n], "prob") for i in range(0, len(imgs), 256)]).double()
        v0, vn, v = v[0], v[1], v[2:] - v[0]
        k = members.sum(1).double()
        w = (p - 1) / (k * (p - k) * q[(k - 1).long()])
        z = members.double()
        kkt = torch.zeros(p + 1, p + 1, dtype=torch.float64)
        kkt[:p, :p] = z.T @ (w[:, None] * z)
        kkt[:p, p] = kkt[p, :p] = 1
        rhs = torch.cat([z.T @ (w * v), (vn - v0).view(1)])
        out[n] = torch.linalg.lstsq(kkt, rhs).solution[:p].float()
    return out


def run(name: str, budget, model, ref, seed: int = 1) -> dict:
    """Mean passes per image and mean quality of one estimator at one budget and seed."""
    from advkit_csa.linearized import gradient_shapley
    from advkit_csa.players import FrequencyPlayers
    from advkit_csa.shapley import frequency_shapley

    x, y, idx = ref.images, ref.labels, ref.indices.tolist()
    t = time.perf_counter()
    if name in ("regression", "kernelshap"):
        sizes = "leverage" if name == "regression" else "kernel"
        values, passes = regression_shapley(model, x, y, int(budget), seed, sizes), float(budget) + 2
    else:
        if name in ("plain", "permutation"):
            kw = dict(antithetic=False, control_variate=False, adaptive=False) if name == "plain" else {}
            r = frequency_shapley(model, x, y, permutations=int(budget), seed=seed, indices=idx, batch_size=256,
                                  progress=False, **kw)
        elif name == "gradient":
            r = gradient_shapley(model, x, y, pairs=int(budget), seed=seed, indices=idx, batch_size=128, progress=False)
        else:
            r = gradient_shapley(model, x, y, pairs=512, target_loss=float(budget), seed=seed, indices=idx, batch_size=128,
                                 progress=False)
        values, passes = r.values, float(r.passes.double().mean())
    q = ref.score(values, FrequencyPlayers(tuple(x.shape[-2:])))
    return {"estimator": name, "budget": budget, "passes": passes, "disagreement": float(q["disagreement"].mean()),
            "per_image": q["disagreement"].tolist(), "p_per_image": q["p_relerr"].tolist(),
            "p_relerr": float(q["p_relerr"].mean()), "worst": float(q["disagreement"].max()),
            "floor": float(q["floor_disagreement"].mean()), "floor_p": float(q["floor_p_relerr"].mean()),
            "seconds": time.perf_counter() - t}


def linearization(images: int = 3, chains: int = 16, seed: int = 5) -> dict:
    """Variance of the marginals and of their residual after the trapezoid rule, along permutation chains.

    For each reference game, ``chains`` random permutations are walked with
    ``v`` and its gradient at every prefix; a player's marginal ``m`` is the
    change of ``v`` as it joins and its trapezoid ``1/2 (<grad v before, comp> +
    <grad v after, comp>)``. Players are grouped by their reference ``|phi|``.
    """
    import advkit
    from advkit_csa.chains import _value
    from advkit_csa.players import FrequencyPlayers
    from advkit_csa.quality import ReferenceGames

    ref = ReferenceGames.load(REFERENCE).subset(range(images))
    model = advkit.load_model(ref.meta["model"]).eval()
    players = FrequencyPlayers((28, 28))
    p = players.num_players
    groups = {"|phi| >= 1e-2": lambda w: w >= 1e-2, "1e-3 <= |phi| < 1e-2": lambda w: (w >= 1e-3) & (w < 1e-2),
              "|phi| < 1e-3": lambda w: w < 1e-3}
    sums = {g: [0.0, 0.0, 0.0, 0] for g in groups}
    for n in range(len(ref)):
        comps, base = players.components(ref.images[n : n + 1])
        flat = comps[0].flatten(1).double()
        gen = torch.Generator().manual_seed(seed + n)
        d, lin = [], []
        for _ in range(chains):
            order = torch.rand(p, generator=gen).argsort()
            members = order.argsort()[None, :] < torch.arange(p + 1)[:, None]
            imgs = (base.flatten().double() + members.double() @ flat).float().view(-1, 1, 28, 28).requires_grad_(True)
            v = _value(model(imgs.clamp(0, 1)).float(), ref.labels[n], "prob")
            slope = torch.autograd.grad(v.sum(), imgs)[0].flatten(1).double() @ flat.T  # (P+1, P)
            dd, ll = torch.zeros(p, dtype=torch.float64), torch.zeros(p, dtype=torch.float64)
            dd[order] = (v[1:] - v[:-1]).detach().double()
            ll[order] = 0.5 * (slope[:-1].gather(1, order[:, None]) + slope[1:].gather(1, order[:, None])).squeeze(1)
            d.append(dd)
            lin.append(ll)
        d, lin = torch.stack(d), torch.stack(lin)
        w = ref.values[n].double().abs()
        for g, sel in groups.items():
            k = sel(w)
            sums[g][0] += float(d[:, k].var(0).sum())
            sums[g][1] += float((d - lin)[:, k].var(0).sum())
            sums[g][2] += float(((d - lin)[:, k].mean(0)).abs().sum() / w[k].sum().clamp_min(1e-12) * k.sum())
            sums[g][3] += int(k.sum())
    return {g: {"players": c, "variance_ratio": a / max(b, 1e-300), "relative_bias": r / max(c, 1)} for g, (a, b, r, c) in sums.items()}


def _expected_disagreement(w: torch.Tensor, sigma: torch.Tensor, n: torch.Tensor) -> float:
    return float((w * 0.5 * torch.erfc(w * n.sqrt() / sigma.clamp_min(1e-12) / math.sqrt(2))).sum() / w.sum())


def oracle_allocation(images: int = 3, budgets=(1000, 2000, 4000)) -> list[dict]:
    """Expected disagreement of permutation marginals spread uniformly vs allocated by an oracle, at equal passes.

    ``sigma_i`` (the spread of player ``i``'s marginals) comes from 64 plain
    permutations; the oracle knows the reference values and ``sigma`` and gives
    each player marginal samples (two forward passes each, after a pilot of
    two) greedily where they most reduce the expected weighted disagreement:
    the best any sequential sign decision on permutation marginals can do.
    A full permutation gives every player one sample for ``P - 1`` passes.
    """
    import advkit
    from advkit_csa.quality import ReferenceGames
    from advkit_csa.shapley import frequency_shapley

    ref = ReferenceGames.load(REFERENCE).subset(range(images))
    model = advkit.load_model(ref.meta["model"])
    r = frequency_shapley(model, ref.images, ref.labels, permutations=64, antithetic=False, control_variate=False,
                          adaptive=False, seed=2, indices=ref.indices.tolist(), batch_size=256, progress=False)
    sigma = (r.stderr.double() * 8).clamp_min(1e-9)
    rows = []
    for b in budgets:
        uni, orc = [], []
        for n in range(len(ref)):
            w, s = ref.values[n].double().abs(), sigma[n]
            p = len(w)
            uni.append(_expected_disagreement(w, s, torch.full((p,), b / (p - 1), dtype=torch.float64)))
            alloc, left = torch.full((p,), 2.0, dtype=torch.float64), b / 2 - 2 * p
            while left > 0:
                step = max(1.0, float(alloc.sum()) / 100)
                now = w * torch.erfc(w * alloc.sqrt() / s / math.sqrt(2))
                gain = now - w * torch.erfc(w * (alloc + step).sqrt() / s / math.sqrt(2))
                alloc[int(gain.argmax())] += step
                left -= step
            orc.append(_expected_disagreement(w, s, alloc))
        rows.append({"passes": b, "uniform": sum(uni) / len(uni), "oracle": sum(orc) / len(orc)})
    return rows


def passes_to_reach(rows: list[dict], target: float = TARGET) -> float | None:
    """Forward passes at which the disagreement curve crosses ``target`` (log-log interpolation); None if it does not."""
    pts = sorted((r["passes"], r["disagreement"]) for r in rows)
    for (p0, d0), (p1, d1) in zip(pts, pts[1:]):
        if d0 > target >= d1:
            f = (math.log(d0) - math.log(target)) / (math.log(d0) - math.log(max(d1, 1e-12)))
            return math.exp(math.log(p0) + f * (math.log(p1) - math.log(p0)))
    if pts and pts[0][1] <= target:
        return pts[0][0]  # already there at the smallest budget: an upper bound
    return None


def sweep(estimators, images: int | None = None, log=print) -> dict:
    import advkit
    from advkit_csa.quality import ReferenceGames

    ref = ReferenceGames.load(REFERENCE)
    if images:
        ref = ref.subset(range(min(images, len(ref))))
    model = advkit.load_model(ref.meta["model"])
    out = {}
    for name in estimators:
        out[name] = []
        for b in BUDGETS[name]:
            runs = [run(name, b, model, ref, seed) for seed in SEEDS[name]]
            row = {k: sum(r[k] for r in runs) / len(runs) for k in ("passes", "disagreement", "p_relerr", "floor", "floor_p")}
            row.update(estimator=name, budget=b, seeds=len(runs), seconds=sum(r["seconds"] for r in runs),
                       worst=max(r["worst"] for r in runs), spread=[r["disagreement"] for r in runs])
            out[name].append(row)
            log(f"  {name:14s} {str(b):6s} {row['passes']:9.0f} passes/image: disagreement {row['disagreement']:.4f} "
                f"(worst game {row['worst']:.4f}; {len(runs)} seed(s): {' '.join(f'{d:.4f}' for d in row['spread'])}), "
                f"p_X error {row['p_relerr']:.3f}  [{row['seconds']:.0f} s]")
    out["images"], out["floor"], out["floor_p"] = len(ref), out[estimators[0]][0]["floor"], out[estimators[0]][0]["floor_p"]
    return out


def summary(out: dict, target: float = TARGET, log=print) -> None:
    log(f"\n  reference floor (its own standard errors): disagreement {out['floor']:.4f}, p_X error {out['floor_p']:.3f}; "
        f"{out['images']} images")
    reach = {k: passes_to_reach(v, target) for k, v in out.items() if isinstance(v, list)}
    plain = reach.get("plain")
    for k, p in reach.items():
        ratio = f", {plain / p:.1f}x fewer than plain" if plain and p else ""
        log(f"  passes per image to reach disagreement {target}: {k:14s} "
            + (f"{p:8.0f}{ratio}" if p else f"not reached within {max(r['passes'] for r in out[k]):.0f}"))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--estimators", default=",".join(BUDGETS))
    ap.add_argument("--linearization", action="store_true", help="measure the trapezoid's accuracy instead")
    ap.add_argument("--oracle", action="store_true", help="bound what sequential allocation of permutation marginals can gain")
    ap.add_argument("--images", type=int, default=None, help="first N reference games only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--reference", type=Path, default=None, help="other reference games (csa_reference.py --model)")
    ap.add_argument("--bias", action="store_true", help="the bank estimator's quality and bias over six seeds")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.reference is not None:
        global REFERENCE
        REFERENCE = args.reference
    if args.bias:
        from csa_bias import report

        report(REFERENCE, args.images)
        return
    if args.linearization:
        for g, r in linearization(args.images or 3).items():
            print(f"  {g:22s} ({r['players']:3d} player-games): variance of the marginals / of their residual after the "
                  f"trapezoid {r['variance_ratio']:5.1f}x; mean |E residual| / mean |phi| {r['relative_bias']:.2f}")
        return
    if args.oracle:
        for r in oracle_allocation(args.images or 3):
            print(f"  {r['passes']:5d} passes/image: expected disagreement, full permutations {r['uniform']:.4f}, "
                  f"oracle-allocated marginals {r['oracle']:.4f}")
        return
    out = sweep(args.estimators.split(","), args.images)
    summary(out)
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    sys.exit(main())
