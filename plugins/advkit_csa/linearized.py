"""Frequency Shapley values for the NFC bank from input gradients at random coalition pairs (our own estimator).

Why. The permutation estimator of :mod:`advkit_csa.shapley` spends ``P - 1``
forward passes to get one sample of each player's marginal. But a player of the
frequency game is a *small* change of the image (the reconstruction of one
block of the spectrum), so its marginal ``v(S + i) - v(S)`` is close to a
directional derivative: with ``F(z) = v(clamp(base + sum_j z_j comp_j))``
(``z`` in ``[0, 1]^P`` the memberships), the trapezoid rule gives

    v(S + i) - v(S) ~ 1/2 (dF/dz_i at S + dF/dz_i at S + i),   dF/dz_i = <grad v(x_S), comp_i>

and one backward pass at a coalition gives ``dF/dz_i`` for *every* player at
once. On the bundled SmallCNN the trapezoid removes most of the variance of
the marginals of the mid-sized and small players (docs/benchmarks.md); what it
leaves is a bias of about a tenth of the value, largest on the few
low-frequency players that hold most of the energy (measured exactly, below).

The estimate is unbiased for the Shapley values of that linearized game.
A coalition pair ``(T, N - T)`` is drawn with ``T`` Bernoulli(``t``) over the
players. For each player, one member of the pair lacks it (a *before* point)
and the other holds it (an *after* point), at levels ``t`` and ``1 - t`` in
some order. The Shapley distribution of a player's predecessors is the
mixture over ``t ~ U(0, 1)`` of Bernoulli(``t``) coalitions of the others
(Owen's multilinear form), so importance weights (:func:`pair_samples`) make
``dF/dz_i(T) + dF/dz_i(N - T)`` an unbiased sample of the trapezoid. ``t`` is
drawn from the arcsine law (restricted to ``[0, 1/2]``, stratified within each
round): under uniform levels, a player that lands in a small ``T`` gets a
weight ``1 / (4t)`` and the samples have infinite variance; the arcsine law
puts more pairs near the ends and makes it finite (it also measured better on
the reference games than uniform levels). Cost: two gradient evaluations per
pair, counted as three forward passes each (the backward pass of the input
gradient costs one to two forward passes on CPU); plus ``v(all)`` and
``v(empty)``.

Large players are measured exactly. The linearization fails on a player whose
block holds a large share of the image's spectral energy (in practice the
neighbour of the DC cell that carries the image's coarse shape, a third of the
energy): its value can come out with the wrong sign. For the players with at
least ``exact_share`` of the energy (and always the largest one), the slope at
each coalition of a pair is replaced by the exact finite difference (``v`` with
the player minus ``v`` without it; ``v`` at the coalition itself comes with its
gradient), one forward pass per coalition and player. The same weights make
these samples unbiased for the player's true Shapley value.

Sequential sign decisions (``target_loss``): pairs are drawn in rounds of
``round_pairs``; after each (from the second on), an image stops once the
weighted share of its players whose sign could still be wrong,
``sum |phi| Phi(-|phi| / se) / sum |phi|``
(:func:`advkit_csa.quality.expected_sign_loss`), is at most ``target_loss``;
``pairs`` is then the most an image may use. Easy games stop after 64 pairs,
hard ones use the maximum: on the reference games this reached the chosen
bank quality with fewer passes than a fixed number of pairs (docs/csa.md).

The values are not exactly efficient (the linearization bias of the large
players shows in ``efficiency_gap``); the bank only keeps their signs. For
values, use the permutation estimator.
"""

from __future__ import annotations

import functools
import math
import time

import torch

from advkit.plugin import UserError
from advkit.plugin import progress as progress_bar
from advkit_csa.chains import _value
from advkit_csa.players import FrequencyPlayers
from advkit_csa.quality import expected_sign_loss
from advkit_csa.shapley import VALUES, ShapleyResult, _device_of, image_seed

ROUND_PAIRS = 32  # pairs per round: the strata of t, and how often the stopping rule is checked
EXACT_SHARE = 0.1  # players with at least this share of the spectral energy are measured exactly
GRADIENT_COST = 3  # forward passes counted per gradient evaluation (forward + backward)


