"""Shapley values of frequency players by permutation sampling (our own implementation).

No library computes Shapley values over DFT blocks with batched coalition
chains, so this estimator is ours. For an image ``x`` of class ``y`` the game
is ``v(S) = f(clamp(real(IFFT(mask_S * F(x))), 0, 1))_y`` with ``f`` the
softmax probability (``value="prob"``) or the logit (``value="logit"``) and the
players of :mod:`advkit_csa.players` (the DC cell always kept).

Estimator. Each permutation of the ``P`` players gives ``P + 1`` nested
coalitions; the marginal of a player is the change of ``v`` when it joins, so
the marginals of one permutation telescope to ``v(all) - v(empty)`` and every
estimate is exactly efficient. Variance reduction:

- *antithetic pairs*: each permutation is evaluated with its reverse, whose
  coalitions are the complements; the sampling unit is the pair (averaged);
- *control variate* (``value="prob"``, from 8 units per image on): the
  surrogate game ``g`` of :mod:`advkit_csa.surrogate` (softmax of the additive
  logit game fitted from the sampled logit increments) is used as
  ``phi = beta * phi_g + mean(d - beta * g)``, with ``d``/``g`` the per-unit
  marginals of the model and of ``g`` on the same permutations and ``phi_g``
  the Shapley values of ``g``, computed without model calls. The surrogate used
  on one half of the units is fitted on the other half (cross-fitting).
  ``beta`` is the least-squares coefficient, a single number per image and
  half, so efficiency still holds exactly (both ``phi_g`` and ``mean(g)`` sum to
  ``g(all) - g(empty)``); estimating it in-sample costs a bias of order
  ``1/units``, far below the standard error.

Standard errors come from the spread of the per-unit marginals (per pair,
per half), plus the Monte-Carlo error of ``phi_g``.

Chains are evaluated as large batches: per image the ``P`` single-player
reconstructions are computed once with ``torch.fft``, a permutation's chain of
images is their cumulative sum (and ``full - cumsum`` for its reverse), and the
forward passes of many permutations and images go through the model in
batches of ``batch_size`` under ``torch.inference_mode``. Sampling stops after
``permutations`` permutations per image, or earlier for an image whose largest
standard error is at most ``target_se``.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field

import torch

from advkit.plugin import UserError
from advkit.plugin import progress as progress_bar
from advkit_csa.chains import (ImageSamples, _value, focused_logits, full_logits, needed_prefixes, record_focused,
                               record_full)
from advkit_csa.combine import MIN_UNITS_CV, allocate, estimate
from advkit_csa.players import FrequencyPlayers

VALUES = ("prob", "logit")


@dataclass
class ShapleyResult:
    """Per-image frequency Shapley values.

    ``values``/``stderr``: (N, P) per player; ``v_full``/``v_empty``: (N,) the
    game on all players and on none (the centre cell only);
    ``permutations``/``passes``: (N,) permutations sampled and forward passes
    spent per image; ``players``: the layout (see :meth:`spectrum`);
    ``timing``: wall-clock seconds in total and inside the model's forward.
    """

    values: torch.Tensor
    stderr: torch.Tensor
    v_full: torch.Tensor
    v_empty: torch.Tensor
    permutations: torch.Tensor
    passes: torch.Tensor
    players: FrequencyPlayers
    settings: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)

    def spectrum(self, what: str = "values") -> torch.Tensor:
        """(N, 1, H, W) per-player numbers upsampled to the centred spectrum (centre cell 0)."""
        return self.players.to_spectrum(getattr(self, what)).unsqueeze(1)

    def efficiency_gap(self) -> torch.Tensor:
        """(N,) ``sum(values) - (v_full - v_empty)``: zero up to rounding."""
        return self.values.sum(1) - (self.v_full - self.v_empty)


def image_seed(seed: int, index: int, *keys) -> int:
    digest = hashlib.sha256(repr(("freq-shapley", int(seed), int(index)) + keys).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _device_of(model) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


class _Forward:
    """The model under inference, in slices of ``batch_size``, counting passes and time."""

    def __init__(self, model, batch_size: int):
        self.model, self.batch_size, self.calls, self.seconds = model, int(batch_size), 0, 0.0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.clamp_(0, 1)
        t = time.perf_counter()
        outs = [self.model(images[i : i + self.batch_size]) for i in range(0, images.shape[0], self.batch_size)]
        if outs and outs[0].is_cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t
        self.calls += images.shape[0]
        return torch.cat(outs).float() if outs else images.new_zeros(0, 0)


def _check(value, permutations, target_se, batch_size, pilot_share, x, y):
    if value not in VALUES:
        raise UserError(f"freq-shapley: value must be one of {VALUES}, got {value!r}")
    if int(permutations) < 1:
        raise UserError(f"freq-shapley: permutations must be >= 1, got {permutations!r}")
    if target_se is not None and not float(target_se) > 0:
        raise UserError(f"freq-shapley: target_se must be > 0, got {target_se!r}")
    if int(batch_size) < 1:
        raise UserError(f"freq-shapley: batch_size must be >= 1, got {batch_size!r}")
    if not 0 < float(pilot_share) <= 1:
        raise UserError(f"freq-shapley: pilot_share must lie in (0, 1], got {pilot_share!r}")
    if x.dim() != 4 or y.shape != x.shape[:1]:
        raise UserError(f"freq-shapley: expected images (N, C, H, W) and labels (N,), got {tuple(x.shape)} and {tuple(y.shape)}")


def frequency_shapley(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    grid: tuple[int, int] | None = None,
    permutations: int = 64,
    target_se: float | None = None,
    value: str = "prob",
    antithetic: bool = True,
    control_variate: bool = True,
    adaptive: bool = True,
    pilot_share: float = 0.25,
    batch_size: int = 1024,
    round_permutations: int = 16,
    seed: int = 0,
    generator: torch.Generator | None = None,
    indices=None,
    progress: bool = True,
    surrogate_ratio: float = 10.0,
    max_surrogate_pairs: int = 20000,
) -> ShapleyResult:
    """Estimate the frequency Shapley values of ``model`` on images ``x`` (N, C, H, W in [0, 1]) of classes ``y``.

    ``permutations``: the budget per image, in full permutations, i.e. about
    ``permutations * (P - 1)`` forward passes (an antithetic pair counts as 2);
    with ``adaptive`` a ``pilot_share`` of it goes to full permutations and the
    rest to focused ones. ``target_se`` stops an image once its largest
    standard error is at most this (checked every ``round_permutations``).
    ``grid``: the player grid (default 2x2 blocks). ``seed`` (or a
    ``generator`` it is drawn from) and ``indices`` (stable per-image ids,
    default ``0..N-1``) fix every random choice; an image's values do not
    depend on the rest of the batch. ``control_variate`` applies to
    ``value="prob"`` only.
    """
    _check(value, permutations, target_se, batch_size, pilot_share, x, y)
    if generator is not None:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    players = FrequencyPlayers(tuple(x.shape[-2:]), grid)
    p = players.num_players
    device = _device_of(model)
    use_cv = bool(control_variate) and value == "prob"
    per_unit = 2 if antithetic else 1
    inner = max(p - 1, 0)
    budget = int(permutations) * inner  # passes per image besides the two ends
    pilot_perms = int(permutations)
    if adaptive and p > 2:
        pilot_perms = min(pilot_perms, max(2 * MIN_UNITS_CV, math.ceil(float(pilot_share) * int(permutations))))
    pilot_units = max(1, math.ceil(pilot_perms / per_unit))
    round_units = pilot_units if target_se is None else max(1, math.ceil(int(round_permutations) / per_unit))
    if target_se is not None and use_cv:
        round_units = max(round_units, MIN_UNITS_CV)
    round_passes = int(round_permutations) * inner if target_se is not None else None
    indices = list(range(x.shape[0])) if indices is None else [int(i) for i in indices]
    n = x.shape[0]
    group = max(1, min(64, (256 << 20) // max(p * x[0].numel() * 4, 1)))
    units_per_chunk = max(1, int(batch_size) // max(1, inner * per_unit))
    seed_of = lambda index, *keys: image_seed(seed, index, *keys)  # noqa: E731

    def estimate_of(s, final):
        return estimate(s, antithetic, use_cv, seed_of, final, surrogate_ratio, max_surrogate_pairs)

    def check_target(states, active):
        if target_se is None:
            return
        for i in active:
            _, se, _ = estimate_of(states[i], False)
            if float(se.max()) <= float(target_se):
                states[i].done = True

    values, stderr = torch.zeros(n, p), torch.zeros(n, p)
    v_full, v_empty = torch.zeros(n), torch.zeros(n)
    perms = torch.zeros(n, dtype=torch.long)
    passes = torch.zeros(n, dtype=torch.long)
    fwd = _Forward(model, batch_size)
    t_start = time.perf_counter()
    bar = progress_bar(n * (budget + 2), "freq-shapley", quiet=not progress, unit="pass")
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, n, group):
                xs = x[start : start + group].to(device).float()
                ys = y[start : start + group].to("cpu").long()
                comps, base = players.components(xs)
                full = base + comps.sum(1)
                states = [ImageSamples(indices[start + i], int(ys[i]), torch.Generator().manual_seed(seed_of(indices[start + i])), p)
                          for i in range(xs.shape[0])]
                ends = fwd(torch.cat([base, full]).clone()).cpu()
                for i, s in enumerate(states):
                    s.z0, s.zn = ends[i], ends[xs.shape[0] + i]
                    s.v0 = float(_value(s.z0, torch.tensor(s.y), value))
                    s.vn = float(_value(s.zn, torch.tensor(s.y), value))
                    s.passes = 2
                bar.update(2 * xs.shape[0])

                # pilot: full permutations (all of them without adaptive sampling)
                done_units = 0
                while done_units < pilot_units:
                    k = min(round_units, pilot_units - done_units)
                    active = [i for i, s in enumerate(states) if not s.done]
                    if not active:
                        break
                    if p > 1:
                        all_orders = torch.cat([states[i].draw(k) for i in active])
                        all_owners = torch.tensor(active).repeat_interleave(k)
                        for c in range(0, len(all_owners), units_per_chunk):
                            orders = all_orders[c : c + units_per_chunk]
                            owners = all_owners[c : c + units_per_chunk]
                            zf, zr = full_logits(fwd, comps, base, full, owners.to(device), orders, antithetic)
                            for i in owners.unique().tolist():
                                sel = owners == i
                                record_full(states[i], orders[sel], zf[sel], zr[sel] if zr is not None else None, value, antithetic)
                                states[i].passes += int(sel.sum()) * per_unit * inner
                            bar.update(len(orders) * per_unit * inner)
                    else:  # one player: its value is v(all) - v(empty), exactly
                        for i in active:
                            for _ in range(k):
                                states[i].full_d.append(torch.tensor([states[i].vn - states[i].v0], dtype=torch.float64))
                                states[i].full_orders.append(torch.zeros(1, dtype=torch.long))
                    done_units += k
                    check_target(states, active)

                # focused permutations on the players that carry the variance
                rounds = 0
                while p > 2 and rounds < 64:
                    active = [i for i, s in enumerate(states) if not s.done and budget + 2 - s.passes > 0]
                    if not active:
                        break
                    plan = []
                    for i in active:
                        s = states[i]
                        left = budget + 2 - s.passes
                        spend = left if target_se is None and rounds >= 2 else min(left, round_passes or max(left // 3, 1))
                        _, _, unit_var = estimate_of(s, False)
                        counts = len(s.full_d) + (torch.stack(s.foc_masks).sum(0) if s.foc_masks else torch.zeros(p))
                        q, units = allocate(unit_var, counts, spend / (2 * per_unit))
                        if units == 0:
                            s.done = True
                            continue
                        orders, masks = s.draw(units), s.draw_masks(units, q)
                        plan.append((i, orders, masks, needed_prefixes(orders, masks)))
                    if not plan:
                        break
                    owners = torch.cat([torch.full((len(o),), i) for i, o, _, _ in plan])
                    orders = torch.cat([o for _, o, _, _ in plan])
                    masks = torch.cat([m for _, _, m, _ in plan])
                    need = torch.cat([nd for _, _, _, nd in plan])
                    cost = need.sum(1) * per_unit
                    c = 0
                    while c < len(owners):
                        e = c + 1
                        total = int(cost[c])
                        while e < len(owners) and total + int(cost[e]) <= int(batch_size):
                            total += int(cost[e])
                            e += 1
                        zf, zr = focused_logits(fwd, comps, base, full, owners[c:e].to(device), orders[c:e], need[c:e], antithetic)
                        rows = torch.cat([torch.zeros(1, dtype=torch.long), need[c:e].sum(1).cumsum(0)])
                        for i in owners[c:e].unique().tolist():
                            sel = (owners[c:e] == i).nonzero().flatten()
                            lo, hi = int(rows[sel[0]]), int(rows[sel[-1] + 1])
                            record_focused(states[i], orders[c:e][sel], masks[c:e][sel], need[c:e][sel], zf[lo:hi],
                                           zr[lo:hi] if zr is not None else None, value, antithetic)
                            states[i].passes += int(cost[c:e][sel].sum())
                        bar.update(total)
                        c = e
                    rounds += 1
                    check_target(states, [i for i, _, _, _ in plan])

                for i, s in enumerate(states):
                    j = start + i
                    values[j], stderr[j], _ = estimate_of(s, True)
                    v_full[j], v_empty[j] = s.vn, s.v0
                    perms[j] = (len(s.full_d) + len(s.foc_d)) * per_unit
                    passes[j] = s.passes
    finally:
        bar.close()
        model.train(was_training)
    settings = {"grid": list(players.grid), "players": p, "value": value, "antithetic": bool(antithetic),
                "control_variate": use_cv, "adaptive": bool(adaptive), "permutations": int(permutations),
                "target_se": target_se, "seed": int(seed)}
    timing = {"total_s": time.perf_counter() - t_start, "forward_s": fwd.seconds, "passes": fwd.calls}
    return ShapleyResult(values, stderr, v_full, v_empty, perms, passes, players, settings, timing)
