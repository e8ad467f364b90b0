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

from advkit.errors import UserError
from advkit_csa.players import FrequencyPlayers
from advkit_csa.surrogate import chain_marginals, shapley_mc, unit_marginals

VALUES = ("prob", "logit")
MIN_UNITS_CV = 8  # below this many units per image the control variate is not used


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


def _value(logits: torch.Tensor, y: torch.Tensor, value: str) -> torch.Tensor:
    if value == "prob":
        logits = torch.softmax(logits.float(), dim=-1)
    return logits.gather(-1, y.expand(logits.shape[:-1]).unsqueeze(-1)).squeeze(-1).float()


def image_seed(seed: int, index: int, *keys) -> int:
    digest = hashlib.sha256(repr(("freq-shapley", int(seed), int(index)) + keys).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _device_of(model) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


class _Forward:
    """The model under inference, in slices of ``batch_size``, counting passes."""

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


class _ImageState:
    """What one image has gathered so far."""

    def __init__(self, index: int, y: int, seed: int, p: int):
        self.index, self.y = index, y
        self.generator = torch.Generator().manual_seed(image_seed(seed, index))
        self.orders: list[torch.Tensor] = []
        self.units: list[torch.Tensor] = []  # (P,) marginals per unit
        self.inc = [torch.zeros(0), torch.zeros(0)]  # summed logit increments per fold (P, C)
        self.inc_n = [0, 0]
        self.z0 = self.zn = None
        self.v0 = self.vn = 0.0
        self.done = False
        self.p = p

    def draw(self, k: int) -> torch.Tensor:
        return torch.rand(k, self.p, generator=self.generator).argsort(dim=1)

    def add_increments(self, fold: int, players: torch.Tensor, inc: torch.Tensor) -> None:
        if self.inc[fold].numel() == 0:
            self.inc[fold] = torch.zeros(self.p, inc.shape[-1], dtype=torch.float64)
        self.inc[fold].index_add_(0, players.reshape(-1).cpu(), inc.reshape(-1, inc.shape[-1]).double().cpu())


def _chain_logits(fwd, comps, base, full, owners, orders, antithetic):
    """Logits (U, P-1, C) of the inner coalitions of each permutation (and of its reverse)."""
    u, p = orders.shape
    cs = comps[owners[:, None], orders.to(comps.device)].cumsum_(dim=1)[:, : p - 1]  # (U, P-1, C, H, W)
    images = torch.empty((2 if antithetic else 1, *cs.shape), dtype=cs.dtype, device=cs.device)
    torch.add(cs, base[owners][:, None], out=images[0])
    if antithetic:  # the complements, i.e. the coalitions of the reversed permutation
        torch.sub(full[owners][:, None], cs, out=images[1])
    logits = fwd(images.flatten(0, 2)).view(images.shape[0], u, p - 1, -1)
    return logits[0], (logits[1] if antithetic else None)


def _record(state: _ImageState, orders, zf, zr, value, antithetic):
    """Turn the logits of some units of one image into marginals and logit increments."""
    k = orders.shape[0]
    y = torch.tensor(state.y)
    ends = lambda z: torch.cat([state.z0.expand(k, 1, -1), z, state.zn.expand(k, 1, -1)], dim=1)  # noqa: E731
    fwd_logits = ends(zf)  # (k, P+1, C)
    d = chain_marginals(_value(fwd_logits, y, value), orders, False)
    fold = (torch.arange(k) + len(state.orders)) % 2
    chains = [(orders, fwd_logits[:, 1:] - fwd_logits[:, :-1])]
    if antithetic:
        rev_logits = ends(zr.flip(1))
        d = 0.5 * (d + chain_marginals(_value(rev_logits, y, value), orders, True))
        chains.append((orders.flip(1), rev_logits[:, 1:] - rev_logits[:, :-1]))
    for f in (0, 1):
        sel = fold == f
        for players, inc in chains:
            state.add_increments(f, players[sel], inc[sel])
        state.inc_n[f] += int(sel.sum()) * len(chains)
    state.units.extend(d.double().unbind(0))
    state.orders.extend(orders.unbind(0))


def _coefficient(d: torch.Tensor, g: torch.Tensor) -> float:
    """The least-squares control-variate coefficient, one number for all players (keeps efficiency exact)."""
    gc = g - g.mean(0)
    den = float((gc * gc).sum())
    return float(((d - d.mean(0)) * gc).sum()) / den if den > 0 else 0.0


def _estimate(state: _ImageState, antithetic: bool, use_cv: bool, seed: int, final: bool, ratio: float, max_pairs: int):
    """Values and standard errors (P,) of one image; with ``final`` the surrogate's values are computed."""
    d = torch.stack(state.units)  # (U, P) float64
    n = d.shape[0]
    if not use_cv or n < MIN_UNITS_CV:
        mean = d.mean(0)
        se = d.std(0) / math.sqrt(n) if n > 1 else torch.full_like(mean, float("inf"))
        return mean.float(), se.float()
    orders = torch.stack(state.orders)
    z0, zn = state.z0.double(), state.zn.double()
    mean = torch.zeros(state.p, dtype=torch.float64)
    var = torch.zeros(state.p, dtype=torch.float64)
    for fold in (0, 1):
        sel = torch.arange(fold, n, 2)
        w = state.inc[1 - fold] / state.inc_n[1 - fold]
        g = unit_marginals(z0, zn, w, orders[sel], state.y, antithetic)
        beta = _coefficient(d[sel], g)
        r = d[sel] - beta * g
        m = r.shape[0]
        var_g_unit = g.var(0) * beta**2
        pairs = int(min(max_pairs, max(64, math.ceil(ratio * m * float(var_g_unit.max()) / max(float(r.var(0).max()), 1e-30)))))
        weight = m / n
        if final:
            gen = torch.Generator().manual_seed(image_seed(seed, state.index, "surrogate", fold))
            phi_g, var_g = shapley_mc(z0, zn, w, state.y, pairs, gen)
            mean += weight * (beta * phi_g.double() + r.mean(0))
            var += weight**2 * (r.var(0) / m + beta**2 * var_g.double() / pairs)
        else:
            var += weight**2 * (r.var(0) / m + var_g_unit / pairs)
    return mean.float(), var.sqrt().float()


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

    ``permutations`` per image (counting both members of an antithetic pair);
    ``target_se`` stops an image once its largest standard error is at most
    this (checked every ``round_permutations``); ``grid`` the player grid
    (default 2x2 blocks); ``seed`` (or a ``generator`` it is drawn from) and
    ``indices`` (stable per-image ids, default ``0..N-1``) fix every random
    choice: an image's values do not depend on the rest of the batch.
    ``control_variate`` applies to ``value="prob"`` only.
    """
    if value not in VALUES:
        raise UserError(f"freq-shapley: value must be one of {VALUES}, got {value!r}")
    if int(permutations) < 1:
        raise UserError(f"freq-shapley: permutations must be >= 1, got {permutations!r}")
    if target_se is not None and not float(target_se) > 0:
        raise UserError(f"freq-shapley: target_se must be > 0, got {target_se!r}")
    if int(batch_size) < 1:
        raise UserError(f"freq-shapley: batch_size must be >= 1, got {batch_size!r}")
    if x.dim() != 4 or y.shape != x.shape[:1]:
        raise UserError(f"freq-shapley: expected images (N, C, H, W) and labels (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if generator is not None:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    players = FrequencyPlayers(tuple(x.shape[-2:]), grid)
    p = players.num_players
    device = _device_of(model)
    use_cv = bool(control_variate) and value == "prob"
    per_unit = 2 if antithetic else 1
    total_units = max(1, math.ceil(int(permutations) / per_unit))
    round_units = total_units if target_se is None else max(1, math.ceil(int(round_permutations) / per_unit))
    if target_se is not None and use_cv:
        round_units = max(round_units, MIN_UNITS_CV)
    indices = list(range(x.shape[0])) if indices is None else [int(i) for i in indices]
    n = x.shape[0]
    img_bytes = p * x[0].numel() * 4
    group = max(1, min(64, (256 << 20) // max(img_bytes, 1)))
    units_per_chunk = max(1, int(batch_size) // max(1, (p - 1) * per_unit))

    values = torch.zeros(n, p)
    stderr = torch.zeros(n, p)
    v_full = torch.zeros(n)
    v_empty = torch.zeros(n)
    perms = torch.zeros(n, dtype=torch.long)
    passes = torch.zeros(n, dtype=torch.long)
    fwd = _Forward(model, batch_size)
    t_start = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n * (total_units * per_unit * max(p - 1, 0) + 2), desc="freq-shapley", unit="pass", unit_scale=True, leave=False)
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, n, group):
                xs = x[start : start + group].to(device).float()
                ys = y[start : start + group].to("cpu").long()
                comps, base = players.components(xs)
                full = base + comps.sum(1)
                states = [_ImageState(indices[start + i], int(ys[i]), seed, p) for i in range(xs.shape[0])]
                ends = fwd(torch.cat([base, full]).clone()).cpu()
                for i, s in enumerate(states):
                    s.z0, s.zn = ends[i], ends[xs.shape[0] + i]
                    s.v0 = float(_value(s.z0, torch.tensor(s.y), value))
                    s.vn = float(_value(s.zn, torch.tensor(s.y), value))
                if bar is not None:
                    bar.update(2 * xs.shape[0])
                done_units = 0
                while done_units < total_units:
                    k = min(round_units, total_units - done_units)
                    active = [i for i, s in enumerate(states) if not s.done]
                    if not active:
                        break
                    if p > 1:
                        all_orders = torch.cat([states[i].draw(k) for i in active])
                        all_owners = torch.tensor(active).repeat_interleave(k)
                        for c in range(0, len(all_owners), units_per_chunk):
                            orders = all_orders[c : c + units_per_chunk]
                            owners = all_owners[c : c + units_per_chunk].to(device)
                            zf, zr = _chain_logits(fwd, comps, base, full, owners, orders, antithetic)
                            zf, zr = zf.cpu(), (zr.cpu() if zr is not None else None)
                            owners_cpu = owners.cpu()
                            for i in owners_cpu.unique().tolist():
                                sel = owners_cpu == i
                                _record(states[i], orders[sel], zf[sel], zr[sel] if zr is not None else None, value, antithetic)
                            if bar is not None:
                                bar.update(len(orders) * per_unit * (p - 1))
                    else:  # one player: its value is v(all) - v(empty), exactly
                        for i in active:
                            st = states[i]
                            for _ in range(k):
                                st.units.append(torch.tensor([st.vn - st.v0], dtype=torch.float64))
                                st.orders.append(torch.zeros(1, dtype=torch.long))
                    done_units += k
                    if target_se is not None and done_units < total_units:
                        for i in active:
                            _, se = _estimate(states[i], antithetic, use_cv, seed, False, surrogate_ratio, max_surrogate_pairs)
                            if float(se.max()) <= float(target_se):
                                states[i].done = True
                                if bar is not None:
                                    bar.total -= (total_units - done_units) * per_unit * max(p - 1, 0)
                                    bar.refresh()
                for i, s in enumerate(states):
                    j = start + i
                    mean, se = _estimate(s, antithetic, use_cv, seed, True, surrogate_ratio, max_surrogate_pairs)
                    values[j], stderr[j] = mean, se
                    v_full[j], v_empty[j] = s.vn, s.v0
                    perms[j] = len(s.units) * per_unit
                    passes[j] = 2 + len(s.units) * per_unit * max(p - 1, 0)
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    settings = {"grid": list(players.grid), "players": p, "value": value, "antithetic": bool(antithetic),
                "control_variate": use_cv, "permutations": int(permutations), "target_se": target_se, "seed": int(seed)}
    timing = {"total_s": time.perf_counter() - t_start, "forward_s": fwd.seconds, "passes": fwd.calls}
    return ShapleyResult(values, stderr, v_full, v_empty, perms, passes, players, settings, timing)
