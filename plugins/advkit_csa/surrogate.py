"""The control variate of the estimator: softmax of an additive logit game.

For the probability game ``v(S) = softmax(z(S))_y`` the surrogate is
``g(S) = softmax(z(empty) + sum_{i in S} W_i)_y`` where ``W_i`` (one logit
vector per player) is player ``i``'s mean logit increment over a set of sampled
permutations, i.e. the estimated Shapley values of the logit game. The
increments of every permutation telescope, so ``sum_i W_i = z(all) - z(empty)``
and ``g`` agrees with ``v`` on the empty and the full coalition. ``g`` costs no
forward pass: its marginals along any permutation and its Shapley values (by
Monte-Carlo over many cheap permutations) come from cumulative sums of ``W``.
Most of the non-additivity of ``v`` is the softmax saturating, which ``g``
reproduces, so the marginals of ``v - g`` vary far less than those of ``v``.
"""

from __future__ import annotations

import torch


def chain_values(z0: torch.Tensor, zn: torch.Tensor, w: torch.Tensor, order: torch.Tensor, y: int,
                 reverse: bool) -> torch.Tensor:
    """``g`` along permutations: (U, P + 1) values of the coalitions of size 0..P.

    ``order`` (U, P) are permutations; with ``reverse`` they are walked from the
    last player to the first (the antithetic partner).
    """
    cs = torch.cumsum(w[order], dim=1)  # (U, P, C): sum over the first k players
    zero = torch.zeros_like(cs[:, :1])
    cs = torch.cat([zero, cs], dim=1)  # (U, P + 1, C)
    if reverse:  # coalition of size j = all minus the first P - j players
        logits = zn - cs.flip(1)
    else:
        logits = z0 + cs
    return torch.softmax(logits, dim=-1)[..., y]


def chain_marginals(values: torch.Tensor, order: torch.Tensor, reverse: bool) -> torch.Tensor:
    """Per-player marginal contributions (U, P) from chain values (U, P + 1)."""
    steps = values[:, 1:] - values[:, :-1]  # the k-th player added
    players = order.flip(1) if reverse else order
    out = torch.empty_like(steps)
    out.scatter_(1, players, steps)
    return out


def unit_marginals(z0, zn, w, order, y, antithetic: bool) -> torch.Tensor:
    """Marginals of ``g`` per sampling unit (a permutation, or an antithetic pair averaged)."""
    d = chain_marginals(chain_values(z0, zn, w, order, y, False), order, False)
    if antithetic:
        d = 0.5 * (d + chain_marginals(chain_values(z0, zn, w, order, y, True), order, True))
    return d


def shapley_mc(z0, zn, w, y: int, pairs: int, generator: torch.Generator, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapley values of ``g`` and their variance per unit, from ``pairs`` antithetic pairs (no model calls)."""
    p = w.shape[0]
    total = torch.zeros(p, dtype=torch.float64, device=w.device)
    total_sq = torch.zeros(p, dtype=torch.float64, device=w.device)
    done = 0
    while done < pairs:
        k = min(chunk, pairs - done)
        order = torch.rand(k, p, generator=generator).argsort(dim=1).to(w.device)
        d = unit_marginals(z0, zn, w, order, y, True).double()
        total += d.sum(0)
        total_sq += (d * d).sum(0)
        done += k
    mean = total / pairs
    var = (total_sq / pairs - mean * mean).clamp_min(0) * pairs / max(pairs - 1, 1)
    return mean.float(), var.float()