def _check(pairs, target_loss, round_pairs, batch_size, value, x, y):
    if value not in VALUES:
        raise UserError(f"gradient estimator: value must be one of {VALUES}, got {value!r}")
    if int(pairs) < 2:
        raise UserError(f"gradient estimator: pairs must be >= 2, got {pairs!r}")
    if target_loss is not None and not 0 < float(target_loss) < 1:
        raise UserError(f"gradient estimator: target_loss must lie in (0, 1), got {target_loss!r}")
    if int(round_pairs) < 2 or int(batch_size) < 1:
        raise UserError("gradient estimator: round_pairs must be >= 2 and batch_size >= 1")
    if x.dim() != 4 or y.shape != x.shape[:1]:
        raise UserError(f"gradient estimator: expected images (N, C, H, W) and labels (N,), got {tuple(x.shape)} and {tuple(y.shape)}")


class _Gradients:
    """``v`` and its input gradient on batches of coalition images, counting evaluations and time."""

    def __init__(self, model, value: str, batch_size: int):
        self.model, self.value, self.batch_size = model, value, int(batch_size)
        self.evaluations, self.forwards, self.seconds = 0, 0, 0.0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``v`` (n,) and its gradient (n, C, H, W) at each image."""
        t = time.perf_counter()
        values, grads = [], []
        with torch.enable_grad():
            for i in range(0, images.shape[0], self.batch_size):
                xi = images[i : i + self.batch_size].detach().requires_grad_(True)
                v = _value(self.model(xi.clamp(0, 1)).float(), labels[i : i + self.batch_size], self.value)
                grads.append(torch.autograd.grad(v.sum(), xi)[0])
                values.append(v.detach())
        self.seconds += time.perf_counter() - t
        self.evaluations += images.shape[0]
        return torch.cat(values), torch.cat(grads)

    def values(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``v`` (n,) at each image, forward passes only."""
        t = time.perf_counter()
        with torch.no_grad():
            out = [_value(self.model(images[i : i + self.batch_size].clamp(0, 1)).float(), labels[i : i + self.batch_size], self.value)
                   for i in range(0, images.shape[0], self.batch_size)]
        self.seconds += time.perf_counter() - t
        self.forwards += images.shape[0]
        return torch.cat(out)


