"""From sampled units to values and standard errors, and where to sample next.

Values. Each unit gives per-player marginals ``d`` (pair-averaged when
antithetic). With the control variate the residuals ``r = d - beta * g`` are
used (``g`` the surrogate's marginals on the same permutations, fitted on the
other half of the full units; ``beta`` one least-squares number per half) and
``beta * phi_g`` is added back. Per player, the residuals of all units that
observed it are pooled (``m_i``). The mean over the full units alone sums
exactly to ``v(all) - v(empty) - beta (g(all) - g(empty))`` (the chains
telescope); the pooled means are brought back onto that sum by subtracting the
mean of their differences to it, ``mean_j (m_j - mean_full_j)``, a zero-mean
term shared by all players. So every estimate is exactly efficient.

Standard errors. The estimate is linear in the units, which are independent:
its variance is the sum over units of the variance of each unit's
contribution: for the full units the spread of their contributions, for the
focused units (given which players they observed) the sum of their squared
centred contributions; per half, plus the Monte-Carlo error of ``phi_g``.

Allocation. After the pilot of full units, focused units observe player ``i``
with probability ``q_i``, chosen by water-filling so that the expected number
of samples of each player brings its variance ``sigma_i^2 / n_i`` down to a
common level where the budget allows: the passes go to the few players (the
lowest frequencies, in practice) that carry most of the variance.
"""

from __future__ import annotations

import math

import torch

from advkit_csa.surrogate import shapley_mc, unit_marginals

MIN_UNITS_CV = 8  # full units per image below which the control variate is not used


def _coefficient(d: torch.Tensor, g: torch.Tensor, mask: torch.Tensor) -> float:
    """Least-squares control-variate coefficient over the observed entries, one number for all players."""
    n = mask.sum(0).clamp_min(1)
    dc = (d - (d * mask).sum(0) / n) * mask
    gc = (g - (g * mask).sum(0) / n) * mask
    den = float((gc * gc).sum())
    return float((dc * gc).sum()) / den if den > 0 else 0.0


def _pooled(rf: torch.Tensor, rb: torch.Tensor, mb: torch.Tensor):
    """Efficient pooled estimate (P,), its variance (P,) and the per-sample variance (P,) of the residuals."""
    nf, p = rf.shape
    n = nf + mb.sum(0)
    m = (rf.sum(0) + rb.sum(0)) / n
    est = m - (m - rf.mean(0)).mean()
    a = rf / n - ((rf / n - rf / nf).sum(1, keepdim=True) / p)
    var = nf * a.var(0) if nf > 1 else torch.full((p,), float("inf"), dtype=rf.dtype)
    nb = rb.shape[0]
    if nb > 0:  # conditional on which players each focused unit observed
        cen = (rb - m) * mb / n
        b = cen - cen.sum(1, keepdim=True) / p
        var = var + (b * b).sum(0) * n / (n - 1).clamp_min(1)
    dev = torch.cat([(rf - m) ** 2, ((rb - m) ** 2) * mb])
    unit_var = dev.sum(0) / (n - 1).clamp_min(1)
    return est, var, unit_var


def estimate(s, antithetic: bool, use_cv: bool, seed_of, final: bool, ratio: float, max_pairs: int):
    """Values, standard errors and per-sample residual variances (P,) of one image."""
    df = torch.stack(s.full_d)
    of = torch.stack(s.full_orders)
    nf, p = df.shape
    if s.foc_d:
        db, mb, ob = torch.stack(s.foc_d), torch.stack(s.foc_masks).double(), torch.stack(s.foc_orders)
    else:
        db, mb, ob = df.new_zeros(0, p), df.new_zeros(0, p), of.new_zeros(0, p)
    if not use_cv or nf < MIN_UNITS_CV:
        est, var, unit_var = _pooled(df, db, mb)
        return est.float(), var.sqrt().float(), unit_var
    z0, zn = s.z0.double(), s.zn.double()
    nb = db.shape[0]
    mean = torch.zeros(p, dtype=torch.float64)
    var = torch.zeros(p, dtype=torch.float64)
    unit_var = torch.zeros(p, dtype=torch.float64)
    for half in (0, 1):
        sf, sb = torch.arange(half, nf, 2), torch.arange(half, max(nb, half), 2)
        w = s.inc[1 - half] / s.inc_n[1 - half]
        gf = unit_marginals(z0, zn, w, of[sf], s.y, antithetic)
        gb = unit_marginals(z0, zn, w, ob[sb], s.y, antithetic) * mb[sb] if len(sb) else db[sb]
        g = torch.cat([gf, gb])
        mask = torch.cat([torch.ones_like(gf), mb[sb]])
        beta = _coefficient(torch.cat([df[sf], db[sb]]), g, mask)
        est, v, uv = _pooled(df[sf] - beta * gf, (db[sb] - beta * gb) * mb[sb], mb[sb])
        weight = (len(sf) + len(sb)) / (nf + nb)
        g_unit = beta**2 * gf.var(0)
        pairs = int(min(max_pairs, max(64, math.ceil(ratio * float(g_unit.max()) / max(float(v.max()), 1e-30)))))
        if final:
            gen = torch.Generator().manual_seed(seed_of(s.index, "surrogate", half))
            phi_g, var_g = shapley_mc(z0, zn, w, s.y, pairs, gen)
            mean += weight * (est + beta * phi_g.double())
            var += weight**2 * (v + beta**2 * var_g.double() / pairs)
        else:
            var += weight**2 * (v + g_unit / pairs)
        unit_var += 0.5 * uv
    return mean.float(), var.sqrt().float(), unit_var


def allocate(unit_var: torch.Tensor, counts: torch.Tensor, samples: float) -> tuple[torch.Tensor, int]:
    """Observation probabilities ``q`` (P,) and number of focused units for about ``samples`` extra samples.

    Water-filling: the extra samples ``max(0, sigma_i^2 / L - n_i)`` sum to
    ``samples``; the player needing most is observed in every unit.
    """
    sig = unit_var.double().clamp_min(0)
    n = counts.double()
    if float(sig.max()) <= 0 or samples <= 0:
        return torch.zeros_like(sig), 0

    def extra(level):
        return (sig / level - n).clamp_min(0)

    lo, hi = 1e-30, float((sig / n.clamp_min(1)).max()) + 1e-30
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        if float(extra(mid).sum()) > samples:
            lo = mid
        else:
            hi = mid
    e = extra(hi)
    units = int(math.ceil(float(e.max())))
    if units == 0:
        return torch.zeros_like(sig), 0
    return (e / units).clamp(0, 1).float(), units