def draw_pairs(generator: torch.Generator, k: int, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Levels ``t`` (k,) in [0, 1/2], arcsine-distributed and stratified, and coalitions ``T`` (k, P) bool, Bernoulli(t)."""
    u = (torch.arange(k, dtype=torch.float64) + torch.rand(k, generator=generator, dtype=torch.float64)) / k
    t = torch.sin(math.pi / 4 * u).pow(2).clamp_min(1e-12)  # the arcsine law on [0, 1], its lower half
    members = torch.rand(k, p, generator=generator, dtype=torch.float64) < t[:, None]
    return t, members


def pair_samples(t: torch.Tensor, members: torch.Tensor, slope_t: torch.Tensor, slope_c: torch.Tensor) -> torch.Tensor:
    """Unbiased samples (k, P) of the trapezoid-linearized Shapley values from one round of pairs.

    ``slope_t``/``slope_c`` (k, P) are ``dF/dz_i`` at ``T`` and at its complement.
    The weight ``1 / (4 t a(t))`` (player in ``T``) or ``1 / (4 (1 - t) a(t))``
    (not in ``T``), ``a`` the arcsine density, turns the two slopes into one
    sample of the trapezoid over the Shapley distribution.
    """
    tt = t[:, None]
    ratio = ((1 - tt) / tt).sqrt()
    weight = math.pi / 4 * torch.where(members, ratio, 1 / ratio)
    return (slope_t.double() + slope_c.double()) * weight


class _Image:
    """Running sums of one image's pair samples."""

    def __init__(self, generator: torch.Generator, p: int):
        self.generator = generator
        self.sum = torch.zeros(p, dtype=torch.float64)
        self.sq = torch.zeros(p, dtype=torch.float64)
        self.n = 0
        self.done = False

    def add(self, samples: torch.Tensor) -> None:
        self.sum += samples.sum(0)
        self.sq += (samples * samples).sum(0)
        self.n += samples.shape[0]

    def estimate(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.sum / max(self.n, 1)
        var = (self.sq / max(self.n, 1) - mean * mean).clamp_min(0) * self.n / max(self.n - 1, 1)
        return mean, (var / max(self.n, 1)).sqrt()


def exact_players(energy: torch.Tensor, share: float | None) -> torch.Tensor:
    """Players (sorted indices) with at least ``share`` of the spectral energy ``energy`` (P,), and always the largest.

    ``share=None``: none (every player linearized).
    """
    if share is None:
        return torch.zeros(0, dtype=torch.long)
    frac = energy / energy.sum().clamp_min(1e-300)
    chosen = frac >= share
    chosen[frac.argmax()] = True
    return chosen.nonzero().flatten()


def _round(grads: _Gradients, drawn, flat, base, full, ys, exact) -> list[torch.Tensor]:
    """Samples (k, P) of every image of ``drawn`` (image, t, T): gradients at the pairs, exact toggles of its ``exact`` players."""
    device, shape = flat.device, base.shape[1:]
    images, labels, sizes = [], [], []
    for i, _, members in drawn:
        part = (members.to(flat.dtype).to(device) @ flat[i]).view(-1, *shape)
        images += [base[i] + part, full[i] - part]
        labels.append(ys[i].expand(2 * part.shape[0]))
        sizes.append(2 * part.shape[0])
    images, labels = torch.cat(images), torch.cat(labels)
    values, gr = grads(images, labels)
    rows = torch.cumsum(torch.tensor([0] + sizes), 0).tolist()
    toggled, toggled_labels = [], []
    for (i, _, members), a, b in zip(drawn, rows[:-1], rows[1:]):
        if len(exact[i]):
            held = torch.cat([members, ~members])[:, exact[i]].to(device)  # (2k, E): the exact player is in the coalition
            sign = 1 - 2 * held.to(flat.dtype)  # add the player where it is missing, remove it where it is held
            toggled.append((images[a:b, None] + sign[..., None, None, None] * flat[i, exact[i]].view(1, -1, *shape)).flatten(0, 1))
            toggled_labels.append(labels[a:b].repeat_interleave(len(exact[i])))
    tv = grads.values(torch.cat(toggled), torch.cat(toggled_labels)) if toggled else None
    out, at = [], 0
    for (i, t, members), a, b in zip(drawn, rows[:-1], rows[1:]):
        k, e = members.shape[0], len(exact[i])
        slopes = (gr[a:b].flatten(1) @ flat[i].T).double().cpu()  # (2k, P): dF/dz at T, then at N - T
        if e:
            held = torch.cat([members, ~members])[:, exact[i]]
            other = tv[at : at + 2 * k * e].view(2 * k, e).double().cpu()
            own = values[a:b].double().cpu()[:, None]
            slopes[:, exact[i]] = torch.where(held, own - other, other - own)  # v(with) - v(without)
            at += 2 * k * e
        out.append(pair_samples(t, members, slopes[:k], slopes[k:]))
    return out


def _group(grads, players, xs, ys, seeds, pairs, target_loss, exact_share, round_pairs, bar) -> dict:
    """Estimate a group of images whose per-player reconstructions fit in memory together."""
    from advkit_csa.quality import player_energy

    g, p = xs.shape[0], players.num_players
    comps, base = players.components(xs)
    full = base + comps.sum(1)
    ends = grads.values(torch.cat([base, full]), torch.cat([ys, ys])).cpu()
    flat = comps.flatten(2)  # (g, P, CHW)
    exact = [exact_players(e, exact_share) for e in player_energy(xs.cpu(), players)]
    states = [_Image(torch.Generator().manual_seed(sd), p) for sd in seeds]
    while True:
        active = [i for i, s in enumerate(states) if not s.done and s.n < pairs]
        if not active:
            break
        drawn = [(i, *draw_pairs(states[i].generator, min(round_pairs, pairs - states[i].n), p)) for i in active]
        for (i, _, _), samples in zip(drawn, _round(grads, drawn, flat, base, full, ys, exact)):
            states[i].add(samples)
            if target_loss is not None and states[i].n >= 2 * round_pairs:
                states[i].done = float(expected_sign_loss(*states[i].estimate())) <= float(target_loss)
        bar.update(sum(len(t) for _, t, _ in drawn))
    est = [s.estimate() for s in states]
    return {"values": torch.stack([m for m, _ in est]).float(), "stderr": torch.stack([e for _, e in est]).float(),
            "v_empty": ends[:g], "v_full": ends[g:], "pairs": torch.tensor([s.n for s in states]),
            "passes": torch.tensor([2 + 2 * s.n * (GRADIENT_COST + len(e)) for s, e in zip(states, exact)])}


def gradient_shapley(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    grid: tuple[int, int] | None = None,
    pairs: int = 128,
    target_loss: float | None = None,
    exact_share: float | None = EXACT_SHARE,
    round_pairs: int = ROUND_PAIRS,
    value: str = "prob",
    batch_size: int = 128,
    seed: int = 0,
    generator: torch.Generator | None = None,
    indices=None,
    progress: bool = True,
) -> ShapleyResult:
    """Linearized frequency Shapley values of ``model`` on images ``x`` (N, C, H, W in [0, 1]) of classes ``y``.

    ``pairs``: coalition pairs per image (two gradient evaluations each), or the
    most an image may use with ``target_loss``. Players with at least
    ``exact_share`` of an image's spectral energy (and its largest) get exact
    differences instead of slopes (``exact_share=1``: only the largest, ``0``:
    all, so the estimate is unbiased for the true values; ``None``: none).
    ``seed``/``generator`` and ``indices`` (stable per-image ids) fix every
    random choice: an image's values do not depend on the rest of the batch.
    ``passes`` counts forward passes, a gradient evaluation as
    :data:`GRADIENT_COST` of them.
    """
    _check(pairs, target_loss, round_pairs, batch_size, value, x, y)
    if generator is not None:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    players = FrequencyPlayers(tuple(x.shape[-2:]), grid)
    indices = list(range(x.shape[0])) if indices is None else [int(i) for i in indices]
    grads = _Gradients(model, value, batch_size)
    estimate_group = functools.partial(_group, pairs=int(pairs), target_loss=target_loss, exact_share=exact_share,
                                       round_pairs=int(round_pairs))
    t_start = time.perf_counter()
    out = _estimate_all(model, grads, players, x, y, [image_seed(seed, i, "gradient") for i in indices], estimate_group,
                        int(pairs), progress)
    settings = {"estimator": "gradient", "grid": list(players.grid), "players": players.num_players, "value": value,
                "pairs": int(pairs), "target_loss": target_loss, "exact_share": exact_share, "round_pairs": int(round_pairs),
                "seed": int(seed)}
    timing = {"total_s": time.perf_counter() - t_start, "model_s": grads.seconds, "gradients": grads.evaluations,
              "forwards": grads.forwards, "passes": int(out["passes"].sum()), "pairs": out["pairs"].tolist()}
    return ShapleyResult(out["values"], out["stderr"], out["v_full"], out["v_empty"], torch.zeros(x.shape[0], dtype=torch.long),
                         out["passes"], players, settings, timing)


def _estimate_all(model, grads: _Gradients, players, x, y, seeds: list[int], estimate_group, pairs: int, progress: bool) -> dict:
    """Every image, a group at a time, with ``model`` in eval mode: the per-image tensors of the result.

    A group is as many images as their per-player reconstructions fit in memory
    together (at most 64); ``estimate_group`` is :func:`_group` with the pair
    settings bound, ``seeds`` the per-image seeds.
    """
    n, p = x.shape[0], players.num_players
    device = _device_of(model)
    group = max(1, min(64, (256 << 20) // max(p * x[0].numel() * 4, 1)))
    out = {"values": torch.zeros(n, p), "stderr": torch.zeros(n, p), "v_full": torch.zeros(n), "v_empty": torch.zeros(n),
           "pairs": torch.zeros(n, dtype=torch.long), "passes": torch.zeros(n, dtype=torch.long)}
    bar = progress_bar(n * pairs, "freq-shapley (gradient)", quiet=not progress, unit="pair")
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        for start in range(0, n, group):
            group_seeds = seeds[start : start + group]
            rows = slice(start, start + len(group_seeds))
            res = estimate_group(grads, players, x[start : start + group].to(device).float(),
                                 y[start : start + group].to(device).long(), group_seeds, bar=bar)
            for name, dst in out.items():
                dst[rows] = res[name]
    finally:
        bar.close()
        model.train(was_training)
    return out
